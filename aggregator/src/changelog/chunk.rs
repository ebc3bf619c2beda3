//! Version 5 records of the window state: a **chunk** (`W`) holds the windows of one
//! bucket that changed in one flush, at most [`CHUNK_WINDOWS`] of them, each with its
//! position in the bucket, its counters, revision and stores; a **bucket** record (`B`)
//! says whether the bucket closed, how much of it is sorted and how far its emission got.
//!
//! A chunk carries its own dictionary of the grids and SKUs it names, so it restores
//! without any other record; the entries are LEB128 varints (zig-zag for signed values),
//! about 20 bytes per window with two stores. A flush writes chunks through
//! [`ChunkBuilder`], which encodes each entry as it is added from the window's own fields
//! ([`EntryRef`]: its stores borrowed, not copied); the bytes are those [`Chunk`]'s
//! encoding gives.

use super::{Error, R, W};

/// Most windows in one chunk (~200 KB with a few stores each).
pub const CHUNK_WINDOWS: usize = 8192;
/// A chunk is cut once its entries pass this size (windows with many stores or a
/// sketch are large), well below the changelog topic's `max.message.bytes` (1 MiB).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The fewest bytes one entry takes: pos, grid, sku, revision, sold, returned,
/// pre-orders, events, revenue, last_off and the stores tag, one byte each.
const MIN_ENTRY_BYTES: usize = 11;

/// The stores of a window in a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stores {
    /// Distinct 32-bit store ids.
    List(Vec<u32>),
    /// HyperLogLog registers.
    Sketch(Vec<u8>),
}

/// The stores of a window as a chunk encodes them, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum StoresRef<'a> {
    List(&'a [u32]),
    Sketch(&'a [u8]),
}

/// One window in a chunk, with its stores as `S`: [`Entry`] owns them (what a decoded
/// chunk holds), [`EntryRef`] borrows them (what the state writes from, without a copy
/// of each window's stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOf<S> {
    pub pos: u32,
    /// Index into the chunk's `grids`.
    pub grid: u32,
    /// Index into the chunk's `skus`.
    pub sku: u32,
    pub revision: i32,
    pub sold: i32,
    pub returned: i32,
    pub preorder: i32,
    pub events: u32,
    pub revenue: i64,
    pub last_off: u32,
    pub stores: S,
}

/// One window in a chunk.
pub type Entry = EntryOf<Stores>;
/// One window as a chunk encodes it, its stores borrowed.
pub type EntryRef<'a> = EntryOf<StoresRef<'a>>;

impl<S> EntryOf<S> {
    /// The same window with stores `stores`.
    pub fn with_stores<T>(&self, stores: T) -> EntryOf<T> {
        EntryOf {
            pos: self.pos,
            grid: self.grid,
            sku: self.sku,
            revision: self.revision,
            sold: self.sold,
            returned: self.returned,
            preorder: self.preorder,
            events: self.events,
            revenue: self.revenue,
            last_off: self.last_off,
            stores,
        }
    }
}

/// A chunk of windows of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    pub grids: Vec<String>,
    pub skus: Vec<String>,
    pub entries: Vec<Entry>,
}

/// The state of a bucket's emission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketMeta {
    pub closed: bool,
    pub sorted: u32,
    pub cursor: u32,
    pub next_seq: u32,
}

