//! Strict JSON for device input: an object that names the same key twice is refused.
//!
//! JSON leaves duplicate keys to the reader (RFC 8259 §4: "the names within an object
//! SHOULD be unique"); parsers differ on which value wins. The request signature covers
//! the bytes, so a body with `"quantity": 1, "quantity": 900` could mean one thing to
//! ingest and another to a reader of the dead-letter topic. Ingest refuses it with
//! `400 body.duplicate_key` naming the key.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The first key that appears twice in one object, at any depth.
#[derive(Debug, Default, PartialEq, Eq)]
struct FirstDuplicate(Option<String>);

impl<'de> Deserialize<'de> for FirstDuplicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Walk)
    }
}

struct Walk;

macro_rules! leaf {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E>(self, _: $t) -> Result<FirstDuplicate, E> {
            Ok(FirstDuplicate(None))
        })*
    };
}

impl<'de> Visitor<'de> for Walk {
    type Value = FirstDuplicate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E>(self) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstDuplicate, A::Error> {
        let mut first = None;
        while let Some(FirstDuplicate(d)) = seq.next_element()? {
            first = first.or(d);
        }
        Ok(FirstDuplicate(first))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FirstDuplicate, A::Error> {
        let mut seen = HashSet::new();
        let mut first = None;
        while let Some(key) = map.next_key::<String>()? {
            let FirstDuplicate(inner) = map.next_value()?;
            if first.is_none() {
                first = if seen.insert(key.clone()) { inner } else { Some(key) };
            }
        }
        Ok(FirstDuplicate(first))
    }
}

/// The first key named twice in one object of `raw` (valid JSON), if any.
pub fn duplicate_key(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<FirstDuplicate>(raw).ok().and_then(|d| d.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_named_twice_is_found_at_any_depth() {
        assert_eq!(duplicate_key(br#"{"a":1,"b":2,"a":3}"#), Some("a".into()));
        assert_eq!(duplicate_key(br#"[{"x":1},{"y":{"z":1,"z":2}}]"#), Some("z".into()));
        // Escapes are compared decoded: "\u0061" is "a".
        assert_eq!(duplicate_key(br#"{"a":1,"\u0061":2}"#), Some("a".into()));
    }

    #[test]
    fn distinct_keys_and_scalars_pass() {
        for ok in [&br#"{"a":1,"b":{"a":2}}"#[..], b"[1,2,3]", b"null", b"\"s\"", b"{}"] {
            assert_eq!(duplicate_key(ok), None, "{}", String::from_utf8_lossy(ok));
        }
    }
}
