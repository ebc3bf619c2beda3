//! What the exactly-once stages (aggregator, emitter) share around their transactional
//! loops: client configs layered so configuration cannot weaken a guarantee, the
//! read_committed readers, partition counts, and reading changelog partitions back to their
//! last stable offset when state is restored.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::kafka::KafkaSettings;

/// A client config layered as defaults < pass-through properties < the settings a stage's
/// guarantees depend on (which configuration cannot weaken).
pub fn layered(
    settings: &KafkaSettings,
    defaults: &[(&str, String)],
    owned: &[(&str, String)],
) -> KafkaResult<ClientConfig> {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, v);
    }
    let passthrough =
        settings.client_config().map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    for (k, v) in passthrough.config_map() {
        c.set(k, v);
    }
    for (k, v) in owned {
        c.set(*k, v);
    }
    Ok(c)
}

/// A read_committed consumer config that never commits or stores offsets by itself.
pub fn reader(
    settings: &KafkaSettings,
    group: String,
    defaults: &[(&str, String)],
    extra: &[(&str, String)],
) -> KafkaResult<ClientConfig> {
    let mut owned = vec![
        ("group.id", group),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("isolation.level", "read_committed".into()),
        ("auto.offset.reset", "earliest".into()),
    ];
    owned.extend(extra.iter().cloned());
    layered(settings, defaults, &owned)
}

/// The config of a transactional producer with the stable id `transactional_id`.
pub fn transactional_producer(
    settings: &KafkaSettings,
    transactional_id: String,
    transaction_timeout_ms: u64,
) -> KafkaResult<ClientConfig> {
    layered(
        settings,
        &[
            ("linger.ms", "5".into()),
            ("compression.type", "lz4".into()),
            ("queue.buffering.max.messages", "1000000".into()),
            ("queue.buffering.max.kbytes", "1048576".into()),
        ],
        &[
            ("transactional.id", transactional_id),
            ("transaction.timeout.ms", transaction_timeout_ms.to_string()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
        ],
    )
}

/// The config of a consumer-group member that reads committed data only and commits its
/// offsets through transactions (never by itself).
pub fn group_member(settings: &KafkaSettings, group: String) -> KafkaResult<ClientConfig> {
    let defaults = [
        ("partition.assignment.strategy", "cooperative-sticky".to_string()),
        ("session.timeout.ms", "10000".into()),
        ("heartbeat.interval.ms", "1000".into()),
        ("fetch.queue.backoff.ms", "10".into()),
        ("statistics.interval.ms", "5000".into()),
    ];
    reader(settings, group, &defaults, &[])
}

/// The number of partitions of `topic`.
pub fn partition_count<C: ProducerContext, P: Producer<C>>(
    p: &P,
    topic: &str,
) -> Result<i32, String> {
    let md = p
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| format!("topic {topic}: {e}"))?;
    let t = md.topics().first().ok_or_else(|| format!("topic {topic}: no metadata"))?;
    if let Some(e) = t.error() {
        return Err(format!("topic {topic}: {e:?}"));
    }
    i32::try_from(t.partitions().len()).map_err(|e| e.to_string())
}

/// The partitions of `topic` in `tpl`.
pub fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

/// Client context of a restore consumer: end-of-partition is how a restore ends, not an
/// error worth logging.
#[derive(Debug)]
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(error = %error, reason, "restore consumer");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer for [`read_to_stable_end`] (read_committed, reports end of partition).
pub fn restore_consumer(
    settings: &KafkaSettings,
    group: String,
) -> KafkaResult<BaseConsumer<QuietEof>> {
    reader(
        settings,
        group,
        &[],
        &[("enable.partition.eof", "true".into()), ("fetch.wait.max.ms", "20".into())],
    )?
    .create_with_context(QuietEof)
}

/// A changelog record could not be applied, or reading took too long.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{topic}/{partition}@{offset}: {message}")]
    Record { topic: String, partition: i32, offset: i64, message: String },
    #[error("restoring {topic} partitions {partitions:?} took longer than {deadline:?}")]
    Timeout { topic: String, partitions: Vec<i32>, deadline: Duration },
}

/// Reads the partitions `parts` of `topic` (all at once) from the beginning up to the last
/// stable offset each had when the call started, handing every record to `apply` with the
/// state of its partition (made by `fresh`). Returns the states and record counts.
pub fn read_to_stable_end<S>(
    c: &BaseConsumer<QuietEof>,
    topic: &str,
    parts: &[i32],
    fresh: impl Fn() -> S,
    mut apply: impl FnMut(&mut S, &[u8], Option<&[u8]>) -> Result<(), String>,
    deadline: Duration,
) -> Result<BTreeMap<i32, (S, u64)>, RestoreError> {
    let mut out = BTreeMap::new();
    let mut pending = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        out.insert(*p, (fresh(), 0u64));
        // Under read_committed the high watermark answered is the last stable offset.
        let (low, end) = c.fetch_watermarks(topic, *p, Duration::from_secs(30))?;
        if end > low {
            pending.insert(*p, end);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    if pending.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl)?;
    let started = Instant::now();
    while !pending.is_empty() {
        if started.elapsed() > deadline {
            let mut partitions: Vec<i32> = pending.keys().copied().collect();
            partitions.sort_unstable();
            return Err(RestoreError::Timeout { topic: topic.into(), partitions, deadline });
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some((state, n)) = out.get_mut(&p) else { continue };
                if !pending.contains_key(&p) {
                    continue;
                }
                apply(state, m.key().unwrap_or_default(), m.payload()).map_err(|message| {
                    RestoreError::Record {
                        topic: topic.into(),
                        partition: p,
                        offset: m.offset(),
                        message,
                    }
                })?;
                *n += 1;
                if pending.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    pending.remove(&p);
                }
            }
            // Reached the end: only transaction markers (or nothing) were left.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, topic, "restore consumer"),
            None => {}
        }
    }
    c.unassign()?;
    Ok(out)
}

/// Moves `consumer` on `topic` back to `offsets` for `parts` (the beginning where a
/// partition has no committed offset): after an aborted transaction, processing resumes
/// from the last commit.
pub fn rewind<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    parts: &[i32],
    offsets: &HashMap<i32, i64>,
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let o = offsets.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(topic, *p, o).map_err(|e| e.to_string())?;
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let sought =
        consumer.seek_partitions(tpl, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    for e in sought.elements() {
        if let Err(err) = e.error() {
            return Err(format!("rewinding partition {}: {err}", e.partition()));
        }
    }
    Ok(())
}

/// A stage instance's stable identity: the configured one, else the host name (a
/// Kubernetes StatefulSet pod name), else `local`.
pub fn instance_id(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send_waiting<C: ProducerContext<DeliveryOpaque = ()> + 'static>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    topic: &str,
    partition: i32,
    key: &[u8],
    payload: Option<&[u8]>,
) -> KafkaResult<()> {
    let mut rec =
        rdkafka::producer::BaseRecord::<[u8], [u8]>::to(topic).partition(partition).key(key);
    if let Some(p) = payload {
        rec = rec.payload(p);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
