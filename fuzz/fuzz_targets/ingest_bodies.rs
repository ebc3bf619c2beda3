//! Every ingest body parser on untrusted bytes (single JSON event, JSON-array, NDJSON and
//! Avro batches, heartbeats), followed by the validation rules: never a panic, and every
//! event is either accepted or rejected with a named rule; a JSON body that names a key
//! twice is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nearfield_ingest::body::{Format, parse_batch, parse_single};
use nearfield_ingest::config::Limits;
use nearfield_ingest::registry::Principal;
use nearfield_ingest::validate::{Rules, validate};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let body = bytes::Bytes::copy_from_slice(body);
    let who = Principal {
        store_id: "s1".into(),
        device_id: "d1".into(),
        grid_id: "8831aa5551fffff".into(),
    };
    let limits = Limits { max_batch_events: 64, ..Limits::default() };
    if pick % 5 == 4 {
        let now = 1_764_000_000_000;
        match nearfield_ingest::heartbeat::parse(&body, &limits, now) {
            Ok(h) => {
                assert!(h.pending_events >= 0 && h.last_upload_at.is_none_or(|t| t <= h.sent_at));
                assert!(nearfield_ingest::json::duplicate_key(&body).is_none());
            }
            Err(r) => assert!(!r.rule.is_empty() && !r.message.is_empty()),
        }
        return;
    }
    let parsed = match pick % 4 {
        0 => parse_single(&body).map(|p| vec![p]),
        1 => parse_batch(Format::Json, &body, limits.max_batch_events),
        2 => parse_batch(Format::Ndjson, &body, limits.max_batch_events),
        _ => parse_batch(Format::AvroBatch, &body, limits.max_batch_events),
    };
    let Ok(events) = parsed else { return };
    assert!(events.len() <= limits.max_batch_events);
    for p in events {
        if p.fields.is_ok() && p.raw.first() == Some(&b'{') {
            assert!(nearfield_ingest::json::duplicate_key(&p.raw).is_none(), "ambiguous JSON read");
        }
        if let Ok(fields) = p.fields {
            let rules = Rules { limits: &limits, currencies: &[], catalog: None };
            match validate(fields, &who, rules, 1_764_000_000_000) {
                Ok(e) => assert!(e.quantity >= 1 && e.store_id == "s1"),
                Err(r) => assert!(!r.rule.is_empty() && !r.message.is_empty()),
            }
        }
    }
});
