//! The changelog: how a partition's state is written to its compacted, co-partitioned
//! changelog topic and read back on restore.
//!
//! Keys (binary, big-endian so a key's bytes identify it exactly):
//! - `K` key-id(u128): every live window of one grid × SKU (counters, revision);
//! - `G` grid-id(u64): the stores that reported in a grid, per live window;
//! - `D` seq(u64): a chunk of de-duplicated event ids sharing one horizon (version 4;
//!   before, one earliest-window end);
//! - `M`: the partition's watermark, next chunk number and heartbeat offset;
//! - `W` size(i64) start(i64) seq(u32): a chunk of the windows of one bucket (version 5,
//!   `chunk.rs`); `B` size(i64) start(i64): the bucket's close state (version 5).
//!
//! Version 5 writes window state per bucket in chunks, no longer per grid × SKU (`K`,
//! versions 2–4, still restored). Version 6 adds the partition's de-duplication seed to
//! `M` (a changelog without one was written with seed 0, the unseeded hash).
//!
//! Values start with a format version byte. A tombstone (no value) deletes the key.
//! Decoding is bounded and never panics: the bytes are ours, but a broken or foreign
//! record must end in an error that names it, not a crash (`fuzz/decode_records` runs it).

mod chunk;
pub use chunk::{
    BucketMeta, CHUNK_WINDOWS, Chunk, ChunkBuilder, Entry, EntryRef, Stores, StoresRef,
};

use crate::counters::Counters;
use crate::window::Millis;

const VERSION: u8 = 6;
/// Versions still read (a release restores what the ones before it wrote).
const READS: [u8; 5] = [2, 3, 4, 5, 6];
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
    Key(u128),
    Grid(u64),
    Dedupe(u64),
    Meta,
    /// A chunk of a bucket's windows: window size, window start, sequence number.
    Chunk(Millis, Millis, u32),
    /// A bucket's close state: window size, window start.
    Bucket(Millis, Millis),
}

/// One window of a grid × SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRec {
    pub size: Millis,
    pub start: Millis,
    pub counters: Counters,
    pub revision: i32,
}

/// The reporting stores of a grid during one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridRec {
    pub size: Millis,
    pub start: Millis,
    pub stores: Vec<u64>,
    /// Stores whose latest heartbeat held unsent sales, and how many (version 4; empty
    /// before).
    pub pending: Vec<(u64, u32)>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Key {
        grid: String,
        sku: String,
        windows: Vec<WindowRec>,
    },
    Grid {
        windows: Vec<GridRec>,
    },
    /// Event ids remembered until the watermark reaches `horizon` (the expiry of the last
    /// window of their events).
    Dedupe {
        horizon: Millis,
        ids: Vec<u64>,
    },
    /// Versions 2 and 3: event ids grouped by the end of their events' earliest window
    /// (restore turns it into a horizon).
    DedupeByFirstEnd {
        first_end: Millis,
        ids: Vec<u64>,
    },
    /// Windows of one bucket (version 5).
    Chunk(Chunk),
    /// The close state of one bucket (version 5).
    Bucket(BucketMeta),
    Meta {
        max_event_time: Option<Millis>,
        next_chunk: u64,
        heartbeat_offset: i64,
        /// Wall-clock time the watermark last advanced (version 3; `i64::MIN` before).
        last_advance_wall: Millis,
        /// The wall clock the window rules last saw (version 3; `i64::MIN` before).
        wall_floor: Millis,
        /// Per window size: the newest end of an expired window, `(size, end)` (version
        /// 4; `None` before). Windows up to it are gone and count nothing more, even
        /// when allowed lateness is widened later.
        expired_through: Option<Vec<(Millis, Millis)>>,
        /// Per window size: the end of the last window whose coverage was written,
        /// `(size, end)` (version 4; `None` before).
        covered_through: Option<Vec<(Millis, Millis)>>,
        /// The seed of the partition's event-id hash (version 6; `None` before, which
        /// means 0: ids written then were hashed unseeded).
        dedupe_seed: Option<u64>,
    },
}

