//! Device authentication: per-device keys and signed requests.
//!
//! **Keys.** Every device has its own 32-byte key, derived from the deployment's master
//! key so no secret ever travels through Kafka or the registry file:
//! `key = HMAC-SHA256(master, "nearfield/device-key/v{key_version}\0{store_id}\0{device_id}")`.
//! The key is provisioned onto the device; bumping a store's `key_version` rotates all its
//! devices' keys.
//!
//! **Requests.** A device sends four headers:
//! `X-Nearfield-Store`, `X-Nearfield-Device`, `X-Nearfield-Timestamp` (UTC milliseconds)
//! and `X-Nearfield-Signature`, the lower-case hex of
//! `HMAC-SHA256(key, "{timestamp}\n{METHOD}\n{path}\n{query}\n{content-type}\n" || body)`
//! (`query` without the `?`, empty when there is none; `content-type` as sent, empty when
//! absent). Ingest recomputes it and compares in constant time. The headers are checked
//! before the body is read (a request naming no known device, or signed outside the replay
//! window, is refused unread). A timestamp further than the replay window from the ingest
//! clock is refused, and within the window each signature is accepted once (a replay cache,
//! `crate::replay`), so a captured request cannot be sent again. An unknown store or
//! device and a signature that does not match get the same answer (`auth.invalid`), so the
//! API does not tell which stores exist. Keys and signatures are never logged.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Header naming the store.
pub const HEADER_STORE: &str = "x-nearfield-store";
/// Header naming the device.
pub const HEADER_DEVICE: &str = "x-nearfield-device";
/// Header with the signing time, UTC milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-nearfield-timestamp";
/// Header with the hex HMAC-SHA256 signature.
pub const HEADER_SIGNATURE: &str = "x-nearfield-signature";
/// Optional header naming the master key the device's key derives from (rotation).
pub const HEADER_KEY_ID: &str = "x-nearfield-key-id";

/// The public demo master key of `deploy/examples/nearfield.toml` (hex of
/// `nearfield-demo-only-master-key`): anyone can read it, so ingest refuses it on any
/// listen address but loopback.
pub const DEMO_MASTER_KEY_HEX: &str =
    "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579";

/// The deployment's master key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct MasterKey(Vec<u8>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The master key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("ingest.master_key: not hex")]
    NotHex,
    #[error("ingest.master_key: must be at least 16 bytes (32 hex digits), got {0} bytes")]
    TooShort(usize),
}

impl MasterKey {
    /// Whether this is the public demo key ([`DEMO_MASTER_KEY_HEX`]).
    pub fn is_demo(&self) -> bool {
        hex::decode(DEMO_MASTER_KEY_HEX).is_ok_and(|demo| bool::from(demo.ct_eq(&self.0)))
    }

    /// From lower- or upper-case hex (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?;
        if bytes.len() < 16 {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(MasterKey(bytes))
    }

