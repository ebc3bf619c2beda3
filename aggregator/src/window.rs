//! Window arithmetic: which windows an event falls in, when a window closes, and when its
//! state may be dropped. Pure functions of event time, watermark and wall clock, so the
//! same rules hold live, after a restore, and in the proptest reference model.
//!
//! A window `[start, end)` of size `s` is aligned to the epoch: `start = t - t mod s`.
//! It **closes** when the watermark reaches `end + grace`, or at the latest when the wall
//! clock reaches `end + max_close_delay` (a quiet grid or an idle partition never stalls
//! it). The wall clock given to these rules is the partition's (see
//! `PartitionState::clock`): it only moves while the watermark stands still. After closing it accepts late events for `allowed_lateness` more (each changes
//! the window and emits revision + 1), then **expires**: its state is dropped. An event is
//! **late** when the earliest-ending window it belongs to has expired; a late event counts
//! in no window and goes to `sales.late.v1`, so every event is either counted in all its
//! windows or in none.

use serde::Serialize;

/// Event-time milliseconds.
pub type Millis = i64;

/// The window settings of one aggregator, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Windowing {
    /// Tumbling window sizes, ascending and distinct.
    pub sizes: Vec<Millis>,
    /// Watermark = largest event time seen − this.
    pub out_of_orderness: Millis,
    /// A window closes when the watermark passes its end plus this.
    pub grace: Millis,
    /// After closing, late events still revise a window for this long.
    pub allowed_lateness: Millis,
    /// Wall-clock bound on closing: a window closes at the latest this long after its end.
    pub max_close_delay: Millis,
}

impl Windowing {
    /// Start of the window of `size` containing `t`.
    pub fn start(t: Millis, size: Millis) -> Millis {
        t - t.rem_euclid(size)
    }

    /// The windows containing `t`, as `(size index, start, end)`.
    pub fn windows_of(&self, t: Millis) -> impl Iterator<Item = (usize, Millis, Millis)> + '_ {
        self.sizes.iter().enumerate().map(move |(i, &s)| {
            let start = Self::start(t, s);
            (i, start, start.saturating_add(s))
        })
    }

    /// The earliest end among the windows containing `t`: the one that expires first.
    pub fn first_end(&self, t: Millis) -> Millis {
        self.windows_of(t).map(|(_, _, e)| e).min().unwrap_or(Millis::MAX)
    }

    /// Whether a window ending at `end` is closed.
    pub fn is_closed(&self, end: Millis, watermark: Millis, now: Millis) -> bool {
        watermark >= end.saturating_add(self.grace)
            || now >= end.saturating_add(self.max_close_delay)
    }

    /// Whether a window ending at `end` is past its allowed lateness (its state may go).
    pub fn is_expired(&self, end: Millis, watermark: Millis, now: Millis) -> bool {
        watermark >= end.saturating_add(self.grace).saturating_add(self.allowed_lateness)
            || now >= end.saturating_add(self.max_close_delay).saturating_add(self.allowed_lateness)
    }

    /// Whether an event at `t` is too late to count anywhere.
    pub fn is_late(&self, t: Millis, watermark: Millis, now: Millis) -> bool {
        self.is_expired(self.first_end(t), watermark, now)
    }

    /// The watermark after events whose largest (clamped) time is `max_event_time`.
    pub fn watermark(&self, max_event_time: Option<Millis>) -> Millis {
        max_event_time.map_or(Millis::MIN, |m| m.saturating_sub(self.out_of_orderness))
    }

    /// Checks the settings; the error names the setting and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.sizes.is_empty() {
            return Err("windows_ms: at least one window size is required".into());
        }
        if self.sizes.iter().any(|&s| s <= 0) {
            return Err("windows_ms: every size must be > 0".into());
        }
        if self.sizes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("windows_ms: sizes must be ascending and distinct".into());
        }
        for (name, v) in [
            ("out_of_orderness_ms", self.out_of_orderness),
            ("grace_ms", self.grace),
            ("allowed_lateness_ms", self.allowed_lateness),
            ("max_close_delay_ms", self.max_close_delay),
        ] {
            if v < 0 {
                return Err(format!("{name}: must be >= 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w() -> Windowing {
        Windowing {
            sizes: vec![300_000, 3_600_000],
            out_of_orderness: 30_000,
            grace: 10_000,
            allowed_lateness: 600_000,
            max_close_delay: 120_000,
        }
    }

    #[test]
    fn windows_are_aligned_half_open_intervals() {
        let w = w();
        let got: Vec<_> = w.windows_of(3_600_000 + 299_999).collect();
        assert_eq!(got, vec![(0, 3_600_000, 3_900_000), (1, 3_600_000, 7_200_000)]);
        let got: Vec<_> = w.windows_of(3_900_000).collect();
        assert_eq!(got[0], (0, 3_900_000, 4_200_000));
        // Before the epoch too.
        assert_eq!(Windowing::start(-1, 300_000), -300_000);
    }

    #[test]
    fn close_and_expiry_by_watermark_or_wall_clock() {
        let w = w();
        let end = 300_000;
        assert!(!w.is_closed(end, end + 9_999, 0));
        assert!(w.is_closed(end, end + 10_000, 0));
        assert!(w.is_closed(end, Millis::MIN, end + 120_000), "wall clock closes a quiet window");
        assert!(!w.is_expired(end, end + 10_000, 0));
        assert!(w.is_expired(end, end + 610_000, 0));
        assert!(w.is_expired(end, Millis::MIN, end + 720_000));
    }

    #[test]
    fn settings_are_validated_by_name() {
        let mut bad = w();
        bad.sizes = vec![3_600_000, 300_000];
        assert!(bad.validate().expect_err("order").starts_with("windows_ms"));
        let mut bad = w();
        bad.grace = -1;
        assert!(bad.validate().expect_err("neg").starts_with("grace_ms"));
    }

    proptest! {
        #[test]
        fn every_event_is_in_exactly_one_window_per_size(t in -1_000_000_000_000i64..4_000_000_000_000, s in 1i64..100_000_000) {
            let start = Windowing::start(t, s);
            prop_assert!(start <= t && t < start + s);
            prop_assert_eq!(start.rem_euclid(s), 0);
        }

        #[test]
        fn closing_and_expiry_are_monotone(end in -1_000_000i64..1_000_000, wm in -2_000_000i64..2_000_000, now in -2_000_000i64..2_000_000, dw in 0i64..1_000_000, dn in 0i64..1_000_000) {
            let w = w();
            // Once closed or expired, a window stays so as watermark and clock advance.
            if w.is_closed(end, wm, now) { prop_assert!(w.is_closed(end, wm + dw, now + dn)); }
            if w.is_expired(end, wm, now) {
                prop_assert!(w.is_expired(end, wm + dw, now + dn));
                prop_assert!(w.is_closed(end, wm, now), "expired implies closed");
            }
        }

        #[test]
        fn a_late_event_has_every_window_closed(t in 0i64..100_000_000, wm in 0i64..200_000_000, now in 0i64..200_000_000) {
            let w = w();
            if w.is_late(t, wm, now) {
                for (_, _, end) in w.windows_of(t) {
                    prop_assert!(w.is_closed(end, wm, now) || end > w.first_end(t));
                }
            }
        }
    }
}
