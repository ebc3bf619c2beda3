//! Hand-written codecs of the records on the hottest paths: a reader of the `SaleEvent`
//! datum the aggregator reads for every sale, into a [`SaleEventRef`] whose strings borrow
//! from the record; and a writer of the `DemandWindow` datum it writes for every closed
//! window ([`write_demand_window`], behind [`Codec::encode_into`](crate::Codec::encode_into)
//! through [`AvroRecord::write_fast`](crate::AvroRecord::write_fast)), the same bytes as
//! the general encoder (property test).
//!
//! Each is tied to one writer schema by its fingerprint; a test fails when the schema
//! file changes, and until the codec is updated records go through the general codec.
//!
//! It reads only the layout of one writer schema, named by its fingerprint
//! ([`SALE_EVENT_LAYOUT`]), and only what is plainly valid there: minimal varints in
//! range, strings that fit and are UTF-8, a known enum symbol, no bytes after the datum.
//! Anything else — another writer schema, a truncated or odd datum — gives `None`, and
//! [`Codec::decode_sale`](crate::Codec::decode_sale) hands the message to the general
//! decoder, which reads it or says what is wrong with it. So the result is always the
//! general decoder's (a property test and the fuzz target compare them); this only makes
//! the common case cheaper.

use crate::records::{DemandWindow, SaleEventRef, SaleKind};
use crate::registry::AvroRecord;

/// The CRC-64-AVRO fingerprint of the `SaleEvent` schema whose layout [`sale_event_ref`]
/// reads (the current schema; a test keeps them equal). Field order and types, from its
/// Parsing Canonical Form: event_id, store_id, device_id, grid_id, sku (strings), kind
/// (enum SALE, RETURN, PREORDER), quantity (int), unit_price_minor (long), currency
/// (string), occurred_at, received_at (longs).
pub(crate) const SALE_EVENT_LAYOUT: [u8; 8] = [0x49, 0x4b, 0x14, 0xc9, 0xeb, 0x9b, 0xd2, 0xb1];

/// Reads a `SaleEvent` datum of the [`SALE_EVENT_LAYOUT`] writer schema, all of `datum`;
/// `None` when it is anything but plainly valid.
pub(crate) fn sale_event_ref(datum: &[u8]) -> Option<SaleEventRef<'_>> {
    let mut r = Reader(datum);
    let [event_id, store_id, device_id, grid_id, sku] = r.strings()?;
    let ev = SaleEventRef {
        event_id,
        store_id,
        device_id,
        grid_id,
        sku,
        kind: match r.long()? {
            0 => SaleKind::Sale,
            1 => SaleKind::Return,
            2 => SaleKind::Preorder,
            _ => return None,
        },
        quantity: r.int()?,
        unit_price_minor: r.long()?,
        currency: r.string()?,
        occurred_at: r.long()?,
        received_at: r.long()?,
    };
    r.0.is_empty().then_some(ev)
}

/// What is left of a datum.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A zig-zag varint in its shortest form (at most 10 bytes, the last one not a bare
    /// continuation of zeros).
    #[inline]
    fn long(&mut self) -> Option<i64> {
        let (v, n) = varint(self.0)?;
        self.0 = &self.0[n..];
        Some(unzigzag(v))
    }

    /// An Avro `int`: a shortest-form varint of at most 5 bytes whose value fits 32 bits.
    #[inline]
    fn int(&mut self) -> Option<i32> {
        let (v, n) = varint(self.0)?;
        let v = i32::try_from(unzigzag(v)).ok().filter(|_| n <= 5)?;
        self.0 = &self.0[n..];
        Some(v)
    }

    /// `N` length-prefixed UTF-8 strings in a row, borrowed, checked as UTF-8 at once:
    /// every length after the first must take one byte (strings under 64 bytes; `None`
    /// otherwise, and the general decoder reads the record). Those bytes are ASCII, so no
    /// character can straddle two strings and the run is UTF-8 exactly when each string
    /// is (one pass instead of `N`, most of the cost for short strings).
    #[inline]
    fn strings<const N: usize>(&mut self) -> Option<[&'a str; N]> {
        let whole = self.0;
        let mut ends = [(0usize, 0usize); N];
        for (i, end) in ends.iter_mut().enumerate() {
            let before = self.0.len();
            let len = usize::try_from(self.long()?).ok()?;
            if (i > 0 && before - self.0.len() != 1) || len > self.0.len() {
                return None;
            }
            let start = whole.len() - self.0.len();
            *end = (start, start + len);
            self.0 = &self.0[len..];
        }
        let run_start = ends.first().map_or(0, |e| e.0);
        let run = std::str::from_utf8(&whole[run_start..whole.len() - self.0.len()]).ok()?;
        let mut out = [""; N];
        for (o, &(a, b)) in out.iter_mut().zip(&ends) {
            *o = run.get(a - run_start..b - run_start)?;
        }
        Some(out)
    }

    /// A length-prefixed UTF-8 string, borrowed.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.long()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }
}

