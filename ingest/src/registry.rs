//! The store registry: `store_id → {grid_id, devices and their keys, active}`.
//!
//! Loaded from a file of JSON lines (one `StoreRecord` each) at start and kept current
//! from the compacted `stores.v1` topic (see `kafka::follow_stores`). Reads are lock-free
//! per shard (a `DashMap` of `Arc`s; no guard is held beyond the lookup).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use dashmap::DashMap;
use h3o::Resolution;
pub use nearfield_common::stores::grid_of;
use nearfield_common::stores::{StoreFileError, StoreSink};
use nearfield_schemas::StoreRecord;

use crate::auth::{AuthError, DeviceKey, MasterKey, RequestLine};

/// Longest store or device id, in bytes (they follow `nearfield_common::ids`).
pub const MAX_ID_BYTES: usize = 64;
/// One store as ingest needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub store_id: String,
    /// H3 cell (lower-case hex) at the configured resolution.
    pub grid_id: String,
    pub active: bool,
    /// The store's key version (device keys derive from it).
    key_version: i32,
    /// Each device's key under the current master key.
    devices: HashMap<String, DeviceKey>,
}

/// The master keys: the current one, and during a rotation the previous one, each with an
/// id a device may name in `X-Nearfield-Key-Id`. A device that names none is checked
/// against the current key, then the previous one.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    pub current: (String, MasterKey),
    pub previous: Option<(String, MasterKey)>,
}

/// Which master key a request was verified with (for the rotation's progress metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    Previous,
}

impl KeyUsed {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            KeyUsed::Current => "current",
            KeyUsed::Previous => "previous",
        }
    }
}

/// What a request says about who signed it (header values as sent) and what the
/// signature covers besides the body.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub store_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// `X-Nearfield-Key-Id`: which master key the device's key derives from (optional).
    pub key_id: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: &'a str,
}

/// A request whose headers name a known device and a fresh timestamp: the body is worth
/// reading. [`Claimed::verify`] checks the signature over it.
#[derive(Debug)]
pub struct Claimed {
    /// The keys the signature may be under, in the order tried.
    keys: Vec<(KeyUsed, DeviceKey)>,
    principal: Principal,
    active: bool,
    timestamp_ms: i64,
    signature: Vec<u8>,
}

impl Claimed {
    /// The decoded signature (for the replay cache) and its timestamp.
    pub fn signature(&self) -> (&[u8], i64) {
        (&self.signature, self.timestamp_ms)
    }

    /// Checks the signature over the request line and `body`; then whether the store may
    /// write.
    pub fn verify(self, req: &SignedRequest<'_>, body: &[u8]) -> Result<Principal, AuthError> {
        self.verify_key(req, body).map(|(p, _)| p)
    }

    /// [`Claimed::verify`], and which master key the device's key derives from.
    pub fn verify_key(
        self,
        req: &SignedRequest<'_>,
        body: &[u8],
    ) -> Result<(Principal, KeyUsed), AuthError> {
        let line = RequestLine {
            timestamp_ms: self.timestamp_ms,
            method: req.method,
            path: req.path,
            query: req.query,
            content_type: req.content_type,
        };
        let used = self
            .keys
            .iter()
            .find(|(_, key)| key.verify(&line, body, &self.signature))
            .map(|(used, _)| *used)
            .ok_or(AuthError::BadSignature)?;
        if !self.active {
            return Err(AuthError::InactiveStore);
        }
        Ok((self.principal, used))
    }
}

/// The device a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub store_id: String,
    pub device_id: String,
    pub grid_id: String,
}

/// A registry record or file is unusable; the message names the line and field.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("store {store_id}: {message}")]
    Record { store_id: String, message: String },
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    masters: MasterKeys,
    resolution: Resolution,
    stores: DashMap<String, Arc<Store>>,
}

impl Registry {
    /// An empty registry deriving device keys from `master`.
    pub fn new(master: MasterKey, resolution: Resolution) -> Self {
        Registry::with_keys(
            MasterKeys { current: ("1".into(), master), previous: None },
            resolution,
        )
    }

