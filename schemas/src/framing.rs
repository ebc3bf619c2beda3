//! How an encoded record says which schema wrote it.
//!
//! * Single-object encoding (the default): `C3 01`, the 8-byte little-endian CRC-64-AVRO
//!   fingerprint of the writer schema's Parsing Canonical Form, then the Avro datum.
//! * Confluent wire format (when a schema registry is used): `00`, the 4-byte big-endian
//!   registry schema id, then the datum.
//!
//! Decoders tell the two apart by the first byte, so a topic may hold both during a
//! migration.

use std::collections::HashMap;

/// First two bytes of an Avro single-object encoded message.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header (magic + fingerprint).
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
/// First byte of a Confluent-framed message.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Length of the Confluent header (magic + schema id).
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// Schema registry ids for Confluent framing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryIds {
    /// Id to write with, per record simple name (`SaleEvent` → 17).
    pub write: HashMap<String, u32>,
    /// Known ids to read: id → (record simple name, schema version: `current`, `v1`, …).
    pub read: HashMap<u32, (String, String)>,
}

/// Which header the encoder writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding (fingerprint header). Needs no registry.
    #[default]
    SingleObject,
    /// Confluent wire format with registry ids.
    Confluent(RegistryIds),
}

/// The header found at the start of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Single-object encoding with the writer schema's fingerprint.
    SingleObject([u8; 8]),
    /// Confluent wire format with the registry schema id.
    Confluent(u32),
}

impl Header {
    /// Reads the header of `bytes`; returns it and the datum that follows.
    pub fn split(bytes: &[u8]) -> Result<(Header, &[u8]), crate::DecodeError> {
        match bytes {
            [0xC3, 0x01, rest @ ..] => {
                let (fp, datum) =
                    rest.split_first_chunk::<8>().ok_or(crate::DecodeError::Truncated {
                        needed: SINGLE_OBJECT_HEADER_LEN,
                        got: bytes.len(),
                    })?;
                Ok((Header::SingleObject(*fp), datum))
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                let (id, datum) =
                    rest.split_first_chunk::<4>().ok_or(crate::DecodeError::Truncated {
                        needed: CONFLUENT_HEADER_LEN,
                        got: bytes.len(),
                    })?;
                Ok((Header::Confluent(u32::from_be_bytes(*id)), datum))
            }
            [] => Err(crate::DecodeError::Truncated { needed: 1, got: 0 }),
            [first, ..] => Err(crate::DecodeError::UnknownMagic { first: *first }),
        }
    }

    /// Writes this header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Header::SingleObject(fp) => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(fp);
            }
            Header::Confluent(id) => {
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecodeError;

    #[test]
    fn splits_both_framings() {
        let mut buf = Vec::new();
        Header::SingleObject([1, 2, 3, 4, 5, 6, 7, 8]).write(&mut buf);
        buf.push(42);
        assert_eq!(
            Header::split(&buf).expect("valid"),
            (Header::SingleObject([1, 2, 3, 4, 5, 6, 7, 8]), &[42u8][..])
        );
        let mut buf = Vec::new();
        Header::Confluent(0x0102_0304).write(&mut buf);
        assert_eq!(buf, [0, 1, 2, 3, 4]);
        assert_eq!(Header::split(&buf).expect("valid"), (Header::Confluent(0x0102_0304), &[][..]));
    }

    #[test]
    fn rejects_short_and_unknown_headers() {
        assert_eq!(Header::split(&[]), Err(DecodeError::Truncated { needed: 1, got: 0 }));
        assert_eq!(
            Header::split(&[0xC3, 0x01, 1, 2]),
            Err(DecodeError::Truncated { needed: 10, got: 4 })
        );
        assert_eq!(Header::split(&[0, 1]), Err(DecodeError::Truncated { needed: 5, got: 2 }));
        assert_eq!(Header::split(b"{\"a\":1}"), Err(DecodeError::UnknownMagic { first: b'{' }));
    }
}
