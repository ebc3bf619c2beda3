//! The Avro contract of nearfield: schemas, Rust types, framing and codecs.
//!
//! `schemas/avro/*.avsc` is the source of truth; the Rust types in [`records`] are checked
//! against those files by round trips through this crate's codec and the reference
//! `apache-avro` implementation (tests), and [`compat`] checks every schema against its
//! released versions so a change that would break a producer or consumer fails the build.
//!
//! # Layout
//! - [`records`]: one Rust type per Avro record of SPEC §4.
//! - [`registry`]: the embedded schema files, their fingerprints, the [`AvroRecord`] trait.
//! - [`framing`]: single-object (`C3 01` + fingerprint) and Confluent (`00` + id) headers.
//! - [`codec`]: the [`Codec`] that writes and reads framed records, bounded on decode.
//! - [`fast`]: the hand-written reader of a `SaleEvent` datum behind
//!   [`Codec::decode_sale`] (the aggregator's hot path).
//! - [`compat`]: backward/forward compatibility checks between schema versions.
//! - [`golden`]: the golden vectors in `schemas/testdata/` shared with other languages.
//! - [`plan_book`]: the latest plan per key, as a factory keeps it (same rules as the Java
//!   and Python clients in `clients/`).

pub mod codec;
pub mod compat;
pub mod fast;
pub mod framing;
pub mod golden;
pub mod plan_book;
pub mod records;
pub mod registry;

pub use codec::{Codec, Limits};
pub use framing::{Framing, Header, RegistryIds};
pub use records::*;
pub use registry::{AvroRecord, SchemaSet};

/// A record could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Confluent framing is configured but the record has no registry id.
    #[error("no schema registry id configured for {record}")]
    NoRegistryId { record: &'static str },
    /// The value does not fit its schema (a bug in the caller's types).
    #[error("{record} does not fit its schema: {message}")]
    Datum { record: &'static str, message: String },
}

/// Bytes could not be decoded as the expected record. Every variant says why, so it can
/// be put on a dead-letter record as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or datum needs.
    #[error("message truncated: needed at least {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    /// Larger than the configured limit; not looked at.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// Neither single-object (`C3 01`) nor Confluent (`00`) framing.
    #[error(
        "unknown framing: first byte 0x{first:02x} is neither 0xc3 (single-object) nor 0x00 (Confluent)"
    )]
    UnknownMagic { first: u8 },
    /// Single-object header with a fingerprint no known version of the record has.
    #[error("fingerprint {fingerprint} is not a known {record} schema")]
    UnknownFingerprint { record: &'static str, fingerprint: String },
    /// Confluent header with a schema id not mapped to a version of the record.
    #[error("schema registry id {id} is not a known {record} schema")]
    UnknownSchemaId { record: &'static str, id: u32 },
    /// The datum does not follow the writer schema.
    #[error("invalid {record} datum: {message}")]
    Datum { record: &'static str, message: String },
    /// Bytes left over after a whole datum: the message is not one record.
    #[error("{extra} bytes left over after the {record} datum: a message holds exactly one record")]
    TrailingBytes { record: &'static str, extra: usize },
}

impl DecodeError {
    /// A short machine-readable reason, for metrics labels and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "decode.truncated",
            DecodeError::TooLarge { .. } => "decode.too_large",
            DecodeError::UnknownMagic { .. } => "decode.framing",
            DecodeError::UnknownFingerprint { .. } => "decode.fingerprint",
            DecodeError::UnknownSchemaId { .. } => "decode.schema_id",
            DecodeError::Datum { .. } => "decode.datum",
            DecodeError::TrailingBytes { .. } => "decode.trailing_bytes",
        }
    }
}
