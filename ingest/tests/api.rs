//! Ingest's HTTP API against a real Kafka: every validation and auth rule, batch partial
//! acceptance, the dead-letter topic, idempotent resend, heartbeats, live registry.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Harness, event};
use nearfield_common::time::now_ms;
use nearfield_ingest::auth::RequestLine;
use nearfield_schemas::{
    Codec, Heartbeat, RejectSource, RejectedEvent, SaleEvent, SaleKind, StoreRecord,
};
use nearfield_testkit::{Isolation, Kafka, read_to_end};
use serde_json::json;

fn sales(h: &Harness) -> Vec<(Vec<u8>, SaleEvent)> {
    read_to_end(
        h.kafka,
        &h.settings.topics.sales,
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    )
    .into_iter()
    .map(|r| (r.key.unwrap(), Codec::single_object().decode(&r.value.unwrap()).expect("decodes")))
    .collect()
}

fn dlq(h: &Harness) -> Vec<RejectedEvent> {
    read_to_end(h.kafka, &h.settings.topics.dlq, Isolation::ReadCommitted, Duration::from_secs(30))
        .into_iter()
        .map(|r| Codec::single_object().decode(&r.value.unwrap()).expect("decodes"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_event_is_durable_keyed_by_grid_and_filled_in_by_the_server() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let mut ev = event("e-1");
    ev["kind"] = json!("RETURN");
    let (status, body) = h.post("/v1/events", &ev).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{body}");
    let got = sales(&h);
    assert_eq!(got.len(), 1);
    let (key, e) = &got[0];
    assert_eq!(
        (e.event_id.as_str(), e.store_id.as_str(), e.device_id.as_str()),
        ("e-1", "s1", "pos-1")
    );
    assert_eq!(e.kind, SaleKind::Return);
    assert_eq!(key, e.grid_id.as_bytes());
    assert_eq!(e.grid_id.len(), 15, "an H3 cell");
    assert!(e.received_at >= e.occurred_at);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_rules() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let body = event("a-1").to_string().into_bytes();
    let post = |store: &'static str, device: &'static str, ts: Option<i64>| {
        h.post_as(store, device, "/v1/events", "application/json", body.clone(), ts)
    };
    // No signature headers at all.
    let resp = h.client.post(h.url("/v1/events")).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["rule"], "auth.missing_header");
    // Unknown device, unknown store (the same answer as a bad signature: the API does not
    // tell which stores exist), stale and future timestamps.
    let unknown = post("s1", "pos-9", None).await.1;
    assert_eq!(unknown["error"]["rule"], "auth.invalid");
    assert_eq!(post("nope", "pos-1", None).await.1["error"], unknown["error"]);
    let (s, v, _) = post("s1", "pos-1", Some(now_ms() - 301_000)).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (401, Some("auth.stale_timestamp")));
    let (s, _, _) = post("s1", "pos-1", Some(now_ms() + 301_000)).await;
    assert_eq!(s, 401);
    // A signature made with another device's key.
    let key = nearfield_ingest::auth::MasterKey::from_hex(harness::MASTER)
        .unwrap()
        .device_key("s2", "pos-1", 1);
    let signed_as = async |store: &str, line: RequestLine<'_>, url: String| {
        let resp = h
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-nearfield-store", store)
            .header("x-nearfield-device", "pos-1")
            .header("x-nearfield-timestamp", line.timestamp_ms.to_string())
            .header("x-nearfield-signature", key.sign(&line, &body))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap())
    };
    let line = RequestLine {
        timestamp_ms: now_ms(),
        method: "POST",
        path: "/v1/events",
        query: "",
        content_type: "application/json",
    };
    let (s, v) = signed_as("s1", line, h.url("/v1/events")).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], unknown["error"], "a bad signature answers like an unknown store");
    // A signature over another path, query or content type does not authorize this one.
    for other in [
        RequestLine { path: "/v1/events:batch", ..line },
        RequestLine { query: "x=1", ..line },
        RequestLine { content_type: "application/x-ndjson", ..line },
    ] {
        let (s, _) = signed_as("s2", other, h.url("/v1/events")).await;
        assert_eq!(s, 401, "{other:?}");
    }
    let (s, v) = signed_as("s2", line, h.url("/v1/events?x=1")).await;
    assert_eq!(s, 401, "the query is signed: {v}");
    // The same signed request a second time is a replay.
    let fresh = RequestLine { timestamp_ms: now_ms(), ..line };
    let (s, v) = signed_as("s2", fresh, h.url("/v1/events")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = signed_as("s2", fresh, h.url("/v1/events")).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (401, Some("auth.replayed")));
    // An inactive store is known but may not write.
    let (s, v, _) = post("s3", "pos-1", None).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (403, Some("auth.inactive_store")));
    // A device may write only for its own store.
    let mut other = event("a-2");
    other["store_id"] = json!("s2");
    let (s, v) = h.post("/v1/events", &other).await;
    assert_eq!(
        (s, v["error"]["field"].as_str(), v["error"]["rule"].as_str()),
        (403, Some("store_id"), Some("store_id.forbidden"))
    );
    let written: Vec<_> = sales(&h).into_iter().map(|(_, e)| (e.store_id, e.event_id)).collect();
    assert_eq!(
        written,
        [("s2".to_string(), "a-1".to_string())],
        "only the one properly signed request reached sales (once: its replay did not)"
    );
    let d = dlq(&h);
    assert_eq!(d.len(), 1, "the forbidden event of an authenticated device is dead-lettered");
    assert_eq!(d[0].reason, "store_id.forbidden");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_rules_name_the_field_and_dead_letter_the_event() {
    let h = Harness::start(Kafka::shared(), |c| c.limits.max_body_bytes = 4096).await;
    let cases: Vec<(&str, serde_json::Value, u16, Option<&str>, &str)> = vec![
        ("quantity", json!(0), 422, Some("quantity"), "quantity.range"),
        ("quantity", json!(10_001), 422, Some("quantity"), "quantity.range"),
        ("quantity", json!("1"), 422, Some("quantity"), "field.type"),
        ("currency", json!("yuan"), 422, Some("currency"), "currency.format"),
        ("kind", json!("GIFT"), 422, Some("kind"), "kind.enum"),
        ("event_id", json!("has space"), 422, Some("event_id"), "event_id.charset"),
        ("sku", json!("x".repeat(65)), 422, Some("sku"), "sku.length"),
        (
            "occurred_at",
            json!(now_ms() + 3_600_000),
            422,
            Some("occurred_at"),
            "occurred_at.future",
        ),
        (
            "occurred_at",
            json!(now_ms() - 30 * 86_400_000_i64),
            422,
            Some("occurred_at"),
            "occurred_at.too_old",
        ),
        ("unit_price_minor", json!(-5), 422, Some("unit_price_minor"), "unit_price_minor.range"),
        ("colour", json!("red"), 422, Some("colour"), "field.unknown"),
    ];
    for (i, (field, value, status, named, rule)) in cases.iter().enumerate() {
        let mut ev = event(&format!("v-{i}"));
        ev[*field] = value.clone();
        let (s, v) = h.post("/v1/events", &ev).await;
        assert_eq!(s, *status, "{field}={value}: {v}");
        assert_eq!(v["error"]["field"].as_str(), *named, "{v}");
        assert_eq!(v["error"]["rule"].as_str(), Some(*rule), "{v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.contains(field)),
            "message names {field}: {v}"
        );
    }
    // Malformed JSON, wrong media type, oversized body.
    let (s, v, _) = h
        .post_as("s1", "pos-1", "/v1/events", "application/json", b"{not json".to_vec(), None)
        .await;
    assert_eq!((s, v["error"]["rule"].as_str()), (400, Some("body.json")));
    let (s, _, _) = h.post_as("s1", "pos-1", "/v1/events", "text/csv", b"a,b".to_vec(), None).await;
    assert_eq!(s, 415);
    let (s, v, _) =
        h.post_as("s1", "pos-1", "/v1/events", "application/json", vec![b' '; 5000], None).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (413, Some("body.size")));
    assert!(sales(&h).is_empty());
    let d = dlq(&h);
    assert_eq!(
        d.len(),
        cases.len() + 1,
        "every rejected event (and the malformed body) is dead-lettered"
    );
    let q = d.iter().find(|r| r.event_id.as_deref() == Some("v-0")).expect("v-0 in DLQ");
    assert_eq!(
        (q.source, q.reason.as_str(), q.field.as_deref()),
        (RejectSource::Ingest, "quantity.range", Some("quantity"))
    );
    assert_eq!(q.store_id.as_deref(), Some("s1"));
    let payload: serde_json::Value = serde_json::from_slice(&q.payload).expect("raw JSON kept");
    assert_eq!(payload["quantity"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_accepts_valid_events_and_reports_each_invalid_one() {
    let h = Harness::start(Kafka::shared(), |c| c.limits.max_batch_events = 10).await;
    let mut bad1 = event("b-2");
    bad1["quantity"] = json!(-1);
    let mut bad2 = event("b-4");
    bad2.as_object_mut().unwrap().remove("sku");
    let batch = json!([event("b-1"), bad1, event("b-3"), bad2, event("b-5")]);
    let (s, v) = h.post("/v1/events:batch", &batch).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["accepted"].as_u64(), v["rejected"].as_u64()), (Some(3), Some(2)));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["error"]["field"], "quantity");
    assert_eq!(results[3]["error"]["rule"], "field.required");
    assert_eq!(results[3]["event_id"], "b-4");
    let mut ids: Vec<String> = sales(&h).into_iter().map(|(_, e)| e.event_id).collect();
    ids.sort();
    assert_eq!(ids, ["b-1", "b-3", "b-5"]);
    let mut dl: Vec<(Option<String>, String)> =
        dlq(&h).into_iter().map(|r| (r.event_id, r.reason)).collect();
    dl.sort();
    assert_eq!(
        dl,
        [
            (Some("b-2".into()), "quantity.range".into()),
            (Some("b-4".into()), "field.required".into())
        ]
    );
    // Too many events: refused whole, nothing written.
    let big: Vec<_> = (0..11).map(|i| event(&format!("big-{i}"))).collect();
    let (s, v) = h.post("/v1/events:batch", &json!(big)).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (413, Some("batch.size")));
    assert_eq!(sales(&h).len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_and_avro_batches_are_accepted() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let nd = format!("{}\n{}\n", event("n-1"), event("n-2"));
    let (s, v, _) = h
        .post_as("s1", "scale-1", "/v1/events:batch", "application/x-ndjson", nd.into_bytes(), None)
        .await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(2)), "{v}");
    let avro_event = SaleEvent {
        event_id: "av-1".into(),
        store_id: String::new(),
        device_id: String::new(),
        grid_id: String::new(),
        sku: "SKU-9".into(),
        kind: SaleKind::Preorder,
        quantity: 4,
        unit_price_minor: 100,
        currency: "CNY".into(),
        occurred_at: now_ms(),
        received_at: 0,
    };
    let body = nearfield_ingest::body::encode_avro_batch(&[avro_event]);
    let (s, v, _) = h
        .post_as("s1", "pos-1", "/v1/events:batch", nearfield_ingest::body::AVRO_BATCH, body, None)
        .await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let got = sales(&h);
    assert_eq!(got.len(), 3);
    let av = got.iter().find(|(_, e)| e.event_id == "av-1").expect("avro event");
    assert_eq!((av.1.store_id.as_str(), av.1.kind, av.1.quantity), ("s1", SaleKind::Preorder, 4));
    assert!(got.iter().any(|(_, e)| e.device_id == "scale-1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_an_event_id_is_harmless() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let ev = event("dup-1");
    assert_eq!(h.post("/v1/events", &ev).await.0, 200);
    assert_eq!(h.post("/v1/events", &ev).await.0, 200, "a retry is answered like the first send");
    let got = sales(&h);
    // At-least-once into Kafka: both copies carry the same event_id, which the aggregator
    // counts once; everything but the receive time is identical.
    assert_eq!(got.len(), 2);
    let (a, b) = (&got[0].1, &got[1].1);
    assert_eq!(
        (a.event_id.as_str(), a.quantity, a.occurred_at),
        (b.event_id.as_str(), b.quantity, b.occurred_at)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_store_rate_limit_answers_429_with_retry_after() {
    let h = Harness::start(Kafka::shared(), |c| {
        c.rate_limit.events_per_second = 0.5;
        c.rate_limit.burst = 3.0;
        c.limits.max_batch_events = 3;
    })
    .await;
    for i in 0..3 {
        assert_eq!(h.post("/v1/events", &event(&format!("r-{i}"))).await.0, 200);
    }
    let (s, v, headers) = h
        .post_as(
            "s1",
            "pos-1",
            "/v1/events",
            "application/json",
            event("r-3").to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!((s, v["error"]["rule"].as_str()), (429, Some("rate_limit")));
    assert!(
        headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some()
    );
    // Another store has its own budget.
    let (s, _, _) = h
        .post_as(
            "s2",
            "pos-1",
            "/v1/events",
            "application/json",
            event("r-4").to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!(s, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_their_topic_keyed_by_grid() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let now = now_ms();
    let since = now - 8 * 3_600_000;
    let backlog = json!({"sent_at": now, "pending_events": 12, "last_upload_at": since});
    let (s, v) = h.post("/v1/heartbeat", &backlog).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = h.post("/v1/heartbeat", &json!({"pending_events": -1})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("pending_events")));
    let after = json!({"sent_at": now, "last_upload_at": now + 1});
    let (s, v) = h.post("/v1/heartbeat", &after).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (422, Some("last_upload_at.after_sent_at")));
    let (s, v) = h.post("/v1/heartbeat", &json!({"sent_at": 4_102_444_800_000_i64})).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (422, Some("sent_at.future")), "year 2100");
    let recs = read_to_end(
        h.kafka,
        &h.settings.topics.heartbeats,
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    );
    assert_eq!(recs.len(), 1);
    let hb: Heartbeat = Codec::single_object().decode(recs[0].value.as_deref().unwrap()).unwrap();
    assert_eq!((hb.store_id.as_str(), hb.pending_events), ("s1", 12));
    assert_eq!(hb.last_upload_at, Some(since), "since when it holds them");
    assert_eq!(recs[0].key.as_deref(), Some(hb.grid_id.as_bytes()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_follows_the_stores_topic_live() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let body = event("new-1").to_string().into_bytes();
    let (s, _, _) =
        h.post_as("s9", "pos-1", "/v1/events", "application/json", body.clone(), None).await;
    assert_eq!(s, 401, "s9 is not registered yet");
    let rec = StoreRecord {
        store_id: "s9".into(),
        name: "New".into(),
        lat: 31.3,
        lon: 121.5,
        device_ids: vec!["pos-1".into()],
        key_version: 1,
        active: true,
        updated_at: now_ms(),
    };
    let producer: rdkafka::producer::FutureProducer = h.kafka.client_config().create().unwrap();
    let bytes = Codec::single_object().encode(&rec).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&h.settings.topics.stores)
                .key("s9")
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("store record written");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _, _) =
            h.post_as("s9", "pos-1", "/v1/events", "application/json", body.clone(), None).await;
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new store never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A tombstone removes it again.
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, [u8]>::to(&h.settings.topics.stores).key("s9"),
            Duration::from_secs(10),
        )
        .await
        .expect("tombstone written");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _, _) =
            h.post_as("s9", "pos-1", "/v1/events", "application/json", body.clone(), None).await;
        if s == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "removed store still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    assert_eq!(h.post("/v1/events", &event("m-1")).await.0, 200);
    let get = |p: &str| h.client.get(h.url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get("/readyz").await.unwrap().status().as_u16() != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Metrics are on the operator port only: the device port does not serve them.
    assert_eq!(get("/metrics").await.unwrap().status().as_u16(), 404);
    let metrics =
        h.client.get(h.operator_url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        nearfield_ingest::internal_events::REQUESTS_TOTAL,
        nearfield_ingest::internal_events::EVENTS_ACCEPTED_TOTAL,
        nearfield_ingest::internal_events::PRODUCE_LATENCY_SECONDS,
        nearfield_ingest::internal_events::PRODUCER_QUEUE_DEPTH,
        nearfield_ingest::internal_events::REGISTRY_STORES,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(!metrics.contains("s1"), "no store id in metric labels");
    let doc: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/events:batch"]["post"].is_object());
    let (s, v) = h.post("/v1/nope", &json!({})).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (404, Some("route")));
    h.stop().await;
}

/// The device API is exact: a key given twice, bytes after an Avro record, identifiers
/// that render unlike what they are, and a batch of nothing but bad events are each
/// refused with the rule named (issue: strict parsing), and none of them is written to
/// sales.v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_lookalike_input_is_refused_naming_the_rule() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    // The same key twice: which value would count depends on the reader.
    let e = event("dup-1").to_string();
    let twice = format!("{},\"quantity\":900}}", e.trim_end_matches('}'));
    let (s, v, _) =
        h.post_as("s1", "pos-1", "/v1/events", "application/json", twice.into_bytes(), None).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (400, Some("body.duplicate_key")), "{v}");
    assert_eq!(v["error"]["field"], "quantity");
    // A SKU with a right-to-left override renders as another SKU.
    let mut bidi = event("bidi-1");
    bidi["sku"] = json!("SKU-\u{202e}1KLIM");
    let (s, v) = h.post("/v1/events", &bidi).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (422, Some("sku.charset")), "{v}");
    // An Avro batch whose record has bytes after it.
    let ev = SaleEvent {
        event_id: "tail-1".into(),
        store_id: String::new(),
        device_id: String::new(),
        grid_id: String::new(),
        sku: "SKU-9".into(),
        kind: SaleKind::Sale,
        quantity: 1,
        unit_price_minor: 100,
        currency: "CNY".into(),
        occurred_at: now_ms(),
        received_at: 0,
    };
    let mut msg = Codec::single_object().encode(&ev).expect("encode");
    msg.push(0);
    let mut body = u32::try_from(msg.len()).expect("small").to_be_bytes().to_vec();
    body.extend_from_slice(&msg);
    let (s, v, _) = h
        .post_as("s1", "pos-1", "/v1/events:batch", nearfield_ingest::body::AVRO_BATCH, body, None)
        .await;
    // Nothing of the batch was accepted: 422, and each event says why.
    assert_eq!((s, v["error"]["rule"].as_str()), (422, Some("batch.rejected")), "{v}");
    assert_eq!(v["results"][0]["error"]["rule"], "decode.trailing_bytes");
    assert_eq!((v["accepted"].as_u64(), v["rejected"].as_u64()), (Some(0), Some(1)));
    assert!(sales(&h).is_empty(), "nothing written");
    assert_eq!(dlq(&h).len(), 3, "every refused event is in the dead-letter topic");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_cannot_steer_plans_past_its_window_cap() {
    let h = Harness::start(Kafka::shared(), |c| c.limits.max_store_units_per_window = 5).await;
    let mut e = event("cap-1");
    e["quantity"] = json!(4);
    assert_eq!(h.post("/v1/events", &e).await.0, 200);
    let mut e = event("cap-2");
    e["quantity"] = json!(2);
    let (status, body) = h.post("/v1/events", &e).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["rule"], "quantity.store_window_cap", "{body}");
    assert_eq!(body["error"]["field"], "quantity", "{body}");
    // One more unit still fits under the cap.
    let mut e = event("cap-3");
    e["quantity"] = json!(1);
    assert_eq!(h.post("/v1/events", &e).await.0, 200);
    let refused: Vec<(Option<String>, String)> =
        dlq(&h).into_iter().map(|r| (r.event_id, r.reason)).collect();
    assert_eq!(refused, vec![(Some("cap-2".to_string()), "quantity.store_window_cap".to_string())]);
    // Every kind counts toward the cap: a RETURN does not get around it.
    let mut r = event("ret-1");
    r["kind"] = json!("RETURN");
    r["quantity"] = json!(1);
    assert_eq!(h.post("/v1/events", &r).await.0, 422, "the cap counts returns too");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_beyond_sales_are_accepted_and_counted() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let before = beyond_sales(&h).await;
    let mut s = event("sold-1");
    s["quantity"] = json!(1);
    assert_eq!(h.post("/v1/events", &s).await.0, 200);
    let mut r = event("ret-1");
    r["kind"] = json!("RETURN");
    r["quantity"] = json!(1);
    assert_eq!(h.post("/v1/events", &r).await.0, 200);
    assert_eq!(beyond_sales(&h).await, before, "a return within the window's sales");
    r["event_id"] = json!("ret-2");
    assert_eq!(h.post("/v1/events", &r).await.0, 200, "accepted: goods come back across windows");
    assert!(beyond_sales(&h).await > before, "but counted");
    h.stop().await;
}

async fn beyond_sales(h: &Harness) -> f64 {
    let url = h.operator_url("/metrics");
    let text = h.client.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("nearfield_ingest_returns_beyond_sales_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
