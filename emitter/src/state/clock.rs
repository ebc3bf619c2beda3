//! The demand clock of one `demand.v1` partition: the lowest watermark over the
//! aggregator partitions (`source_partition`) whose windows arrive on it.
//!
//! Every `DemandWindow` carries the watermark of the aggregator partition that emitted it.
//! Taking the largest of those (as the first emitter did) lets one fast aggregator
//! partition complete a bucket that a lagging one has not closed yet: its windows then
//! arrive after the plan and revise it. Here each source keeps its own clock (its
//! watermark, or the end of a final window, whichever is later) and the demand clock is
//! the minimum over the sources, never going back. A source that sends nothing for
//! `source_idle_ms` of wall-clock time stops holding the clock back (it is *idle*, counted
//! in `nearfield_emitter_sources_idled_total`) until its next record.
//!
//! Records with a watermark of 0 or less (corrections replayed from `sales.late.v1`) carry
//! no clock. Records of writers older than `source_partition` all count as source −1,
//! which keeps the old behaviour for them (one source: its largest watermark).

use std::collections::BTreeMap;

/// What the clock knows of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Source {
    /// Its watermark (or the end of its latest final window).
    pub(crate) clock: i64,
    /// Silent for `source_idle_ms`: not holding the clock back.
    pub(crate) idle: bool,
    /// Wall-clock time of its latest record (of the restore, after one).
    pub(crate) heard_wall: i64,
}

/// The per-source clocks and their minimum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Clock {
    sources: BTreeMap<i32, Source>,
}

impl Clock {
    /// A record from `source` at wall-clock `now` says the source reached `t`. Returns
    /// whether the source was idle until now.
    pub(crate) fn observe(&mut self, source: i32, t: i64, now: i64) -> bool {
        let s = self.sources.entry(source).or_insert(Source {
            clock: i64::MIN,
            idle: false,
            heard_wall: now,
        });
        s.clock = s.clock.max(t);
        s.heard_wall = now;
        std::mem::replace(&mut s.idle, false)
    }

    /// The minimum over the sources not idle (`None` before any record, or when all are
    /// idle).
    pub(crate) fn min_active(&self) -> Option<i64> {
        self.sources.values().filter(|s| !s.idle).map(|s| s.clock).min()
    }

    /// Marks idle every source silent for `idle_ms` at wall-clock `now` (0 disables);
    /// returns how many became idle.
    pub(crate) fn idle_silent(&mut self, now: i64, idle_ms: i64) -> u64 {
        if idle_ms <= 0 {
            return 0;
        }
        let mut n = 0;
        for s in self.sources.values_mut() {
            if !s.idle && now.saturating_sub(s.heard_wall) >= idle_ms {
                s.idle = true;
                n += 1;
            }
        }
        n
    }

    /// Silence counts from `now` for every source (after a restore).
    pub(crate) fn heard_all(&mut self, now: i64) {
        for s in self.sources.values_mut() {
            s.heard_wall = now;
        }
    }

    /// (sources, of which idle).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.sources.len(), self.sources.values().filter(|s| s.idle).count())
    }

    /// The sources, for the changelog.
    pub(crate) fn sources(&self) -> impl Iterator<Item = (i32, &Source)> {
        self.sources.iter().map(|(k, v)| (*k, v))
    }

    /// Restores one source.
    pub(crate) fn insert(&mut self, source: i32, clock: i64, idle: bool) {
        self.sources.insert(source, Source { clock, idle, heard_wall: i64::MIN });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_slowest_source_until_it_falls_silent() {
        let mut c = Clock::default();
        assert_eq!(c.min_active(), None);
        assert!(!c.observe(0, 100, 0));
        assert!(!c.observe(1, 40, 0));
        assert_eq!(c.min_active(), Some(40));
        c.observe(0, 500, 10);
        assert_eq!(c.min_active(), Some(40), "source 1 holds it back");
        assert_eq!(c.idle_silent(10, 0), 0, "0 never lets a source go");
        assert_eq!(c.idle_silent(20, 15), 1, "source 1 silent since 0");
        assert_eq!(c.min_active(), Some(500));
        assert_eq!(c.counts(), (2, 1));
        assert!(c.observe(1, 60, 30), "it was idle");
        assert_eq!(c.min_active(), Some(60), "back, it holds the clock again");
        c.observe(1, 10, 31);
        assert_eq!(c.min_active(), Some(60), "a source's clock never goes back");
    }
}
