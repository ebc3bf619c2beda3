//! One flush of a partition: closes the buckets that are due (sorted once, emitted
//! behind a cursor, at most `close_chunk` windows per flush), emits revisions of closed
//! windows that changed, drops buckets past their allowed lateness, and writes what
//! changed to the changelog: per bucket one chunk record per [`CHUNK_WINDOWS`] changed
//! windows (coalesced: a window that changed a thousand times since the last flush is
//! one entry), and the whole bucket afresh when it closes or when its live chunks hold
//! more than twice its windows, tombstoning the chunks it replaces — so restore reads
//! about as many entries as there are live windows, not as many as events.

use std::sync::Arc;

use nearfield_schemas::DemandWindow;

use crate::changelog::{self, CHUNK_WINDOWS, ChunkBuilder, EntryRef, Record, StoresRef};
use crate::ids::IdMap;
use crate::window::Millis;

use super::bucket::Bucket;
use super::distinct::{SPILLED, StoreSet};
use super::grids::{self, GridState};
use super::keys::Keys;
use super::{Flushed, MAX_COVERAGE_WINDOWS, PartitionState, Registry};

/// Per size, the set entries of `ends` as `(size, end)` (the changelog's form).
fn per_size(sizes: &[Millis], ends: &[Millis]) -> Vec<(Millis, Millis)> {
    ends.iter()
        .enumerate()
        .filter(|(_, end)| **end != Millis::MIN)
        .map(|(i, end)| (sizes[i], *end))
        .collect()
}

/// What an output needs besides its window.
struct Emitting<'a> {
    keys: &'a Keys,
    grids: &'a IdMap<u64, GridState>,
    registry: &'a dyn Registry,
    currency: &'a str,
    size: Millis,
    watermark: Millis,
    source: i32,
    emitted_at: Millis,
}

impl Emitting<'_> {
    fn demand(&self, b: &Bucket, pos: u32, revision: i32) -> DemandWindow {
        let win = &b.wins[pos as usize];
        let k = win.key();
        let grid = self.keys.grid(k);
        let g = self.grids.get(&self.keys.grids.hash(self.keys.grid_id(k)));
        let (reporting, pending, _) = g.map_or((0, 0, 0), |g| g.completeness(b.size_idx, b.start));
        let int = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        let [returned, preorder] = b.extra(pos);
        DemandWindow {
            grid_id: grid.to_string(),
            sku: self.keys.sku(k).to_string(),
            window_start: b.start,
            window_end: b.start.saturating_add(self.size),
            units_sold: i64::from(win.sold),
            units_returned: i64::from(returned),
            preorder_units: i64::from(preorder),
            net_units: b.net(pos),
            revenue_minor: win.revenue(),
            currency: self.currency.to_string(),
            event_count: i64::from(win.events),
            distinct_stores: int(b.stores(pos)),
            stores_reporting: int(reporting as u64),
            stores_expected: self.registry.expected(grid),
            stores_pending: int(pending as u64),
            revision,
            is_final: true,
            watermark: self.watermark,
            source_partition: self.source,
            last_event_at: b.last_event_at(pos),
            emitted_at: self.emitted_at,
        }
    }
}

/// The stores of the window at `pos`: its exact ids, or its sketch's registers.
pub(super) fn stores_of(b: &Bucket, pos: u32) -> StoresRef<'_> {
    let w = &b.wins[pos as usize];
    match w.stores {
        [SPILLED, i] => match b.spill.get(i as usize) {
            Some(StoreSet::Hll(regs)) => StoresRef::Sketch(&regs[..]),
            Some(set) => StoresRef::List(set.ids().unwrap_or_default()),
            None => StoresRef::List(&[]),
        },
        [0, _] => StoresRef::List(&[]),
        [_, 0] => StoresRef::List(&w.stores[..1]),
        _ => StoresRef::List(&w.stores),
    }
}

/// The changelog entry of the window at `pos`.
fn entry(b: &Bucket, pos: u32) -> EntryRef<'_> {
    let w = &b.wins[pos as usize];
    let stores = stores_of(b, pos);
    let [returned, preorder] = b.extra(pos);
    EntryRef {
        pos,
        grid: 0,
        sku: 0,
        revision: b.revision(pos),
        sold: w.sold,
        returned,
        preorder,
        events: w.events,
        revenue: w.revenue(),
        last_off: b.last_off(pos),
        stores,
    }
}

