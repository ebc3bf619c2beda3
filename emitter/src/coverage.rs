//! How completely each region reported, per closed bucket: the aggregator's `GridCoverage`
//! records (`coverage.v1`, one per grid with registered stores per closed window, selling
//! or not) rolled up to the emitter's regions (the grid's H3 parent at
//! `region_resolution`).
//!
//! The demand windows of a SKU only name the grids where that SKU sold; coverage names
//! every grid, so a plan's `stores_expected` counts the region's silent shops too, and a
//! store that said it holds unsent sales (heartbeat `pending_events`) counts as not yet
//! reported when firmness is judged. The book is a side table like the catalog: every
//! emitter instance follows the whole topic (a global table, as Kafka Streams would have
//! it), keeps the last `keep` buckets, and is rebuilt from the topic on start.

use std::collections::HashMap;
use std::sync::Mutex;

use h3o::{CellIndex, Resolution};
use nearfield_schemas::GridCoverage;

/// Coverage figures of a grid or a region for one bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Active stores registered.
    pub expected: i64,
    /// Stores that reported during the bucket (a sale or a heartbeat).
    pub reporting: i64,
    /// Stores whose device said it holds sales for the bucket not uploaded yet.
    pub pending: i64,
    /// How many sales those stores hold.
    pub pending_events: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures, sign: i64) {
        self.expected += sign * o.expected;
        self.reporting += sign * o.reporting;
        self.pending += sign * o.pending;
        self.pending_events += sign * o.pending_events;
    }

    /// Share of the expected stores that reported and hold nothing back (0 when none
    /// are expected).
    pub fn settled_share(&self) -> f64 {
        if self.expected <= 0 {
            return 0.0;
        }
        (self.reporting - self.pending).max(0) as f64 / self.expected as f64
    }
}

/// What became of one coverage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted for its region and bucket (or replaced an earlier record of the same key).
    Counted,
    /// A window of another size than the emitter's bucket, or older than what is kept.
    Skipped,
}

#[derive(Debug, Default)]
struct Book {
    grids: HashMap<(CellIndex, i64), Figures>,
    regions: HashMap<(CellIndex, i64), Figures>,
    newest_end: i64,
}

/// The coverage book (see the module docs). Written by the follower thread, read by the
/// loop at decisions; never touched by HTTP handlers.
#[derive(Debug)]
pub struct Coverage {
    book: Mutex<Book>,
    region_res: Resolution,
    bucket: i64,
    keep: i64,
}

