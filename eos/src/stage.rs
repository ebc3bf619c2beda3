//! What a stage supplies to the runtime ([`Stage`], [`PartitionState`]) and what the
//! runtime hands it: input records ([`Input`]) and the open transaction ([`Emit`]), into
//! which a stage writes its changelog records and outputs. Everything written through
//! [`Emit`] commits together with the input offsets, or not at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearfield_common::kafka::{KafkaSettings, partition_for_key};
use nearfield_schemas::{AvroRecord, Codec, DecodeError, RejectSource, RejectedEvent};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use crate::clients;
use crate::config::CreateOnDemand;
use crate::error::EosError;

/// Event-time or wall-clock milliseconds.
pub type Millis = i64;

/// One input record, borrowed from the consumer's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    /// The record's timestamp (ms), when it has one.
    pub timestamp: Option<Millis>,
    /// The record, for what is read only when asked ([`Input::headers`]).
    message: &'a BorrowedMessage<'a>,
}

impl<'a> Input<'a> {
    /// The record `m` (no key or value: empty).
    pub(crate) fn of(m: &'a BorrowedMessage<'a>) -> Self {
        Input {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default(),
            payload: m.payload().unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
            message: m,
        }
    }

    /// The record's headers, when it has any (read from the consumer's buffer on asking:
    /// the stages that decode records never do).
    pub fn headers(&self) -> Option<&'a BorrowedHeaders> {
        self.message.headers()
    }
}

/// The state of one input partition.
pub trait PartitionState: Send + 'static {
    /// Why a changelog record could not be applied.
    type RestoreError: std::error::Error + Send + Sync + 'static;

    /// Applies one changelog record read back while restoring (`None`: a tombstone).
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), Self::RestoreError>;

    /// Called once the changelog was read to its end, with the wall clock.
    fn restored(&mut self, _now: Millis) {}

    /// The next offset of side input `side` to read for this partition (negative: from the
    /// beginning). Stages with side inputs record it in their changelog.
    fn side_offset(&self, _side: usize) -> i64 {
        -1
    }

    /// The partition's event-time watermark, if it has one (status and gauges).
    fn watermark(&self) -> Option<Millis> {
        None
    }
}

/// The partitions an instance owns, as the stage sees them in queries and gauges.
#[derive(Debug)]
pub struct Owned<'a, St> {
    /// Restored partitions and their state.
    pub active: &'a BTreeMap<i32, St>,
    /// Partitions assigned but still being restored.
    pub restoring: &'a [i32],
}

impl<St> Owned<'_, St> {
    /// Of the `asked` partitions (a query plane's question), those restored here and those
    /// still being restored here.
    pub fn split(&self, asked: &[i32]) -> (Vec<i32>, Vec<i32>) {
        let answered = asked.iter().copied().filter(|p| self.active.contains_key(p)).collect();
        let restoring = asked.iter().copied().filter(|p| self.restoring.contains(p)).collect();
        (answered, restoring)
    }
}

/// A stateful stage on the exactly-once runtime.
pub trait Stage: Send + Sync + Sized + 'static {
    /// One input partition's state.
    type State: PartitionState;
    /// What a transaction did, reported once it committed (metrics, recent outputs).
    type Summary: Default + Send + 'static;
    /// A question HTTP handlers ask the loop, and its answer.
    type Query: Send + 'static;
    type Answer: Send + 'static;

    /// The stage's name in logs and metric names (`nearfield_<name>_…`).
    const NAME: &'static str;

    /// Empty state for `partition` (the changelog is then applied to it).
    fn fresh(&self, partition: i32) -> Self::State;

    /// Applies a run of consecutive records of one partition, in offset order.
    fn process(
        &self,
        state: &mut Self::State,
        records: &[Input<'_>],
        now: Millis,
        out: &mut Emit<'_, Self::Summary>,
    ) -> Result<(), EosError>;

    /// Applies one record of side input `side` to the partition's state.
    fn process_side(
        &self,
        _side: usize,
        _state: &mut Self::State,
        _record: &Input<'_>,
        _now: Millis,
        _out: &mut Emit<'_, Self::Summary>,
    ) -> Result<(), EosError> {
        Ok(())
    }

    /// Writes what changed since the last flush: changelog records and outputs. Called for
    /// every restored partition right before each commit.
    fn flush(
        &self,
        state: &mut Self::State,
        now: Millis,
        out: &mut Emit<'_, Self::Summary>,
    ) -> Result<(), EosError>;

    /// A transaction committed; `summary` is what the stage recorded in it.
    fn committed(&self, _summary: Self::Summary) {}

    /// Answers a query on the loop's thread, between batches.
    fn answer(&self, owned: &Owned<'_, Self::State>, query: Self::Query) -> Self::Answer;

    /// Refreshes the stage's gauges (about once a second).
    fn gauges(&self, _owned: &Owned<'_, Self::State>, _now: Millis) {}
}

/// Delivery failures of the open transaction, by topic (the first error code each).
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    failed: Mutex<BTreeMap<String, RDKafkaErrorCode>>,
}

impl Deliveries {
    pub(crate) fn take(&self) -> BTreeMap<String, RDKafkaErrorCode> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = r {
            let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown);
            let mut f = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f.entry(m.topic().to_string()).or_insert(code);
        }
    }
}