/// Writes the windows at `positions` of `b` as chunks.
fn write_chunks(
    keys: &Keys,
    b: &mut Bucket,
    size: Millis,
    positions: impl Iterator<Item = u32>,
    out: &mut Flushed,
) {
    let name =
        |grid: bool, id: u32| if grid { keys.grids.str(id) } else { keys.skus.str(id) }.to_string();
    let mut builder = ChunkBuilder::default();
    let mut emit = |b: &mut Bucket, builder: &mut ChunkBuilder| {
        let n = builder.len() as u32;
        let seq = b.next_seq;
        b.next_seq += 1;
        b.chunks.push((seq, n));
        out.changelog.push((changelog::chunk_key(size, b.start, seq), Some(builder.take())));
    };
    for pos in positions {
        let k = b.wins[pos as usize].key();
        builder.push((keys.grid_id(k), keys.sku_id(k)), name, entry(b, pos));
        if builder.full() {
            emit(b, &mut builder);
        }
    }
    if !builder.is_empty() {
        emit(b, &mut builder);
    }
}

/// Most horizons among a commit's event ids that [`PartitionState::flush`] takes out one
/// pass each (live traffic has one a day, up to three or four).
pub(super) const FEW_HORIZONS: usize = 4;

impl PartitionState {
    /// Closes due windows, emits closed windows that changed and the coverage of every
    /// registered grid for closed windows, drops expired state, and returns the changelog
    /// records and outputs since the last flush.
    pub fn flush(&mut self, now: Millis, registry: &dyn Registry) -> Flushed {
        let emitted_at = now;
        let now = self.clock(now);
        let mut out = Flushed::default();
        let wm = self.watermark();
        let cfg = Arc::clone(&self.cfg);
        let w = &cfg.windowing;
        let mut budget = cfg.close_chunk;
        // Per size: an older bucket is still held (buckets of a size expire in order).
        let mut held = vec![false; w.sizes.len()];
        let mut expired = Vec::new();
        let bucket_keys = self.buckets.keys();
        for bk in bucket_keys {
            let (i, start) = bk;
            let size = w.sizes[i];
            let end = start.saturating_add(size);
            let Some(b) = self.buckets.get_mut(i, start) else { continue };
            let mut rewrite = false;
            if !b.closed && w.is_closed(i, end, wm, now) {
                b.close(&self.keys);
                // Positions moved: keys whose newest window of this size is here follow.
                let number = start.div_euclid(size) as u16;
                for pos in 0..b.wins.len() as u32 {
                    let k = b.wins[pos as usize].key();
                    if self.keys.slot(k, i).1 == number {
                        self.keys.set_slot(k, i, pos, number);
                    }
                }
                rewrite = true;
            }
            let dirty = b.take_dirty();
            if b.closed {
                let e = Emitting {
                    keys: &self.keys,
                    grids: &self.grids,
                    registry,
                    currency: &cfg.currency,
                    size,
                    watermark: wm,
                    source: self.partition,
                    emitted_at,
                };
                // Emitted windows that changed: a revision each.
                let cursor = b.cursor;
                for &p in dirty.iter().take_while(|&&p| p < cursor) {
                    let rev = b.revision(p) + 1;
                    b.set_revision(p, rev);
                    out.outputs.push(e.demand(b, p, rev));
                }
                // The close walk, bounded per flush.
                while (b.cursor as usize) < b.wins.len() && budget > 0 {
                    let p = b.cursor;
                    let explicit = b.revisions.get(&b.wins[p as usize].key()).copied();
                    b.cursor += 1;
                    b.meta_dirty = true;
                    match explicit {
                        // Made for an event then refused (revenue overflow): nothing to say.
                        None if b.wins[p as usize].events == 0 => {}
                        None => {
                            out.outputs.push(e.demand(b, p, 0));
                            budget -= 1;
                        }
                        // Emitted before (a changelog of version 4): again only if changed.
                        Some(r) if dirty.binary_search(&p).is_ok() => {
                            b.set_revision(p, r + 1);
                            out.outputs.push(e.demand(b, p, r + 1));
                            budget -= 1;
                        }
                        Some(r) => b.set_revision(p, r),
                    }
                }
            }
            let done = b.closed && b.cursor as usize == b.wins.len();
            if !held[i] && done && w.is_expired(i, end, wm, now) {
                expired.push(bk);
                continue;
            }
            held[i] = true;
            if rewrite || b.chunk_entries() > 2 * b.wins.len() + CHUNK_WINDOWS {
                for (seq, _) in std::mem::take(&mut b.chunks) {
                    out.changelog.push((changelog::chunk_key(size, start, seq), None));
                }
                write_chunks(&self.keys, b, size, 0..b.wins.len() as u32, &mut out);
            } else if !dirty.is_empty() {
                write_chunks(&self.keys, b, size, dirty.into_iter(), &mut out);
            }
            if std::mem::take(&mut b.meta_dirty) {
                let meta = changelog::BucketMeta {
                    closed: b.closed,
                    sorted: b.sorted,
                    cursor: b.cursor,
                    next_seq: b.next_seq,
                };
                out.changelog.push((
                    changelog::bucket_key(size, start),
                    Some(changelog::encode(&Record::Bucket(meta))),
                ));
            }
        }
        for bk in expired {
            self.expire(bk, &mut out);
        }
        self.flush_grids(wm, now, &mut out);
        self.flush_dedupe(wm, now, &mut out);
        self.cover(registry, wm, now, emitted_at, &mut out);
        if std::mem::take(&mut self.meta_dirty) {
            out.changelog.push((
                changelog::meta_key(),
                Some(changelog::encode(&Record::Meta {
                    max_event_time: self.max_event_time,
                    next_chunk: self.next_chunk,
                    heartbeat_offset: self.heartbeat_offset,
                    last_advance_wall: self.last_advance_wall,
                    wall_floor: self.wall_floor,
                    expired_through: Some(per_size(&w.sizes, &self.expired_through)),
                    covered_through: Some(per_size(&w.sizes, &self.covered_through)),
                    dedupe_seed: Some(self.dedupe_seed),
                })),
            ));
        }
        out
    }

