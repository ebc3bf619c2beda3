//! Liveness of the owned input partitions, from librdkafka's statistics, and the one way
//! the runtime starts a partition ([`reseek`]: resume, then seek).
//!
//! A restored partition starts by a seek to where processing stands; nothing else reads
//! the records the loop skipped while it restored. If librdkafka ever leaves such a
//! partition unfetched (one bench run had a partition that was owned, restored and never
//! read, with no error anywhere), its records wait for ever, and librdkafka reports its
//! lag as unknown, which the lag gauge counted as 0. So, every statistics sample:
//!
//! - the lag of an owned partition is the distance from where processing stands (the
//!   next unprocessed offset, else the last commit, else the log start) to the last
//!   stable offset, or 0 while librdkafka has not learnt that offset. librdkafka's own
//!   `consumer_lag` counts from the offset *its consumer* committed, and this consumer
//!   never commits: the transactions do, so it counted from the assignment's commit, or
//!   not at all (-1, read as 0) when there was none;
//! - an owned partition with a leader whose fetch position and processed offset both stay
//!   put for [`STALL_SAMPLES`] samples in a row, while committed records wait behind the
//!   fetch position or while librdkafka never fetched it and the broker's high watermark
//!   is past the processed offset ([`records_wait`]), is **stalled**: logged with
//!   librdkafka's fetch state, counted, and started again by [`reseek`] at its next
//!   unprocessed offset.
//!
//! Seeking to the next unprocessed offset is exact whatever the cause: what was processed
//! is not read again and what was fetched but not processed is dropped by the seek.
//!
//! Public so a test can drive it against a partition librdkafka really does not fetch
//! (`tests/eos_stall.rs`).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::Statistics;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::statistics::Partition;

use crate::core::{Core, one};
use crate::error::EosError;
use crate::internal_events::{ConsumerLag, PartitionStalled};
use crate::stage::Stage;

/// Samples in a row without progress that make a partition stalled (at the runtime's
/// `statistics.interval.ms` of 5 s, 15 to 20 s).
pub const STALL_SAMPLES: u32 = 3;

/// What librdkafka's statistics say about fetching one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetching {
    pub(crate) state: String,
    /// The next offset librdkafka fetches (negative: not known).
    pub(crate) position: i64,
    /// The last stable offset: the end a read_committed consumer reads to (negative: not
    /// known).
    pub(crate) stable_end: i64,
    pub(crate) committed: i64,
    pub(crate) log_start: i64,
    /// The partition's leader (negative: none known, as while its broker is down).
    pub(crate) leader: i32,
}

impl Fetching {
    pub fn of(p: &Partition) -> Self {
        Fetching {
            state: p.fetch_state.clone(),
            position: p.next_offset,
            stable_end: p.ls_offset,
            committed: p.committed_offset,
            log_start: p.lo_offset,
            leader: p.leader,
        }
    }

    /// Committed records behind librdkafka's fetch position.
    fn behind(&self) -> bool {
        self.stable_end > 0 && self.position < self.stable_end
    }

    /// No fetch answered for the partition yet: librdkafka learns the last stable offset
    /// from the first one, even for an empty partition.
    fn never_fetched(&self) -> bool {
        self.stable_end < 0
    }

    /// Committed records after `processed` (the next unprocessed offset, when known; else
    /// from the last commit, else from the log start); 0 while the last stable offset is
    /// not known. Transaction markers count: up to one a partition after a caught-up
    /// transactional input.
    pub fn lag(&self, processed: Option<i64>) -> i64 {
        if self.stable_end < 0 {
            return 0;
        }
        let from = processed
            .or((self.committed >= 0).then_some(self.committed))
            .unwrap_or(self.log_start.max(0));
        (self.stable_end - from).max(0)
    }
}

/// One statistics sample of the owned partitions.
pub type Sample = HashMap<i32, Fetching>;

