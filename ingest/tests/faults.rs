//! Faults: the broker stops under load. No 2xx may be given for an event that is not on
//! the topic once the broker is back.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod harness;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Harness, event};
use nearfield_schemas::{Codec, SaleEvent};
use nearfield_testkit::{Isolation, Kafka, read_to_end};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_load_no_acknowledged_event_is_missing() {
    let kafka: &'static Kafka = Box::leak(Box::new(Kafka::start(1)));
    let h = Arc::new(
        Harness::start(kafka, |c| {
            c.produce_timeout_ms = 3_000;
            c.rate_limit.events_per_second = 1e6;
            c.rate_limit.burst = 1e6;
        })
        .await,
    );
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let statuses = Arc::new(Mutex::new(Vec::<(Instant, u16)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (h, acked, statuses, stop) =
            (Arc::clone(&h), Arc::clone(&acked), Arc::clone(&statuses), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..20).map(|i| format!("w{worker}-{n}-{i}")).collect();
                n += 1;
                let batch = serde_json::Value::Array(ids.iter().map(|id| event(id)).collect());
                let (status, body) = h.post("/v1/events:batch", &batch).await;
                statuses.lock().unwrap().push((Instant::now(), status));
                if status == 200 {
                    let mut a = acked.lock().unwrap();
                    for r in body["results"].as_array().unwrap() {
                        if r["status"] == "accepted" {
                            a.insert(r["event_id"].as_str().unwrap().to_string());
                        }
                    }
                } else {
                    assert_eq!(status, 503, "only 503 while Kafka is away: {body}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(move || kafka.stop_node(1)).await.unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::spawn_blocking(move || kafka.start_node(1)).await.unwrap();
    let restarted_at = Instant::now();
    // Keep the load on until ingest has answered 200 again (or give up after a minute).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && !statuses.lock().unwrap().iter().any(|(t, s)| *t > restarted_at && *s == 200)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    let unavailable = statuses.iter().filter(|(_, s)| *s == 503).count();
    let ok_after = statuses.iter().filter(|(t, s)| *t > restarted_at && *s == 200).count();
    let ok_before = statuses.iter().filter(|(t, s)| *t < stopped_at && *s == 200).count();
    assert!(ok_before > 0, "load was accepted before the fault");
    assert!(unavailable > 0, "the outage was answered with 503");
    assert!(ok_after > 0, "ingest recovered after the broker came back");

    let on_topic: HashSet<String> = read_to_end(
        kafka,
        &h.settings.topics.sales,
        Isolation::ReadCommitted,
        Duration::from_secs(60),
    )
    .into_iter()
    .map(|r| Codec::single_object().decode::<SaleEvent>(&r.value.unwrap()).unwrap().event_id)
    .collect();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<&String> = acked.difference(&on_topic).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing from the topic, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "broker outage: {} events acknowledged, all on the topic; {} requests answered 503 during the outage",
        acked.len(),
        unavailable
    );
    match Arc::try_unwrap(h) {
        Ok(h) => h.stop().await,
        Err(_) => panic!("harness still shared"),
    }
}