    /// Drops a bucket past its allowed lateness, and the keys left with no window.
    fn expire(&mut self, (i, start): (usize, Millis), out: &mut Flushed) {
        let Some(b) = self.buckets.remove(i, start) else { return };
        let size = self.cfg.windowing.sizes[i];
        for (seq, _) in &b.chunks {
            out.changelog.push((changelog::chunk_key(size, start, *seq), None));
        }
        out.changelog.push((changelog::bucket_key(size, start), None));
        for win in b.wins.iter() {
            if self.keys.drop_window(win.key()) {
                self.keys.remove(win.key());
            }
        }
        self.windows -= b.wins.len();
        out.expired_windows += b.wins.len();
        let end = start.saturating_add(size);
        self.set_expired_through(i, self.expired_through[i].max(end));
        self.meta_dirty = true;
    }

    /// Expires grid windows and writes the grids that changed.
    fn flush_grids(&mut self, wm: Millis, now: Millis, out: &mut Flushed) {
        let w = &self.cfg.windowing;
        for (gid, g) in &mut self.grids {
            let before = g.windows.len();
            g.windows.retain(|x| !w.is_expired(x.size_idx, x.start + w.sizes[x.size_idx], wm, now));
            if g.windows.len() != before && !std::mem::replace(&mut g.dirty, true) {
                self.dirty_grids.push(*gid);
            }
        }
        for gid in std::mem::take(&mut self.dirty_grids) {
            let Some(g) = self.grids.get_mut(&gid) else { continue };
            g.dirty = false;
            if g.windows.is_empty() {
                self.grids.remove(&gid);
                out.changelog.push((changelog::grid_key(gid), None));
            } else {
                let windows = g.records(w);
                out.changelog.push((
                    changelog::grid_key(gid),
                    Some(changelog::encode(&Record::Grid { windows })),
                ));
            }
        }
    }

    /// Writes event ids of `horizon`, sorted, in changelog chunks.
    fn write_ids(&mut self, horizon: Millis, ids: &[u64], out: &mut Flushed) {
        for ids in ids.chunks(super::DEDUPE_CHUNK_IDS) {
            let seq = self.next_chunk;
            self.next_chunk += 1;
            self.chunks.insert(seq, horizon);
            self.meta_dirty = true;
            out.changelog
                .push((changelog::dedupe_key(seq), Some(changelog::encode_ids(horizon, ids))));
        }
    }