impl W {
    pub(super) fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub(super) fn zig(&mut self, v: i64) {
        self.var(((v << 1) ^ (v >> 63)) as u64);
    }
    fn vstr(&mut self, s: &str) {
        self.var(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

impl R<'_> {
    pub(super) fn var(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Mismatch)
    }
    fn zig(&mut self) -> Result<i64, Error> {
        let v = self.var()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn var32(&mut self) -> Result<u32, Error> {
        u32::try_from(self.var()?).map_err(|_| Error::Mismatch)
    }
    fn zig32(&mut self) -> Result<i32, Error> {
        i32::try_from(self.zig()?).map_err(|_| Error::Mismatch)
    }
    fn vcount(&mut self, item_bytes: usize) -> Result<usize, Error> {
        let n = self.var()?;
        self.bounded(n, item_bytes)
    }
    fn vstr(&mut self) -> Result<String, Error> {
        let n = self.vcount(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Utf8)
    }
}

impl Entry {
    /// The entry, its stores borrowed.
    pub fn as_ref(&self) -> EntryRef<'_> {
        self.with_stores(match &self.stores {
            Stores::List(ids) => StoresRef::List(ids),
            Stores::Sketch(regs) => StoresRef::Sketch(regs),
        })
    }
}

fn encode_dicts(w: &mut W, grids: &[String], skus: &[String]) {
    for dict in [grids, skus] {
        w.var(dict.len() as u64);
        dict.iter().for_each(|s| w.vstr(s));
    }
}

fn encode_entry(w: &mut W, e: &EntryRef<'_>) {
    w.var(u64::from(e.pos));
    w.var(u64::from(e.grid));
    w.var(u64::from(e.sku));
    for v in [e.revision, e.sold, e.returned, e.preorder] {
        w.zig(i64::from(v));
    }
    w.var(u64::from(e.events));
    w.zig(e.revenue);
    w.var(u64::from(e.last_off));
    match e.stores {
        StoresRef::List(ids) => {
            w.var((ids.len() as u64) << 1);
            ids.iter().for_each(|s| w.0.extend_from_slice(&s.to_le_bytes()));
        }
        StoresRef::Sketch(regs) => {
            w.var(((regs.len() as u64) << 1) | 1);
            w.0.extend_from_slice(regs);
        }
    }
}

pub(super) fn encode_chunk(w: &mut W, c: &Chunk) {
    encode_dicts(w, &c.grids, &c.skus);
    w.var(c.entries.len() as u64);
    for e in &c.entries {
        encode_entry(w, &e.as_ref());
    }
}

pub(super) fn decode_chunk(r: &mut R<'_>) -> Result<Chunk, Error> {
    let mut dicts = [Vec::new(), Vec::new()];
    for dict in &mut dicts {
        let n = r.vcount(1)?;
        *dict = (0..n).map(|_| r.vstr()).collect::<Result<_, _>>()?;
    }
    let [grids, skus] = dicts;
    // An entry is 11 varints at the least (one byte each): a tighter bound would refuse
    // a chunk of small windows that this encoder writes.
    let n = r.vcount(MIN_ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let (pos, grid, sku) = (r.var32()?, r.var32()?, r.var32()?);
        if grid as usize >= grids.len() || sku as usize >= skus.len() {
            return Err(Error::Mismatch);
        }
        let (revision, sold, returned, preorder) = (r.zig32()?, r.zig32()?, r.zig32()?, r.zig32()?);
        let (events, revenue, last_off) = (r.var32()?, r.zig()?, r.var32()?);
        let tag = r.var()?;
        let len = usize::try_from(tag >> 1).map_err(|_| Error::TooMany(usize::MAX))?;
        let stores = if tag & 1 == 0 {
            if len.saturating_mul(4) > r.0.len() {
                return Err(Error::Truncated);
            }
            let mut ids = Vec::with_capacity(len);
            for _ in 0..len {
                let mut a = [0u8; 4];
                a.copy_from_slice(r.take(4)?);
                ids.push(u32::from_le_bytes(a));
            }
            Stores::List(ids)
        } else {
            Stores::Sketch(r.take(len)?.to_vec())
        };
        entries.push(Entry {
            pos,
            grid,
            sku,
            revision,
            sold,
            returned,
            preorder,
            events,
            revenue,
            last_off,
            stores,
        });
    }
    Ok(Chunk { grids, skus, entries })
}

pub(super) fn encode_bucket(w: &mut W, b: &BucketMeta) {
    w.var(u64::from(b.closed));
    w.var(u64::from(b.sorted));
    w.var(u64::from(b.cursor));
    w.var(u64::from(b.next_seq));
}

pub(super) fn decode_bucket(r: &mut R<'_>) -> Result<BucketMeta, Error> {
    Ok(BucketMeta {
        closed: r.var()? != 0,
        sorted: r.var32()?,
        cursor: r.var32()?,
        next_seq: r.var32()?,
    })
}

/// Builds chunk records: interns the grids and SKUs of the entries added and encodes each
/// entry as it comes, so a flush neither copies a window's stores nor holds its entries.
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    grids: Vec<String>,
    skus: Vec<String>,
    /// The caller's grid and SKU ids → their index in `grids` and `skus`.
    grid_ix: crate::ids::IdMap<u32, u32>,
    sku_ix: crate::ids::IdMap<u32, u32>,
    /// The entries so far, encoded.
    entries: W,
    len: usize,
    bytes: usize,
}

