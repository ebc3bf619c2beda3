//! Unit tests of the partition state (generated histories: `model_tests.rs`).

use nearfield_schemas::{SaleEvent, SaleKind};

use proptest::prelude::*;

use super::*;
use crate::changelog::{self, Record};

pub(super) const MIN: Millis = 60_000;

pub(super) fn cfg() -> Arc<StateConfig> {
    Arc::new(StateConfig {
        windowing: Windowing {
            sizes: vec![5 * MIN, 60 * MIN],
            out_of_orderness: 30_000,
            grace: vec![10_000, 10_000],
            allowed_lateness: vec![10 * MIN, 20 * MIN],
            max_close_delay: 2 * MIN,
        },
        currency: "CNY".into(),
        coverage: vec![false, true],
        close_chunk: 50_000,
    })
}

pub(super) fn ev(
    id: &str,
    store: &str,
    grid: &str,
    sku: &str,
    kind: SaleKind,
    q: i32,
    t: Millis,
) -> SaleEvent {
    SaleEvent {
        event_id: id.into(),
        store_id: store.into(),
        device_id: "d".into(),
        grid_id: grid.into(),
        sku: sku.into(),
        kind,
        quantity: q,
        unit_price_minor: 100,
        currency: "CNY".into(),
        occurred_at: t,
        received_at: t + 1_000,
    }
}

fn seven(_: &str) -> i32 {
    7
}

/// Seven stores expected in every grid; no registered grids to cover.
pub(super) static NONE: Expected<fn(&str) -> i32> = Expected(seven);

