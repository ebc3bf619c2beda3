//! Operator endpoints (SPEC §8) on a running aggregator: without a token a non-loopback
//! listen address is refused at start, naming the setting; with one, the live query needs
//! `Authorization: Bearer <token>` while `/healthz`, `/readyz` and `/metrics` stay open.

use std::time::{Duration, Instant};

mod support;

use nearfield_aggregator::AggregateConfig;
use nearfield_common::operator::OperatorToken;
use nearfield_common::shutdown::CancellationToken;
use nearfield_testkit::Kafka;

fn config(listen: &str, id: &str, token: Option<OperatorToken>) -> AggregateConfig {
    AggregateConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: listen.parse().expect("addr"),
            group_id: format!("agg-{id}"),
            instance_id: Some("op".into()),
            operator_token: token,
            ..nearfield_eos::LoopSettings::default()
        },
        follow_stores_topic: false,
        ..AggregateConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_endpoints_need_the_operator_token() {
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic("op");
    let settings = support::settings(kafka, &id);
    let refused = nearfield_aggregator::start(
        config("0.0.0.0:0", &id, None),
        settings.clone(),
        CancellationToken::new(),
    )
    .await
    .expect_err("a non-loopback address without a token");
    let msg = refused.to_string();
    assert!(
        msg.contains("aggregate.listen 0.0.0.0:0: a non-loopback address needs an operator token"),
        "{msg}"
    );

    let token = OperatorToken::new("operator-token-for-tests").expect("token");
    let stop = CancellationToken::new();
    let running = nearfield_aggregator::start(
        config("127.0.0.1:0", &id, Some(token.clone())),
        settings,
        stop.clone(),
    )
    .await
    .expect("start");
    let base = format!("http://{}", running.local_addr);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(format!("{base}{open}")).send().await.expect("get");
        assert_eq!(r.status(), 200, "{open} stays open");
    }
    let query = format!("{base}/v1/demand?grid=8830e1d8fffffff&sku=X");
    let r = http.get(&query).send().await.expect("get");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["rule"], "operator.token");
    let r = http.get(&query).bearer_auth("wrong-token-wrong-token").send().await.expect("get");
    assert_eq!(r.status(), 401);
    let r = http.get(&query).header("authorization", token.bearer()).send().await.expect("get");
    assert_eq!(r.status(), 404, "with the token the query runs (nothing counted yet)");
    stop.cancel();
    running.done.await.expect("join").expect("stopped cleanly");
}
