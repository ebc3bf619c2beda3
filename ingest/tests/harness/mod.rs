//! Shared set-up for ingest's integration tests: an in-process ingest on a free port,
//! talking to a real Kafka with topics unique to the test, and a signing HTTP client.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use nearfield_common::kafka::{KafkaSettings, Topics};
use nearfield_common::shutdown::CancellationToken;
use nearfield_common::time::now_ms;
use nearfield_ingest::auth::{
    HEADER_DEVICE, HEADER_SIGNATURE, HEADER_STORE, HEADER_TIMESTAMP, MasterKey, RequestLine,
};
use nearfield_ingest::{IngestConfig, Running};
use nearfield_testkit::Kafka;
use serde_json::Value;

pub const MASTER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(Debug)]
pub struct Harness {
    pub kafka: &'static Kafka,
    pub settings: KafkaSettings,
    pub addr: std::net::SocketAddr,
    /// The operator port (`/metrics`).
    pub operator: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub running: Option<Running>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn topics() -> Topics {
    let id = Kafka::unique_topic("t");
    Topics {
        sales: format!("sales-{id}"),
        heartbeats: format!("heartbeats-{id}"),
        dlq: format!("dlq-{id}"),
        late: format!("late-{id}"),
        demand: format!("demand-{id}"),
        stores: format!("stores-{id}"),
        catalog: format!("catalog-{id}"),
        ..Topics::default()
    }
}

pub fn write_stores(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("stores.jsonl");
    let lines = [
        r#"{"store_id":"s1","name":"One","lat":31.2304,"lon":121.4737,"device_ids":["pos-1","scale-1"],"key_version":1,"active":true,"updated_at":0}"#,
        r#"{"store_id":"s2","name":"Two","lat":31.2000,"lon":121.4000,"device_ids":["pos-1"],"key_version":1,"active":true,"updated_at":0}"#,
        r#"{"store_id":"s3","name":"Closed","lat":31.2100,"lon":121.4100,"device_ids":["pos-1"],"key_version":1,"active":false,"updated_at":0}"#,
    ];
    std::fs::write(&path, lines.join("\n")).expect("write stores");
    path
}

impl Harness {
    /// Ingest on a free port against `kafka`, with `tune` applied to its config.
    pub async fn start(kafka: &'static Kafka, tune: impl FnOnce(&mut IngestConfig)) -> Harness {
        let topics = topics();
        for (t, p) in [(&topics.sales, 3), (&topics.heartbeats, 3), (&topics.dlq, 1)] {
            kafka.create_topic(t, p, &[]);
        }
        kafka.create_topic(&topics.stores, 1, &[("cleanup.policy", "compact")]);
        let settings = KafkaSettings {
            brokers: kafka.brokers().to_string(),
            topics,
            ..KafkaSettings::default()
        };
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = IngestConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            operator_listen: "127.0.0.1:0".parse().expect("addr"),
            stores_file: Some(write_stores(dir.path())),
            master_key: Some(MASTER.into()),
            ..IngestConfig::default()
        };
        tune(&mut cfg);
        let shutdown = CancellationToken::new();
        let running = nearfield_ingest::start(cfg, settings.clone(), shutdown.clone())
            .await
            .expect("ingest starts");
        Harness {
            kafka,
            settings,
            addr: running.local_addr,
            operator: running.operator_addr,
            shutdown,
            running: Some(running),
            client: reqwest::Client::new(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the operator port (`/metrics`).
    pub fn operator_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.operator)
    }

    /// A signed POST as `store`/`device`, signed at `ts` (now when None).
    pub async fn post_as(
        &self,
        store: &str,
        device: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        ts: Option<i64>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let ts = ts.unwrap_or_else(now_ms);
        let key = MasterKey::from_hex(MASTER).expect("key").device_key(store, device, 1);
        let line = RequestLine { timestamp_ms: ts, method: "POST", path, query: "", content_type };
        let sig = key.sign(&line, &body);
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .header(HEADER_STORE, store)
            .header(HEADER_DEVICE, device)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, sig)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let json = resp.json().await.unwrap_or(Value::Null);
        (status, json, headers)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .post_as("s1", "pos-1", path, "application/json", body.to_string().into_bytes(), None)
            .await;
        (s, v)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(30), r.done)
                .await
                .expect("stops")
                .expect("join")
                .expect("clean");
        }
    }
}

/// A valid event JSON.
pub fn event(id: &str) -> Value {
    serde_json::json!({"event_id": id, "sku": "SKU-1", "kind": "SALE", "quantity": 2,
                       "unit_price_minor": 650, "currency": "CNY", "occurred_at": now_ms() - 1000})
}
