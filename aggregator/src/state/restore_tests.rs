//! Unit tests of restoring a partition's state from its changelog: older releases'
//! records, corrupt records, settings changed between runs, and the dedupe seed.

use nearfield_schemas::SaleKind;

use super::tests::{MIN, NONE, cfg, ev};
use super::*;
use crate::changelog::{self, Record};
use crate::ids::event_key;

/// Replays `log` (changelog records as flushed) into a state with other settings.
fn restored_with(log: &[(Vec<u8>, Option<Vec<u8>>)], cfg: Arc<StateConfig>) -> PartitionState {
    let mut st = PartitionState::new(cfg);
    for (k, v) in log {
        st.restore(k, v.as_deref()).expect("restores");
    }
    st.restored();
    st
}

/// The event-id set of horizon `h`.
fn set(st: &PartitionState, h: Millis) -> &IdTable {
    st.dedupe.get(h).expect("a set of the horizon")
}

fn widened() -> Arc<StateConfig> {
    let mut c = (*cfg()).clone();
    c.windowing.allowed_lateness = vec![60 * MIN, 60 * MIN];
    Arc::new(c)
}

#[test]
fn a_window_dropped_under_narrower_lateness_is_not_made_again() {
    let mut st = PartitionState::new(cfg());
    let t0 = 1_000 * 60 * MIN;
    let mut log = Vec::new();
    st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0);
    log.extend(st.flush(t0, &NONE).changelog);
    // 20 minutes on: the first 5-minute window expired (lateness 10 min) and was dropped.
    st.apply_sale(&ev("2", "s1", "g", "B", SaleKind::Sale, 1, t0 + 20 * MIN), t0 + 20 * MIN);
    let f = st.flush(t0 + 20 * MIN, &NONE);
    assert!(f.expired_windows >= 1);
    log.extend(f.changelog);
    // Restarted with 1 h of lateness for every size: the 5-minute window would accept a
    // sale of minute 0 by the new rule, but its final value is gone; the sale counts in
    // the hour only.
    let mut st = restored_with(&log, widened());
    assert_eq!(
        st.apply_sale(&ev("3", "s2", "g", "A", SaleKind::Sale, 1, t0 + 2), t0 + 20 * MIN),
        Outcome::Counted { windows: 1 }
    );
    let a = st.key("g", "A").expect("key");
    assert_eq!(a.windows.iter().map(|w| w.size_idx).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn a_changelog_of_the_previous_release_gets_a_frontier_from_its_watermark() {
    let t0 = 1_000 * 60 * MIN;
    let mut st = PartitionState::new(cfg());
    st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0);
    st.apply_sale(&ev("2", "s1", "g", "B", SaleKind::Sale, 1, t0 + 20 * MIN), t0 + 20 * MIN);
    let log: Vec<_> = st
        .flush(t0 + 20 * MIN, &NONE)
        .changelog
        .into_iter()
        .map(|(k, v)| {
            // The meta record as version 3 wrote it: no frontier.
            if k == changelog::meta_key() {
                let mut v3 = vec![3u8, b'M'];
                for x in [t0 + 20 * MIN, 0, -1, t0 + 20 * MIN, Millis::MIN] {
                    v3.extend_from_slice(&x.to_le_bytes());
                }
                (k, Some(v3))
            } else {
                (k, v)
            }
        })
        .collect();
    let mut st = restored_with(&log, widened());
    // Key B's live 5-minute window [20, 25) is the oldest live one: windows before it
    // with no state count nothing more; the hour is live.
    assert_eq!(
        st.apply_sale(&ev("3", "s2", "g", "A", SaleKind::Sale, 1, t0 + 2), t0 + 20 * MIN),
        Outcome::Counted { windows: 1 }
    );
    assert_eq!(
        st.apply_sale(&ev("4", "s2", "g", "A", SaleKind::Sale, 1, t0 + 21 * MIN), t0 + 20 * MIN),
        Outcome::Counted { windows: 2 }
    );
}

