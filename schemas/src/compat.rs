//! Schema evolution checks, as schema registries define them.
//!
//! * **Backward**: consumers on the new schema read data written with the old one
//!   (`old` writer, `new` reader).
//! * **Forward**: consumers still on the old schema read data written with the new one
//!   (`new` writer, `old` reader).
//! * **Full**: both. The contract promises full compatibility between a schema and every
//!   released version kept in `schemas/released/`.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

/// Which direction of compatibility failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// One of the two schemas is not valid Avro.
    #[error("schema does not parse: {0}")]
    Parse(String),
    /// New readers cannot read old data.
    #[error("not backward compatible (new schema cannot read data written with the old): {0}")]
    Backward(String),
    /// Old readers cannot read new data.
    #[error("not forward compatible (old schema cannot read data written with the new): {0}")]
    Forward(String),
}

fn parse(json: &str) -> Result<Schema, CompatError> {
    Schema::parse_str(json).map_err(|e| CompatError::Parse(e.to_string()))
}

/// Checks that `new` can read data written with `old`.
pub fn backward(old: &str, new: &str) -> Result<(), CompatError> {
    SchemaCompatibility::can_read(&parse(old)?, &parse(new)?)
        .map_err(|e| CompatError::Backward(e.to_string()))
}

/// Checks that `old` can read data written with `new`.
pub fn forward(old: &str, new: &str) -> Result<(), CompatError> {
    SchemaCompatibility::can_read(&parse(new)?, &parse(old)?)
        .map_err(|e| CompatError::Forward(e.to_string()))
}

/// Checks backward and forward compatibility.
pub fn full(old: &str, new: &str) -> Result<(), CompatError> {
    backward(old, new)?;
    forward(old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AvroRecord, all};

    #[test]
    fn every_schema_is_fully_compatible_with_every_release() {
        for (name, set) in all() {
            let current = set.current();
            for released in &set.versions[1..] {
                full(released.json, current.json)
                    .unwrap_or_else(|e| panic!("{name}: current vs {}: {e}", released.version));
            }
        }
    }

    fn with_fields(extra: &str) -> String {
        format!(
            r#"{{"type":"record","name":"R","namespace":"t","fields":[
                {{"name":"a","type":"string"}}{extra}]}}"#
        )
    }

    #[test]
    fn adding_an_optional_field_is_fully_compatible() {
        let old = with_fields("");
        let new = with_fields(r#",{"name":"b","type":["null","string"],"default":null}"#);
        assert_eq!(full(&old, &new), Ok(()));
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward() {
        let old = with_fields("");
        let new = with_fields(r#",{"name":"b","type":"long"}"#);
        assert!(matches!(full(&old, &new), Err(CompatError::Backward(_))));
        assert_eq!(forward(&old, &new), Ok(()));
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward() {
        let old = with_fields(r#",{"name":"b","type":"long"}"#);
        let new = with_fields("");
        assert_eq!(backward(&old, &new), Ok(()));
        assert!(matches!(full(&old, &new), Err(CompatError::Forward(_))));
    }

    #[test]
    fn changing_a_type_breaks_compatibility() {
        let old = with_fields(r#",{"name":"b","type":"string"}"#);
        let new = with_fields(r#",{"name":"b","type":"int"}"#);
        assert!(full(&old, &new).is_err());
    }

    #[test]
    fn a_deliberately_incompatible_change_to_a_real_schema_fails() {
        let sale = crate::SaleEvent::schemas();
        let released = sale.versions.last().expect("a release").json;
        // Turn quantity from int into string: neither old nor new readers can cope.
        let broken = sale.current().json.replace(
            r#"{"name": "quantity", "type": "int""#,
            r#"{"name": "quantity", "type": "string""#,
        );
        assert_ne!(broken, sale.current().json, "the edit must apply");
        assert!(full(released, &broken).is_err());
        // Dropping an enum symbol breaks forward compatibility only if old data used it;
        // registries (and this check) refuse it as backward-incompatible.
        let fewer = sale.current().json.replace(r#", "PREORDER"]"#, "]");
        assert_ne!(fewer, sale.current().json, "the edit must apply");
        assert!(matches!(full(released, &fewer), Err(CompatError::Backward(_))));
    }
}