#[test]
fn counts_close_once_and_revise_on_late_data() {
    let mut st = PartitionState::of_partition(cfg(), 4);
    let t0 = 1_000 * 60 * MIN; // aligned to the hour
    assert_eq!(
        st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0),
        Outcome::Counted { windows: 2 }
    );
    assert_eq!(
        st.apply_sale(&ev("2", "s2", "g", "A", SaleKind::Return, 1, t0 + 2), t0),
        Outcome::Counted { windows: 2 }
    );
    assert_eq!(
        st.apply_sale(&ev("3", "s2", "g", "A", SaleKind::Preorder, 5, t0 + 3), t0),
        Outcome::Counted { windows: 2 }
    );
    assert_eq!(
        st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0),
        Outcome::Duplicate
    );
    // The same event id from another store is another event.
    assert_eq!(
        st.apply_sale(&ev("1", "s3", "g", "A", SaleKind::Sale, 1, t0 + 4), t0),
        Outcome::Counted { windows: 2 }
    );
    let f = st.flush(t0, &NONE);
    assert!(f.outputs.is_empty(), "nothing closes before the watermark passes");
    // An event 6 minutes later moves the watermark past the first 5-minute window + grace.
    st.apply_sale(&ev("4", "s1", "g", "B", SaleKind::Sale, 1, t0 + 6 * MIN), t0 + 6 * MIN);
    let f = st.flush(t0 + 6 * MIN, &NONE);
    assert_eq!(f.outputs.len(), 1);
    let w = &f.outputs[0];
    assert_eq!((w.sku.as_str(), w.window_start, w.window_end), ("A", t0, t0 + 5 * MIN));
    assert_eq!((w.units_sold, w.units_returned, w.preorder_units, w.net_units), (4, 1, 5, 8));
    assert_eq!((w.revenue_minor, w.event_count, w.distinct_stores), (300, 4, 3));
    assert_eq!((w.stores_reporting, w.stores_expected, w.revision, w.is_final), (3, 7, 0, true));
    // It names the input partition whose watermark it carries (the emitter's clock).
    assert_eq!((w.source_partition, w.watermark), (4, st.watermark()));
    // A late event within the allowed lateness revises it once.
    assert_eq!(
        st.apply_sale(&ev("5", "s4", "g", "A", SaleKind::Sale, 2, t0 + 10), t0 + 6 * MIN),
        Outcome::Counted { windows: 2 }
    );
    let f = st.flush(t0 + 6 * MIN, &NONE);
    assert_eq!(f.outputs.len(), 1);
    assert_eq!((f.outputs[0].revision, f.outputs[0].units_sold), (1, 6));
    // Past the 5-minute window's lateness it counts in its hour only (the 5-minute
    // window's state is gone).
    let later = t0 + 30 * MIN;
    st.apply_sale(&ev("6", "s1", "g", "B", SaleKind::Sale, 1, later), later);
    let _ = st.flush(later, &NONE);
    assert_eq!(
        st.apply_sale(&ev("7", "s1", "g", "A", SaleKind::Sale, 1, t0 + 20), later),
        Outcome::Counted { windows: 1 }
    );
    let a = st.key("g", "A").expect("key");
    assert!(a.windows.iter().all(|w| w.size_idx == 1));
    assert_eq!(a.windows[0].units_sold, 7);
    // Past the hour's lateness too, it counts nowhere: late, with the reason.
    let much_later = t0 + 60 * MIN + 10_000 + 20 * MIN + 30_000;
    st.apply_sale(&ev("8", "s1", "g", "B", SaleKind::Sale, 1, much_later), much_later);
    match st.apply_sale(&ev("9", "s1", "g", "A", SaleKind::Sale, 1, t0 + 30), much_later) {
        Outcome::Late(late) => {
            assert_eq!(late.last_window, (60 * MIN, t0 + 60 * MIN));
            assert_eq!(late.expired_at, t0 + 60 * MIN + 10_000 + 20 * MIN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_shop_offline_for_hours_counts_in_its_open_windows_and_once() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    // On-time traffic runs 15 minutes past the hour's first quarter.
    st.apply_sale(&ev("on", "s1", "g", "A", SaleKind::Sale, 1, t0 + MIN), t0 + MIN);
    st.apply_sale(&ev("x", "s2", "g", "B", SaleKind::Sale, 1, t0 + 16 * MIN), t0 + 16 * MIN);
    let f = st.flush(t0 + 16 * MIN, &NONE);
    assert!(f.outputs.iter().any(|o| o.sku == "A" && o.window_end == t0 + 5 * MIN));
    // The offline shop uploads its sale of minute 2: its 5-minute window expired, its
    // hour is open.
    let late = ev("off", "s9", "g", "A", SaleKind::Sale, 4, t0 + 2 * MIN);
    assert_eq!(st.apply_sale(&late, t0 + 16 * MIN), Outcome::Counted { windows: 1 });
    // The device retries (it never saw the ack): counted once.
    assert_eq!(st.apply_sale(&late, t0 + 16 * MIN), Outcome::Duplicate);
    let f = st.flush(t0 + 90 * MIN, &NONE);
    let hour = f.outputs.iter().find(|o| o.sku == "A" && o.window_end == t0 + 60 * MIN);
    assert_eq!(hour.map(|o| (o.units_sold, o.event_count, o.distinct_stores)), Some((5, 2, 2)));
}

/// De-duplication is by (store, device, event_id), whatever the event's time: a device
/// that re-stamps `occurred_at` on a retry does not count twice, even when the new time
/// falls in another horizon (another day); two devices of one shop that number their
/// events alike both count.
#[test]
fn a_retry_counts_once_whatever_its_time_and_devices_are_told_apart() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let first = ev("e-1", "s1", "g", "A", SaleKind::Sale, 2, t0);
    assert!(matches!(st.apply_sale(&first, t0), Outcome::Counted { .. }));
    // The retry, re-stamped 3 minutes later (still a live window): the same event.
    let restamped = SaleEvent { occurred_at: t0 + 3 * MIN, ..first.clone() };
    assert_eq!(st.apply_sale(&restamped, t0 + 3 * MIN), Outcome::Duplicate);
    // Re-stamped into another horizon (windows of another hour and a later expiry).
    let later = SaleEvent { occurred_at: t0 + 70 * MIN, ..first.clone() };
    assert_ne!(
        st.cfg.windowing.horizon(later.occurred_at),
        st.cfg.windowing.horizon(first.occurred_at),
        "the test needs two horizons"
    );
    assert_eq!(st.apply_sale(&later, t0 + 70 * MIN), Outcome::Duplicate);
    // The shop's scale numbers its events like the POS does: another event.
    let scale = SaleEvent { device_id: "scale-1".into(), ..later.clone() };
    assert!(matches!(st.apply_sale(&scale, t0 + 70 * MIN), Outcome::Counted { .. }));
}

#[test]
fn a_quiet_partition_closes_by_wall_clock() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
    assert!(st.flush(t0 + 5 * MIN + MIN, &NONE).outputs.is_empty());
    let f = st.flush(t0 + 5 * MIN + 2 * MIN, &NONE);
    assert_eq!(f.outputs.len(), 1, "closed max_close_delay after its end");
}