/// A chunk record of grid "g" × SKU "A": one entry at `pos` with `revenue`.
fn one_entry_chunk(pos: u32, revenue: i64) -> Vec<u8> {
    use crate::changelog::{Chunk, Entry, Stores};
    let entry = Entry {
        pos,
        grid: 0,
        sku: 0,
        revision: 0,
        sold: 1,
        returned: 0,
        preorder: 0,
        events: 1,
        revenue,
        last_off: 0,
        stores: Stores::List(vec![7]),
    };
    changelog::encode(&Record::Chunk(Chunk {
        grids: vec!["g".into()],
        skus: vec!["A".into()],
        entries: vec![entry],
    }))
}

/// A corrupt chunk naming a position far past the bucket's windows is refused, not
/// allocated up to (found by the fuzzer: ~900 MB for one record).
#[test]
fn a_chunk_position_far_past_the_bucket_is_refused() {
    let chunk = |pos| one_entry_chunk(pos, 100);
    let mut st = PartitionState::new(cfg());
    let key = changelog::chunk_key(5 * MIN, 1_000 * 60 * MIN, 0);
    st.restore(&key, Some(&chunk(3))).expect("a small gap is a position to come");
    let far = u32::try_from(changelog::CHUNK_WINDOWS * 64).expect("fits");
    assert!(st.restore(&key, Some(&chunk(far))).is_err(), "refused");
    assert!(st.size().windows <= 4, "nothing allocated up to it");
}

/// A partition written by the previous release (version 4: one record per grid × SKU)
/// restores into this layout: same counters, stores and revision, and a late event
/// revises the window once more instead of emitting its final again.
#[test]
fn a_version_4_changelog_restores_into_buckets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/changelog/v4");
    let key = std::fs::read(dir.join("key.bin")).expect("v4 golden");
    assert_eq!(key[0], 4);
    let mut st = PartitionState::new(cfg());
    st.restore(&changelog::key_key(crate::ids::key_id("8831aa5a8bfffff", "MILK-1L")), Some(&key))
        .expect("restores");
    st.restored();
    let k = st.key("8831aa5a8bfffff", "MILK-1L").expect("key");
    let w = &k.windows[0];
    assert_eq!(
        (w.units_sold, w.units_returned, w.preorder_units, w.revenue_minor, w.event_count),
        (12, 1, 3, 11_880, 9)
    );
    assert_eq!((w.distinct_stores, w.revision, w.last_event_at), (2, 1, 1_764_000_299_000));
    let start = 1_764_000_000_000;
    // Past its close: nothing is emitted again without a change.
    let now = start + 6 * MIN;
    st.apply_sale(&ev("x", "s1", "8831aa5a8bfffff", "EGG", SaleKind::Sale, 1, now), now);
    let f = st.flush(now, &NONE);
    assert!(f.outputs.iter().all(|o| o.sku != "MILK-1L"), "{:?}", f.outputs);
    // A late sale revises it: revision 2.
    let late = ev("y", "s9", "8831aa5a8bfffff", "MILK-1L", SaleKind::Sale, 2, start + 10);
    assert_eq!(st.apply_sale(&late, now), Outcome::Counted { windows: 2 });
    let f = st.flush(now, &NONE);
    let o = f.outputs.iter().find(|o| o.sku == "MILK-1L" && o.window_end == start + 5 * MIN);
    assert_eq!(o.map(|o| (o.revision, o.units_sold, o.distinct_stores)), Some((2, 14, 3)));
}

/// A changelog written before windows kept revenue in 48 bits may hold a window's revenue
/// beyond ±(2⁴⁷ − 1): it restores saturated at the bound (the only lossy step, and only
/// past a bound no real window reaches), and a further sale of that window is refused.
#[test]
fn a_restored_revenue_beyond_the_bound_saturates() {
    let t0 = 1_000 * 60 * MIN;
    let max = crate::counters::REVENUE_MAX;
    for (revenue, saturated) in [(i64::MAX / 2, max), (i64::MIN / 2, -max), (max, max), (-7, -7)] {
        let mut st = PartitionState::new(cfg());
        let key = changelog::chunk_key(5 * MIN, t0, 0);
        st.restore(&key, Some(&one_entry_chunk(0, revenue))).expect("restores");
        st.restored();
        let w = &st.key("g", "A").expect("key").windows[0];
        assert_eq!((w.revenue_minor, w.units_sold), (saturated, 1), "{revenue}");
        if saturated == max {
            let sale = ev("more", "s1", "g", "A", SaleKind::Sale, 1, t0 + 1);
            assert_eq!(
                st.apply_sale(&sale, t0 + 1),
                Outcome::Refused(crate::counters::REVENUE_OVERFLOW)
            );
        }
    }
}

