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
//! `HMAC-SHA256(key, "{timestamp}\n{METHOD}\n{path}\n" || body)`.
//! Ingest recomputes it and compares in constant time. A timestamp further than the
//! replay window from the ingest clock is refused, so a captured request cannot be
//! replayed later; within the window a replay can only resend events whose `event_id`s
//! are already sent; counting each event_id once is the aggregator's job (SPEC §6). Keys and signatures are never
//! logged.

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
    pub fn sign(&self, timestamp_ms: i64, method: &str, path: &str, body: &[u8]) -> String {
        hex::encode(self.mac(timestamp_ms, method, path, body))
    }

    fn mac(&self, timestamp_ms: i64, method: &str, path: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = mac(&self.0);
        mac.update(format!("{timestamp_ms}\n{method}\n{path}\n").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Checks `signature_hex` in constant time.
    pub fn verify(
        &self,
        timestamp_ms: i64,
        method: &str,
        path: &str,
        body: &[u8],
        signature_hex: &str,
    ) -> bool {
        let Ok(given) = hex::decode(signature_hex.trim()) else { return false };
        let expected = self.mac(timestamp_ms, method, path, body);
        given.len() == expected.len() && bool::from(given.as_slice().ct_eq(&expected))
    }
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
        let sig = k.sign(1000, "POST", "/v1/events", b"{}");
        assert!(k.verify(1000, "POST", "/v1/events", b"{}", &sig));
        assert!(!k.verify(1001, "POST", "/v1/events", b"{}", &sig));
        assert!(!k.verify(1000, "PUT", "/v1/events", b"{}", &sig));
        assert!(!k.verify(1000, "POST", "/v1/events:batch", b"{}", &sig));
        assert!(!k.verify(1000, "POST", "/v1/events", b"{ }", &sig));
        assert!(!k.verify(1000, "POST", "/v1/events", b"{}", &sig[..10]));
        assert!(!k.verify(1000, "POST", "/v1/events", b"{}", "zz"));
        let other = master().device_key("s1", "d2", 1);
        assert!(!other.verify(1000, "POST", "/v1/events", b"{}", &sig));
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
