//! Window arithmetic: which windows an event falls in, when a window closes, and when its
//! state may be dropped. Pure functions of event time, watermark and wall clock, so the
//! same rules hold live, after a restore, and in the proptest reference model.
//!
//! A window `[start, end)` of size `s` is aligned to the epoch: `start = t - t mod s`.
//! Every size has its own grace and allowed lateness (`docs/lateness.md`). A window
//! **closes** when the watermark reaches `end + grace`, or at the latest when the wall
//! clock reaches `end + max_close_delay` (a quiet grid or an idle partition never stalls
//! it). The wall clock given to these rules is the partition's (see
//! `PartitionState::clock`): it only moves while the watermark stands still. After closing
//! a window accepts late events for its `allowed_lateness` more (each changes the window
//! and emits revision + 1), then **expires**: its state is dropped.
//!
//! Lateness is judged **per size**: an event counts in every window of it that has not
//! expired, and is **late** — it goes to `sales.late.v1` — only when all of them have. A
//! shop that uploads a few hours late misses its 5-minute windows but still counts in its
//! hour and its day.

use serde::Serialize;

/// Event-time milliseconds.
pub type Millis = i64;

/// The window settings of one aggregator, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Windowing {
    /// Tumbling window sizes, ascending and distinct.
    pub sizes: Vec<Millis>,
    /// Per size: a window closes when the watermark passes its end plus this.
    pub grace: Vec<Millis>,
    /// Per size: after closing, late events still revise a window for this long.
    pub allowed_lateness: Vec<Millis>,
    /// Watermark = largest event time seen − this.
    pub out_of_orderness: Millis,
    /// Wall-clock bound on closing: a window closes at the latest this long after its end.
    pub max_close_delay: Millis,
}

/// Why an event counts in no window (the reason given with it on `sales.late.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Late {
    /// The latest-expiring window of the event: `(size, end)`.
    pub last_window: (Millis, Millis),
    /// Event time at which that window expired by the watermark rule.
    pub expired_at: Millis,
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (size, end) = self.last_window;
        write!(
            f,
            "every window of occurred_at has expired (the last, {size} ms ending at {end}, \
             stopped accepting at {}); widen allowed_lateness_ms and run `nearfield replay --late`",
            self.expired_at
        )
    }
}

impl Windowing {
    /// Start of the window of `size` containing `t` (saturating at the ends of time: a
    /// time read back from a corrupt changelog must not panic).
    pub fn start(t: Millis, size: Millis) -> Millis {
        t.saturating_sub(t.rem_euclid(size))
    }