    /// An empty registry deriving device keys from the current master key, and during a
    /// rotation accepting keys derived from the previous one.
    pub fn with_keys(masters: MasterKeys, resolution: Resolution) -> Self {
        Registry { masters, resolution, stores: DashMap::new() }
    }

    /// Inserts or replaces a store.
    pub fn upsert(&self, rec: &StoreRecord) -> Result<(), RegistryError> {
        let grid_id = grid_of(rec.lat, rec.lon, self.resolution)
            .map_err(|message| RegistryError::Record { store_id: rec.store_id.clone(), message })?;
        let id_rule = |field: &str, id: &str| {
            nearfield_common::ids::check(id, MAX_ID_BYTES).map_err(|_| RegistryError::Record {
                store_id: rec.store_id.clone(),
                message: format!(
                    "{field}: {id:?} must be 1..={MAX_ID_BYTES} bytes of {}",
                    nearfield_common::ids::RULE
                ),
            })
        };
        id_rule("store_id", &rec.store_id)?;
        for d in &rec.device_ids {
            id_rule("device_ids", d)?;
        }
        let devices = rec
            .device_ids
            .iter()
            .map(|d| {
                (d.clone(), self.masters.current.1.device_key(&rec.store_id, d, rec.key_version))
            })
            .collect();
        let store = Store {
            store_id: rec.store_id.clone(),
            grid_id,
            active: rec.active,
            key_version: rec.key_version,
            devices,
        };
        self.stores.insert(rec.store_id.clone(), Arc::new(store));
        Ok(())
    }

    /// Removes a store (a tombstone on `stores.v1`).
    pub fn remove(&self, store_id: &str) {
        self.stores.remove(store_id);
    }

    /// The store, if registered.
    pub fn get(&self, store_id: &str) -> Option<Arc<Store>> {
        self.stores.get(store_id).map(|s| Arc::clone(s.value()))
    }

    /// Number of registered stores.
    pub fn len(&self) -> usize {
        self.stores.len()
    }

    /// Whether no store is registered.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Loads a JSON-lines file of `StoreRecord`s; blank lines and `#` comments are skipped.
    pub fn load_file(&self, path: &Path) -> Result<usize, StoreFileError> {
        nearfield_common::stores::load_file(path, self)
    }

    /// Checks a request's auth headers (see [`crate::auth`]) at `now_ms`, allowing
    /// `window_ms` between the signing time and the server clock, before its body is
    /// read.
    pub fn claim(
        &self,
        req: &SignedRequest<'_>,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Claimed, AuthError> {
        use crate::auth::{HEADER_DEVICE, HEADER_SIGNATURE, HEADER_STORE, HEADER_TIMESTAMP};
        let store_id = req.store_id.ok_or(AuthError::MissingHeader(HEADER_STORE))?;
        let device_id = req.device_id.ok_or(AuthError::MissingHeader(HEADER_DEVICE))?;
        let timestamp = req.timestamp.ok_or(AuthError::MissingHeader(HEADER_TIMESTAMP))?;
        let signature = req.signature.ok_or(AuthError::MissingHeader(HEADER_SIGNATURE))?;
        let ts: i64 =
            timestamp.trim().parse().map_err(|_| AuthError::BadHeader(HEADER_TIMESTAMP))?;
        let signature = hex::decode(signature.trim())
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or(AuthError::BadHeader(HEADER_SIGNATURE))?;
        let skew = now_ms.saturating_sub(ts).saturating_abs();
        if skew > window_ms {
            return Err(AuthError::Stale { skew_ms: skew, window_ms });
        }
        let store = self.get(store_id).ok_or(AuthError::UnknownDevice)?;
        let key = store.devices.get(device_id).ok_or(AuthError::UnknownDevice)?;
        let previous = || {
            self.masters.previous.as_ref().map(|(_, m)| {
                (KeyUsed::Previous, m.device_key(&store.store_id, device_id, store.key_version))
            })
        };
        let current = (KeyUsed::Current, key.clone());
        // A named key is the only one tried; an unknown id gets the unknown-device answer.
        let keys = match req.key_id.map(str::trim) {
            None => std::iter::once(current).chain(previous()).collect(),
            Some(id) if id == self.masters.current.0 => vec![current],
            Some(id) if self.masters.previous.as_ref().is_some_and(|(p, _)| p == id) => {
                previous().into_iter().collect()
            }
            Some(_) => return Err(AuthError::UnknownDevice),
        };
        Ok(Claimed {
            keys,
            principal: Principal {
                store_id: store.store_id.clone(),
                device_id: device_id.to_string(),
                grid_id: store.grid_id.clone(),
            },
            active: store.active,
            timestamp_ms: ts,
            signature,
        })
    }