#[test]
fn heartbeats_count_towards_reporting_stores() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    st.apply_heartbeat(
        Beat { grid_id: "g", store_id: "s9", at: t0 + 5, pending_events: 0, since: None },
        11,
        t0,
    );
    st.apply_heartbeat(
        Beat { grid_id: "g", store_id: "s8", at: t0 + 5, pending_events: 0, since: None },
        12,
        t0,
    );
    st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
    let f = st.flush(t0 + 8 * MIN, &NONE);
    assert_eq!(f.outputs[0].stores_reporting, 3);
    assert_eq!(st.heartbeat_offset(), 12);
}

/// One registered grid, "g", with three active stores.
struct OneGrid;

impl Registry for OneGrid {
    fn expected(&self, _: &str) -> i32 {
        3
    }
    fn grids(&self) -> Vec<(String, i32)> {
        vec![("g".into(), 3)]
    }
}

#[test]
fn a_backlog_since_the_last_upload_marks_every_live_window_since_then() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 1, t0 + 10 * MIN), t0 + 10 * MIN);
    // s2 comes back online at 0:50 holding 4 sales made since its last upload at 0:02.
    let beat = |at, pending_events, since| Beat {
        grid_id: "g",
        store_id: "s2",
        at,
        pending_events,
        since,
    };
    st.apply_heartbeat(beat(t0 + 50 * MIN, 4, Some(t0 + 2 * MIN)), 1, t0 + 10 * MIN);
    // s3 says it holds 9 without saying since when: only the windows of its heartbeat.
    let s3 = Beat { store_id: "s3", ..beat(t0 + 50 * MIN, 9, None) };
    st.apply_heartbeat(s3, 2, t0 + 10 * MIN);
    let f = st.flush(t0 + 63 * MIN, &OneGrid);
    let pending_of = |end: Millis| {
        f.outputs.iter().find(|o| o.window_end == end).map(|o| (o.stores_pending, o.window_start))
    };
    assert_eq!(pending_of(t0 + 15 * MIN), Some((1, t0 + 10 * MIN)), "0:10 is after 0:02: s2");
    assert_eq!(pending_of(t0 + 60 * MIN), Some((2, t0)), "the hour: s2 and s3");
    let hour: Vec<_> = f.coverage.iter().filter(|c| c.window_end == t0 + 60 * MIN).collect();
    assert_eq!(hour.len(), 1);
    assert_eq!(
        (hour[0].stores_reporting, hour[0].stores_pending, hour[0].pending_events),
        (3, 2, 13),
        "s1 sold, s2 and s3 were online; both hold sales"
    );
    // s2 uploads everything and says so: the windows still open stop waiting for it.
    st.apply_heartbeat(beat(t0 + 64 * MIN, 0, Some(t0 + 64 * MIN)), 3, t0 + 64 * MIN);
    let g = st.grids.get(&short_id("g")).expect("grid state");
    assert!(
        g.windows.iter().all(|w| w.pending.iter().all(|p| p.0 != short_id("s2"))),
        "no window holds s2's backlog any more"
    );
    assert!(
        g.windows.iter().any(|w| w.pending.iter().any(|p| p.0 == short_id("s3"))),
        "s3 did not say it uploaded"
    );
}

