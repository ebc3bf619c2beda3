//! Encoding and decoding of contract records with their framing.
//!
//! The hot path uses `serde_avro_fast` (serde straight to and from Avro binary, no
//! intermediate value tree); see `benches/codec.rs` and the README's performance table for
//! the measurement against `apache-avro` that chose it. Decoding is bounded: a message
//! larger than [`Limits::max_message_bytes`] is refused before any work, strings and byte
//! fields are borrowed from or bounded by the input slice, collections are capped at
//! [`Limits::max_collection_items`] and nesting at [`Limits::max_depth`].

use serde_avro_fast::de::read::{Read as _, SliceRead};
use serde_avro_fast::de::{DeserializerConfig, DeserializerState};
use serde_avro_fast::ser::SerializerConfig;

use crate::framing::{Framing, Header};
use crate::records::{SaleEvent, SaleEventRef};
use crate::registry::{AvroRecord, ParsedSchema, hex};
use crate::{DecodeError, EncodeError};

/// Bounds applied to every decode of untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, header included.
    pub max_message_bytes: usize,
    /// Largest array or map, in items.
    pub max_collection_items: usize,
    /// Deepest nesting of records, arrays and unions.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 1 << 20, max_collection_items: 100_000, max_depth: 16 }
    }
}

/// Encoder and decoder of contract records. Cheap to clone; share one per stage.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    framing: Framing,
    limits: Limits,
}

impl Codec {
    /// A codec writing with `framing` and decoding under `limits`.
    pub fn new(framing: Framing, limits: Limits) -> Self {
        Codec { framing, limits }
    }

    /// Single-object framing, default limits.
    pub fn single_object() -> Self {
        Codec::default()
    }

    /// The framing this codec writes.
    pub fn framing(&self) -> &Framing {
        &self.framing
    }

    /// Appends the framed encoding of `record` to `out`.
    pub fn encode_into<T: AvroRecord>(
        &self,
        record: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let current = T::schemas().current();
        let header = match &self.framing {
            Framing::SingleObject => Header::SingleObject(current.fingerprint),
            Framing::Confluent(ids) => Header::Confluent(
                *ids.write.get(T::NAME).ok_or(EncodeError::NoRegistryId { record: T::NAME })?,
            ),
        };
        let start = out.len();
        header.write(out);
        if record.write_fast(out) {
            return Ok(());
        }
        let mut config = SerializerConfig::new(&current.fast);
        if let Err(e) = serde_avro_fast::to_datum(record, &mut *out, &mut config) {
            out.truncate(start);
            return Err(EncodeError::Datum { record: T::NAME, message: e.to_string() });
        }
        Ok(())
    }

    /// The framed encoding of `record` in a new buffer.
    pub fn encode<T: AvroRecord>(&self, record: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Decodes a framed message written with any known version of `T`'s schema.
    ///
    /// Never panics and never allocates beyond the bounds of [`Limits`], whatever `bytes`
    /// hold.
    pub fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        self.decode_as::<T, T>(bytes)
    }

