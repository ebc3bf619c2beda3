//! The schema files, embedded at build time, parsed once, and bound to their Rust types.
//!
//! `schemas/avro/*.avsc` is the single source of truth. Each record type implements
//! [`AvroRecord`], which carries the current schema and every released version still
//! readable (`schemas/released/v*/`). A decoder finds the writer's schema by its
//! fingerprint and reads it into the current Rust type: fields the writer lacks take
//! their Avro defaults (serde defaults mirror them), fields the reader lacks are skipped.

use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::records::{
    CatalogRecord, DemandWindow, GridCoverage, Heartbeat, PlanSignal, RejectedEvent, SaleEvent,
    StoreRecord,
};

/// A parsed schema with its identity.
pub struct ParsedSchema {
    /// The schema file as written.
    pub json: &'static str,
    /// Where it came from: `current` or the release name (`v1`, …).
    pub version: &'static str,
    /// CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form, as in the
    /// single-object encoding header (little-endian bytes).
    pub fingerprint: [u8; 8],
    /// The schema in the form the fast codec uses.
    pub fast: serde_avro_fast::Schema,
}

impl std::fmt::Debug for ParsedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedSchema")
            .field("version", &self.version)
            .field("fingerprint", &hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of bytes (fingerprints in logs and errors).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The schemas of one record type: the current one first, then released versions.
#[derive(Debug)]
pub struct SchemaSet {
    /// Full Avro name, e.g. `dev.nearfield.v1.SaleEvent`.
    pub full_name: &'static str,
    /// Current first, then each released version still readable.
    pub versions: Vec<ParsedSchema>,
}

impl SchemaSet {
    fn parse(full_name: &'static str, files: &[(&'static str, &'static str)]) -> Self {
        let versions = files
            .iter()
            .map(|&(version, json)| {
                // The files are compiled in and checked by this crate's tests, so a parse
                // failure here is a build defect, not an input error.
                #[allow(clippy::expect_used)]
                let fast: serde_avro_fast::Schema =
                    json.parse().expect("embedded schema file must parse (checked by tests)");
                let fingerprint = *fast.rabin_fingerprint();
                ParsedSchema { json, version, fingerprint, fast }
            })
            .collect();
        SchemaSet { full_name, versions }
    }

    /// The schema new records are written with.
    pub fn current(&self) -> &ParsedSchema {
        &self.versions[0]
    }

    /// The schema with this fingerprint, if it is a known writer schema of this record.
    pub fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<&ParsedSchema> {
        self.versions.iter().find(|s| &s.fingerprint == fingerprint)
    }
}

/// A record of the contract: a Rust type bound to its schema files.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// Simple Avro name, e.g. `SaleEvent` (also the file name).
    const NAME: &'static str;
    /// Current and released schemas.
    fn schemas() -> &'static SchemaSet;
    /// Appends the datum in the current schema with a hand-written writer
    /// ([`crate::fast`]) when the record has one for that schema's layout; false, with
    /// nothing written, otherwise (the codec's general encoder writes it then).
    fn write_fast(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
}

macro_rules! records {
    ($($ty:ident => [$($ver:literal),*] $(writer $writer:path)?),* $(,)?) => {
        $(
            impl AvroRecord for $ty {
                const NAME: &'static str = stringify!($ty);
                $(fn write_fast(&self, out: &mut Vec<u8>) -> bool {
                    $writer(self, out)
                })?
                fn schemas() -> &'static SchemaSet {
                    static SET: OnceLock<SchemaSet> = OnceLock::new();
                    SET.get_or_init(|| SchemaSet::parse(
                        concat!("dev.nearfield.v1.", stringify!($ty)),
                        &[
                            ("current", include_str!(concat!("../avro/", stringify!($ty), ".avsc"))),
                            $(($ver, include_str!(concat!("../released/", $ver, "/", stringify!($ty), ".avsc"))),)*
                        ],
                    ))
                }
            }
        )*

        /// Every record of the contract: (simple name, schema set).
        pub fn all() -> Vec<(&'static str, &'static SchemaSet)> {
            vec![$((stringify!($ty), $ty::schemas())),*]
        }

        /// Released versions kept in `schemas/released/` (oldest first).
        pub const RELEASES: &[&str] = &["v1"];
    };
}

records! {
    SaleEvent => ["v1"],
    DemandWindow => ["v1"] writer crate::fast::write_demand_window,
    PlanSignal => ["v1"],
    Heartbeat => ["v1"],
    StoreRecord => ["v1"],
    CatalogRecord => ["v1"],
    RejectedEvent => ["v1"],
    GridCoverage => [],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-64-AVRO as the Avro specification gives it (table-driven Rabin).
    fn crc64_avro(data: &[u8]) -> [u8; 8] {
        const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
        let table: Vec<u64> = (0..256u64)
            .map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg())))
            .collect();
        let fp = data
            .iter()
            .fold(EMPTY, |fp, &b| (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]);
        fp.to_le_bytes()
    }

    /// apache-avro 0.21 keeps `{"type":"long"}` for a primitive that had a logicalType,
    /// where the specification's Parsing Canonical Form (and Java, fastavro,
    /// serde_avro_fast) reduce it to `"long"`; undo that before fingerprinting.
    fn spec_canonical_form(json: &str) -> String {
        let mut pcf = apache_avro::Schema::parse_str(json).expect("parses").canonical_form();
        for p in ["null", "boolean", "int", "long", "float", "double", "bytes", "string"] {
            pcf = pcf.replace(&format!(r#"{{"type":"{p}"}}"#), &format!(r#""{p}""#));
        }
        pcf
    }

    #[test]
    fn fingerprints_follow_the_specification() {
        for (name, set) in all() {
            for v in &set.versions {
                let expected = crc64_avro(spec_canonical_form(v.json).as_bytes());
                assert_eq!(expected, v.fingerprint, "{name} {}", v.version);
            }
        }
        // The specification's own check value: the fingerprint of "int".
        assert_eq!(crc64_avro(br#""int""#), 0x7275_d51a_3f39_5c8f_u64.to_le_bytes());
    }

    #[test]
    fn every_record_has_a_distinct_fingerprint() {
        let all = all();
        let mut seen = std::collections::HashMap::new();
        for (name, set) in &all {
            if let Some(other) = seen.insert(set.current().fingerprint, *name) {
                panic!("{name} and {other} share a fingerprint");
            }
        }
        assert_eq!(seen.len(), all.len());
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn full_names_match_the_files() {
        for (name, set) in all() {
            let schema = apache_avro::Schema::parse_str(set.current().json).expect("parses");
            let apache_avro::Schema::Record(record) = schema else {
                panic!("{name} is not a record");
            };
            assert_eq!(record.name.fullname(None), set.full_name);
        }
    }
}