/// The open transaction's producer side: partition counts, encoding, the records sent.
pub(crate) struct Txn {
    pub(crate) producer: Arc<ThreadedProducer<Deliveries>>,
    codec: Codec,
    buf: Vec<u8>,
    changelog: Option<String>,
    dlq: Option<String>,
    reject_source: RejectSource,
    partitions: HashMap<String, i32>,
    create: Arc<CreateOnDemand>,
    settings: KafkaSettings,
    tokio: tokio::runtime::Handle,
    /// Records sent since the transaction began.
    pub(crate) records: usize,
    /// Partitions of the input topic.
    pub(crate) input_partitions: i32,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn").field("records", &self.records).finish_non_exhaustive()
    }
}

pub(crate) struct TxnParts {
    pub(crate) producer: Arc<ThreadedProducer<Deliveries>>,
    pub(crate) changelog: Option<String>,
    pub(crate) dlq: Option<String>,
    pub(crate) reject_source: RejectSource,
    pub(crate) partitions: HashMap<String, i32>,
    pub(crate) create: Arc<CreateOnDemand>,
    pub(crate) settings: KafkaSettings,
    pub(crate) tokio: tokio::runtime::Handle,
    pub(crate) input_partitions: i32,
}

impl Txn {
    pub(crate) fn new(p: TxnParts) -> Self {
        Txn {
            producer: p.producer,
            codec: Codec::single_object(),
            buf: Vec::with_capacity(512),
            changelog: p.changelog,
            dlq: p.dlq,
            reject_source: p.reject_source,
            partitions: p.partitions,
            create: p.create,
            settings: p.settings,
            tokio: p.tokio,
            records: 0,
            input_partitions: p.input_partitions,
        }
    }

    /// Partitions of `topic`, looked up once (and the topic created if the stage creates
    /// it on demand).
    fn partitions_of(&mut self, topic: &str) -> Result<i32, EosError> {
        if let Some(n) = self.partitions.get(topic) {
            return Ok(*n);
        }
        let n = match clients::partition_count(self.producer.client(), topic) {
            Ok(n) => n,
            Err(missing) => {
                let Some(spec) = (self.create)(topic) else { return Err(missing) };
                self.tokio
                    .block_on(self.settings.ensure_topics(std::slice::from_ref(&spec)))
                    .map_err(|e| EosError::kafka("creating a topic", e))?;
                clients::partition_count(self.producer.client(), topic)?
            }
        };
        self.partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    fn send(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), EosError> {
        self.send_with(topic, partition, key, payload, None, None)
    }

    fn send_with(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        timestamp: Option<Millis>,
    ) -> Result<(), EosError> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).partition(partition).key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        if let Some(t) = timestamp {
            rec = rec.timestamp(t);
        }
        self.records += 1;
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                // Backpressure: the producer's own thread drains the queue.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(EosError::kafka("producing into the transaction", e)),
            }
        }
    }
}

/// The open transaction, as a stage writes to it while processing one partition.
pub struct Emit<'a, T> {
    pub(crate) txn: &'a mut Txn,
    pub(crate) partition: i32,
    /// What the stage records about this transaction (reported at commit).
    pub summary: &'a mut T,
}