    /// The windows containing `t`, as `(size index, start, end)`.
    pub fn windows_of(&self, t: Millis) -> impl Iterator<Item = (usize, Millis, Millis)> + '_ {
        self.sizes.iter().enumerate().map(move |(i, &s)| {
            let start = Self::start(t, s);
            (i, start, start.saturating_add(s))
        })
    }

    /// The windows overlapping `[from, to]` (both inclusive), as `(size index, start,
    /// end)`, oldest first per size; empty when `from > to`.
    pub fn windows_between(
        &self,
        from: Millis,
        to: Millis,
    ) -> impl Iterator<Item = (usize, Millis, Millis)> + '_ {
        self.sizes.iter().enumerate().flat_map(move |(i, &s)| {
            let first = Self::start(from, s);
            let last = if from > to { first.saturating_sub(s) } else { Self::start(to, s) };
            // The caller bounds the span (a heartbeat's backlog: the event horizon).
            let n = last.checked_sub(first).filter(|d| *d >= 0).map_or(0, |d| (d / s + 1) as usize);
            (0..n).map(move |k| {
                let start = first + k as Millis * s;
                (i, start, start.saturating_add(s))
            })
        })
    }

    /// The windows containing `t` that still accept it (not expired).
    pub fn accepting(
        &self,
        t: Millis,
        watermark: Millis,
        now: Millis,
    ) -> impl Iterator<Item = (usize, Millis, Millis)> + '_ {
        self.windows_of(t).filter(move |&(i, _, end)| !self.is_expired(i, end, watermark, now))
    }

    /// Whether the window of size index `i` ending at `end` is closed.
    pub fn is_closed(&self, i: usize, end: Millis, watermark: Millis, now: Millis) -> bool {
        watermark >= end.saturating_add(self.grace[i])
            || now >= end.saturating_add(self.max_close_delay)
    }

    /// Whether the window of size index `i` ending at `end` is past its allowed lateness
    /// (it counts nothing more; its state may go).
    pub fn is_expired(&self, i: usize, end: Millis, watermark: Millis, now: Millis) -> bool {
        let (by_watermark, by_clock) = self.expires_at(i, end);
        watermark >= by_watermark || now >= by_clock
    }

    /// The watermark and the wall clock at which the window of size index `i` ending at
    /// `end` expires ([`is_expired`](Self::is_expired) from either on).
    pub fn expires_at(&self, i: usize, end: Millis) -> (Millis, Millis) {
        let lateness = self.allowed_lateness[i];
        (
            end.saturating_add(self.grace[i]).saturating_add(lateness),
            end.saturating_add(self.max_close_delay).saturating_add(lateness),
        )
    }

    /// `Some(why)` when an event at `t` counts in no window any more.
    pub fn late(&self, t: Millis, watermark: Millis, now: Millis) -> Option<Late> {
        if self.accepting(t, watermark, now).next().is_some() || self.sizes.is_empty() {
            return None;
        }
        Some(self.last_window(t))
    }

    /// The latest-expiring window of an event at `t`, as the reason it is late (also when
    /// its state was dropped under narrower settings).
    pub fn last_window(&self, t: Millis) -> Late {
        let (i, end) = self
            .windows_of(t)
            .map(|(i, _, end)| (i, end))
            .max_by_key(|&(i, end)| self.expiry(i, end))
            .unwrap_or((0, Millis::MAX));
        Late {
            last_window: (self.sizes.get(i).copied().unwrap_or(0), end),
            expired_at: self.expiry(i, end),
        }
    }

    /// Whether an event at `t` counts in no window any more.
    pub fn is_late(&self, t: Millis, watermark: Millis, now: Millis) -> bool {
        self.late(t, watermark, now).is_some()
    }

    /// The watermark at which the window of size index `i` ending at `end` expires.
    pub fn expiry(&self, i: usize, end: Millis) -> Millis {
        let (g, l) = (self.grace.get(i).copied(), self.allowed_lateness.get(i).copied());
        end.saturating_add(g.unwrap_or(0)).saturating_add(l.unwrap_or(0))
    }

    /// The watermark at which the last window of an event at `t` expires: how long its
    /// `event_id` must be remembered.
    pub fn horizon(&self, t: Millis) -> Millis {
        self.windows_of(t).map(|(i, _, end)| self.expiry(i, end)).max().unwrap_or(Millis::MAX)
    }

    /// Whether every window with [`horizon`](Self::horizon) `h` has expired, by the
    /// watermark or (later by at most `grace`) the wall clock.
    pub fn horizon_passed(&self, h: Millis, watermark: Millis, now: Millis) -> bool {
        watermark >= h || now >= h.saturating_add(self.max_close_delay)
    }

    /// How old (`received_at − occurred_at`) an event may be and still find a window
    /// that accepts it: the largest size + grace + allowed lateness, plus the watermark's
    /// out-of-orderness and the wall-clock close delay as a margin. Ingest refuses older
    /// events (422 `occurred_at`), since no window would count them.
    pub fn max_event_age(&self) -> Millis {
        let widest = (0..self.sizes.len())
            .map(|i| self.sizes[i] + self.grace[i] + self.allowed_lateness[i])
            .max()
            .unwrap_or(0);
        widest + self.out_of_orderness + self.max_close_delay
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
        for (name, v) in
            [("grace_ms", &self.grace), ("allowed_lateness_ms", &self.allowed_lateness)]
        {
            if v.len() != self.sizes.len() {
                return Err(format!(
                    "{name}: give one value for every size, or one value for all ({} sizes, {} values)",
                    self.sizes.len(),
                    v.len()
                ));
            }
            if v.iter().any(|&x| x < 0) {
                return Err(format!("{name}: must be >= 0"));
            }
        }
        for (name, v) in [
            ("out_of_orderness_ms", self.out_of_orderness),
            ("max_close_delay_ms", self.max_close_delay),
        ] {
            if v < 0 {
                return Err(format!("{name}: must be >= 0"));
            }
        }
        Ok(())
    }
}