impl ChunkBuilder {
    /// Adds a window whose grid and SKU have the caller's ids `grid` and `sku`
    /// (strings from `name`); `entry`'s own `grid` and `sku` are set here.
    pub fn push(
        &mut self,
        (grid, sku): (u32, u32),
        name: impl Fn(bool, u32) -> String,
        mut entry: EntryRef<'_>,
    ) {
        self.bytes += 40
            + match entry.stores {
                StoresRef::List(v) => v.len() * 4,
                StoresRef::Sketch(r) => r.len(),
            };
        let (grids, bytes) = (&mut self.grids, &mut self.bytes);
        entry.grid = *self.grid_ix.entry(grid).or_insert_with(|| {
            *bytes += 40;
            grids.push(name(true, grid));
            grids.len() as u32 - 1
        });
        let skus = &mut self.skus;
        entry.sku = *self.sku_ix.entry(sku).or_insert_with(|| {
            *bytes += 40;
            skus.push(name(false, sku));
            skus.len() as u32 - 1
        });
        encode_entry(&mut self.entries, &entry);
        self.len += 1;
    }

    /// Windows added so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk is as big as one may be.
    pub fn full(&self) -> bool {
        self.len >= CHUNK_WINDOWS || self.bytes >= CHUNK_BYTES
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk's record value (what `changelog::encode` gives for the same
    /// [`Chunk`]), leaving the builder empty.
    pub fn take(&mut self) -> Vec<u8> {
        // The record's size: header, the two dictionaries (a string and its length, at
        // most 10 bytes of varint), the count and the entries; no growth, no copy.
        let dicts: usize =
            self.grids.iter().chain(&self.skus).map(|s| s.len() + 10).sum::<usize>() + 20;
        let mut w = W(Vec::with_capacity(2 + dicts + 10 + self.entries.0.len()));
        w.0.extend_from_slice(&[super::VERSION, b'W']);
        encode_dicts(&mut w, &self.grids, &self.skus);
        w.var(self.len as u64);
        w.0.extend_from_slice(&self.entries.0);
        self.grids.clear();
        self.skus.clear();
        self.grid_ix.clear();
        self.sku_ix.clear();
        self.entries.0.clear();
        (self.len, self.bytes) = (0, 0);
        w.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: a chunk of two windows with one-byte fields was refused as
    /// truncated once re-encoded compactly (the entry-size bound was one byte too high).
    #[test]
    fn a_chunk_of_minimal_entries_round_trips() {
        let fuzzed: &[u8] = &[
            5, 87, 1, 15, 56, 55, 57, 51, 97, 97, 56, 98, 97, 53, 102, 102, 85, 102, 102, 2, 7, 77,
            73, 76, 75, 45, 49, 76, 6, 1, 71, 71, 45, 127, 48, 2, 0, 0, 0, 1, 24, 2, 81, 0, 0, 0,
            0, 0, 0, 0, 223, 0, 104, 182, 0, 4, 0, 223, 223, 0, 0, 0,
        ];
        let rec = super::super::decode(fuzzed).expect("decodes");
        let once = super::super::encode(&rec);
        assert_eq!(super::super::decode(&once).expect("the re-encoding decodes"), rec);
        let zero = Entry {
            pos: 0,
            grid: 0,
            sku: 0,
            revision: 0,
            sold: 0,
            returned: 0,
            preorder: 0,
            events: 0,
            revenue: 0,
            last_off: 0,
            stores: Stores::List(vec![]),
        };
        let rec = super::super::Record::Chunk(Chunk {
            grids: vec!["g".into()],
            skus: vec!["s".into()],
            entries: vec![zero.clone(), zero],
        });
        assert_eq!(super::super::decode(&super::super::encode(&rec)).expect("decodes"), rec);
    }
}
