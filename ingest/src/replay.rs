//! The replay cache: each request signature is accepted once within the replay window.
//!
//! A signature older than the window is refused by its timestamp anyway, so an entry
//! lives only until `timestamp + window`. The cache is bounded (`limits.replay_cache_entries`):
//! when full after pruning, new requests are answered 503 + Retry-After (fail closed — a
//! replay is never let through because memory ran out), and a counter says so. The cache
//! is per ingest instance: a replay sent to another instance within the window is caught
//! by the events' own idempotency (`event_id`, counted once downstream), not here.

use dashmap::DashMap;

/// Why a signature was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Already used within the window.
    Replayed,
    /// The cache is full of live entries.
    Full,
}

/// Signatures seen within the replay window (see the module docs).
#[derive(Debug)]
pub struct ReplayCache {
    seen: DashMap<[u8; 16], i64>,
    cap: usize,
    window_ms: i64,
}

impl ReplayCache {
    /// A cache of at most `cap` signatures for a `window_ms` replay window.
    pub fn new(cap: usize, window_ms: i64) -> Self {
        ReplayCache { seen: DashMap::new(), cap, window_ms }
    }

    /// Takes the signature of a request signed at `timestamp_ms`, once.
    pub fn take(&self, signature: &[u8], timestamp_ms: i64, now_ms: i64) -> Result<(), Refused> {
        let mut key = [0u8; 16];
        let n = signature.len().min(16);
        key[..n].copy_from_slice(&signature[..n]);
        if self.seen.len() >= self.cap {
            self.prune(now_ms);
            if self.seen.len() >= self.cap {
                return Err(Refused::Full);
            }
        }
        let expires = timestamp_ms.saturating_add(self.window_ms);
        match self.seen.entry(key) {
            dashmap::Entry::Occupied(_) => Err(Refused::Replayed),
            dashmap::Entry::Vacant(v) => {
                v.insert(expires);
                Ok(())
            }
        }
    }

    /// Forgets signatures whose timestamps are out of the window by now.
    pub fn prune(&self, now_ms: i64) {
        self.seen.retain(|_, expires| *expires >= now_ms);
    }

    /// Signatures held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_taken_once_within_the_window() {
        let c = ReplayCache::new(10, 1_000);
        let sig = [7u8; 32];
        assert_eq!(c.take(&sig, 5_000, 5_100), Ok(()));
        assert_eq!(c.take(&sig, 5_000, 5_200), Err(Refused::Replayed));
        assert_eq!(c.take(&[8u8; 32], 5_000, 5_200), Ok(()), "another signature");
        c.prune(6_001);
        assert!(c.is_empty(), "out of the window: its timestamp refuses it anyway");
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let c = ReplayCache::new(2, 1_000);
        c.take(&[1u8; 32], 0, 0).expect("first");
        c.take(&[2u8; 32], 0, 0).expect("second");
        assert_eq!(c.take(&[3u8; 32], 0, 500), Err(Refused::Full), "both still live");
        assert_eq!(c.take(&[3u8; 32], 0, 1_001), Ok(()), "pruned: room again");
        assert_eq!(c.len(), 1);
    }
}
