//! The identifier rule devices and operators are held to (event ids, SKUs, store and
//! device ids): 1 to N **bytes** of ASCII letters, digits and `.` `_` `:` `-`.
//!
//! Identifiers become Kafka keys, metric-free log fields, live-page text and the keys a
//! factory upserts on, so they are codes, not names: no spaces, no control, format (bidi
//! overrides, zero-width) or non-ASCII characters that render differently from what they
//! are, and nothing that needs Unicode normalisation to compare. Names (a product's, a
//! shop's) live in the catalog and the registry, not here.

/// The characters allowed besides ASCII letters and digits.
pub const PUNCTUATION: &[u8] = b"._:-";

/// What the rule says, for error messages and docs.
pub const RULE: &str = "ASCII letters, digits and . _ : -";

/// Why a string is not an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Empty, or longer than the maximum (in bytes).
    Length { bytes: usize, max: usize },
    /// A character outside [`RULE`], at this byte offset.
    Charset { at: usize },
}

/// Checks `s` against the rule with at most `max_bytes` bytes.
pub fn check(s: &str, max_bytes: usize) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max_bytes {
        return Err(IdError::Length { bytes: s.len(), max: max_bytes });
    }
    match s.bytes().position(|b| !(b.is_ascii_alphanumeric() || PUNCTUATION.contains(&b))) {
        Some(at) => Err(IdError::Charset { at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pass_and_lookalikes_do_not() {
        for ok in ["SKU-00001", "e.1:2_3", "a", "6901234567892"] {
            assert_eq!(check(ok, 64), Ok(()), "{ok}");
        }
        assert_eq!(check("", 64), Err(IdError::Length { bytes: 0, max: 64 }));
        assert_eq!(check(&"a".repeat(65), 64), Err(IdError::Length { bytes: 65, max: 64 }));
        // Bidi override, zero-width space, a 4-byte character, a space, a control char.
        for (bad, at) in
            [("SKU\u{202e}1", 3), ("S\u{200b}KU", 1), ("SKU-🥛", 4), ("S KU", 1), ("S\tK", 1)]
        {
            assert_eq!(check(bad, 64), Err(IdError::Charset { at }), "{bad:?}");
        }
        // Length is in bytes: 20 three-byte characters are 60 bytes, not 20.
        assert!(matches!(check(&"牛".repeat(30), 64), Err(IdError::Length { bytes: 90, .. })));
    }
}