/// The ids of one flush interval wait in a buffer that a flush empties but keeps (up to a
/// bound): the next interval fills the same allocation (a fresh one grew by copies into
/// newly faulted pages every commit), and the state's size counts it.
#[test]
fn the_pending_id_buffer_is_reused_across_flushes() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let before = st.size().bytes;
    for i in 0..1_000 {
        st.apply_sale(&ev(&format!("a{i}"), "s1", "g", "A", SaleKind::Sale, 1, t0 + i), t0);
    }
    st.flush(t0, &NONE);
    let (len, cap) = (st.pending_ids.len(), st.pending_ids.capacity());
    assert_eq!(len, 0);
    assert!(cap >= 1_000, "{cap}");
    assert!(st.size().bytes >= before + cap * 16);
    for i in 0..1_000 {
        st.apply_sale(&ev(&format!("b{i}"), "s1", "g", "A", SaleKind::Sale, 1, t0 + i), t0);
    }
    assert_eq!((st.pending_ids.len(), st.pending_ids.capacity()), (1_000, cap));
    // The room kept is bounded: a burst's is given back.
    for i in 0..PENDING_KEEP + 10 {
        st.apply_sale(&ev(&format!("c{i}"), "s1", "g", "A", SaleKind::Sale, 1, t0 + 1), t0);
    }
    st.flush(t0, &NONE);
    assert!(st.pending_ids.capacity() <= PENDING_KEEP);
}