    /// Decodes a record `R` into `T`, a type with `R`'s fields that may borrow its strings
    /// from `bytes` (e.g. [`SaleEventRef`](crate::SaleEventRef)).
    pub fn decode_as<'a, R: AvroRecord, T: serde::Deserialize<'a>>(
        &self,
        bytes: &'a [u8],
    ) -> Result<T, DecodeError> {
        if bytes.len() > self.limits.max_message_bytes {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: self.limits.max_message_bytes,
            });
        }
        let (header, datum) = Header::split(bytes)?;
        let writer = self.writer_schema::<R>(header)?;
        let mut config = DeserializerConfig::new(&writer.fast);
        config.max_seq_size = self.limits.max_collection_items;
        config.allowed_depth = self.limits.max_depth;
        let mut state = DeserializerState::with_config(SliceRead::new(datum), config);
        let value = T::deserialize(state.deserializer())
            .map_err(|e| DecodeError::Datum { record: R::NAME, message: e.to_string() })?;
        // Exactly one datum: count what is left (the reader does not say how much).
        let mut rest = state.into_reader();
        let mut extra = 0;
        while rest.skip_bytes(1).is_ok() {
            extra += 1;
        }
        if extra > 0 {
            return Err(DecodeError::TrailingBytes { record: R::NAME, extra });
        }
        Ok(value)
    }

    /// Decodes a framed `SaleEvent` into a [`SaleEventRef`] borrowing its strings from
    /// `bytes`: the aggregator's hot path. The same answer as
    /// [`decode_as::<SaleEvent, SaleEventRef>`](Self::decode_as), value or error, for any
    /// bytes; a message of the current writer schema that is plainly valid is read by a
    /// hand-written reader ([`crate::fast`]), anything else by the general decoder.
    pub fn decode_sale<'a>(&self, bytes: &'a [u8]) -> Result<SaleEventRef<'a>, DecodeError> {
        if bytes.len() <= self.limits.max_message_bytes
            && let Ok((header, datum)) = Header::split(bytes)
            && let Ok(writer) = self.writer_schema::<SaleEvent>(header)
            && writer.fingerprint == crate::fast::SALE_EVENT_LAYOUT
            && let Some(ev) = crate::fast::sale_event_ref(datum)
        {
            return Ok(ev);
        }
        self.decode_as::<SaleEvent, SaleEventRef<'a>>(bytes)
    }

    fn writer_schema<T: AvroRecord>(
        &self,
        header: Header,
    ) -> Result<&'static ParsedSchema, DecodeError> {
        let set = T::schemas();
        match header {
            Header::SingleObject(fp) => set.by_fingerprint(&fp).ok_or_else(|| {
                DecodeError::UnknownFingerprint { record: T::NAME, fingerprint: hex(&fp) }
            }),
            Header::Confluent(id) => {
                let Framing::Confluent(ids) = &self.framing else {
                    return Err(DecodeError::UnknownSchemaId { record: T::NAME, id });
                };
                match ids.read.get(&id) {
                    Some((name, version)) if name == T::NAME => set
                        .versions
                        .iter()
                        .find(|s| s.version == version)
                        .ok_or(DecodeError::UnknownSchemaId { record: T::NAME, id }),
                    _ => Err(DecodeError::UnknownSchemaId { record: T::NAME, id }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::RegistryIds;
    use crate::records::*;

    fn sale() -> SaleEvent {
        SaleEvent {
            event_id: "e-1".into(),
            store_id: "s-1".into(),
            device_id: "d-1".into(),
            grid_id: "88283082b9fffff".into(),
            sku: "SKU-1".into(),
            kind: SaleKind::Return,
            quantity: 3,
            unit_price_minor: 250,
            currency: "CNY".into(),
            occurred_at: 1_700_000_000_000,
            received_at: 1_700_000_000_500,
        }
    }

    #[test]
    fn bytes_after_the_datum_are_refused() {
        let mut ids = RegistryIds::default();
        ids.write.insert("SaleEvent".into(), 7);
        ids.read.insert(7, ("SaleEvent".into(), "current".into()));
        let confluent = Codec::new(Framing::Confluent(ids), Limits::default());
        for codec in [Codec::single_object(), confluent] {
            let mut bytes = codec.encode(&sale()).expect("encodes");
            codec.decode::<SaleEvent>(&bytes).expect("exactly one record");
            bytes.extend_from_slice(&[0, 0x80]);
            let e = codec.decode::<SaleEvent>(&bytes).expect_err("two bytes too many");
            assert_eq!(e, DecodeError::TrailingBytes { record: "SaleEvent", extra: 2 });
            assert_eq!(e.reason(), "decode.trailing_bytes");
        }
    }

    #[test]
    fn single_object_round_trip_starts_with_magic_and_fingerprint() {
        let codec = Codec::single_object();
        let bytes = codec.encode(&sale()).expect("encodes");
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(&bytes[2..10], &SaleEvent::schemas().current().fingerprint);
        assert_eq!(codec.decode::<SaleEvent>(&bytes).expect("decodes"), sale());
    }

    /// The borrowed decode gives the same sale as the owned one, its strings pointing into
    /// the record, and refuses what the owned decode refuses.
    #[test]
    fn a_sale_decodes_borrowed_from_its_record() {
        let codec = Codec::single_object();
        let bytes = codec.encode(&sale()).expect("encodes");
        let owned = sale();
        let borrowed: SaleEventRef<'_> =
            codec.decode_as::<SaleEvent, SaleEventRef<'_>>(&bytes).expect("decodes borrowed");
        assert_eq!(borrowed, SaleEventRef::from(&owned));
        let range = bytes.as_ptr_range();
        assert!(range.contains(&borrowed.sku.as_ptr()), "the SKU borrows from the record");
        let mut bad = bytes.clone();
        bad.truncate(bytes.len() - 3);
        assert!(codec.decode_as::<SaleEvent, SaleEventRef<'_>>(&bad).is_err());
        assert!(codec.decode::<SaleEvent>(&bad).is_err());
    }

    #[test]
    fn confluent_round_trip_uses_registry_ids() {
        let mut ids = RegistryIds::default();
        ids.write.insert("SaleEvent".into(), 7);
        ids.read.insert(7, ("SaleEvent".into(), "current".into()));
        let codec = Codec::new(Framing::Confluent(ids), Limits::default());
        let bytes = codec.encode(&sale()).expect("encodes");
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(codec.decode::<SaleEvent>(&bytes).expect("decodes"), sale());
        // Without a registry configuration the id means nothing.
        assert_eq!(
            Codec::single_object().decode::<SaleEvent>(&bytes),
            Err(DecodeError::UnknownSchemaId { record: "SaleEvent", id: 7 })
        );
        // The same codec still reads single-object messages.
        let so = Codec::single_object().encode(&sale()).expect("encodes");
        assert_eq!(codec.decode::<SaleEvent>(&so).expect("decodes"), sale());
    }

    #[test]
    fn encoding_without_registry_id_is_an_error() {
        let codec = Codec::new(Framing::Confluent(RegistryIds::default()), Limits::default());
        assert_eq!(codec.encode(&sale()), Err(EncodeError::NoRegistryId { record: "SaleEvent" }));
    }

    #[test]
    fn wrong_record_type_is_refused_by_fingerprint() {
        let codec = Codec::single_object();
        let bytes = codec.encode(&sale()).expect("encodes");
        let err = codec.decode::<DemandWindow>(&bytes).expect_err("different schema");
        assert!(
            matches!(err, DecodeError::UnknownFingerprint { record: "DemandWindow", .. }),
            "{err}"
        );
    }

    #[test]
    fn oversized_and_truncated_messages_are_errors() {
        let codec = Codec::new(
            Framing::SingleObject,
            Limits { max_message_bytes: 16, ..Limits::default() },
        );
        let bytes = Codec::single_object().encode(&sale()).expect("encodes");
        assert!(matches!(codec.decode::<SaleEvent>(&bytes), Err(DecodeError::TooLarge { .. })));
        for cut in 0..bytes.len() {
            assert!(
                Codec::single_object().decode::<SaleEvent>(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn huge_collection_counts_are_refused_without_allocating() {
        // A StoreRecord whose device_ids array claims 2^62 items.
        let codec = Codec::single_object();
        let mut bytes = Vec::new();
        Header::SingleObject(StoreRecord::schemas().current().fingerprint).write(&mut bytes);
        bytes.extend_from_slice(&[2, b's', 2, b'n']); // store_id, name
        bytes.extend_from_slice(&[0; 16]); // lat, lon
        bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(codec.decode::<StoreRecord>(&bytes).is_err());
    }
}
