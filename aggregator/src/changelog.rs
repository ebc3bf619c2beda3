//! The changelog: how a partition's state is written to its compacted, co-partitioned
//! changelog topic and read back on restore.
//!
//! Keys (binary, big-endian so a key's bytes identify it exactly):
//! - `W` size start key-id(u128): counters of one grid × SKU × window;
//! - `G` size start grid-id(u64): stores that reported in a grid during a window;
//! - `D` seq(u64): a chunk of de-duplicated event ids (one per flush);
//! - `M`: the partition's watermark, next chunk number and heartbeat offset.
//!
//! Values start with a format version byte. A tombstone (no value) deletes the key.
//! Decoding is bounded and never panics: the bytes are ours, but a broken or foreign
//! record must end in an error that names it, not a crash.

use crate::state::Counters;
use crate::window::Millis;

const VERSION: u8 = 1;
const MAX_ITEMS: usize = 10_000_000;

/// A changelog record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("changelog key is malformed ({0} bytes)")]
    Key(usize),
    #[error("changelog value is truncated")]
    Truncated,
    #[error("changelog value has unknown format version {0}")]
    Version(u8),
    #[error("changelog value has unknown record tag {0}")]
    Tag(u8),
    #[error("changelog value has an invalid string")]
    Utf8,
    #[error("changelog value has {0} items, more than the limit")]
    TooMany(usize),
    #[error("changelog value does not match its key")]
    Mismatch,
}

/// A parsed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Window { size: Millis, start: Millis, key: u128 },
    Grid { size: Millis, start: Millis, grid: u64 },
    Dedupe { seq: u64 },
    Meta,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Window {
        grid: String,
        sku: String,
        size: Millis,
        start: Millis,
        counters: Counters,
        revision: i32,
    },
    GridWindow {
        stores: Vec<u64>,
    },
    Dedupe {
        ids: Vec<(u128, Millis)>,
    },
    Meta {
        max_event_time: Option<Millis>,
        next_chunk: u64,
        heartbeat_offset: i64,
    },
}

/// Key of a window record.
pub fn window_key(size: Millis, start: Millis, key: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'W');
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&key.to_be_bytes());
    k
}

/// Key of a grid-window record.
pub fn grid_key(size: Millis, start: Millis, grid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'G');
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&grid.to_be_bytes());
    k
}

/// Key of a de-duplication chunk.
pub fn dedupe_key(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'D');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key of the partition's meta record.
pub fn meta_key() -> Vec<u8> {
    vec![b'M']
}

fn be8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Parses a key.
pub fn parse_key(k: &[u8]) -> Result<Key, Error> {
    match (k.first(), k.len()) {
        (Some(b'W'), 33) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[17..33]);
            Ok(Key::Window {
                size: i64::from_be_bytes(be8(&k[1..])),
                start: i64::from_be_bytes(be8(&k[9..])),
                key: u128::from_be_bytes(id),
            })
        }
        (Some(b'G'), 25) => Ok(Key::Grid {
            size: i64::from_be_bytes(be8(&k[1..])),
            start: i64::from_be_bytes(be8(&k[9..])),
            grid: u64::from_be_bytes(be8(&k[17..])),
        }),
        (Some(b'D'), 9) => Ok(Key::Dedupe { seq: u64::from_be_bytes(be8(&k[1..])) }),
        (Some(b'M'), 1) => Ok(Key::Meta),
        _ => Err(Error::Key(k.len())),
    }
}

struct W(Vec<u8>);

impl W {
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, Error> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, Error> {
        Ok(self.u64()? as i64)
    }
    fn u128(&mut self) -> Result<u128, Error> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(a))
    }
    /// A count of items each at least `item_bytes` long, checked against what is left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, Error> {
        let n = usize::try_from(self.u64()?).map_err(|_| Error::TooMany(usize::MAX))?;
        if n > MAX_ITEMS {
            return Err(Error::TooMany(n));
        }
        if n.saturating_mul(item_bytes) > self.0.len() {
            return Err(Error::Truncated);
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, Error> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Utf8)
    }
    fn u64s(&mut self) -> Result<Vec<u64>, Error> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
}

