//! Codec round trips, goldens of every format version, and bounds on hostile input.

use super::*;

use proptest::prelude::*;

fn counters() -> impl Strategy<Value = Counters> {
    (proptest::array::uniform6(any::<i64>()), proptest::collection::vec(any::<u64>(), 0..20))
        .prop_map(|(n, stores)| Counters {
            units_sold: n[0],
            units_returned: n[1],
            preorder_units: n[2],
            revenue_minor: n[3],
            event_count: n[4],
            last_event_at: n[5],
            stores,
        })
}

proptest! {
    #[test]
    fn values_round_trip(
        grid in "[0-9a-f]{15}",
        sku in "[A-Z0-9-]{1,20}",
        windows in proptest::collection::vec((1i64..1_000_000_000, any::<i64>(), counters(), -1i32..1000), 0..6),
        grids in proptest::collection::vec((1i64..1_000_000, any::<i64>(), proptest::collection::vec(any::<u64>(), 0..9)), 0..6),
        ids in proptest::collection::vec(any::<u64>(), 0..50),
        end in any::<i64>(),
        mt in proptest::option::of(-1_000_000i64..i64::MAX),
        seq in any::<u64>(),
        hb in any::<i64>(),
    ) {
        let windows = windows.into_iter().map(|(size, start, counters, revision)| WindowRec { size, start, counters, revision }).collect();
        let grids = grids.into_iter().map(|(size, start, stores)| GridRec { size, start, pending: stores.iter().map(|s| (*s, (*s % 7) as u32)).collect(), stores }).collect();
        for rec in [
            Record::Key { grid: grid.clone(), sku: sku.clone(), windows },
            Record::Grid { windows: grids },
            Record::Dedupe { horizon: end, ids: ids.clone() },
            Record::DedupeByFirstEnd { first_end: end, ids },
            Record::Meta { max_event_time: mt, next_chunk: seq, heartbeat_offset: hb, last_advance_wall: hb.wrapping_mul(3), wall_floor: hb.wrapping_mul(5), expired_through: Some(vec![(300_000, hb), (3_600_000, end)]), covered_through: Some(vec![(3_600_000, end)]), dedupe_seed: Some(hb as u64) },
        ] {
            prop_assert_eq!(decode(&encode(&rec)).expect("decodes"), rec);
        }
    }

    #[test]
    fn chunks_round_trip(
        dict in proptest::collection::vec("[0-9A-Za-z-]{0,20}", 1..5),
        // Small values half the time: one-byte varints are where a size bound bites.
        entries in proptest::collection::vec((prop_oneof![0u32..2, any::<u32>()], proptest::array::uniform4(prop_oneof![-1i32..2, any::<i32>()]), prop_oneof![0u32..2, any::<u32>()], prop_oneof![-1i64..2, any::<i64>()], prop_oneof![0u32..2, any::<u32>()], proptest::collection::vec(any::<u32>(), 0..5), any::<bool>()), 0..20),
        meta in (any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>()),
    ) {
        let n = dict.len() as u32;
        let entries = entries.into_iter().enumerate().map(|(i, (pos, c, events, revenue, last_off, ids, sketch))| Entry {
            pos, grid: i as u32 % n, sku: (i as u32 + 1) % n, revision: c[0], sold: c[1], returned: c[2], preorder: c[3],
            events, revenue, last_off,
            stores: if sketch { Stores::Sketch(ids.iter().map(|x| *x as u8).collect()) } else { Stores::List(ids) },
        }).collect();
        let rec = Record::Chunk(Chunk { grids: dict.clone(), skus: dict, entries });
        prop_assert_eq!(decode(&encode(&rec)).expect("decodes"), rec);
        let rec = Record::Bucket(BucketMeta { closed: meta.0, sorted: meta.1, cursor: meta.2, next_seq: meta.3 });
        prop_assert_eq!(decode(&encode(&rec)).expect("decodes"), rec);
    }

    /// A chunk built entry by entry (encoded as they come, the dictionaries interned on
    /// the way) is the record `encode` writes for the same chunk, and a builder that was
    /// taken from starts afresh.
    #[test]
    fn a_built_chunk_is_the_encoded_chunk(
        rounds in proptest::collection::vec(proptest::collection::vec((0u32..4, 0u32..3, any::<u32>(), any::<i32>(), any::<i64>(), proptest::collection::vec(any::<u32>(), 0..4), any::<bool>()), 1..12), 1..3),
    ) {
        let name = |grid: bool, id: u32| if grid { format!("g{id}") } else { format!("sku-{id}") };
        let mut builder = ChunkBuilder::default();
        for entries in rounds {
            let mut want = Chunk::default();
            for &(grid, sku, pos, sold, revenue, ref ids, sketch) in &entries {
                let index = |dict: &mut Vec<String>, s: String| match dict.iter().position(|x| *x == s) {
                    Some(i) => i as u32,
                    None => { dict.push(s); dict.len() as u32 - 1 }
                };
                let e = Entry {
                    pos, grid: index(&mut want.grids, name(true, grid)), sku: index(&mut want.skus, name(false, sku)),
                    revision: sold / 3, sold, returned: sold / 5, preorder: sold / 7, events: pos / 2, revenue, last_off: pos / 3,
                    stores: if sketch { Stores::Sketch(ids.iter().map(|x| *x as u8).collect()) } else { Stores::List(ids.clone()) },
                };
                builder.push((grid, sku), name, e.as_ref());
                want.entries.push(e);
            }
            prop_assert_eq!(builder.len(), entries.len());
            let rec = Record::Chunk(want);
            prop_assert_eq!(builder.take(), encode(&rec));
            prop_assert!(builder.is_empty());
        }
    }

    #[test]
    fn keys_round_trip(key in any::<u128>(), grid in any::<u64>(), seq in any::<u64>(), size in any::<i64>(), start in any::<i64>(), cseq in any::<u32>()) {
        prop_assert_eq!(parse_key(&chunk_key(size, start, cseq)), Ok(Key::Chunk(size, start, cseq)));
        prop_assert_eq!(parse_key(&bucket_key(size, start)), Ok(Key::Bucket(size, start)));
        prop_assert_eq!(parse_key(&key_key(key)), Ok(Key::Key(key)));
        prop_assert_eq!(parse_key(&grid_key(grid)), Ok(Key::Grid(grid)));
        prop_assert_eq!(parse_key(&dedupe_key(seq)), Ok(Key::Dedupe(seq)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let _ = parse_key(&bytes);
    }
}

fn samples() -> Vec<(&'static str, Record)> {
    let counters = Counters {
        units_sold: 12,
        units_returned: 1,
        preorder_units: 3,
        revenue_minor: 11_880,
        event_count: 9,
        last_event_at: 1_764_000_299_000,
        stores: vec![7, 42],
    };
    vec![
        (
            "key",
            Record::Key {
                grid: "8831aa5a8bfffff".into(),
                sku: "MILK-1L".into(),
                windows: vec![WindowRec {
                    size: 300_000,
                    start: 1_764_000_000_000,
                    counters,
                    revision: 1,
                }],
            },
        ),
        (
            "grid",
            Record::Grid {
                windows: vec![GridRec {
                    size: 300_000,
                    start: 1_764_000_000_000,
                    stores: vec![7, 42, 99],
                    pending: vec![(42, 5)],
                }],
            },
        ),
        ("dedupe", Record::Dedupe { horizon: 1_764_000_300_000, ids: vec![1, 2, 3] }),
        (
            "chunk",
            Record::Chunk(Chunk {
                grids: vec!["8831aa5a8bfffff".into()],
                skus: vec!["MILK-1L".into(), "EGG-10".into()],
                entries: vec![
                    Entry {
                        pos: 0,
                        grid: 0,
                        sku: 0,
                        revision: -1,
                        sold: 12,
                        returned: 1,
                        preorder: 3,
                        events: 9,
                        revenue: 11_880,
                        last_off: 299_000,
                        stores: Stores::List(vec![7, 42]),
                    },
                    Entry {
                        pos: 5,
                        grid: 0,
                        sku: 1,
                        revision: 2,
                        sold: -3,
                        returned: 0,
                        preorder: 0,
                        events: 1,
                        revenue: -500,
                        last_off: 0,
                        stores: Stores::Sketch(vec![1, 0, 3]),
                    },
                ],
            }),
        ),
        (
            "bucket",
            Record::Bucket(BucketMeta { closed: true, sorted: 4096, cursor: 300, next_seq: 9 }),
        ),
        (
            "meta",
            Record::Meta {
                max_event_time: Some(1_764_000_301_000),
                next_chunk: 4,
                heartbeat_offset: 17,
                last_advance_wall: 1_764_000_302_000,
                wall_floor: 1_764_000_303_000,
                expired_through: Some(vec![(300_000, 1_764_000_000_000)]),
                covered_through: Some(vec![(3_600_000, 1_764_000_000_000)]),
                dedupe_seed: Some(0x5eed_5eed_5eed_5eed),
            },
        ),
    ]
}

/// The changelog format is what a new release restores from: it may only change with
/// a new VERSION. `NEARFIELD_REGENERATE=1` rewrites the files (also the fuzz seeds).
#[test]
fn format_is_stable() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/changelog");
    for (name, rec) in samples() {
        let path = dir.join(format!("{name}.bin"));
        let bytes = encode(&rec);
        if std::env::var_os("NEARFIELD_REGENERATE").is_some() {
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(&path, &bytes).expect("write");
        }
        let stored = std::fs::read(&path)
            .expect("testdata/changelog file (NEARFIELD_REGENERATE=1 writes it)");
        assert_eq!(stored, bytes, "{name}: changelog encoding changed without a new VERSION");
        assert_eq!(decode(&stored).expect("decodes"), rec);
    }
}

/// What the previous releases wrote (versions 2 to 5, in `testdata/changelog/v2/`
/// to `v5/`) still restores: the same records, with the fields later versions added
/// at their defaults, and de-duplication chunks keyed by their earliest window end.
#[test]
fn the_previous_versions_still_decode() {
    for version in [2u8, 3, 4, 5] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("testdata/changelog/v{version}"));
        for (name, mut rec) in samples() {
            if let Record::Meta { dedupe_seed, .. } = &mut rec {
                *dedupe_seed = None; // version 6
            }
            if version == 5 {
                let stored = std::fs::read(dir.join(format!("{name}.bin"))).expect("v5 file");
                assert_eq!(decode(&stored), Ok(rec), "v5 {name}");
                continue;
            }
            if matches!(rec, Record::Chunk(_) | Record::Bucket(_)) {
                continue; // version 5 records
            }
            if version == 4 {
                assert_eq!(
                    decode(&std::fs::read(dir.join(format!("{name}.bin"))).expect("v4 file")),
                    Ok(rec),
                    "v4 {name}"
                );
                continue;
            }
            let stored = std::fs::read(dir.join(format!("{name}.bin"))).expect("old file");
            assert_eq!(stored[0], version);
            match &mut rec {
                Record::Grid { windows } => {
                    for g in windows {
                        g.pending.clear();
                    }
                }
                Record::Meta {
                    last_advance_wall,
                    wall_floor,
                    expired_through,
                    covered_through,
                    ..
                } => {
                    *expired_through = None;
                    *covered_through = None;
                    if version == 2 {
                        *last_advance_wall = i64::MIN;
                        *wall_floor = i64::MIN;
                    }
                }
                Record::Dedupe { horizon, ids } => {
                    rec = Record::DedupeByFirstEnd { first_end: *horizon, ids: ids.clone() };
                }
                _ => {}
            }
            assert_eq!(decode(&stored).expect("old version decodes"), rec, "v{version} {name}");
        }
    }
}

#[test]
fn huge_counts_are_refused_without_allocating() {
    let mut v = vec![VERSION, b'G'];
    v.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(matches!(decode(&v), Err(Error::TooMany(_))));
    let mut v = vec![VERSION, b'G'];
    v.extend_from_slice(&1000u64.to_le_bytes());
    assert_eq!(decode(&v), Err(Error::Truncated));
    assert_eq!(decode(&[9, b'M']), Err(Error::Version(9)));
    assert_eq!(parse_key(b"Kshort"), Err(Error::Key(6)));
}
