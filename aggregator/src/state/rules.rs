//! Which of an event's windows still accept events (the lateness rules), and the horizon
//! of its id, kept from one event to the next: consecutive events mostly share their
//! windows, and the answer for the same windows changes only when one of them expires.

use crate::config::MAX_SIZES;
use crate::window::Millis;

use super::{PartitionState, Placed};

/// What the window rules said of the windows `at`: which accept events, and the horizon
/// of their events' ids. It stays the answer while the watermark is below
/// `watermark_below` and the clock below `clock_below` (the first expiry of an accepted
/// window by either; both only move forward, and a window that stopped accepting never
/// accepts again) and no window expires at a flush (which drops it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ruled {
    at: Placed,
    /// Size indices of the windows of `at` that accept events (`accepted[..windows]`).
    accepted: [u8; MAX_SIZES],
    windows: usize,
    horizon: Millis,
    watermark_below: Millis,
    clock_below: Millis,
}

impl PartitionState {
    /// The windows of `at` that accept events at watermark `wm` and clock `clock` (size
    /// indices, `accepted[..windows]`) and the horizon of their events' ids: the answer
    /// kept for the event before when it still holds, else the rules' anew. Read in
    /// place: copying the whole answer out cost more than the rules it saves.
    #[inline]
    pub(super) fn rules(
        &mut self,
        at: Placed,
        wm: Millis,
        clock: Millis,
    ) -> ([u8; MAX_SIZES], usize, Millis) {
        match &self.ruled {
            Some(r) if r.at == at && wm < r.watermark_below && clock < r.clock_below => {
                (r.accepted, r.windows, r.horizon)
            }
            _ => {
                let r = self.rule(at, wm, clock);
                self.ruled = Some(r);
                (r.accepted, r.windows, r.horizon)
            }
        }
    }

    /// One pass of the window rules over the windows `at`: those that accept events (at
    /// most one per size), the horizon of their events' ids (the latest of their
    /// expiries), and until when that holds.
    fn rule(&self, at: Placed, wm: Millis, clock: Millis) -> Ruled {
        let w = &self.cfg.windowing;
        let mut r = Ruled {
            at,
            accepted: [0; MAX_SIZES],
            windows: 0,
            horizon: Millis::MIN,
            watermark_below: Millis::MAX,
            clock_below: Millis::MAX,
        };
        for (i, (&size, &start)) in w.sizes.iter().zip(&at.start).enumerate() {
            let end = start.saturating_add(size);
            r.horizon = r.horizon.max(w.expiry(i, end));
            let (by_watermark, by_clock) = w.expires_at(i, end);
            let kept = end > self.expired_through[i] && wm < by_watermark && clock < by_clock;
            if kept && r.windows < MAX_SIZES {
                r.accepted[r.windows] = i as u8;
                r.windows += 1;
                r.watermark_below = r.watermark_below.min(by_watermark);
                r.clock_below = r.clock_below.min(by_clock);
            }
        }
        r
    }

    /// Windows of size index `i` ending at or before `end` have expired: they count
    /// nothing more (the rules' answer kept for the last event's windows is dropped).
    pub(super) fn set_expired_through(&mut self, i: usize, end: Millis) {
        self.expired_through[i] = end;
        self.ruled = None;
    }
}
