//! Rebuilding a partition's state from its changelog records, and the encoding of one
//! grid × SKU's record.

use crate::changelog::{self, Record, WindowRec};
use crate::window::{Millis, Windowing};

use super::{GridState, KeyState, PartitionState, WindowState};

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
                    .filter_map(|g| size_idx(g.size).map(|i| (i, g.start, g.stores)))
                    .collect();
                self.grids.insert(gid, GridState { windows, dirty: false });
            }
            (changelog::Key::Dedupe(seq), Record::Dedupe { end, ids }) => {
                self.chunks.insert(seq, end);
                let set = self.dedupe.entry(end).or_default();
                for id in ids {
                    if set.insert(id) {
                        self.dedupe_ids += 1;
                    }
                }
            }
            (
                changelog::Key::Meta,
                Record::Meta {
                    max_event_time,
                    next_chunk,
                    heartbeat_offset,
                    last_advance_wall,
                    wall_floor,
                },
            ) => {
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
