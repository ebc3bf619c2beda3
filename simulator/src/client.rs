//! Signed requests to ingest, with the retry behaviour of a real device: 503 and 429 are
//! retried after `Retry-After` (capped), connection errors with backoff, always with the
//! same body (same event_ids) and a fresh signature.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearfield_common::time::now_ms;
use nearfield_ingest::auth::{
    HEADER_DEVICE, HEADER_SIGNATURE, HEADER_STORE, HEADER_TIMESTAMP, RequestLine,
};
use nearfield_ingest::body::{AVRO_BATCH, encode_avro_batch};
use nearfield_schemas::{SaleEvent, SaleKind};
use serde_json::Value;

use crate::config::SimulateConfig;
use crate::demand::{Device, EventJson, Truth};
use crate::report::Stats;

/// A request body and its media type.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Vec<u8>),
    Ndjson(Vec<u8>),
    Avro(Vec<u8>),
}

impl Body {
    fn parts(&self) -> (&'static str, &[u8]) {
        match self {
            Body::Json(b) => ("application/json", b),
            Body::Ndjson(b) => ("application/x-ndjson", b),
            Body::Avro(b) => (AVRO_BATCH, b),
        }
    }
}

/// One request of one device.
#[derive(Debug, Clone)]
pub struct Request {
    pub device: Device,
    pub path: &'static str,
    pub body: Body,
    /// Ground truth of the events in the body, in order.
    pub truths: Vec<Truth>,
}

impl Request {
    /// Events of one device: a single post, or a batch in one of the three formats
    /// (JSON array most of the time, NDJSON and Avro now and then).
    pub fn events(device: &Device, events: Vec<(EventJson, Truth)>, batch: bool) -> Request {
        let (events, truths): (Vec<EventJson>, Vec<Truth>) = events.into_iter().unzip();
        let first = truths.first().map(|t| t.event_id.len() + t.sku.len()).unwrap_or(0);
        let (path, body) = if !batch && events.len() == 1 {
            ("/v1/events", Body::Json(serde_json::to_vec(&events[0]).unwrap_or_default()))
        } else {
            let body = match first % 10 {
                0 => Body::Avro(encode_avro_batch(&events.iter().map(to_avro).collect::<Vec<_>>())),
                1 | 2 => {
                    let mut b = Vec::new();
                    for e in &events {
                        b.extend(serde_json::to_vec(e).unwrap_or_default());
                        b.push(b'\n');
                    }
                    Body::Ndjson(b)
                }
                _ => Body::Json(serde_json::to_vec(&events).unwrap_or_default()),
            };
            ("/v1/events:batch", body)
        };
        Request { device: device.clone(), path, body, truths }
    }
}

fn to_avro(e: &EventJson) -> SaleEvent {
    SaleEvent {
        event_id: e.event_id.clone(),
        store_id: String::new(),
        device_id: String::new(),
        grid_id: String::new(),
        sku: e.sku.clone(),
        kind: match e.kind {
            "RETURN" => SaleKind::Return,
            "PREORDER" => SaleKind::Preorder,
            _ => SaleKind::Sale,
        },
        quantity: i32::try_from(e.quantity).unwrap_or(0),
        unit_price_minor: e.unit_price_minor,
        currency: e.currency.clone(),
        occurred_at: e.occurred_at,
        received_at: 0,
    }
}

/// The HTTP client of all simulated devices.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    stats: Arc<Mutex<Stats>>,
    max_retries: u32,
}

enum Answer {
    /// Answered for good; how many of the request's events were acknowledged.
    Done(usize),
    /// Refused for now (429, 503): none of its events was accepted; retry after this.
    Retry(Duration),
    /// No answer (a connection error or a timeout): ingest may have accepted its events.
    Lost(Duration),
}