/// The sample of `topic`'s partitions in librdkafka's statistics (empty when it has none).
pub fn sample_of(stats: &Statistics, topic: &str) -> Sample {
    stats.topics.get(topic).map_or_else(Sample::new, |t| {
        t.partitions
            .values()
            .filter(|p| p.partition >= 0)
            .map(|p| (p.partition, Fetching::of(p)))
            .collect()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    position: i64,
    processed: Option<i64>,
    still: u32,
}

/// Counts, per owned partition, the samples in a row without progress.
#[derive(Debug, Default)]
pub struct Watch {
    seen: HashMap<i32, Seen>,
}

impl Watch {
    /// Takes one sample of the owned partitions (`processed`: the next unprocessed offset
    /// when known) and returns those that made no progress for [`STALL_SAMPLES`] samples
    /// in a row while records wait behind the fetch position, or while never fetched (then
    /// [`records_wait`] says whether it matters); their count starts again.
    pub fn observe(&mut self, owned: &[(i32, Option<i64>)], sample: &Sample) -> Vec<i32> {
        let mut stalled = Vec::new();
        let mut seen = HashMap::with_capacity(owned.len());
        for &(p, processed) in owned {
            // A partition without a leader is not fetched for a reason the lag and the
            // broker alerts already tell.
            let Some(f) =
                sample.get(&p).filter(|f| f.leader >= 0 && (f.behind() || f.never_fetched()))
            else {
                continue;
            };
            let still = match self.seen.get(&p) {
                Some(s) if s.position == f.position && s.processed == processed => s.still + 1,
                _ => 0,
            };
            let still = if still >= STALL_SAMPLES {
                stalled.push(p);
                0
            } else {
                still
            };
            seen.insert(p, Seen { position: f.position, processed, still });
        }
        self.seen = seen;
        stalled
    }
}

impl<S: Stage> Core<S> {
    /// Takes a statistics sample: reports the owned partitions' lag, and seeks the
    /// partitions stalled for [`STALL_SAMPLES`] samples again to their next unprocessed
    /// offset.
    pub(crate) fn fetching<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        sample: &Sample,
    ) -> Result<(), EosError> {
        // Restoring partitions count from their commit (librdkafka read it at assignment).
        let lag = (self.states.keys().map(|p| (p, self.next.get(p).copied())))
            .chain(self.restoring.keys().map(|p| (p, None)))
            .filter_map(|(p, processed)| Some(sample.get(p)?.lag(processed)))
            .sum();
        ConsumerLag { topic: &self.wiring.input, lag }.emit(self.metrics);
        let owned: Vec<(i32, Option<i64>)> =
            self.states.keys().map(|p| (*p, self.next.get(p).copied())).collect();
        for p in self.watch.observe(&owned, sample) {
            let processed = self.next.get(&p).copied();
            let Some(f) = sample.get(&p) else { continue };
            match records_wait(consumer, &self.wiring.input, p, f, processed) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot tell whether a partition that is not fetched has records");
                    continue;
                }
            }
            let at = processed.map_or(Offset::Beginning, Offset::Offset);
            PartitionStalled {
                partition: p,
                fetch_state: &f.state,
                fetch_position: f.position,
                last_stable_offset: f.stable_end,
                seek_to: at,
            }
            .emit(self.metrics);
            reseek(consumer, &self.wiring.input, p, at)?;
        }
        Ok(())
    }
}

/// Whether records wait for a partition [`Watch::observe`] found not progressing: behind
/// the last stable offset librdkafka knows, or, when it never fetched the partition,
/// behind the broker's high watermark (one ListOffsets request).
pub fn records_wait<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    p: i32,
    f: &Fetching,
    processed: Option<i64>,
) -> Result<bool, EosError> {
    if f.behind() {
        return Ok(true);
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(5))
        .map_err(|e| EosError::kafka("reading the watermarks of a partition not fetched", e))?;
    let from = processed.unwrap_or(if f.position >= 0 { f.position } else { low });
    Ok(high > from.max(low))
}