    /// The key of one device.
    pub fn device_key(&self, store_id: &str, device_id: &str, key_version: i32) -> DeviceKey {
        let mut mac = mac(&self.0);
        mac.update(
            format!("nearfield/device-key/v{key_version}\0{store_id}\0{device_id}").as_bytes(),
        );
        DeviceKey(mac.finalize().into_bytes().into())
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// One device's 32-byte key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; 32]);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

impl DeviceKey {
    /// Hex form, as provisioned onto a device.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From the hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(DeviceKey(bytes.try_into().ok()?))
    }

    /// The signature of a request (lower-case hex).
    pub fn sign(&self, line: &RequestLine<'_>, body: &[u8]) -> String {
        hex::encode(self.mac(line, body))
    }

    fn mac(&self, line: &RequestLine<'_>, body: &[u8]) -> [u8; 32] {
        let RequestLine { timestamp_ms, method, path, query, content_type } = line;
        let mut mac = mac(&self.0);
        mac.update(
            format!("{timestamp_ms}\n{method}\n{path}\n{query}\n{content_type}\n").as_bytes(),
        );
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Checks `signature` (the decoded header) in constant time.
    pub fn verify(&self, line: &RequestLine<'_>, body: &[u8], signature: &[u8]) -> bool {
        let expected = self.mac(line, body);
        signature.len() == expected.len() && bool::from(signature.ct_eq(&expected))
    }
}

/// What a signature covers besides the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub timestamp_ms: i64,
    /// Upper-case method, e.g. `POST`.
    pub method: &'a str,
    pub path: &'a str,
    /// The query string without `?` (empty when there is none).
    pub query: &'a str,
    /// The Content-Type header as sent (empty when absent).
    pub content_type: &'a str,
}

/// Why a request is not authenticated (401) or not allowed (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid")]
    BadHeader(&'static str),
    #[error("unknown store or device")]
    UnknownDevice,
    #[error("store is not active")]
    InactiveStore,
    #[error("timestamp is {skew_ms} ms from the server clock; the replay window is {window_ms} ms")]
    Stale { skew_ms: i64, window_ms: i64 },
    #[error("signature does not match")]
    BadSignature,
    #[error("this signature was already used; sign every request anew")]
    Replayed,
}

impl AuthError {
    /// Metric label and machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingHeader(_) => "auth.missing_header",
            AuthError::BadHeader(_) => "auth.bad_header",
            AuthError::UnknownDevice => "auth.unknown_device",
            AuthError::InactiveStore => "auth.inactive_store",
            AuthError::Stale { .. } => "auth.stale_timestamp",
            AuthError::BadSignature => "auth.bad_signature",
            AuthError::Replayed => "auth.replayed",
        }
    }

    /// The rule and message a client sees: an unknown store or device and a signature
    /// that does not match answer alike, so the API does not tell which stores exist
    /// ([`AuthError::reason`] keeps them apart in metrics and logs).
    pub fn public(&self) -> (&'static str, String) {
        match self {
            AuthError::UnknownDevice | AuthError::BadSignature => {
                ("auth.invalid", "unknown store or device, or the signature does not match".into())
            }
            other => (other.reason(), other.to_string()),
        }
    }

    /// 403 for a known device that may not write; 401 otherwise.
    pub fn forbidden(&self) -> bool {
        matches!(self, AuthError::InactiveStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_hex("000102030405060708090a0b0c0d0e0f").expect("valid")
    }

    #[test]
    fn device_keys_differ_by_store_device_and_version() {
        let m = master();
        let a = m.device_key("s1", "d1", 1);
        assert_eq!(a, m.device_key("s1", "d1", 1));
        assert_ne!(a, m.device_key("s1", "d2", 1));
        assert_ne!(a, m.device_key("s2", "d1", 1));
        assert_ne!(a, m.device_key("s1", "d1", 2));
        // The separator keeps ("s1","d1x") and ("s1d","1x") apart.
        assert_ne!(m.device_key("ab", "c", 1), m.device_key("a", "bc", 1));
    }

    #[test]
    fn signatures_verify_and_any_change_breaks_them() {
        let k = master().device_key("s1", "d1", 1);
        let line = RequestLine {
            timestamp_ms: 1000,
            method: "POST",
            path: "/v1/events",
            query: "",
            content_type: "application/json",
        };
        let sig = hex::decode(k.sign(&line, b"{}")).expect("hex");
        assert!(k.verify(&line, b"{}", &sig));
        // Every part of the request line is covered, the query and content type too.
        for changed in [
            RequestLine { timestamp_ms: 1001, ..line },
            RequestLine { method: "PUT", ..line },
            RequestLine { path: "/v1/events:batch", ..line },
            RequestLine { query: "dry_run=1", ..line },
            RequestLine { content_type: "application/x-ndjson", ..line },
        ] {
            assert!(!k.verify(&changed, b"{}", &sig), "{changed:?}");
        }
        assert!(!k.verify(&line, b"{ }", &sig));
        assert!(!k.verify(&line, b"{}", &sig[..10]));
        let other = master().device_key("s1", "d2", 1);
        assert!(!other.verify(&line, b"{}", &sig));
    }

    #[test]
    fn unknown_devices_and_bad_signatures_answer_alike() {
        assert_eq!(AuthError::UnknownDevice.public(), AuthError::BadSignature.public());
        assert_ne!(AuthError::UnknownDevice.reason(), AuthError::BadSignature.reason());
        assert_eq!(AuthError::Replayed.public().0, "auth.replayed");
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let k = master().device_key("s1", "d1", 1);
        assert_eq!(format!("{k:?}"), "DeviceKey(<redacted>)");
        assert_eq!(format!("{:?}", master()), "MasterKey(<redacted>)");
        assert_eq!(DeviceKey::from_hex(&k.to_hex()), Some(k));
    }

    #[test]
    fn short_or_malformed_master_keys_are_refused() {
        assert_eq!(MasterKey::from_hex("00ff").expect_err("short"), KeyError::TooShort(2));
        assert_eq!(MasterKey::from_hex("xyz").expect_err("hex"), KeyError::NotHex);
    }
}