impl Client {
    pub fn new(cfg: &SimulateConfig, stats: Arc<Mutex<Stats>>) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            http,
            base: cfg.target.trim_end_matches('/').to_string(),
            stats,
            max_retries: cfg.max_retries,
        })
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends until answered for good (or out of retries); with `duplicate`, sends an
    /// acknowledged request once more, as a device that lost the answer would.
    pub async fn send(&self, req: Request, duplicate: bool) {
        let n = req.truths.len();
        self.stats().sent(n);
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let answer = self.attempt(&req, false).await;
            if let Answer::Lost(_) = answer {
                self.stats().unanswered(n);
            }
            match answer {
                Answer::Done(_) => {
                    self.stats().latency(start.elapsed());
                    break;
                }
                Answer::Retry(wait) | Answer::Lost(wait) if attempt < self.max_retries => {
                    attempt += 1;
                    self.stats().retry();
                    tokio::time::sleep(wait).await;
                }
                Answer::Retry(_) | Answer::Lost(_) => {
                    self.stats().failed(n);
                    return;
                }
            }
        }
        // The whole request again, as a device that lost the answer sends it (once, not
        // retried); of its events, those ingest accepted again are counted as resent.
        if duplicate && n > 0 {
            match self.attempt(&req, true).await {
                Answer::Done(again) => self.stats().duplicate(again),
                Answer::Lost(_) => self.stats().unanswered(n),
                Answer::Retry(_) => {}
            }
        }
    }

    async fn attempt(&self, req: &Request, duplicate: bool) -> Answer {
        let (ct, body) = req.body.parts();
        let ts = now_ms() + req.device.skew_ms;
        let line = RequestLine {
            timestamp_ms: ts,
            method: "POST",
            path: req.path,
            query: "",
            content_type: ct,
        };
        let sig = req.device.key.sign(&line, body);
        let resp = self
            .http
            .post(format!("{}{}", self.base, req.path))
            .header("content-type", ct)
            .header(HEADER_STORE, &req.device.store_id)
            .header(HEADER_DEVICE, &req.device.device_id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, sig)
            .body(body.to_vec())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(_) => return Answer::Lost(Duration::from_millis(500)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_millis(500), |s| Duration::from_secs(s.min(2)));
        let json: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 429 || status == 503 {
            return Answer::Retry(retry_after);
        }
        if duplicate {
            return Answer::Done(accepted_again(status, req.path, &json));
        }
        let mut stats = self.stats();
        if req.path == "/v1/heartbeat" {
            stats.heartbeat(status == 200);
            return Answer::Done(0);
        }
        let mut acked = 0;
        match (status, req.path) {
            (200, "/v1/events") => {
                stats.acked(&req.truths[0]);
                acked = 1;
            }
            // A batch answers per event: 200 when any was accepted, 422 when none was.
            (200 | 422, "/v1/events:batch") => {
                let results = json["results"].as_array().cloned().unwrap_or_default();
                for r in results {
                    let i = r["index"].as_u64().unwrap_or(u64::MAX) as usize;
                    match (r["status"].as_str(), req.truths.get(i)) {
                        (Some("accepted"), Some(t)) => {
                            stats.acked(t);
                            acked += 1;
                        }
                        (Some("rejected"), Some(t)) => {
                            stats.rejected(r["error"]["rule"].as_str().unwrap_or("unknown"), t)
                        }
                        _ => stats.rejected("unexpected_answer", &req.truths[0]),
                    }
                }
            }
            (_, _) => {
                let rule = json["error"]["rule"].as_str().unwrap_or("unknown").to_string();
                for t in &req.truths {
                    stats.rejected(&rule, t);
                }
            }
        }
        Answer::Done(acked)
    }
}

/// How many events of a resent request ingest accepted, from its answer: one for a
/// single event answered 200, the `accepted` results of a batch (ingest does not
/// de-duplicate: the aggregator counts an event id once), none otherwise.
fn accepted_again(status: u16, path: &str, json: &Value) -> usize {
    match (status, path) {
        (200, "/v1/events") => 1,
        (200 | 422, "/v1/events:batch") => json["results"]
            .as_array()
            .map_or(0, |rs| rs.iter().filter(|r| r["status"] == "accepted").count()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resend_counts_only_what_ingest_accepted_again() {
        let batch = serde_json::json!({"results": [
            {"index": 0, "status": "accepted"},
            {"index": 1, "status": "rejected", "error": {"rule": "quantity.range"}},
            {"index": 2, "status": "accepted"},
        ]});
        assert_eq!(accepted_again(200, "/v1/events:batch", &batch), 2);
        assert_eq!(accepted_again(200, "/v1/events", &Value::Null), 1);
        // Refused for now, or rejected as a whole: nothing accepted again.
        assert_eq!(accepted_again(429, "/v1/events:batch", &batch), 0);
        assert_eq!(accepted_again(503, "/v1/events", &Value::Null), 0);
        assert_eq!(accepted_again(422, "/v1/events", &Value::Null), 0);
    }
}