    /// Writes the event ids seen since the last flush, grouped by horizon, in chunks that
    /// stay well below Kafka's message size limit, and forgets those past their horizon.
    fn flush_dedupe(&mut self, wm: Millis, now: Millis, out: &mut Flushed) {
        // The buffer is handed back emptied: its capacity (the ids of one commit interval,
        // up to `PENDING_KEEP`) is reused, where a fresh one grew by copies into newly
        // faulted pages each time.
        let mut pending = std::mem::take(&mut self.pending_ids);
        // Grouped by horizon, each group sorted. Grouping without the sort (ids in arrival
        // order) saved 19 % of a flush's time but left 25–35 MiB more RSS at the end of
        // the 20 M-key run and after its restore (3 runs against 2, 2026-12-05): kept.
        // A commit's ids have a handful of horizons (one a day): each horizon's are taken
        // out in one pass and sorted as bare ids, cheaper than sorting the pairs. More
        // horizons (a replay of history) sort the pairs, to stay O(n log n).
        let mut horizons: Vec<Millis> = Vec::new();
        for &(h, _) in &pending {
            if horizons.len() > FEW_HORIZONS {
                break;
            }
            if !horizons.contains(&h) {
                horizons.push(h);
            }
        }
        let (mut group, mut scratch): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
        if horizons.len() <= FEW_HORIZONS {
            horizons.sort_unstable();
            for horizon in horizons {
                group.clear();
                group.extend(pending.iter().filter(|p| p.0 == horizon).map(|p| p.1));
                crate::ids::sort_spread(&mut group, &mut scratch, |&id| id);
                self.write_ids(horizon, &group, out);
            }
        } else {
            pending.sort_unstable();
            for run in pending.chunk_by(|a, b| a.0 == b.0) {
                group.clear();
                group.extend(run.iter().map(|p| p.1));
                self.write_ids(run[0].0, &group, out);
            }
        }
        pending.clear();
        pending.shrink_to(super::PENDING_KEEP);
        self.pending_ids = pending;
        let w = &self.cfg.windowing;
        let gone: Vec<Millis> =
            self.dedupe.horizons().take_while(|&h| w.horizon_passed(h, wm, now)).collect();
        for e in gone {
            self.dedupe_ids -= self.dedupe.remove(e).map_or(0, |s| s.len());
        }
        let chunks: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, h)| w.horizon_passed(**h, wm, now))
            .map(|(s, _)| *s)
            .collect();
        for seq in chunks {
            self.chunks.remove(&seq);
            out.changelog.push((changelog::dedupe_key(seq), None));
        }
    }

    /// Writes the coverage of every registered grid of the partition for each window of a
    /// coverage size that closed since the last flush — by time, so a grid (or a whole
    /// partition) without sales gets its records too. It starts with the window of the
    /// partition's first event, and catches up at most [`MAX_COVERAGE_WINDOWS`] windows
    /// per size and flush.
    fn cover(
        &mut self,
        registry: &dyn Registry,
        wm: Millis,
        now: Millis,
        emitted_at: Millis,
        out: &mut Flushed,
    ) {
        if wm == Millis::MIN {
            return;
        }
        let cfg = Arc::clone(&self.cfg);
        let w = &cfg.windowing;
        let mut grids: Option<Vec<(String, i32)>> = None;
        for (i, &size) in w.sizes.iter().enumerate() {
            if !cfg.coverage.get(i).copied().unwrap_or(false) {
                continue;
            }
            if self.covered_through[i] == Millis::MIN {
                // A changelog of an older release: start with the current window.
                self.covered_through[i] = crate::window::Windowing::start(wm, size);
                self.meta_dirty = true;
            }
            for _ in 0..MAX_COVERAGE_WINDOWS {
                let start = self.covered_through[i];
                let end = start.saturating_add(size);
                if !w.is_closed(i, end, wm, now) {
                    break;
                }
                for (grid, expected) in grids.get_or_insert_with(|| registry.grids()).iter() {
                    let state = self.grids.get(&crate::ids::short_id(grid));
                    let rec = grids::coverage(
                        (grid.clone(), *expected),
                        state,
                        (i, start, end),
                        wm,
                        emitted_at,
                    );
                    out.coverage.push(rec);
                }
                self.covered_through[i] = end;
                self.meta_dirty = true;
            }
        }
    }
}
