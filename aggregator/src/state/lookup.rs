//! Looking an event up before it is applied, in the steps `staged::run` spaces out over
//! a run of events: its identity and windows ([`PartitionState::sight`]), its key's
//! candidate ([`PartitionState::probe`]) and its key and windows
//! ([`PartitionState::resolve`]), each asking into cache what the next reads. What is
//! found rides in an [`Ahead`] to [`PartitionState::apply_identified`].

use crate::config::MAX_SIZES;
use crate::ids::event_key;
use crate::window::{Millis, Windowing};
use nearfield_schemas::SaleEventRef;

use super::PartitionState;
use super::keys::NO_POS;

/// The windows of an event's time, one per size index: each one's start, and its number
/// (`start / size`) modulo 2¹⁶, what a key's slot keeps. Starts and numbers apart, so
/// the look-up an event carries through its steps stays small to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub start: [Millis; MAX_SIZES],
    pub number: [u16; MAX_SIZES],
}

impl Placed {
    pub const NONE: Placed = Placed { start: [0; MAX_SIZES], number: [0; MAX_SIZES] };
}

/// What is known of an event before it is applied: its identity, its windows, its
/// interned grid and SKU with the key's hash (`None` when either is new, and so is the
/// key), and its key: the index's candidate once probed, the key once resolved (`None`:
/// not found then; only a flush removes keys, so one found stays the event's).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ahead {
    pub id: u64,
    pub at: Placed,
    pub ids: Option<(u32, u32)>,
    pub hash: u64,
    pub key: Option<u32>,
    /// Per window size, the position the key's slot gave for the event's window when
    /// resolved ([`NO_POS`]: none). A window stays where it is until a flush, so a
    /// position whose window is the key's is still the event's window when applied.
    pub seen: [u32; MAX_SIZES],
}

impl Ahead {
    pub const NONE: Ahead =
        Ahead { id: 0, at: Placed::NONE, ids: None, hash: 0, key: None, seen: [NO_POS; MAX_SIZES] };
}

impl PartitionState {
    /// The event's de-duplication identity.
    pub(super) fn identify(&self, ev: &SaleEventRef<'_>) -> u64 {
        event_key(ev.store_id, ev.device_id, ev.event_id, self.dedupe_seed)
    }

    /// The windows of time `t`, one per size: those of the event before when `t` is in
    /// them, else computed ([`Windowing::start`]; the property test
    /// `placed_windows_are_the_windows_of_their_time`).
    pub(super) fn placed(&mut self, t: Millis) -> Placed {
        let r = &mut self.recent;
        let sizes = &self.cfg.windowing.sizes;
        for ((s, n), &size) in r.start.iter_mut().zip(r.number.iter_mut()).zip(sizes) {
            // A start saturated at the low end of time is not a whole window's.
            let hit =
                *s != Millis::MIN && t.checked_sub(*s).is_some_and(|d| (0..size).contains(&d));
            if !hit {
                *s = Windowing::start(t, size);
                *n = s.div_euclid(size) as u16;
            }
        }
        self.recent
    }

    /// The first step of looking an event up: its identity, its windows, its interned
    /// grid and SKU and its key's hash, with its place in every live event-id set (its
    /// own horizon's and the others', which [`apply_identified`](Self::apply_identified)
    /// reads) and in the key index asked into cache.
    pub(super) fn sight(&mut self, ev: &SaleEventRef<'_>) -> Ahead {
        let id = self.identify(ev);
        let at = self.placed(ev.occurred_at);
        for t in self.dedupe.values() {
            t.prefetch(id);
        }
        let ids = self.keys.grids.get(ev.grid_id).zip(self.keys.skus.get(ev.sku));
        let hash = ids.map_or(0, |(g, s)| self.keys.ids_hash(g, s));
        if ids.is_some() {
            self.keys.prefetch_index(hash);
        }
        Ahead { id, at, ids, hash, key: None, seen: [NO_POS; MAX_SIZES] }
    }

    /// The second step: the key's candidate from the index, its slot asked into cache.
    pub(super) fn probe(&self, a: &mut Ahead) {
        if a.ids.is_some() {
            a.key = self.keys.candidate(a.hash);
            if let Some(k) = a.key {
                self.keys.prefetch_slot(k);
            }
        }
    }

    /// The third step: the key confirmed (or found, when the candidate was another's or a
    /// key was made since), its windows asked into cache.
    pub(super) fn resolve(&self, a: &mut Ahead) {
        let Some((g, s)) = a.ids else { return };
        a.key = self.keys.confirm(a.key, a.hash, g, s);
        let Some(k) = a.key else { return };
        let sizes = self.cfg.windowing.sizes.len();
        for (i, (&start, &number)) in a.at.start.iter().zip(&a.at.number).enumerate().take(sizes) {
            // The slot's newest window of the size, if it is the event's (the check
            // `window_of` makes, less the key's: a wrong guess only fetches a line).
            let (p, slot_number) = self.keys.slot(k, i);
            if p != NO_POS && slot_number == number {
                a.seen[i] = p;
                if let Some(b) = self.buckets.get(i, start) {
                    b.prefetch(p);
                }
            }
        }
    }
}