    /// [`Registry::claim`] then [`Claimed::verify`] (a request whose body is at hand).
    pub fn authenticate(
        &self,
        req: &SignedRequest<'_>,
        body: &[u8],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Principal, AuthError> {
        self.claim(req, now_ms, window_ms)?.verify(req, body)
    }
}

impl StoreSink for Registry {
    fn upsert(&self, rec: &StoreRecord) -> Result<(), String> {
        Registry::upsert(self, rec).map_err(|e| e.to_string())
    }

    fn remove(&self, store_id: &str) {
        Registry::remove(self, store_id);
    }

    fn changed(&self) {
        crate::internal_events::RegistrySize { stores: self.len() }.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(
        store_id: Option<&'a str>,
        device_id: Option<&'a str>,
        timestamp: Option<&'a str>,
        signature: Option<&'a str>,
        path: &'a str,
    ) -> SignedRequest<'a> {
        SignedRequest {
            store_id,
            device_id,
            timestamp,
            signature,
            key_id: None,
            method: "POST",
            path,
            query: "",
            content_type: "application/json",
        }
    }

    fn sign(key: &DeviceKey, ts: i64, path: &str, body: &[u8]) -> String {
        let line = RequestLine {
            timestamp_ms: ts,
            method: "POST",
            path,
            query: "",
            content_type: "application/json",
        };
        key.sign(&line, body)
    }

    fn shop() -> StoreRecord {
        StoreRecord {
            store_id: "s1".into(),
            name: "Shop".into(),
            lat: 31.2304,
            lon: 121.4737,
            device_ids: vec!["pos-1".into()],
            key_version: 1,
            active: true,
            updated_at: 0,
        }
    }

    fn registry() -> Registry {
        let r = Registry::new(
            MasterKey::from_hex("00112233445566778899aabbccddeeff").expect("key"),
            Resolution::Eight,
        );
        r.upsert(&shop()).expect("valid store");
        r
    }

    #[test]
    fn grid_is_the_h3_cell_at_the_resolution() {
        let r = registry();
        let s = r.get("s1").expect("registered");
        assert_eq!(s.grid_id.len(), 15);
        let cell: h3o::CellIndex = s.grid_id.parse().expect("valid cell");
        assert_eq!(cell.resolution(), Resolution::Eight);
        assert!(grid_of(91.0, 0.0, Resolution::Eight).is_err());
        assert!(grid_of(0.0, f64::NAN, Resolution::Eight).is_err());
    }

