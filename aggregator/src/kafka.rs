//! The aggregator's Kafka loop: consume → update state → produce, exactly once.
//!
//! One dedicated thread (rdkafka calls block; none of this runs on the async runtime)
//! owns a consumer-group member on `sales.v1` (cooperative-sticky assignment), a
//! manually assigned consumer on the co-partitioned `heartbeats.v1`, and one transactional
//! producer whose `transactional.id` is stable per instance. Every `commit_interval` it
//! writes, in one transaction: the changelog records of what changed, the closed windows
//! to `demand.v1`, late and undecodable records, and the input offsets (with the group
//! metadata, so a zombie from an older generation is fenced). Downstream reads
//! `read_committed` and never sees anything of an aborted attempt.
//!
//! On assignment, before any record of a partition is processed, the committed offsets are
//! fetched (stable: every transaction that committed them is complete) and the partition's
//! state is restored from its changelog partition up to the last stable offset. On
//! revocation the open transaction is committed first, then the state is dropped. A
//! Kafka error inside a transaction aborts it; the owned partitions are then rebuilt from
//! the changelog and the consumers rewound to the committed offsets (membership kept).
//! If that fails, the whole loop restarts with new clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nearfield_common::kafka::{KafkaSettings, Topics, partition_for_key};
use nearfield_common::time::now_ms;
use nearfield_schemas::{Codec, Heartbeat, RejectSource, RejectedEvent, SaleEvent};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::config::AggregateConfig;
use crate::internal_events::{
    ConsumerLag, EventsProcessed, InvalidRecord, LoopRestarted, PartitionRestored, Rebalanced,
    StateGauges, TransactionAborted, TransactionCommitted,
};
use crate::state::{Outcome, PartitionState, StateConfig, StateSize};
use crate::stores::GridDirectory;

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Other(String),
}

/// What the live query and the metrics read: the state of every owned partition.
#[derive(Debug)]
pub struct Engine {
    pub cfg: Arc<StateConfig>,
    pub partitions: BTreeMap<i32, PartitionState>,
    /// Next input offset per owned partition (committed at assignment, then consumed).
    offsets: HashMap<i32, i64>,
    /// Whether every owned partition is restored (readiness).
    pub ready: bool,
}

impl Engine {
    /// An engine owning no partition.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        Engine { cfg, partitions: BTreeMap::new(), offsets: HashMap::new(), ready: false }
    }

    /// Total state size.
    pub fn size(&self) -> StateSize {
        self.partitions.values().map(PartitionState::size).fold(StateSize::default(), |a, b| {
            StateSize {
                keys: a.keys + b.keys,
                windows: a.windows + b.windows,
                dedupe_ids: a.dedupe_ids + b.dedupe_ids,
                grid_windows: a.grid_windows + b.grid_windows,
                bytes: a.bytes + b.bytes,
            }
        })
    }
}

/// Shared between the Kafka thread and the HTTP server.
pub type SharedEngine = Arc<Mutex<Engine>>;

fn lock(e: &SharedEngine) -> MutexGuard<'_, Engine> {
    e.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything the loop and its rebalance callbacks need.