/// The unsigned varint at the start of `b` and its length in bytes; `None` when it is
/// cut short, longer than 10 bytes, past 64 bits, or not in its shortest form.
#[inline]
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    // One byte: values below 64 in magnitude, most lengths, kinds and quantities.
    match b.first() {
        Some(&x) if x < 0x80 => return Some((u64::from(x), 1)),
        None => return None,
        _ => {}
    }
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            // A last byte of 0 adds nothing (not the shortest form); the tenth byte holds
            // only bit 63.
            return (x != 0 && (i < 9 || x == 1)).then_some((v, i + 1));
        }
    }
    None
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The CRC-64-AVRO fingerprint of the `DemandWindow` schema whose layout
/// [`write_demand_window`] writes (the current schema; a test keeps them equal).
pub(crate) const DEMAND_WINDOW_LAYOUT: [u8; 8] = [0x0e, 0xb3, 0xbc, 0xf0, 0xb7, 0xed, 0x8e, 0x44];

/// Appends `w`'s datum in the [`DEMAND_WINDOW_LAYOUT`] schema; false, with nothing
/// written, when the current schema is another one.
pub(crate) fn write_demand_window(w: &DemandWindow, out: &mut Vec<u8>) -> bool {
    if DemandWindow::schemas().current().fingerprint != DEMAND_WINDOW_LAYOUT {
        return false;
    }
    out.reserve(24 + w.grid_id.len() + w.sku.len() + w.currency.len() + 19 * 10);
    put_str(out, &w.grid_id);
    put_str(out, &w.sku);
    for v in [w.window_start, w.window_end, w.units_sold, w.units_returned, w.preorder_units] {
        put_long(out, v);
    }
    put_long(out, w.net_units);
    put_long(out, w.revenue_minor);
    put_str(out, &w.currency);
    put_long(out, w.event_count);
    for v in [w.distinct_stores, w.stores_reporting, w.stores_expected, w.stores_pending] {
        put_long(out, i64::from(v));
    }
    put_long(out, i64::from(w.revision));
    out.push(u8::from(w.is_final));
    put_long(out, w.watermark);
    put_long(out, i64::from(w.source_partition));
    put_long(out, w.last_event_at);
    put_long(out, w.emitted_at);
    true
}