/// The record key of an output window, `id|id…|start|end` (`demand.v1`: sku and grid;
/// `coverage.v1`: grid), written into `buf`: the key the topics compact on, one per
/// window (SPEC §4). No allocation and no formatting machinery per output.
pub fn output_key(buf: &mut Vec<u8>, ids: &[&str], start: Millis, end: Millis) {
    buf.clear();
    let mut n = itoa::Buffer::new();
    for id in ids {
        buf.extend_from_slice(id.as_bytes());
        buf.push(b'|');
    }
    buf.extend_from_slice(n.format(start).as_bytes());
    buf.push(b'|');
    buf.extend_from_slice(n.format(end).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_key_is_its_ids_and_window_joined_by_bars() {
        let mut buf = b"left over".to_vec();
        output_key(&mut buf, &["SKU-1", "8831aa5551fffff"], -300_000, i64::MAX);
        assert_eq!(buf, format!("SKU-1|8831aa5551fffff|-300000|{}", i64::MAX).into_bytes());
        output_key(&mut buf, &["g"], 0, 5);
        assert_eq!(buf, b"g|0|5");
    }
    use proptest::prelude::*;

    const MIN: Millis = 60_000;
    const HOUR: Millis = 60 * MIN;

    fn w() -> Windowing {
        Windowing {
            sizes: vec![5 * MIN, HOUR],
            grace: vec![10_000, 10_000],
            allowed_lateness: vec![10 * MIN, 2 * HOUR],
            out_of_orderness: 30_000,
            max_close_delay: 2 * MIN,
        }
    }

    #[test]
    fn windows_are_aligned_half_open_intervals() {
        let w = w();
        let got: Vec<_> = w.windows_of(HOUR + 5 * MIN - 1).collect();
        assert_eq!(got, vec![(0, HOUR, HOUR + 5 * MIN), (1, HOUR, 2 * HOUR)]);
        let got: Vec<_> = w.windows_of(HOUR + 5 * MIN).collect();
        assert_eq!(got[0], (0, HOUR + 5 * MIN, HOUR + 10 * MIN));
        // Before the epoch too.
        assert_eq!(Windowing::start(-1, 5 * MIN), -5 * MIN);
    }

    #[test]
    fn close_and_expiry_by_watermark_or_wall_clock_per_size() {
        let w = w();
        let end = 5 * MIN;
        assert!(!w.is_closed(0, end, end + 9_999, 0));
        assert!(w.is_closed(0, end, end + 10_000, 0));
        assert!(
            w.is_closed(0, end, Millis::MIN, end + 2 * MIN),
            "wall clock closes a quiet window"
        );
        assert!(!w.is_expired(0, end, end + 10_000, 0));
        assert!(w.is_expired(0, end, end + 10_000 + 10 * MIN, 0));
        assert!(!w.is_expired(1, end, end + 10_000 + 10 * MIN, 0), "the hour accepts for 2 h");
        assert!(w.is_expired(0, end, Millis::MIN, end + 12 * MIN));
    }

    #[test]
    fn an_event_hours_late_still_counts_in_its_hour() {
        let w = w();
        let t = HOUR + 7 * MIN;
        // The watermark is 1 h 30 min past the event: its 5-minute window is gone, its hour
        // (closed at 2 h + 10 s, accepting until 4 h + 10 s) is not.
        let wm = t + 90 * MIN;
        let got: Vec<_> = w.accepting(t, wm, 0).collect();
        assert_eq!(got, vec![(1, HOUR, 2 * HOUR)]);
        assert_eq!(w.late(t, wm, 0), None);
        let gone = w.late(t, 4 * HOUR + 10_000, 0).expect("both windows expired");
        assert_eq!(gone.last_window, (HOUR, 2 * HOUR));
        assert_eq!(gone.expired_at, 4 * HOUR + 10_000);
        assert!(gone.to_string().contains("nearfield replay --late"));
        assert_eq!(w.horizon(t), 4 * HOUR + 10_000);
    }

    #[test]
    fn ingest_horizon_covers_the_widest_window() {
        let w = w();
        assert_eq!(w.max_event_age(), HOUR + 10_000 + 2 * HOUR + 30_000 + 2 * MIN);
    }

    #[test]
    fn settings_are_validated_by_name() {
        let mut bad = w();
        bad.sizes = vec![HOUR, 5 * MIN];
        assert!(bad.validate().expect_err("order").starts_with("windows_ms"));
        let mut bad = w();
        bad.grace = vec![-1, 0];
        assert!(bad.validate().expect_err("neg").starts_with("grace_ms"));
        let mut bad = w();
        bad.allowed_lateness = vec![0];
        let e = bad.validate().expect_err("count");
        assert!(e.starts_with("allowed_lateness_ms: give one value for every size"), "{e}");
    }

    fn any_windowing() -> impl Strategy<Value = Windowing> {
        (
            proptest::collection::vec(0i64..3 * HOUR, 3),
            proptest::collection::vec(0i64..50 * HOUR, 3),
            0i64..10 * MIN,
            0i64..10 * MIN,
        )
            .prop_map(|(grace, allowed_lateness, out_of_orderness, max_close_delay)| {
                Windowing {
                    sizes: vec![5 * MIN, HOUR, 24 * HOUR],
                    grace,
                    allowed_lateness,
                    out_of_orderness,
                    max_close_delay,
                }
            })
    }

    /// Found by the fuzzer: a version 3 de-duplication record with a first window end
    /// near `i64::MIN` overflowed the window start.
    #[test]
    fn times_at_the_ends_of_the_range_do_not_panic() {
        let w = w();
        for t in [Millis::MIN, Millis::MIN + 1, Millis::MAX] {
            let _ = Windowing::start(t, 5 * MIN);
            let _ = w.horizon(t);
            let _ = w.windows_of(t).count();
            let _ = w.windows_between(t, t).count();
            let _ = w.late(t, Millis::MIN, Millis::MAX);
        }
    }

    proptest! {
        #[test]
        fn every_event_is_in_exactly_one_window_per_size(t in -1_000_000_000_000i64..4_000_000_000_000, s in 1i64..100_000_000) {
            let start = Windowing::start(t, s);
            prop_assert!(start <= t && t < start + s);
            prop_assert_eq!(start.rem_euclid(s), 0);
        }

        #[test]
        fn windows_between_are_exactly_those_overlapping_the_span(w in any_windowing(), from in -10 * HOUR..100 * HOUR, len in -HOUR..50 * HOUR) {
            let to = from + len;
            let got: Vec<_> = w.windows_between(from, to).collect();
            for (i, &s) in w.sizes.iter().enumerate() {
                let mine: Vec<_> = got.iter().filter(|x| x.0 == i).collect();
                if from > to {
                    prop_assert!(mine.is_empty());
                    continue;
                }
                // Contiguous, aligned, and covering from and to.
                prop_assert_eq!(mine.first().map(|x| x.1), Some(Windowing::start(from, s)));
                prop_assert_eq!(mine.last().map(|x| x.1), Some(Windowing::start(to, s)));
                for pair in mine.windows(2) {
                    prop_assert_eq!(pair[0].2, pair[1].1);
                }
                for x in &mine {
                    prop_assert!(x.1 <= to && x.2 > from && x.2 - x.1 == s);
                }
            }
        }

        #[test]
        fn closing_and_expiry_are_monotone(w in any_windowing(), i in 0usize..3, end in -1_000_000i64..1_000_000, wm in -2_000_000i64..2_000_000, now in -2_000_000i64..2_000_000, dw in 0i64..1_000_000, dn in 0i64..1_000_000) {
            // Once closed or expired, a window stays so as watermark and clock advance.
            if w.is_closed(i, end, wm, now) { prop_assert!(w.is_closed(i, end, wm + dw, now + dn)); }
            if w.is_expired(i, end, wm, now) {
                prop_assert!(w.is_expired(i, end, wm + dw, now + dn));
                prop_assert!(w.is_closed(i, end, wm, now), "expired implies closed");
            }
        }

        #[test]
        fn late_means_every_window_expired_and_the_horizon_outlives_them(w in any_windowing(), t in 0i64..100 * HOUR, wm in 0i64..200 * HOUR, now in 0i64..200 * HOUR) {
            let late = w.is_late(t, wm, now);
            let all_expired = w.windows_of(t).all(|(i, _, end)| w.is_expired(i, end, wm, now));
            prop_assert_eq!(late, all_expired);
            // An id is forgotten only once no window of its event accepts it any more.
            if w.horizon_passed(w.horizon(t), wm, now) {
                prop_assert!(all_expired);
            }
            // Ingest's horizon: an event older than it is late once the watermark (or the
            // wall clock) has reached the ingest clock less the out-of-orderness.
            let received = t + w.max_event_age() + 1;
            prop_assert!(w.is_late(t, received - w.out_of_orderness, Millis::MIN));
        }
    }
}