#[test]
fn dedupe_ids_are_written_in_bounded_chunks() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let n = DEDUPE_CHUNK_IDS * 2 + 5;
    for i in 0..n {
        st.apply_sale(&ev(&i.to_string(), "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
    }
    let f = st.flush(t0, &NONE);
    let chunks: Vec<usize> = f
        .changelog
        .iter()
        .filter(|(k, _)| k[0] == b'D')
        .map(|(_, v)| match changelog::decode(v.as_deref().expect("value")) {
            Ok(Record::Dedupe { ids, .. }) => ids.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(chunks, vec![DEDUPE_CHUNK_IDS, DEDUPE_CHUNK_IDS, 5]);
    assert!(f.changelog.iter().all(|(_, v)| v.as_ref().is_none_or(|v| v.len() < 512 * 1024)));
}

/// Ids of two horizons, interleaved, are written grouped by horizon (the earlier first),
/// each id once.
#[test]
fn dedupe_ids_are_grouped_by_horizon() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let w = &st.cfg.windowing;
    let (early, late) = (w.horizon(t0), w.horizon(t0 + 60 * MIN));
    assert!(early < late);
    for i in 0..300 {
        let t = if i % 3 == 0 { t0 + 60 * MIN } else { t0 } + i64::from(i);
        let out = st.apply_sale(&ev(&i.to_string(), "s1", "g", "A", SaleKind::Sale, 1, t), t0);
        assert!(matches!(out, Outcome::Counted { .. }), "{out:?}");
    }
    let groups = dedupe_groups(&st.flush(t0, &NONE));
    let horizons: Vec<Millis> = groups.iter().map(|g| g.0).collect();
    assert_eq!(horizons, vec![early, late]);
    assert_eq!((groups[0].1.len(), groups[1].1.len()), (200, 100));
    assert!(groups.iter().all(|g| g.1.is_sorted()), "each horizon's ids sorted");
    let mut all: Vec<u64> = groups.into_iter().flat_map(|g| g.1).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 300);
}

/// The dedupe chunks a flush wrote, as (horizon, ids) (not the chunks it deleted).
fn dedupe_groups(f: &Flushed) -> Vec<(Millis, Vec<u64>)> {
    f.changelog
        .iter()
        .filter(|(k, _)| k[0] == b'D')
        .filter_map(|(_, v)| v.as_deref())
        .map(|v| match changelog::decode(v) {
            Ok(Record::Dedupe { horizon, ids }) => (horizon, ids),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A commit whose ids have more horizons than a few (a replay of history) writes them
/// the same way: grouped by horizon, the earlier first, each group sorted, each id once.
#[test]
fn dedupe_ids_of_many_horizons_are_grouped_and_sorted() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let hours = 7;
    let mut n = 0;
    for h in 0..hours {
        for i in 0..50 {
            let t = t0 + h * 60 * MIN + i;
            n += 1;
            let out = st.apply_sale(&ev(&n.to_string(), "s1", "g", "A", SaleKind::Sale, 1, t), t0);
            assert!(matches!(out, Outcome::Counted { .. }), "{out:?}");
        }
    }
    let w = st.cfg.windowing.clone();
    let groups = dedupe_groups(&st.flush(t0, &NONE));
    let horizons: Vec<Millis> = groups.iter().map(|g| g.0).collect();
    let want: Vec<Millis> = (0..hours).map(|h| w.horizon(t0 + h * 60 * MIN)).collect();
    assert!(want.len() > flush::FEW_HORIZONS);
    assert_eq!(horizons, want);
    assert!(groups.iter().all(|g| g.1.len() == 50 && g.1.is_sorted()), "{groups:?}");
    let mut all: Vec<u64> = groups.into_iter().flat_map(|g| g.1).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
}

/// A new horizon's event-id set expects as many ids as the set of the horizon before it;
/// the first set of a partition, and a set older than every live one, expect none.
#[test]
fn a_new_horizons_id_set_expects_the_ids_of_the_one_before() {
    let mut st = PartitionState::new(cfg());
    let w = st.cfg.windowing.clone();
    // The largest window is an hour: one set per hour.
    let hour = |h: i64| 1_000 * 60 * MIN + h * 60 * MIN;
    let mut n = 0u32;
    let mut sell = |st: &mut PartitionState, at: Millis, count: u32| {
        for _ in 0..count {
            n += 1;
            let out = st.apply_sale(&ev(&n.to_string(), "s1", "g", "A", SaleKind::Sale, 1, at), at);
            assert!(matches!(out, Outcome::Counted { .. }), "{out:?}");
        }
    };
    let expected =
        |st: &PartitionState, at: Millis| st.dedupe.get(w.horizon(at)).map_or(0, |t| t.expected());
    sell(&mut st, hour(1), 5_000);
    assert_eq!(expected(&st, hour(1)), 0, "a partition's first set has nothing to go by");
    // A late sale of the hour before, still accepted: its set is older than every other.
    sell(&mut st, hour(0) + 30 * MIN, 1);
    assert_eq!(expected(&st, hour(0)), 0);
    sell(&mut st, hour(2), 3_000);
    assert_eq!(expected(&st, hour(2)), 5_000 / 256 * 256);
    sell(&mut st, hour(3), 10);
    assert_eq!(expected(&st, hour(3)), 3_000 / 256 * 256);
    assert_eq!(st.dedupe.len(), 4);
}

proptest! {
    /// The windows `placed` gives a time (reusing those of the time before when it is in
    /// them) are the windows `Windowing::windows_of` computes, at the ends of time too.
    #[test]
    fn placed_windows_are_the_windows_of_their_time(
        anchor in prop_oneof![
            any::<Millis>(),
            Just(Millis::MIN),
            Just(Millis::MAX),
            Just(0),
        ],
        steps in proptest::collection::vec(-150 * MIN..150 * MIN, 1..60),
    ) {
        let mut st = PartitionState::new(cfg());
        let w = st.cfg.windowing.clone();
        for d in steps {
            let t = anchor.saturating_add(d);
            let placed = st.placed(t);
            let got = placed.start.iter().zip(&placed.number);
            for ((i, start, _), (&s, &n)) in w.windows_of(t).zip(got) {
                let number = start.div_euclid(w.sizes[i]) as u16;
                prop_assert_eq!((s, n), (start, number), "t = {}", t);
            }
        }
    }
}

/// A bucket of many windows closes over several flushes, `close_chunk` at a time, and
/// the state says how many wait.
#[test]
fn a_big_bucket_closes_in_bounded_chunks() {
    let cfg = Arc::new(StateConfig { close_chunk: 100, ..(*cfg()).clone() });
    let mut st = PartitionState::new(cfg);
    let t0 = 1_000 * 60 * MIN;
    for i in 0..250 {
        st.apply_sale(&ev(&i.to_string(), "s1", "g", &format!("K{i}"), SaleKind::Sale, 1, t0), t0);
    }
    let later = t0 + 6 * MIN;
    st.apply_sale(&ev("n", "s1", "g", "K0", SaleKind::Sale, 1, later), later);
    let mut finals = Vec::new();
    let mut backlog = Vec::new();
    for _ in 0..4 {
        let f = st.flush(later, &NONE);
        finals.push(f.outputs.iter().filter(|o| o.window_end == t0 + 5 * MIN).count());
        backlog.push(st.size().close_backlog);
    }
    assert_eq!(finals, vec![100, 100, 50, 0]);
    assert_eq!(backlog, vec![150, 50, 0, 0]);
}

#[test]
fn a_revenue_beyond_a_windows_bound_is_refused_not_clamped() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let priced = |id: &str, kind, price: i64, t| SaleEvent {
        unit_price_minor: price,
        ..ev(id, "s1", "g", "A", kind, 2, t)
    };
    // Its own revenue overflows: refused, and not remembered as seen.
    let huge = priced("1", SaleKind::Sale, i64::MAX, t0 + 1);
    assert_eq!(st.apply_sale(&huge, t0), Outcome::Refused(crate::counters::REVENUE_OVERFLOW));
    let overflow = Outcome::Refused(crate::counters::REVENUE_OVERFLOW);
    // It fits 64 bits but not a window: refused.
    let big = priced("0", SaleKind::Sale, crate::counters::REVENUE_MAX, t0 + 1);
    assert_eq!(st.apply_sale(&big, t0), overflow);
    // A window's revenue would overflow: refused in every window, counted in none. Two
    // units at a third of the range: one event fits, a second would not.
    let p = crate::counters::REVENUE_MAX / 3;
    let counted = Outcome::Counted { windows: 2 };
    assert_eq!(st.apply_sale(&priced("2", SaleKind::Sale, p, t0 + 2), t0), counted);
    assert_eq!(st.apply_sale(&priced("3", SaleKind::Sale, p, t0 + 3), t0), overflow);
    // A retry of the refused one is refused again (not a silent duplicate).
    assert_eq!(st.apply_sale(&priced("3", SaleKind::Sale, p, t0 + 3), t0), overflow);
    // Returns take revenue down: they fit.
    assert_eq!(st.apply_sale(&priced("4", SaleKind::Return, p, t0 + 4), t0), counted);
    let out = st.flush(t0 + 2 * 60 * MIN, &NONE).outputs;
    let five: Vec<_> = out.iter().filter(|w| w.window_end - w.window_start == 5 * MIN).collect();
    assert_eq!(five.len(), 1);
    assert_eq!((five[0].event_count, five[0].units_sold, five[0].units_returned), (2, 2, 2));
    assert_eq!(five[0].revenue_minor, 0);
}

#[test]
fn grids_interned_after_a_point_are_listed_once_in_order() {
    let mut st = PartitionState::new(cfg());
    st.apply_sale(&ev("e1", "s1", "g-a", "k1", SaleKind::Sale, 1, 60 * MIN), 60 * MIN);
    let before = st.grids_interned();
    assert_eq!(before, 1);
    for (i, g) in ["g-b", "g-a", "g-c", "g-b"].iter().enumerate() {
        let e = ev(&format!("e{}", i + 2), "s1", g, "k2", SaleKind::Sale, 1, 60 * MIN);
        st.apply_sale(&e, 60 * MIN);
    }
    assert_eq!(st.grids_from(before).collect::<Vec<_>>(), ["g-b", "g-c"]);
    assert_eq!(st.grids_from(st.grids_interned()).count(), 0);
    // A duplicate of a new grid's event interns nothing.
    st.apply_sale(&ev("e2", "s1", "g-z", "k2", SaleKind::Sale, 1, 60 * MIN), 60 * MIN);
    assert_eq!(st.grids_interned(), 3);
}
