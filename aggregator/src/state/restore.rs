//! Rebuilding a partition's state from its changelog records, and the encoding of one
//! grid × SKU's record.

use crate::changelog::{self, Record, WindowRec};
use crate::window::{Millis, Windowing};

use super::grids::{GridState, GridWindow};
use super::{KeyState, PartitionState, WindowState};

impl PartitionState {
    /// Applies one changelog record read back during restore (`None`: a tombstone).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), changelog::Error> {
        let k = changelog::parse_key(key)?;
        let Some(value) = value else {
            match k {
                changelog::Key::Key(kid) => {
                    if let Some(ks) = self.keys.remove(&kid) {
                        self.windows -= ks.windows.len();
                    }
                }
                changelog::Key::Grid(gid) => {
                    self.grids.remove(&gid);
                }
                changelog::Key::Dedupe(seq) => {
                    self.chunks.remove(&seq);
                }
                changelog::Key::Meta => {}
            }
            return Ok(());
        };
        let sizes = &self.cfg.windowing.sizes;
        let size_idx = |size: Millis| sizes.iter().position(|&s| s == size);
        match (k, changelog::decode(value)?) {
            (changelog::Key::Key(kid), Record::Key { grid, sku, windows }) => {
                let mut ks = KeyState::new(&grid, &sku);
                for WindowRec { size, start, counters, revision } in windows {
                    let Some(i) = size_idx(size) else {
                        tracing::warn!(
                            size,
                            "changelog window of a size no longer configured; dropped"
                        );
                        continue;
                    };
                    self.buckets.entry((start + size, i)).or_insert(false);
                    ks.windows.push(WindowState {
                        size_idx: i,
                        start,
                        end: start + size,
                        counters,
                        revision,
                        changed: false,
                    });
                }
                if let Some(old) = self.keys.insert(kid, ks.clone()) {
                    self.windows -= old.windows.len();
                }
                self.windows += ks.windows.len();
            }
            (changelog::Key::Grid(gid), Record::Grid { windows }) => {
                let windows = windows
                    .into_iter()
                    .filter_map(|g| {
                        size_idx(g.size).map(|size_idx| GridWindow {
                            size_idx,
                            start: g.start,
                            stores: g.stores,
                            pending: g.pending,
                        })
                    })
                    .collect();
                self.grids.insert(gid, GridState { windows, dirty: false });
            }
            (changelog::Key::Dedupe(seq), Record::Dedupe { horizon, ids }) => {
                self.restore_dedupe(seq, horizon, ids);
            }
            // An older release grouped ids by their events' earliest window end: keep them
            // as long as the last window of such an event accepts it.
            (changelog::Key::Dedupe(seq), Record::DedupeByFirstEnd { first_end, ids }) => {
                let horizon = self.cfg.windowing.horizon(first_end.saturating_sub(1));
                self.restore_dedupe(seq, horizon, ids);
            }
            (
                changelog::Key::Meta,
                Record::Meta {
                    max_event_time,
                    next_chunk,
                    heartbeat_offset,
                    last_advance_wall,
                    wall_floor,
                    expired_through,
                    covered_through,
                },
            ) => {
                for (size, end) in covered_through.unwrap_or_default() {
                    if let Some(i) = size_idx(size) {
                        self.covered_through[i] = end;
                    }
                }
                if let Some(through) = expired_through {
                    self.frontier_restored = true;
                    for (size, end) in through {
                        if let Some(i) = size_idx(size) {
                            self.expired_through[i] = end;
                        }
                    }
                }
                self.last_advance_wall = last_advance_wall;
                self.wall_floor = wall_floor;
                self.max_event_time = max_event_time;
                self.next_chunk = next_chunk;
                self.heartbeat_offset = heartbeat_offset;
            }
            _ => return Err(changelog::Error::Mismatch),
        }
        Ok(())
    }

    /// After the last record: a changelog of an older release does not say which windows
    /// were dropped; assume every closed window with no state of its own older than the
    /// oldest live window of its size was, so a widened lateness never remakes one with
    /// only its new events.
    pub fn restored(&mut self) {
        if self.frontier_restored || self.max_event_time.is_none() {
            return;
        }
        let w = &self.cfg.windowing;
        let wm = self.watermark();
        for (i, &size) in w.sizes.iter().enumerate() {
            let closed = Windowing::start(wm.saturating_sub(w.grace[i]), size);
            let oldest_live = self.buckets.keys().filter(|b| b.1 == i).map(|b| b.0).min();
            let through = oldest_live.map_or(closed, |e| closed.min(e - size));
            self.expired_through[i] = self.expired_through[i].max(through);
        }
        self.frontier_restored = true;
    }

    fn restore_dedupe(&mut self, seq: u64, horizon: Millis, ids: Vec<u64>) {
        self.chunks.insert(seq, horizon);
        let set = self.dedupe.entry(horizon).or_default();
        for id in ids {
            if set.insert(id) {
                self.dedupe_ids += 1;
            }
        }
    }
}

pub(super) fn encode_key(w: &Windowing, ks: &KeyState) -> Vec<u8> {
    changelog::encode(&Record::Key {
        grid: ks.grid().to_string(),
        sku: ks.sku().to_string(),
        windows: ks
            .windows
            .iter()
            .map(|x| WindowRec {
                size: w.sizes[x.size_idx],
                start: x.start,
                counters: x.counters.clone(),
                revision: x.revision,
            })
            .collect(),
    })
}