/// Encodes a value.
pub fn encode(r: &Record) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64));
    w.0.push(VERSION);
    match r {
        Record::Window { grid, sku, size, start, counters: c, revision } => {
            w.0.push(b'W');
            w.str(grid);
            w.str(sku);
            w.i64(*size);
            w.i64(*start);
            for v in [c.units_sold, c.units_returned, c.preorder_units, c.revenue_minor] {
                w.i64(v);
            }
            w.i64(c.event_count);
            w.i64(c.last_event_at);
            w.i64(i64::from(*revision));
            w.u64(c.stores.len() as u64);
            c.stores.iter().for_each(|s| w.u64(*s));
        }
        Record::GridWindow { stores } => {
            w.0.push(b'G');
            w.u64(stores.len() as u64);
            stores.iter().for_each(|s| w.u64(*s));
        }
        Record::Dedupe { ids } => {
            w.0.push(b'D');
            w.u64(ids.len() as u64);
            for (id, end) in ids {
                w.0.extend_from_slice(&id.to_le_bytes());
                w.i64(*end);
            }
        }
        Record::Meta { max_event_time, next_chunk, heartbeat_offset } => {
            w.0.push(b'M');
            w.i64(max_event_time.unwrap_or(i64::MIN));
            w.u64(*next_chunk);
            w.i64(*heartbeat_offset);
        }
    }
    w.0
}

/// Decodes a value.
pub fn decode(bytes: &[u8]) -> Result<Record, Error> {
    let mut r = R(bytes);
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::Version(v));
    }
    let rec = match r.u8()? {
        b'W' => {
            let grid = r.str()?;
            let sku = r.str()?;
            let size = r.i64()?;
            let start = r.i64()?;
            let mut c = Counters {
                units_sold: r.i64()?,
                units_returned: r.i64()?,
                preorder_units: r.i64()?,
                revenue_minor: r.i64()?,
                event_count: r.i64()?,
                last_event_at: r.i64()?,
                stores: Vec::new(),
            };
            let revision = i32::try_from(r.i64()?).map_err(|_| Error::Mismatch)?;
            c.stores = r.u64s()?;
            Record::Window { grid, sku, size, start, counters: c, revision }
        }
        b'G' => Record::GridWindow { stores: r.u64s()? },
        b'D' => {
            let n = r.count(24)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push((r.u128()?, r.i64()?));
            }
            Record::Dedupe { ids }
        }
        b'M' => {
            let m = r.i64()?;
            Record::Meta {
                max_event_time: (m != i64::MIN).then_some(m),
                next_chunk: r.u64()?,
                heartbeat_offset: r.i64()?,
            }
        }
        t => return Err(Error::Tag(t)),
    };
    if !r.0.is_empty() {
        return Err(Error::Mismatch);
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn values_round_trip(grid in "[0-9a-f]{15}", sku in "[A-Z0-9-]{1,20}", size in 1i64..1_000_000_000, start in any::<i64>(),
                             nums in proptest::array::uniform6(any::<i64>()), rev in -1i32..1000, stores in proptest::collection::vec(any::<u64>(), 0..50),
                             ids in proptest::collection::vec((any::<u128>(), any::<i64>()), 0..50), mt in proptest::option::of(-1_000_000i64..i64::MAX), seq in any::<u64>(), hb in any::<i64>()) {
            let counters = Counters { units_sold: nums[0], units_returned: nums[1], preorder_units: nums[2], revenue_minor: nums[3], event_count: nums[4], last_event_at: nums[5], stores: stores.clone() };
            for rec in [
                Record::Window { grid: grid.clone(), sku: sku.clone(), size, start, counters, revision: rev },
                Record::GridWindow { stores },
                Record::Dedupe { ids },
                Record::Meta { max_event_time: mt, next_chunk: seq, heartbeat_offset: hb },
            ] {
                prop_assert_eq!(decode(&encode(&rec)).expect("decodes"), rec);
            }
        }

        #[test]
        fn keys_round_trip(size in any::<i64>(), start in any::<i64>(), key in any::<u128>(), grid in any::<u64>(), seq in any::<u64>()) {
            prop_assert_eq!(parse_key(&window_key(size, start, key)), Ok(Key::Window { size, start, key }));
            prop_assert_eq!(parse_key(&grid_key(size, start, grid)), Ok(Key::Grid { size, start, grid }));
            prop_assert_eq!(parse_key(&dedupe_key(seq)), Ok(Key::Dedupe { seq }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = parse_key(&bytes);
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut v = vec![VERSION, b'G'];
        v.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(decode(&v), Err(Error::TooMany(_))));
        let mut v = vec![VERSION, b'G'];
        v.extend_from_slice(&1000u64.to_le_bytes());
        assert_eq!(decode(&v), Err(Error::Truncated));
        assert_eq!(decode(&[9, b'M']), Err(Error::Version(9)));
        assert_eq!(parse_key(b"Wshort"), Err(Error::Key(6)));
    }
}