/// Resumes partition `p` of `topic` (a no-op when it is not paused) and seeks it to `at`:
/// how a restored partition starts and a stalled one starts again.
///
/// Resume first, then seek: a resume after the seek bumps the partition's op version, so
/// the answer to the offset lookup a logical seek (`Beginning`) starts comes back
/// outdated and librdkafka retries it 500 ms later (seen with `debug=topic,fetch`). The
/// seek's version barrier drops whatever the resume let librdkafka fetch in between, so
/// no record before `at` reaches the loop. The seek's own result is per partition; it
/// fails with "Erroneous state" when librdkafka has not started the partition yet (it
/// waits for the group's committed offset, and then starts there: where `at` is), which
/// is harmless; any other failure is an error, as the partition would read on from where
/// it was paused.
pub fn reseek<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    p: i32,
    at: Offset,
) -> Result<(), EosError> {
    consumer
        .resume(&one(topic, p, None))
        .map_err(|e| EosError::kafka("resuming a partition", e))?;
    let sought = consumer
        .seek_partitions(one(topic, p, Some(at)), Duration::from_secs(10))
        .map_err(|e| EosError::kafka("seeking a partition", e))?;
    for e in sought.elements() {
        match e.error() {
            Ok(()) => {}
            Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::State) => {
                tracing::info!(partition = p, offset = ?at, "partition not started yet: librdkafka starts it at the committed offset");
            }
            // Resumed where it was paused, not at `at`: the loop must not read on.
            Err(error) => return Err(EosError::kafka("seeking a partition", error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64, stable_end: i64) -> Fetching {
        Fetching {
            state: "active".into(),
            position,
            stable_end,
            committed: -1001,
            log_start: 0,
            leader: 1,
        }
    }

    fn sample(parts: &[(i32, Fetching)]) -> Sample {
        parts.iter().cloned().collect()
    }

    #[test]
    fn a_partition_that_does_not_move_while_records_wait_is_stalled_after_the_samples() {
        let mut w = Watch::default();
        let s = sample(&[(0, at(-1001, 96_000)), (1, at(500, 1_000))]);
        let owned = [(0, None), (1, Some(400))];
        for _ in 0..STALL_SAMPLES {
            assert!(w.observe(&owned, &s).is_empty());
        }
        assert_eq!(w.observe(&owned, &s), vec![0, 1]);
        // Acted on: the count starts again.
        assert!(w.observe(&owned, &s).is_empty());
    }

    #[test]
    fn progress_caught_up_or_not_owned_is_not_a_stall() {
        let mut w = Watch::default();
        for i in 0..10 {
            let s = sample(&[
                // librdkafka fetches on (the processed offset is behind: prefetch).
                (0, at(100 + i, 1_000)),
                // librdkafka waits on a full prefetch queue while processing goes on.
                (1, at(900, 1_000)),
                // Caught up: nothing waits.
                (2, at(1_000, 1_000)),
                // Empty partition.
                (3, at(0, 0)),
                // Not owned.
                (4, at(-1001, 1_000)),
                // No leader: its broker is down.
                (5, Fetching { leader: -1, ..at(-1001, 1_000) }),
            ]);
            let owned = [(0, Some(10)), (1, Some(800 + i)), (2, Some(1_000)), (3, None), (5, None)];
            assert!(w.observe(&owned, &s).is_empty(), "sample {i}");
        }
    }

    #[test]
    fn a_partition_missing_from_a_sample_starts_its_count_again() {
        let mut w = Watch::default();
        let stuck = sample(&[(0, at(-1001, 10))]);
        let owned = [(0, None)];
        for _ in 0..STALL_SAMPLES {
            assert!(w.observe(&owned, &stuck).is_empty());
        }
        assert!(w.observe(&owned, &Sample::new()).is_empty());
        assert!(w.observe(&owned, &stuck).is_empty());
    }

    #[test]
    fn the_lag_counts_from_where_processing_stands() {
        let mut f = at(-1001, 96_000);
        assert_eq!(f.lag(Some(95_000)), 1_000, "from the next unprocessed offset");
        assert_eq!(f.lag(None), 96_000, "nothing processed or committed: from the log start");
        f.committed = 90_000;
        assert_eq!(f.lag(None), 6_000, "nothing processed: from the commit");
        assert_eq!(f.lag(Some(96_000)), 0, "caught up");
        assert_eq!(f.lag(Some(97_000)), 0, "never negative");
        f.stable_end = -1;
        assert_eq!(f.lag(Some(0)), 0, "nothing known");
    }
}