/// Event ids are hashed with the partition's secret seed, which travels with its state; a
/// changelog from before version 6 holds unseeded ids and restores with seed 0, so its
/// retries are still found.
#[test]
fn the_dedupe_seed_travels_with_the_state_and_old_changelogs_keep_seed_0() {
    let t0 = 1_000 * 60 * MIN;
    let e = ev("e-1", "s1", "g", "A", SaleKind::Sale, 1, t0 + 1);
    let mut st = PartitionState::new(cfg());
    assert_eq!(st.apply_sale(&e, t0), Outcome::Counted { windows: 2 });
    let log = st.flush(t0, &NONE).changelog;
    let mut fresh = PartitionState::new(cfg());
    assert_ne!(fresh.dedupe_seed, st.dedupe_seed, "each new partition draws its own");
    for (k, v) in &log {
        fresh.restore(k, v.as_deref()).expect("restores");
    }
    fresh.restored();
    assert_eq!(fresh.dedupe_seed, st.dedupe_seed);
    assert_eq!(fresh.apply_sale(&e, t0), Outcome::Duplicate);

    // As version 5 wrote it: ids hashed unseeded, and a Meta with no seed.
    let horizon = cfg().windowing.horizon(e.occurred_at);
    let id = event_key("s1", "d", "e-1", 0);
    let mut old = PartitionState::new(cfg());
    let dedupe = changelog::encode(&Record::Dedupe { horizon, ids: vec![id] });
    old.restore(&changelog::dedupe_key(0), Some(&dedupe)).expect("dedupe");
    let meta = Record::Meta {
        max_event_time: Some(t0),
        next_chunk: 1,
        heartbeat_offset: -1,
        last_advance_wall: t0,
        wall_floor: Millis::MIN,
        expired_through: None,
        covered_through: None,
        dedupe_seed: None,
    };
    old.restore(&changelog::meta_key(), Some(&changelog::encode(&meta))).expect("meta");
    old.restored();
    assert_eq!(old.dedupe_seed, 0);
    assert_eq!(old.apply_sale(&e, t0), Outcome::Duplicate);
}

/// A restored event-id set is sized as a live one is: it expects the ids of the set
/// restored before it, and holds exactly the ids it was written with.
#[test]
fn a_restored_id_set_expects_the_ids_of_the_one_before() {
    let hour = |h: i64| 1_000 * 60 * MIN + h * 60 * MIN;
    let mut st = PartitionState::new(cfg());
    let mut log = Vec::new();
    for (h, count) in [(1, 3_000u32), (2, 700)] {
        for i in 0..count {
            let at = hour(h);
            let out =
                st.apply_sale(&ev(&format!("{h}-{i}"), "s1", "g", "A", SaleKind::Sale, 1, at), at);
            assert!(matches!(out, Outcome::Counted { .. }), "{out:?}");
        }
        log.extend(st.flush(hour(h), &NONE).changelog);
    }
    let back = restored_with(&log, cfg());
    let w = &back.cfg.windowing;
    let (first, second) = (set(&back, w.horizon(hour(1))), set(&back, w.horizon(hour(2))));
    assert_eq!((first.len(), second.len()), (3_000, 700));
    assert_eq!((first.expected(), second.expected()), (0, 3_000 / 256 * 256));
    // Every id is found again: a retry of any of them is a duplicate.
    let mut back = back;
    for (h, i) in [(1, 0), (1, 2_999), (2, 699)] {
        let at = hour(2);
        let retry = ev(&format!("{h}-{i}"), "s1", "g", "A", SaleKind::Sale, 1, hour(h));
        assert_eq!(back.apply_sale(&retry, at), Outcome::Duplicate, "{h}-{i}");
    }
}