/// Key of a grid × SKU record.
pub fn key_key(key: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'K');
    k.extend_from_slice(&key.to_be_bytes());
    k
}

/// Key of a grid record.
pub fn grid_key(grid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'G');
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

/// Key of a chunk of a bucket's windows.
pub fn chunk_key(size: Millis, start: Millis, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.push(b'W');
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key of a bucket's close state.
pub fn bucket_key(size: Millis, start: Millis) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'B');
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k
}

/// Key of the partition's meta record.
pub fn meta_key() -> Vec<u8> {
    vec![b'M']
}

fn be8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Parses a key.
pub fn parse_key(k: &[u8]) -> Result<Key, Error> {
    match (k.first(), k.len()) {
        (Some(b'K'), 17) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[1..17]);
            Ok(Key::Key(u128::from_be_bytes(id)))
        }
        (Some(b'G'), 9) => Ok(Key::Grid(be8(&k[1..]))),
        (Some(b'D'), 9) => Ok(Key::Dedupe(be8(&k[1..]))),
        (Some(b'M'), 1) => Ok(Key::Meta),
        (Some(b'W'), 21) => {
            let mut seq = [0u8; 4];
            seq.copy_from_slice(&k[17..21]);
            Ok(Key::Chunk(be8(&k[1..]) as i64, be8(&k[9..]) as i64, u32::from_be_bytes(seq)))
        }
        (Some(b'B'), 17) => Ok(Key::Bucket(be8(&k[1..]) as i64, be8(&k[9..]) as i64)),
        _ => Err(Error::Key(k.len())),
    }
}

#[derive(Debug, Default)]
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
    fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|s| self.u64(*s));
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
    /// A count of items each at least `item_bytes` long, checked against what is left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, Error> {
        let n = self.u64()?;
        self.bounded(n, item_bytes)
    }
    /// `n` items each at least `item_bytes` long, checked against the limit and what is
    /// left (so a broken count never allocates).
    fn bounded(&self, n: u64, item_bytes: usize) -> Result<usize, Error> {
        let n = usize::try_from(n).map_err(|_| Error::TooMany(usize::MAX))?;
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
    fn pairs(&mut self) -> Result<Vec<(i64, i64)>, Error> {
        let n = self.count(16)?;
        (0..n).map(|_| Ok((self.i64()?, self.i64()?))).collect()
    }
    fn u64s(&mut self) -> Result<Vec<u64>, Error> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
}

/// A [`Record::Dedupe`] of `ids`, encoded from the slice (the bytes [`encode`] gives for
/// it), in a buffer of the record's size: a chunk of 32 Ki ids is 256 KiB, which a
/// growing buffer copied several times over.
pub fn encode_ids(horizon: i64, ids: &[u64]) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(2 + 16 + 8 * ids.len()));
    w.0.extend_from_slice(&[VERSION, b'D']);
    w.i64(horizon);
    w.u64s(ids);
    w.0
}