struct Ctx {
    engine: SharedEngine,
    directory: Arc<GridDirectory>,
    /// Transactional; its own thread serves delivery reports, which aborting a transaction
    /// waits for.
    producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    /// Heartbeat partitions currently assigned.
    hb_assigned: Mutex<std::collections::BTreeSet<i32>>,
    /// Set once the loop stops: new assignments are not restored any more.
    stopping: AtomicBool,
    heartbeats: BaseConsumer,
    settings: KafkaSettings,
    topics: Topics,
    cfg: AggregateConfig,
    demand_partitions: i32,
    late_partitions: i32,
    dlq_partitions: i32,
    codec: Codec,
    failure: Mutex<Option<String>>,
    last_commit: Mutex<Instant>,
    /// Something was produced into the open transaction.
    produced: AtomicBool,
    /// The input offsets of the last commit (an idle interval commits nothing).
    committed: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let topic = &self.topics.sales;
        let lag = stats
            .topics
            .get(topic.as_str())
            .map_or(0, |t| t.partitions.values().map(|p| p.consumer_lag.max(0)).sum::<i64>());
        ConsumerLag { topic, lag }.emit();
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions_of(tpl, &self.topics.sales);
                Rebalanced { kind: "revoke", partitions: &parts }.emit();
                // Commit what was processed so far (offsets of the revoked partitions
                // included) before anyone else can own them. When the loop is stopping it
                // has committed already, or aborted: then the in-memory state holds
                // changes whose outputs were aborted and must never be committed.
                if !self.stopping.load(Ordering::Relaxed)
                    && let Err(e) = self.commit(consumer)
                {
                    // The revoked partitions' next owner resumes from the previous commit;
                    // the ones this instance keeps are rebuilt from theirs.
                    TransactionAborted { error: &e.to_string() }.emit();
                    if let Err(e) = self.recover(consumer, &parts) {
                        self.fail(format!("recovery after a failed commit on revocation: {e}"));
                    }
                }
                let mut engine = lock(&self.engine);
                for p in &parts {
                    engine.partitions.remove(p);
                    engine.offsets.remove(p);
                }
                drop(engine);
                self.assign_heartbeats();
            }
            Rebalance::Assign(tpl) => {
                let parts = partitions_of(tpl, &self.topics.sales);
                Rebalanced { kind: "assign", partitions: &parts }.emit();
                if self.stopping.load(Ordering::Relaxed) {
                    // Leaving the group: these partitions go back without being processed.
                    return;
                }
                lock(&self.engine).ready = false;
                if let Err(e) = self.restore(consumer, &parts) {
                    self.fail(format!("restore: {e}"));
                }
                self.assign_heartbeats();
                lock(&self.engine).ready = true;
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

fn heartbeat_position(st: &PartitionState) -> Offset {
    match st.heartbeat_offset() {
        o if o >= 0 => Offset::Offset(o),
        _ => Offset::Beginning,
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

impl Ctx {
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.get_or_insert(msg);
    }

    fn take_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.transaction_timeout_ms)
    }

    /// Restores `parts` from the changelog: first waits for their committed offsets to be
    /// stable, then reads each changelog partition up to its last stable offset.
    fn restore(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) -> Result<(), LoopError> {
        if parts.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            tpl.add_partition(&self.topics.sales, *p);
        }
        let deadline = Duration::from_millis(self.cfg.restore_timeout_ms);
        tracing::info!(partitions = ?parts, "restore: fetching stable committed offsets");
        let committed = consumer.committed_offsets(tpl, deadline)?;
        tracing::info!(partitions = ?parts, "restore: reading the changelog");
        let started = Instant::now();
        let cfg = Arc::clone(&lock(&self.engine).cfg);
        let restored = restore_partitions(
            &self.restore_consumer()?,
            &self.topics.aggregator_changelog,
            parts,
            &cfg,
            deadline,
        )?;
        let elapsed = started.elapsed();
        let mut engine = lock(&self.engine);
        for (p, (state, records)) in restored {
            PartitionRestored { partition: p, records, elapsed, size: state.size() }.emit();
            let offset = committed
                .find_partition(&self.topics.sales, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            engine.partitions.insert(p, state);
            if let Some(o) = offset {
                engine.offsets.insert(p, o);
            }
        }
        Ok(())
    }

    fn restore_consumer(&self) -> KafkaResult<BaseConsumer<QuietEof>> {
        let c = reader(
            &self.settings,
            format!("{}-restore", self.cfg.group_id),
            &[],
            &[("enable.partition.eof", "true".into()), ("fetch.wait.max.ms", "20".into())],
        )?;
        c.create_with_context(QuietEof)
    }

    /// Follows `heartbeats.v1` for exactly the owned partitions, each from the offset its
    /// state recorded.
    fn assign_heartbeats(&self) {
        // Only the changes, incrementally: re-assigning a whole set in quick succession
        // trips an assertion in librdkafka's assignment code.
        let owned: BTreeMap<i32, Offset> = lock(&self.engine)
            .partitions
            .iter()
            .map(|(p, st)| (*p, heartbeat_position(st)))
            .collect();
        let mut current =
            self.hb_assigned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut remove = TopicPartitionList::new();
        for p in current.iter().filter(|p| !owned.contains_key(p)) {
            remove.add_partition(&self.topics.heartbeats, *p);
        }
        let mut add = TopicPartitionList::new();
        for (p, off) in owned.iter().filter(|(p, _)| !current.contains(p)) {
            let _ = add.add_partition_offset(&self.topics.heartbeats, *p, *off);
        }
        if remove.count() > 0
            && let Err(e) = self.heartbeats.incremental_unassign(&remove)
        {
            tracing::warn!(error = %e, "cannot unassign heartbeat partitions");
        }
        if add.count() > 0
            && let Err(e) = self.heartbeats.incremental_assign(&add)
        {
            tracing::warn!(error = %e, "cannot assign heartbeat partitions");
        }
        *current = owned.keys().copied().collect();
    }

    /// Moves the heartbeat consumer of `parts` back to the offsets their state recorded.
    fn rewind_heartbeats(&self, parts: &[i32]) -> Result<(), LoopError> {
        let mut tpl = TopicPartitionList::new();
        {
            let engine = lock(&self.engine);
            for p in parts {
                if let Some(st) = engine.partitions.get(p) {
                    tpl.add_partition_offset(&self.topics.heartbeats, *p, heartbeat_position(st))?;
                }
            }
        }
        if tpl.count() > 0 {
            self.heartbeats.seek_partitions(tpl, Duration::from_secs(10))?;
        }
        Ok(())
    }

    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> KafkaResult<()> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).partition(partition).key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        self.produced.store(true, Ordering::Relaxed);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// After a failed transaction: aborts it, drops every uncommitted change by rebuilding
    /// the owned partitions (except `leaving`) from their changelog, and rewinds the
    /// consumer to the committed offsets. The group membership is kept, so no rebalance
    /// follows; a failure here restarts the whole loop.
    fn recover(&self, consumer: &BaseConsumer<Self>, leaving: &[i32]) -> Result<(), LoopError> {
        self.producer.abort_transaction(self.timeout())?;
        self.producer.begin_transaction()?;
        self.produced.store(false, Ordering::Relaxed);
        self.committed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let parts: Vec<i32> = partitions_of(&consumer.assignment()?, &self.topics.sales)
            .into_iter()
            .filter(|p| !leaving.contains(p))
            .collect();
        {
            let mut engine = lock(&self.engine);
            engine.partitions.clear();
            engine.offsets.clear();
            engine.ready = false;
        }
        self.restore(consumer, &parts)?;
        let mut tpl = TopicPartitionList::new();
        {
            let engine = lock(&self.engine);
            for p in &parts {
                let o = engine.offsets.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
                tpl.add_partition_offset(&self.topics.sales, *p, o)?;
            }
        }
        if tpl.count() > 0 {
            for e in consumer.seek_partitions(tpl, Duration::from_secs(10))?.elements() {
                if let Err(err) = e.error() {
                    return Err(LoopError::Other(format!(
                        "rewinding partition {}: {err}",
                        e.partition()
                    )));
                }
            }
        }
        self.assign_heartbeats();
        self.rewind_heartbeats(&parts)?;
        lock(&self.engine).ready = true;
        tracing::warn!(partitions = ?parts, "recovered from the last commit after an aborted transaction");
        Ok(())
    }

    /// Flushes every owned partition's changes and commits them with the input offsets in
    /// the open transaction, then opens the next one.
    fn commit(&self, consumer: &BaseConsumer<Self>) -> Result<(), LoopError> {
        let started = Instant::now();
        let now = now_ms();
        let (mut records, mut finals, mut revisions, mut expired) = (0, 0, 0, 0);
        let mut offsets = TopicPartitionList::new();
        let current: HashMap<i32, i64>;
        {
            let mut engine = lock(&self.engine);
            let Engine { partitions, offsets: next, .. } = &mut *engine;
            for (p, st) in partitions.iter_mut() {
                let flushed = st.flush(now, &|g| self.directory.expected(g));
                for (k, v) in &flushed.changelog {
                    self.send(&self.topics.aggregator_changelog, *p, k, v.as_deref())?;
                }
                for w in &flushed.outputs {
                    let key =
                        format!("{}|{}|{}|{}", w.sku, w.grid_id, w.window_start, w.window_end);
                    let part = partition_for_key(w.sku.as_bytes(), self.demand_partitions);
                    let payload =
                        self.codec.encode(w).map_err(|e| LoopError::Other(e.to_string()))?;
                    self.send(&self.topics.demand, part, key.as_bytes(), Some(&payload))?;
                    if w.revision == 0 {
                        finals += 1;
                    } else {
                        revisions += 1;
                    }
                }
                records += flushed.changelog.len() + flushed.outputs.len();
                expired += flushed.expired_windows;
                if let Some(o) = next.get(p) {
                    offsets.add_partition_offset(&self.topics.sales, *p, Offset::Offset(*o))?;
                }
            }
            current = next.clone();
        }
        let mut committed =
            self.committed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = &mut *self.last_commit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if records == 0 && !self.produced.load(Ordering::Relaxed) && current == *committed {
            // Idle: nothing to write, offsets unchanged.
            *last = Instant::now();
            return Ok(());
        }
        if offsets.count() > 0 {
            let cgm = consumer
                .group_metadata()
                .ok_or_else(|| LoopError::Other("no consumer group metadata".into()))?;
            self.producer.send_offsets_to_transaction(&offsets, &cgm, self.timeout())?;
        }
        self.producer.commit_transaction(self.timeout())?;
        self.producer.begin_transaction()?;
        self.produced.store(false, Ordering::Relaxed);
        *committed = current;
        *last = Instant::now();
        TransactionCommitted { elapsed: started.elapsed(), records, finals, revisions, expired }
            .emit();
        Ok(())
    }

    /// Applies one sale record; late and undecodable records are written to their topics
    /// inside the open transaction.
    fn process_sale(
        &self,
        m: &BorrowedMessage<'_>,
        stats: &mut EventsProcessed,
    ) -> Result<(), LoopError> {
        let p = m.partition();
        let payload = m.payload().unwrap_or_default();
        let now = now_ms();
        match self.codec.decode::<SaleEvent>(payload) {
            Ok(ev) => {
                let outcome = {
                    let mut engine = lock(&self.engine);
                    let Some(st) = engine.partitions.get_mut(&p) else {
                        return Err(LoopError::Other(format!(
                            "record of partition {p}, which is not restored"
                        )));
                    };
                    let o = st.apply_sale(&ev, now);
                    engine.offsets.insert(p, m.offset() + 1);
                    o
                };
                match outcome {
                    Outcome::Counted => stats.counted += 1,
                    Outcome::Duplicate => stats.duplicate += 1,
                    Outcome::Late => {
                        stats.late += 1;
                        let part = partition_for_key(ev.grid_id.as_bytes(), self.late_partitions);
                        self.send(&self.topics.late, part, ev.grid_id.as_bytes(), Some(payload))?;
                    }
                }
            }
            Err(e) => {
                let reason = e.reason();
                InvalidRecord { partition: p, offset: m.offset(), reason }.emit();
                stats.invalid += 1;
                let rejected = RejectedEvent {
                    source: RejectSource::Aggregator,
                    reason: reason.to_string(),
                    field: None,
                    message: e.to_string(),
                    store_id: None,
                    device_id: None,
                    event_id: None,
                    content_type: "application/vnd.nearfield.sale-event+avro".into(),
                    payload: payload.to_vec(),
                    origin: Some(format!("{}/{p}/{}", m.topic(), m.offset())),
                    rejected_at: now,
                };
                let bytes =
                    self.codec.encode(&rejected).map_err(|e| LoopError::Other(e.to_string()))?;
                let dlq_part = partition_for_key(m.key().unwrap_or_default(), self.dlq_partitions);
                self.send(&self.topics.dlq, dlq_part, m.key().unwrap_or_default(), Some(&bytes))?;
                lock(&self.engine).offsets.insert(p, m.offset() + 1);
            }
        }
        Ok(())
    }

    /// Applies waiting heartbeats (non-blocking).
    fn drain_heartbeats(&self, stats: &mut EventsProcessed) {
        for _ in 0..1000 {
            let Some(r) = self.heartbeats.poll(Duration::ZERO) else { return };
            let m = match r {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat consumer");
                    return;
                }
            };
            match self.codec.decode::<Heartbeat>(m.payload().unwrap_or_default()) {
                Ok(hb) => {
                    let mut engine = lock(&self.engine);
                    if let Some(st) = engine.partitions.get_mut(&m.partition()) {
                        st.apply_heartbeat(
                            &hb.grid_id,
                            &hb.store_id,
                            hb.received_at,
                            m.offset() + 1,
                            now_ms(),
                        );
                        stats.heartbeats += 1;
                    }
                }
                Err(e) => tracing::warn!(
                    partition = m.partition(),
                    offset = m.offset(),
                    reason = e.reason(),
                    "undecodable heartbeat skipped"
                ),
            }
        }
    }
}

