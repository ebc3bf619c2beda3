//! Ingest's Kafka producer: the idempotent `acks=all` producer that makes an answer
//! durable.
//!
//! A request enqueues all its records without blocking (`send_result`), then awaits each
//! delivery report; only when every report is a success does the device get a 2xx. A full
//! queue is backpressure (503 + Retry-After), never a blocked runtime thread. A record
//! whose report is an error, a timeout, or a purge at shutdown maps to 503 as well.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use nearfield_common::kafka::KafkaSettings;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::internal_events::{ProduceFailed, QUEUE_DEPTH, RecordAcked};

/// Why a record is not durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The producer queue is full: back off and retry.
    #[error("producer queue is full")]
    QueueFull,
    /// Kafka did not acknowledge within the produce timeout.
    #[error("Kafka did not acknowledge in time")]
    Timeout,
    /// Kafka refused the record or the producer was shut down before delivery.
    #[error("Kafka error: {0}")]
    Kafka(String),
}

/// A record to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub payload: Vec<u8>,
}

/// The durable producer. After a fatal producer error (librdkafka's idempotence
/// guarantees can no longer hold, e.g. a fenced or invalid producer epoch) it replaces
/// its producer; the records of the failed one are answered 503 and retried by devices.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<arc_swap::ArcSwap<FutureProducer>>,
    config: rdkafka::config::ClientConfig,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates the producer. Defaults (linger, compression, partitioner) come first so
    /// pass-through properties may tune them; durability settings come last so nothing
    /// can weaken them.
    pub fn new(settings: &KafkaSettings, produce_timeout: Duration) -> KafkaResult<Self> {
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.messages", "200000")
            .set("batch.num.messages", "10000");
        settings.apply(&mut c).map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", produce_timeout.as_millis().to_string());
        let producer: FutureProducer = c.create()?;
        Ok(Publisher {
            producer: Arc::new(arc_swap::ArcSwap::from_pointee(producer)),
            config: c,
            timeout: produce_timeout,
        })
    }

    /// Replaces the producer if it hit a fatal error.
    fn recover_if_fatal(&self) {
        let current = self.producer.load();
        if let Some((code, reason)) = current.client().fatal_error() {
            tracing::error!(%code, reason, "fatal producer error; creating a new producer");
            match self.config.create::<FutureProducer>() {
                Ok(fresh) => {
                    self.producer.compare_and_swap(&*current, Arc::new(fresh));
                }
                Err(e) => tracing::error!(error = %e, "cannot create a new producer"),
            }
        }
    }

    /// Publishes every record; one result per record, in order. Returns once each record
    /// is acknowledged or has failed.
    pub async fn publish(&self, records: Vec<Outgoing<'_>>) -> Vec<Result<(), PublishError>> {
        let start = Instant::now();
        let producer = self.producer.load_full();
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let rec = FutureRecord::to(r.topic).key(r.key).payload(&r.payload);
            match producer.send_result(rec) {
                Ok(fut) => pending.push(Ok(fut)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    pending.push(Err(PublishError::QueueFull));
                }
                Err((e, _)) => pending.push(Err(PublishError::Kafka(e.to_string()))),
            }
        }
        QUEUE_DEPTH.set(i64::from(producer.in_flight_count()));
        drop(producer);
        let deadline = self.timeout + Duration::from_secs(5);
        let waits = pending.into_iter().map(|p| async move {
            let fut = p?;
            match tokio::time::timeout(deadline, fut).await {
                Err(_) => Err(PublishError::Timeout),
                Ok(Err(_canceled)) => {
                    Err(PublishError::Kafka("producer shut down before delivery".into()))
                }
                Ok(Ok(Err((e, _)))) => Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                        PublishError::Timeout
                    }
                    e => PublishError::Kafka(e.to_string()),
                }),
                Ok(Ok(Ok(_))) => Ok(()),
            }
        });
        let results = join_all(waits).await;
        if results.iter().any(Result::is_err) {
            self.recover_if_fatal();
        }
        let latency = start.elapsed();
        for r in &results {
            match r {
                Ok(()) => RecordAcked { latency }.emit(),
                Err(e) => ProduceFailed {
                    kind: match e {
                        PublishError::QueueFull => "queue_full",
                        PublishError::Timeout => "timeout",
                        PublishError::Kafka(_) => "kafka",
                    },
                    error: &e.to_string(),
                }
                .emit(),
            }
        }
        results
    }

    /// Whether the cluster answers a metadata request for `topic` (blocking: call from
    /// `spawn_blocking`).
    pub fn reachable(&self, topic: &str) -> bool {
        self.producer
            .load()
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(3))
            .is_ok_and(|md| md.topics().first().is_some_and(|t| t.error().is_none()))
    }

    /// Flushes everything queued, up to `timeout` (blocking: call from `spawn_blocking`).
    /// Returns how many records were left undelivered.
    pub fn flush(&self, timeout: Duration) -> i32 {
        let producer = self.producer.load();
        let _ = producer.flush(timeout);
        producer.in_flight_count()
    }

    /// Records queued or in flight.
    pub fn in_flight(&self) -> i32 {
        self.producer.load().in_flight_count()
    }
}