    #[test]
    fn authenticates_signed_requests_only() {
        let r = registry();
        let key = MasterKey::from_hex("00112233445566778899aabbccddeeff")
            .expect("key")
            .device_key("s1", "pos-1", 1);
        let sig = sign(&key, 1_000, "/v1/events", b"x");
        let auth = |store, device, ts: &str, sig: &str, now| {
            r.authenticate(
                &signed(Some(store), Some(device), Some(ts), Some(sig), "/v1/events"),
                b"x",
                now,
                300_000,
            )
        };
        let p = auth("s1", "pos-1", "1000", &sig, 2_000).expect("valid");
        assert_eq!(p.store_id, "s1");
        assert_eq!(auth("s1", "pos-2", "1000", &sig, 2_000), Err(AuthError::UnknownDevice));
        assert_eq!(auth("s2", "pos-1", "1000", &sig, 2_000), Err(AuthError::UnknownDevice));
        assert_eq!(auth("s1", "pos-1", "1001", &sig, 2_000), Err(AuthError::BadSignature));
        assert_eq!(
            auth("s1", "pos-1", "abc", &sig, 2_000),
            Err(AuthError::BadHeader("x-nearfield-timestamp"))
        );
        assert!(matches!(
            auth("s1", "pos-1", "1000", &sig, 1_000_000),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            r.authenticate(&signed(None, Some("pos-1"), Some("1"), Some("s"), "/"), b"", 0, 1),
            Err(AuthError::MissingHeader("x-nearfield-store"))
        );
        assert_eq!(
            auth("s1", "pos-1", "1000", "beef", 2_000),
            Err(AuthError::BadHeader("x-nearfield-signature")),
            "a signature is 32 bytes of hex"
        );
        // Headers are judged before the body: an unknown device never gets that far.
        let unknown = signed(Some("s9"), Some("pos-1"), Some("1000"), Some(&sig), "/v1/events");
        assert_eq!(r.claim(&unknown, 2_000, 300_000).map(|_| ()), Err(AuthError::UnknownDevice));
    }

    #[test]
    fn inactive_and_removed_stores_cannot_write() {
        let r = registry();
        let mut rec = StoreRecord { active: false, ..shop() };
        r.upsert(&rec).expect("valid");
        let key = MasterKey::from_hex("00112233445566778899aabbccddeeff")
            .expect("key")
            .device_key("s1", "pos-1", 1);
        let sig = sign(&key, 1, "/p", b"");
        let res = r.authenticate(
            &signed(Some("s1"), Some("pos-1"), Some("1"), Some(&sig), "/p"),
            b"",
            1,
            10,
        );
        assert_eq!(res, Err(AuthError::InactiveStore));
        rec.active = true;
        rec.key_version = 2; // rotation: the old key stops working
        r.upsert(&rec).expect("valid");
        let res = r.authenticate(
            &signed(Some("s1"), Some("pos-1"), Some("1"), Some(&sig), "/p"),
            b"",
            1,
            10,
        );
        assert_eq!(res, Err(AuthError::BadSignature));
        r.remove("s1");
        assert!(r.get("s1").is_none());
    }

    #[test]
    fn during_a_rotation_devices_on_either_master_key_authenticate() {
        let old = MasterKey::from_hex("00112233445566778899aabbccddeeff").expect("key");
        let new = MasterKey::from_hex("ffeeddccbbaa99887766554433221100").expect("key");
        let keys = |previous: bool| MasterKeys {
            current: ("2".into(), new.clone()),
            previous: previous.then(|| ("1".into(), old.clone())),
        };
        let on_old = sign(&old.device_key("s1", "pos-1", 1), 1_000, "/p", b"x");
        let on_new = sign(&new.device_key("s1", "pos-1", 1), 1_000, "/p", b"x");
        let r = Registry::with_keys(keys(true), Resolution::Eight);
        r.upsert(&shop()).expect("valid");
        let auth = |r: &Registry, sig: &str, key_id: Option<&str>| {
            let req = SignedRequest {
                key_id,
                ..signed(Some("s1"), Some("pos-1"), Some("1000"), Some(sig), "/p")
            };
            r.claim(&req, 1_000, 10_000)?.verify_key(&req, b"x").map(|(_, used)| used)
        };
        // No id: the current key, then the previous one.
        assert_eq!(auth(&r, &on_new, None), Ok(KeyUsed::Current));
        assert_eq!(auth(&r, &on_old, None), Ok(KeyUsed::Previous));
        // A named key is the only one tried.
        assert_eq!(auth(&r, &on_old, Some("1")), Ok(KeyUsed::Previous));
        assert_eq!(auth(&r, &on_old, Some("2")), Err(AuthError::BadSignature));
        assert_eq!(auth(&r, &on_new, Some("2")), Ok(KeyUsed::Current));
        assert_eq!(auth(&r, &on_new, Some("9")), Err(AuthError::UnknownDevice));
        // Rotation done: the previous key is gone, and so are the devices still on it.
        let done = Registry::with_keys(keys(false), Resolution::Eight);
        done.upsert(&shop()).expect("valid");
        assert_eq!(auth(&done, &on_new, None), Ok(KeyUsed::Current));
        assert_eq!(auth(&done, &on_old, None), Err(AuthError::BadSignature));
        assert_eq!(auth(&done, &on_old, Some("1")), Err(AuthError::UnknownDevice));
    }
}