/// Reads the changelog partitions `parts` (all at once) into fresh states, up to the last
/// stable offset each had when the restore started. Returns the states and record counts.
fn restore_partitions(
    c: &BaseConsumer<QuietEof>,
    topic: &str,
    parts: &[i32],
    cfg: &Arc<StateConfig>,
    deadline: Duration,
) -> Result<BTreeMap<i32, (PartitionState, u64)>, LoopError> {
    let mut out = BTreeMap::new();
    let mut pending = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        out.insert(*p, (PartitionState::new(Arc::clone(cfg)), 0u64));
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
            return Err(LoopError::Other(format!(
                "restoring {topic} partitions {:?} took longer than restore_timeout_ms",
                pending.keys().collect::<Vec<_>>()
            )));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some((state, n)) = out.get_mut(&p) else { continue };
                if !pending.contains_key(&p) {
                    continue;
                }
                state
                    .restore(m.key().unwrap_or_default(), m.payload())
                    .map_err(|e| LoopError::Other(format!("{topic}/{p}@{}: {e}", m.offset())))?;
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

/// Client context of the restore consumer: end-of-partition is how a restore ends, not an
/// error worth logging.
struct QuietEof;

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

/// A client config layered as defaults < pass-through properties < the settings the
/// aggregator's guarantees depend on (which configuration cannot weaken).
fn layered(
    settings: &KafkaSettings,
    defaults: &[(&str, String)],
    owned: &[(&str, String)],
) -> KafkaResult<rdkafka::ClientConfig> {
    let mut c = rdkafka::ClientConfig::new();
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

/// A read_committed consumer that never commits or stores offsets by itself.
fn reader(
    settings: &KafkaSettings,
    group: String,
    defaults: &[(&str, String)],
    extra: &[(&str, String)],
) -> KafkaResult<rdkafka::ClientConfig> {
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

fn consumer_config(
    settings: &KafkaSettings,
    cfg: &AggregateConfig,
) -> KafkaResult<rdkafka::ClientConfig> {
    let defaults = [
        ("partition.assignment.strategy", "cooperative-sticky".to_string()),
        ("session.timeout.ms", "10000".into()),
        ("heartbeat.interval.ms", "1000".into()),
        ("fetch.queue.backoff.ms", "10".into()),
        ("statistics.interval.ms", "5000".into()),
    ];
    reader(settings, cfg.group_id.clone(), &defaults, &[])
}

fn producer_config(
    settings: &KafkaSettings,
    cfg: &AggregateConfig,
    instance: &str,
) -> KafkaResult<rdkafka::ClientConfig> {
    layered(
        settings,
        &[
            ("linger.ms", "5".into()),
            ("compression.type", "lz4".into()),
            ("queue.buffering.max.messages", "1000000".into()),
            ("queue.buffering.max.kbytes", "1048576".into()),
        ],
        &[
            ("transactional.id", format!("{}-{instance}", cfg.group_id)),
            ("transaction.timeout.ms", cfg.transaction_timeout_ms.to_string()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
        ],
    )
}

fn partition_count<C: rdkafka::producer::ProducerContext>(
    c: &ThreadedProducer<C>,
    topic: &str,
) -> Result<i32, LoopError> {
    let md = c.client().fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let t = md
        .topics()
        .first()
        .ok_or_else(|| LoopError::Other(format!("topic {topic}: no metadata")))?;
    if let Some(e) = t.error() {
        return Err(LoopError::Other(format!("topic {topic}: {e:?}")));
    }
    i32::try_from(t.partitions().len()).map_err(|e| LoopError::Other(e.to_string()))
}

/// Runs the loop until `stop` is set; on an error inside a transaction it aborts, then
/// restarts from the last commit (after `backoff`) until stopped.
pub fn run_loop(
    settings: KafkaSettings,
    cfg: AggregateConfig,
    engine: SharedEngine,
    directory: Arc<GridDirectory>,
    stop: Arc<AtomicBool>,
) -> Result<(), LoopError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match run_once(&settings, &cfg, &engine, &directory, &stop) {
            Ok(()) => return Ok(()),
            Err(e) if stop.load(Ordering::Relaxed) => return Err(e),
            Err(e) => {
                LoopRestarted { error: &e.to_string() }.emit();
                {
                    let mut g = lock(&engine);
                    g.partitions.clear();
                    g.offsets.clear();
                    g.ready = false;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn run_once(
    settings: &KafkaSettings,
    cfg: &AggregateConfig,
    engine: &SharedEngine,
    directory: &Arc<GridDirectory>,
    stop: &AtomicBool,
) -> Result<(), LoopError> {
    let instance = cfg.instance_id();
    let topics = settings.topics.clone();
    let producer: ThreadedProducer<_> = producer_config(settings, cfg, &instance)?.create()?;
    let sales_parts = partition_count(&producer, &topics.sales)?;
    let changelog_parts = partition_count(&producer, &topics.aggregator_changelog)?;
    if sales_parts != changelog_parts {
        return Err(LoopError::Other(format!(
            "{} has {changelog_parts} partitions but {} has {sales_parts}: the changelog must be co-partitioned with its input",
            topics.aggregator_changelog, topics.sales
        )));
    }
    let demand_partitions = partition_count(&producer, &topics.demand)?;
    let late_partitions = partition_count(&producer, &topics.late)?;
    let dlq_partitions = partition_count(&producer, &topics.dlq)?;
    producer.init_transactions(Duration::from_millis(cfg.transaction_timeout_ms.max(30_000)))?;
    producer.begin_transaction()?;
    let hb = reader(settings, format!("{}-heartbeats", cfg.group_id), &[], &[])?;
    let ctx = Ctx {
        engine: Arc::clone(engine),
        directory: Arc::clone(directory),
        producer,
        heartbeats: hb.create()?,
        settings: settings.clone(),
        topics: topics.clone(),
        cfg: cfg.clone(),
        demand_partitions,
        late_partitions,
        dlq_partitions,
        codec: Codec::single_object(),
        failure: Mutex::new(None),
        stopping: AtomicBool::new(false),
        hb_assigned: Mutex::new(std::collections::BTreeSet::new()),
        last_commit: Mutex::new(Instant::now()),
        produced: AtomicBool::new(false),
        committed: Mutex::new(HashMap::new()),
    };
    let consumer: BaseConsumer<Ctx> = consumer_config(settings, cfg)?.create_with_context(ctx)?;
    consumer.subscribe(&[&topics.sales])?;
    tracing::info!(instance, group = cfg.group_id, "aggregator consuming {}", topics.sales);
    let interval = Duration::from_millis(cfg.commit_interval_ms);
    let result = consume(&consumer, interval, stop);
    let ctx = consumer.context();
    ctx.stopping.store(true, Ordering::Relaxed);
    match &result {
        Ok(()) => {
            // Graceful stop: commit, then leave the group (its revocation commits again,
            // with nothing left to write).
            if let Err(e) = ctx.commit(&consumer) {
                // E.g. the group is rebalancing as instances stop together. Nothing is
                // lost: the partitions' next owners resume from the previous commit.
                TransactionAborted { error: &e.to_string() }.emit();
                let _ = ctx.producer.abort_transaction(ctx.timeout());
                tracing::warn!(
                    "last transaction aborted at shutdown; the next owners of these partitions resume from the previous commit"
                );
            }
            consumer.unsubscribe();
            let _ = consumer.poll(Duration::from_millis(100));
            Ok(())
        }
        Err(e) => {
            TransactionAborted { error: &e.to_string() }.emit();
            let _ = ctx.producer.abort_transaction(ctx.timeout());
            result
        }
    }
}

fn consume(
    consumer: &BaseConsumer<Ctx>,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<(), LoopError> {
    let ctx = consumer.context();
    let mut stats = EventsProcessed::default();
    let mut last_gauges = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = ctx.take_failure() {
            return Err(LoopError::Other(f));
        }
        // Drain what is fetched, up to the commit interval.
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    if let Err(e) = ctx.process_sale(&m, &mut stats) {
                        TransactionAborted { error: &e.to_string() }.emit();
                        stats = EventsProcessed::default();
                        ctx.recover(consumer, &[])?;
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
        }
        ctx.drain_heartbeats(&mut stats);
        let due = ctx.last_commit.lock().map(|t| t.elapsed() >= interval).unwrap_or(true);
        if due {
            if let Some(f) = ctx.take_failure() {
                return Err(LoopError::Other(f));
            }
            match ctx.commit(consumer) {
                Ok(()) => std::mem::take(&mut stats).emit(),
                Err(e) => {
                    // Typically the group moved to a new generation under us (a rebalance):
                    // the transaction is aborted and processing resumes from the last commit.
                    TransactionAborted { error: &e.to_string() }.emit();
                    stats = EventsProcessed::default();
                    ctx.recover(consumer, &[])?;
                }
            }
        }
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            let engine = lock(&ctx.engine);
            let now = now_ms();
            let delay = engine
                .partitions
                .values()
                .map(PartitionState::watermark)
                .filter(|w| *w > i64::MIN)
                .min()
                .map(|w| (now - w) / 1000);
            StateGauges {
                size: engine.size(),
                partitions: engine.partitions.len(),
                watermark_delay_s: delay,
            }
            .emit();
        }
    }
    Ok(())
}