/// Encodes a value.
pub fn encode(r: &Record) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(128));
    w.0.push(VERSION);
    match r {
        Record::Key { grid, sku, windows } => {
            w.0.push(b'K');
            w.str(grid);
            w.str(sku);
            w.u64(windows.len() as u64);
            for x in windows {
                let c = &x.counters;
                for v in [x.size, x.start, c.units_sold, c.units_returned, c.preorder_units] {
                    w.i64(v);
                }
                for v in [c.revenue_minor, c.event_count, c.last_event_at, i64::from(x.revision)] {
                    w.i64(v);
                }
                w.u64s(&c.stores);
            }
        }
        Record::Grid { windows } => {
            w.0.push(b'G');
            w.u64(windows.len() as u64);
            for g in windows {
                w.i64(g.size);
                w.i64(g.start);
                w.u64s(&g.stores);
                w.u64(g.pending.len() as u64);
                for (store, n) in &g.pending {
                    w.u64(*store);
                    w.u64(u64::from(*n));
                }
            }
        }
        Record::Chunk(c) => {
            w.0.push(b'W');
            chunk::encode_chunk(&mut w, c);
        }
        Record::Bucket(b) => {
            w.0.push(b'B');
            chunk::encode_bucket(&mut w, b);
        }
        Record::Dedupe { horizon, ids } => return encode_ids(*horizon, ids),
        Record::DedupeByFirstEnd { first_end, ids } => {
            // Never written by this release; encoded as the old format for tests.
            w.0[0] = 3;
            w.0.push(b'D');
            w.i64(*first_end);
            w.u64s(ids);
        }
        Record::Meta {
            max_event_time,
            next_chunk,
            heartbeat_offset,
            last_advance_wall,
            wall_floor,
            expired_through,
            covered_through,
            dedupe_seed,
        } => {
            w.0.push(b'M');
            w.i64(max_event_time.unwrap_or(i64::MIN));
            w.u64(*next_chunk);
            w.i64(*heartbeat_offset);
            w.i64(*last_advance_wall);
            w.i64(*wall_floor);
            for pairs in [expired_through, covered_through] {
                let pairs = pairs.as_deref().unwrap_or_default();
                w.u64(pairs.len() as u64);
                for (size, end) in pairs {
                    w.i64(*size);
                    w.i64(*end);
                }
            }
            w.u64(dedupe_seed.unwrap_or(0));
        }
    }
    w.0
}

/// Decodes a value.
pub fn decode(bytes: &[u8]) -> Result<Record, Error> {
    let mut r = R(bytes);
    let v = r.u8()?;
    if !READS.contains(&v) {
        return Err(Error::Version(v));
    }
    let rec = match r.u8()? {
        b'K' => {
            let grid = r.str()?;
            let sku = r.str()?;
            let n = r.count(80)?;
            let mut windows = Vec::with_capacity(n);
            for _ in 0..n {
                let (size, start) = (r.i64()?, r.i64()?);
                let mut counters = Counters {
                    units_sold: r.i64()?,
                    units_returned: r.i64()?,
                    preorder_units: r.i64()?,
                    revenue_minor: r.i64()?,
                    event_count: r.i64()?,
                    last_event_at: r.i64()?,
                    stores: Vec::new(),
                };
                let revision = i32::try_from(r.i64()?).map_err(|_| Error::Mismatch)?;
                counters.stores = r.u64s()?;
                windows.push(WindowRec { size, start, counters, revision });
            }
            Record::Key { grid, sku, windows }
        }
        b'G' => {
            let n = r.count(24)?;
            let mut windows = Vec::with_capacity(n);
            for _ in 0..n {
                let (size, start, stores) = (r.i64()?, r.i64()?, r.u64s()?);
                let pending = if v >= 4 {
                    let n = r.count(16)?;
                    (0..n)
                        .map(|_| {
                            let store = r.u64()?;
                            let n = u32::try_from(r.u64()?).map_err(|_| Error::Mismatch)?;
                            Ok((store, n))
                        })
                        .collect::<Result<_, Error>>()?
                } else {
                    Vec::new()
                };
                windows.push(GridRec { size, start, stores, pending });
            }
            Record::Grid { windows }
        }
        b'W' if v >= 5 => Record::Chunk(chunk::decode_chunk(&mut r)?),
        b'B' if v >= 5 => Record::Bucket(chunk::decode_bucket(&mut r)?),
        b'D' if v >= 4 => Record::Dedupe { horizon: r.i64()?, ids: r.u64s()? },
        b'D' => Record::DedupeByFirstEnd { first_end: r.i64()?, ids: r.u64s()? },
        b'M' => {
            let m = r.i64()?;
            Record::Meta {
                max_event_time: (m != i64::MIN).then_some(m),
                next_chunk: r.u64()?,
                heartbeat_offset: r.i64()?,
                last_advance_wall: if v >= 3 { r.i64()? } else { i64::MIN },
                wall_floor: if v >= 3 { r.i64()? } else { i64::MIN },
                expired_through: if v >= 4 { Some(r.pairs()?) } else { None },
                covered_through: if v >= 4 { Some(r.pairs()?) } else { None },
                dedupe_seed: if v >= 6 { Some(r.u64()?) } else { None },
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
mod tests;