impl<T> std::fmt::Debug for Emit<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl<T> Emit<'_, T> {
    /// The input partition being processed.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// How many partitions the input topic has (e.g. to find which keys belong to this
    /// partition).
    pub fn input_partitions(&self) -> i32 {
        self.txn.input_partitions
    }

    /// A changelog record of this partition (`None`: a tombstone).
    pub fn changelog(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), EosError> {
        let Some(topic) = self.txn.changelog.take() else {
            return Err(EosError::Unwired("changelog"));
        };
        let r = self.txn.send(&topic, self.partition, key, value);
        self.txn.changelog = Some(topic);
        r
    }

    /// Raw bytes to `topic`, in the partition Kafka's default partitioner gives `key`.
    pub fn send(&mut self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), EosError> {
        let n = self.txn.partitions_of(topic)?;
        self.txn.send(topic, partition_for_key(key, n), key, Some(payload))
    }

    /// [`send`](Self::send) with record headers (`name`, UTF-8 value), e.g. why an
    /// input went to a side topic.
    pub fn send_with_headers(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), EosError> {
        let n = self.txn.partitions_of(topic)?;
        let h = headers.iter().fold(OwnedHeaders::new(), |h, (name, value)| {
            h.insert(rdkafka::message::Header { key: name, value: Some(value.as_bytes()) })
        });
        self.txn.send_with(topic, partition_for_key(key, n), key, Some(payload), Some(h), None)
    }

    /// `record` copied to `topic`: its key (partitioned by it), value, headers and
    /// timestamp, so a copy reads as its original (e.g. a late sale's reason, a header)
    /// and expires when it would.
    pub fn send_copy(&mut self, topic: &str, record: &Input<'_>) -> Result<(), EosError> {
        let n = self.txn.partitions_of(topic)?;
        let (key, payload) = (record.key, Some(record.payload));
        let partition = partition_for_key(key, n);
        let headers = record.headers().map(BorrowedHeaders::detach);
        self.txn.send_with(topic, partition, key, payload, headers, record.timestamp)
    }

    /// An Avro record (single-object encoding) to `topic`, partitioned by `partition_key`
    /// and keyed by `key`.
    pub fn send_record<R: AvroRecord>(
        &mut self,
        topic: &str,
        partition_key: &[u8],
        key: &[u8],
        record: &R,
    ) -> Result<(), EosError> {
        let n = self.txn.partitions_of(topic)?;
        let mut buf = std::mem::take(&mut self.txn.buf);
        buf.clear();
        let encoded = self.txn.codec.encode_into(record, &mut buf).map_err(|source| {
            EosError::Encode { record: R::NAME, topic: topic.to_string(), source }
        });
        let r = encoded.and_then(|()| {
            self.txn.send(topic, partition_for_key(partition_key, n), key, Some(&buf))
        });
        self.txn.buf = buf;
        r
    }

    /// Decodes `record` as an `R`. An undecodable record goes to the dead-letter topic
    /// with the reason (and a log line) and is `None`: the stage counts it and goes on.
    pub fn decode<R: AvroRecord>(
        &mut self,
        record: &Input<'_>,
        content_type: &str,
        now: Millis,
    ) -> Result<Option<R>, EosError> {
        self.decode_as::<R, R>(record, content_type, now)
    }

    /// [`decode`](Self::decode) into `V`, a type with `R`'s fields that may borrow its
    /// strings from the record (no allocation per field on the hot path).
    pub fn decode_as<'r, R: AvroRecord, V: serde::Deserialize<'r>>(
        &mut self,
        record: &Input<'r>,
        content_type: &str,
        now: Millis,
    ) -> Result<Option<V>, EosError> {
        self.decode_with::<R, V>(record, Codec::decode_as::<R, V>, content_type, now)
    }

    /// [`decode_as`](Self::decode_as) with a decoder of the stage's choosing (e.g.
    /// [`Codec::decode_sale`], a faster reader with the same answers), bad records
    /// handled the same way.
    pub fn decode_with<'r, R: AvroRecord, V>(
        &mut self,
        record: &Input<'r>,
        decode: impl FnOnce(&Codec, &'r [u8]) -> Result<V, DecodeError>,
        content_type: &str,
        now: Millis,
    ) -> Result<Option<V>, EosError> {
        match decode(&self.txn.codec, record.payload) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                crate::internal_events::DeadLettered {
                    record: R::NAME,
                    topic: record.topic,
                    partition: record.partition,
                    offset: record.offset,
                    reason: e.reason(),
                }
                .emit();
                self.dead_letter(record, &e, content_type, now)?;
                Ok(None)
            }
        }
    }

    /// Sends a decodable input record that a rule refused to the dead-letter topic with
    /// the reason (`<field>.<rule>`), the field and a message.
    pub fn reject(
        &mut self,
        record: &Input<'_>,
        reason: &str,
        field: Option<&str>,
        message: &str,
        content_type: &str,
        now: Millis,
    ) -> Result<(), EosError> {
        let rejected = RejectedEvent {
            source: self.txn.reject_source,
            reason: reason.to_string(),
            field: field.map(str::to_string),
            message: message.to_string(),
            store_id: None,
            device_id: None,
            event_id: None,
            content_type: content_type.to_string(),
            payload: record.payload.to_vec(),
            origin: Some(format!("{}/{}/{}", record.topic, record.partition, record.offset)),
            rejected_at: now,
        };
        let Some(dlq) = self.txn.dlq.clone() else {
            return Err(EosError::Unwired("dead-letter"));
        };
        self.send_record(&dlq, record.key, record.key, &rejected)
    }

    /// Sends an undecodable input record to the dead-letter topic with the reason.
    pub fn dead_letter(
        &mut self,
        record: &Input<'_>,
        error: &DecodeError,
        content_type: &str,
        now: Millis,
    ) -> Result<(), EosError> {
        let rejected = RejectedEvent::undecodable(
            self.txn.reject_source,
            error,
            content_type,
            record.payload,
            format!("{}/{}/{}", record.topic, record.partition, record.offset),
            now,
        );
        let Some(dlq) = self.txn.dlq.clone() else {
            return Err(EosError::Unwired("dead-letter"));
        };
        self.send_record(&dlq, record.key, record.key, &rejected)
    }
}
