//! Every contract decoder on untrusted bytes: never a panic, never an unbounded
//! allocation (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch those), and whatever
//! decodes re-encodes to a message that decodes to the same value. The aggregator's
//! and emitter's changelog decoders (bytes read back from Kafka on restore) are held to
//! the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nearfield_schemas::*;

fn check<T: AvroRecord + PartialEq + std::fmt::Debug>(codec: &Codec, data: &[u8]) {
    if let Ok(value) = codec.decode::<T>(data) {
        let again = codec.encode(&value).expect("a decoded value re-encodes");
        let back: T = codec.decode(&again).expect("a re-encoded value decodes");
        // f64 NaN != NaN: compare re-encodings instead of values for float records.
        assert_eq!(codec.encode(&back).expect("encodes"), again);
    }
}

fuzz_target!(|data: &[u8]| {
    let codec = Codec::single_object();
    // The first byte picks the record so the fuzzer explores each schema; the rest is
    // the message. A valid header for the chosen record is usually needed to go deep,
    // which the seed corpus (the golden vectors) provides.
    let Some((&pick, msg)) = data.split_first() else {
        return;
    };
    match pick % 10 {
        0 => {
            check::<SaleEvent>(&codec, msg);
            // The borrowed decode (the aggregator's hot path) agrees with the owned one.
            let owned = codec.decode::<SaleEvent>(msg);
            let borrowed = codec.decode_as::<SaleEvent, SaleEventRef<'_>>(msg);
            match (&owned, &borrowed) {
                (Ok(o), Ok(b)) => assert_eq!(SaleEventRef::from(o), *b),
                (Err(_), Err(_)) => {}
                _ => panic!("owned {owned:?} and borrowed {borrowed:?} decodes disagree"),
            }
            // The hand-written reader gives the general decoder's answer, value or error.
            assert_eq!(codec.decode_sale(msg), borrowed);
        }
        1 => check::<DemandWindow>(&codec, msg),
        2 => check::<PlanSignal>(&codec, msg),
        3 => check::<Heartbeat>(&codec, msg),
        4 => check::<StoreRecord>(&codec, msg),
        5 => check::<CatalogRecord>(&codec, msg),
        6 => check::<RejectedEvent>(&codec, msg),
        9 => check::<GridCoverage>(&codec, msg),
        8 => {
            use std::sync::{Arc, LazyLock};
            static CFG: LazyLock<Arc<nearfield_emitter::state::StateConfig>> =
                LazyLock::new(|| {
                    let c = nearfield_emitter::EmitConfig::default();
                    Arc::new(nearfield_emitter::state::StateConfig::from_config(&c).expect("valid"))
                });
            // The emitter's changelog: a length byte, the key, then the value (a value of
            // one byte 0xff stands for a tombstone); restoring it and assembling the state
            // never panics, whatever the key and value.
            let Some((&n, rest)) = msg.split_first() else { return };
            let (key, value) = rest.split_at(usize::from(n).min(rest.len()));
            let value = (value != [0xff]).then_some(value);
            let mut st = nearfield_emitter::state::PartitionState::new(Arc::clone(&CFG));
            if st.restore(key, value).is_ok() {
                st.restored(0);
                let _ = st.flush(0, &nearfield_emitter::catalog::Catalog::default());
            }
        }
        _ => {
            use nearfield_aggregator::changelog;
            let _ = changelog::parse_key(msg);
            if let Ok(rec) = changelog::decode(msg) {
                // An older version's record re-encodes in the current one (fields it lacks
                // at their defaults); from there, encoding is stable.
                let once = changelog::encode(&rec);
                let back = changelog::decode(&once).expect("a re-encoded record decodes");
                assert_eq!(changelog::encode(&back), once);
                // And restoring it never panics, whatever key it comes under.
                use std::sync::{Arc, LazyLock};
                static CFG: LazyLock<Arc<nearfield_aggregator::state::StateConfig>> =
                    LazyLock::new(|| {
                        let c = nearfield_aggregator::AggregateConfig::default();
                        Arc::new(nearfield_aggregator::state::StateConfig {
                            windowing: c.windowing(),
                            currency: c.currency.clone(),
                            coverage: vec![false, true, true],
                            close_chunk: c.close_chunk,
                        })
                    });
                let mut st = nearfield_aggregator::state::PartitionState::new(Arc::clone(&CFG));
                for key in [
                    changelog::chunk_key(300_000, 1_764_000_000_000, 0),
                    changelog::bucket_key(300_000, 1_764_000_000_000),
                    changelog::key_key(7),
                    changelog::grid_key(7),
                    changelog::dedupe_key(0),
                    changelog::meta_key(),
                ] {
                    let _ = st.restore(&key, Some(msg));
                }
                st.restored();
                let _ = st.size();
                let _ = st.totals();
            }
        }
    }
});
