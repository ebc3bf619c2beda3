//! The edge holds against one slow or unauthenticated client (SPEC §5, security issue):
//! an unauthenticated request is answered without its body being read, a body that does
//! not arrive in time gets 408, requests and request bytes in flight are capped (503 +
//! Retry-After), and heartbeats count against the store's rate limit; open connections are
//! capped (503 + Retry-After), a request head that never ends is cut off, and an oversized
//! one is 431. Raw TCP, so the
//! test controls exactly what is sent and when.

mod harness;

use std::time::Duration;

use harness::Harness;
use nearfield_common::time::now_ms;
use nearfield_testkit::Kafka;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the head of a POST (auth headers for `store`/`pos-1`, any signature) declaring
/// `length` body bytes, then `body` (possibly fewer); returns the open stream.
async fn start_post(h: &Harness, store: &str, length: usize, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nx-nearfield-store: {store}\r\nx-nearfield-device: pos-1\r\n\
         x-nearfield-timestamp: {}\r\nx-nearfield-signature: {}\r\n\r\n",
        now_ms(),
        "ab".repeat(32)
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    s
}

/// The status line of the answer, waiting at most `within`.
async fn status(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, s.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_store_is_refused_before_its_body_is_sent() {
    // A minute to send a body: an answer within seconds means the body was not waited for.
    let h = Harness::start(Kafka::shared(), |c| c.limits.body_timeout_ms = 60_000).await;
    let mut s = start_post(&h, "nobody", 500_000, b"").await;
    assert_eq!(status(&mut s, Duration::from_secs(20)).await, Some(401));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let h = Harness::start(Kafka::shared(), |c| c.limits.body_timeout_ms = 300).await;
    let mut s = start_post(&h, "s1", 100, b"{\"event_id\"").await;
    assert_eq!(status(&mut s, Duration::from_secs(20)).await, Some(408));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_bytes_in_flight_are_capped() {
    // One request at a time: a second one while a slow one holds the slot gets 503.
    let h = Harness::start(Kafka::shared(), |c| {
        c.limits.max_concurrent_requests = 1;
        c.limits.body_timeout_ms = 60_000;
    })
    .await;
    let slow = start_post(&h, "s1", 100, b"{").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v) = h.post("/v1/events", &harness::event("c-1")).await;
    assert_eq!((s, v["error"]["rule"].as_str()), (503, Some("server.busy")), "{v}");
    drop(slow); // the slow client goes away; shutdown does not wait for it
    h.stop().await;

    // Bytes: one slow request declaring the whole allowance leaves none for another.
    let h = Harness::start(Kafka::shared(), |c| {
        c.limits.max_body_bytes = 4_096;
        c.limits.max_inflight_bytes = 4_096;
        c.limits.body_timeout_ms = 60_000;
    })
    .await;
    let slow = start_post(&h, "s1", 4_096, b"{").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, headers) = h
        .post_as(
            "s1",
            "pos-1",
            "/v1/events",
            "application/json",
            harness::event("c-2").to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!(s, 503);
    assert!(headers.contains_key("retry-after"));
    drop(slow);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_count_against_the_store_rate_limit() {
    let h = Harness::start(Kafka::shared(), |c| {
        c.rate_limit.events_per_second = 0.001;
        c.rate_limit.burst = 2.0;
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(h.post("/v1/heartbeat", &json!({})).await.0);
    }
    assert_eq!(got, [200, 200, 429]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_and_a_head_that_never_ends_is_cut_off() {
    let h = Harness::start(Kafka::shared(), |c| {
        c.limits.max_connections = 2;
        c.limits.header_read_timeout_ms = 500;
    })
    .await;
    // Two clients that open a connection and send half a request line hold both slots…
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        s.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n").await.expect("partial head");
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …so a third is answered 503 + Retry-After at once and closed.
    let mut third = TcpStream::connect(h.addr).await.expect("connect");
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut text)).await;
    assert!(text.starts_with("HTTP/1.1 503") && text.contains("Retry-After"), "{text}");
    // The slow ones are cut off after the head timeout, which frees their slots.
    for s in &mut idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a connection without a complete head stayed open");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _) =
        h.post_as("s1", "pos-1", "/v1/heartbeat", "application/json", b"{}".to_vec(), None).await;
    assert_eq!(status, 200, "served again once the slots are free");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431() {
    let h = Harness::start(Kafka::shared(), |_| {}).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n", "p".repeat(20_000));
    let _ = s.write_all(head.as_bytes()).await;
    assert_eq!(status(&mut s, Duration::from_secs(5)).await, Some(431));
    h.stop().await;
}