impl Coverage {
    /// A book for `bucket`-long windows rolled up to `region_res`, keeping `keep_buckets`.
    pub fn new(region_res: Resolution, bucket: i64, keep_buckets: usize) -> Self {
        Coverage {
            book: Mutex::new(Book { newest_end: i64::MIN, ..Book::default() }),
            region_res,
            bucket,
            keep: i64::try_from(keep_buckets).unwrap_or(i64::MAX).max(1),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one record; the error names the field and the rule.
    pub fn apply(&self, rec: &GridCoverage) -> Result<Applied, String> {
        let grid: CellIndex = rec
            .grid_id
            .parse()
            .map_err(|_| format!("grid_id: {:?} is not an H3 cell", rec.grid_id))?;
        if rec.window_end.checked_sub(rec.window_start) != Some(self.bucket)
            || rec.window_end.rem_euclid(self.bucket) != 0
        {
            return Ok(Applied::Skipped);
        }
        if [rec.stores_expected, rec.stores_reporting, rec.stores_pending].iter().any(|n| *n < 0)
            || rec.pending_events < 0
        {
            return Err("stores_expected, stores_reporting, stores_pending, pending_events: \
                        must not be negative"
                .into());
        }
        let region = if grid.resolution() > self.region_res {
            grid.parent(self.region_res).unwrap_or(grid)
        } else {
            grid
        };
        let end = rec.window_end;
        let figures = Figures {
            expected: rec.stores_expected.into(),
            reporting: rec.stores_reporting.into(),
            pending: rec.stores_pending.into(),
            pending_events: rec.pending_events,
        };
        let mut book = self.book();
        let horizon = book.newest_end.saturating_sub(self.keep.saturating_mul(self.bucket));
        if end <= horizon {
            return Ok(Applied::Skipped);
        }
        let old = book.grids.insert((grid, end), figures);
        let r = book.regions.entry((region, end)).or_default();
        if let Some(old) = old {
            r.add(&old, -1);
        }
        r.add(&figures, 1);
        if end > book.newest_end {
            book.newest_end = end;
            let horizon = end.saturating_sub(self.keep.saturating_mul(self.bucket));
            book.grids.retain(|k, _| k.1 > horizon);
            book.regions.retain(|k, _| k.1 > horizon);
        }
        Ok(Applied::Counted)
    }

    /// The figures of `region` (a cell at `region_resolution`) for the bucket ending at
    /// `end`, when any grid of it reported coverage for that bucket.
    pub fn region(&self, region: CellIndex, end: i64) -> Option<Figures> {
        self.book().regions.get(&(region, end)).copied()
    }

    /// The buckets of `region` held in the book whose stores did not all settle (some
    /// did not report, or hold unsent sales): (bucket end, settled share), at most `keep`.
    pub fn unsettled(&self, region: CellIndex) -> Vec<(i64, f64)> {
        let b = self.book();
        if b.newest_end == i64::MIN {
            return Vec::new();
        }
        (0..self.keep)
            .map(|i| b.newest_end - i * self.bucket)
            .filter_map(|end| {
                let f = b.regions.get(&(region, end))?;
                let share = f.settled_share();
                (f.expected > 0 && share < 1.0).then_some((end, share))
            })
            .collect()
    }

    /// (grids, regions) × buckets held.
    pub fn len(&self) -> (usize, usize) {
        let b = self.book();
        (b.grids.len(), b.regions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_764_000_000_000 - 1_764_000_000_000 % H;

    fn rec(grid: &str, end: i64, expected: i32, reporting: i32, pending: i32) -> GridCoverage {
        GridCoverage {
            grid_id: grid.into(),
            window_start: end - H,
            window_end: end,
            stores_expected: expected,
            stores_reporting: reporting,
            stores_pending: pending,
            pending_events: i64::from(pending) * 3,
            watermark: end,
            emitted_at: end,
        }
    }

    fn region_of(grid: &str) -> CellIndex {
        grid.parse::<CellIndex>().expect("cell").parent(Resolution::Seven).expect("parent")
    }

    #[test]
    fn grids_roll_up_to_their_region_and_a_rewrite_replaces() {
        let c = Coverage::new(Resolution::Seven, H, 24);
        let (a, b) = ("8831aa5551fffff", "8831aa5553fffff");
        assert_eq!(region_of(a), region_of(b), "siblings");
        assert_eq!(c.apply(&rec(a, T0, 6, 4, 1)), Ok(Applied::Counted));
        assert_eq!(c.apply(&rec(b, T0, 4, 0, 0)), Ok(Applied::Counted), "a silent grid");
        let f = c.region(region_of(a), T0).expect("figures");
        assert_eq!(f, Figures { expected: 10, reporting: 4, pending: 1, pending_events: 3 });
        assert!((f.settled_share() - 0.3).abs() < 1e-9);
        // The same key again (a compacted topic read before compaction): replaced.
        c.apply(&rec(b, T0, 4, 2, 0)).expect("apply");
        assert_eq!(c.region(region_of(a), T0).map(|f| f.reporting), Some(6));
        assert_eq!(c.region(region_of(a), T0 + H), None, "no record for that bucket");
    }

    #[test]
    fn other_sizes_are_skipped_and_old_buckets_go() {
        let c = Coverage::new(Resolution::Seven, H, 2);
        let a = "8831aa5551fffff";
        let day = GridCoverage { window_start: T0 - 24 * H, ..rec(a, T0, 1, 1, 0) };
        assert_eq!(c.apply(&day), Ok(Applied::Skipped));
        for k in 0..4 {
            c.apply(&rec(a, T0 + k * H, 1, 1, 0)).expect("apply");
        }
        assert_eq!(c.len(), (2, 2), "the last two buckets are kept");
        assert_eq!(c.apply(&rec(a, T0, 1, 1, 0)), Ok(Applied::Skipped), "too old now");
        assert!(c.region(region_of(a), T0 + 3 * H).is_some());
    }

    #[test]
    fn bad_records_name_the_field() {
        let c = Coverage::new(Resolution::Seven, H, 2);
        let e = c.apply(&rec("not-a-cell", T0, 1, 1, 0)).expect_err("bad grid");
        assert!(e.starts_with("grid_id:"), "{e}");
        let e = c.apply(&rec("8831aa5551fffff", T0, -1, 0, 0)).expect_err("negative");
        assert!(e.contains("must not be negative"), "{e}");
    }
}