/// An Avro `long` (or `int`: the same encoding): a zig-zag varint.
#[inline]
fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An Avro `string`: its length in bytes, then the bytes.
#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, DecodeError, SaleEvent};
    use proptest::prelude::*;

    fn zigzag_varint(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_long(&mut out, v);
        out
    }

    #[test]
    fn the_layout_is_the_current_sale_event_schema() {
        // When this fails, SaleEvent.avsc changed: make `sale_event_ref` read the new
        // layout, then put the new fingerprint in SALE_EVENT_LAYOUT.
        assert_eq!(SaleEvent::schemas().current().fingerprint, SALE_EVENT_LAYOUT);
    }

    #[test]
    fn varints_are_read_in_their_shortest_form_only() {
        for v in [0, 1, -1, 63, -64, 64, -65, 1 << 20, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let b = zigzag_varint(v);
            assert_eq!(Reader(&b).long(), Some(v), "{v}");
        }
        assert_eq!(varint(&[0x80, 0x00]), None, "zero in two bytes");
        assert_eq!(varint(&[0xff, 0x80, 0x00]), None, "a trailing zero byte");
        assert_eq!(varint(&[0x80]), None, "cut short");
        assert_eq!(varint(&[0xff; 10]), None, "past 64 bits");
        assert_eq!(varint(&[0xff; 11]), None, "longer than 10 bytes");
        assert_eq!(varint(&[]), None);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint(&max), Some((u64::MAX, 10)));
        let big = zigzag_varint(i64::from(i32::MAX) + 1);
        assert_eq!(Reader(&big).int(), None, "an int past 32 bits");
        assert_eq!(Reader(&zigzag_varint(-5)).int(), Some(-5));
    }

    fn sale_event() -> impl Strategy<Value = SaleEvent> {
        let s = || "\\PC{0,12}";
        let long = || prop_oneof![any::<i64>(), -200i64..200];
        ((s(), s(), s(), s(), s()), (0..3u8, any::<i32>(), long(), s(), long(), long())).prop_map(
            |((e, st, d, g, sku), (k, q, p, c, o, r))| SaleEvent {
                event_id: e,
                store_id: st,
                device_id: d,
                grid_id: g,
                sku,
                kind: [SaleKind::Sale, SaleKind::Return, SaleKind::Preorder][usize::from(k)],
                quantity: q,
                unit_price_minor: p,
                currency: c,
                occurred_at: o,
                received_at: r,
            },
        )
    }

    #[test]
    fn the_writer_layout_is_the_current_demand_window_schema() {
        // When this fails, DemandWindow.avsc changed: make `write_demand_window` write
        // the new layout, then put the new fingerprint in DEMAND_WINDOW_LAYOUT.
        assert_eq!(DemandWindow::schemas().current().fingerprint, DEMAND_WINDOW_LAYOUT);
    }

    fn demand_window() -> impl Strategy<Value = DemandWindow> {
        let s = || "\\PC{0,12}";
        let long = || prop_oneof![any::<i64>(), -200i64..200];
        let int = || prop_oneof![any::<i32>(), -200i32..200];
        (
            (s(), s(), long(), long(), long(), long(), long(), long(), long(), s()),
            (long(), int(), int(), int(), int(), int(), any::<bool>()),
            (long(), int(), long(), long()),
        )
            .prop_map(|(a, b, c)| DemandWindow {
                grid_id: a.0,
                sku: a.1,
                window_start: a.2,
                window_end: a.3,
                units_sold: a.4,
                units_returned: a.5,
                preorder_units: a.6,
                net_units: a.7,
                revenue_minor: a.8,
                currency: a.9,
                event_count: b.0,
                distinct_stores: b.1,
                stores_reporting: b.2,
                stores_expected: b.3,
                stores_pending: b.4,
                revision: b.5,
                is_final: b.6,
                watermark: c.0,
                source_partition: c.1,
                last_event_at: c.2,
                emitted_at: c.3,
            })
    }

    fn general(bytes: &[u8]) -> Result<SaleEventRef<'_>, DecodeError> {
        Codec::single_object().decode_as::<SaleEvent, SaleEventRef<'_>>(bytes)
    }

    proptest! {
        #[test]
        fn the_fast_reader_reads_what_the_general_decoder_reads(ev in sale_event()) {
            let bytes = Codec::single_object().encode(&ev).expect("encodes");
            let fast = sale_event_ref(&bytes[10..]);
            prop_assert_eq!(fast, Some(SaleEventRef::from(&ev)));
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }

        /// Damaged messages (a byte changed, cut short, bytes added): the answer is the
        /// general decoder's, value or error.
        #[test]
        fn a_damaged_message_gets_the_general_decoders_answer(
            ev in sale_event(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0..3u8,
        ) {
            let mut bytes = Codec::single_object().encode(&ev).expect("encodes");
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }

        /// The hand-written writer writes the general encoder's bytes, and they decode
        /// to the same window.
        #[test]
        fn the_demand_window_writer_writes_the_general_encoders_bytes(w in demand_window()) {
            let mut fast = Vec::new();
            prop_assert!(write_demand_window(&w, &mut fast));
            let mut general = Vec::new();
            let schema = DemandWindow::schemas().current();
            let mut config = serde_avro_fast::ser::SerializerConfig::new(&schema.fast);
            serde_avro_fast::to_datum(&w, &mut general, &mut config).expect("encodes");
            prop_assert_eq!(&fast, &general);
            let codec = Codec::single_object();
            let framed = codec.encode(&w).expect("encodes");
            prop_assert_eq!(&framed[10..], &fast[..]);
            prop_assert_eq!(codec.decode::<DemandWindow>(&framed).expect("decodes"), w);
        }

        #[test]
        fn any_bytes_get_the_general_decoders_answer(
            datum in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&SALE_EVENT_LAYOUT);
            bytes.extend_from_slice(&datum);
            prop_assert_eq!(Codec::single_object().decode_sale(&bytes), general(&bytes));
        }
    }
}
