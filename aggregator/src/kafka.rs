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
use nearfield_common::txn;
use nearfield_schemas::{Codec, Heartbeat, RejectSource, RejectedEvent, SaleEvent};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{Producer, ThreadedProducer};
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
                let parts = txn::partitions_of(tpl, &self.topics.sales);
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
                let parts = txn::partitions_of(tpl, &self.topics.sales);
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
        let restored = txn::read_to_stable_end(
            &txn::restore_consumer(&self.settings, format!("{}-restore", self.cfg.group_id))?,
            &self.topics.aggregator_changelog,
            parts,
            || PartitionState::new(Arc::clone(&cfg)),
            |state, key, value| state.restore(key, value).map_err(|e| e.to_string()),
            deadline,
        )
        .map_err(|e| LoopError::Other(e.to_string()))?;
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
        self.produced.store(true, Ordering::Relaxed);
        txn::send_waiting(&self.producer, topic, partition, key, payload)
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
        let parts: Vec<i32> = txn::partitions_of(&consumer.assignment()?, &self.topics.sales)
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
        let offsets = lock(&self.engine).offsets.clone();
        txn::rewind(consumer, &self.topics.sales, &parts, &offsets).map_err(LoopError::Other)?;
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

    /// Applies a batch of sale records: decoded outside the engine lock, applied under one
    /// lock with one clock reading (per-record locking and clock reads were a tenth of the
    /// aggregator's CPU in the benchmark's profile); then late and undecodable records are
    /// written to their topics inside the open transaction.
    fn process_sales(
        &self,
        batch: &[BorrowedMessage<'_>],
        stats: &mut EventsProcessed,
    ) -> Result<(), LoopError> {
        let now = now_ms();
        let decoded: Vec<_> = batch
            .iter()
            .map(|m| self.codec.decode::<SaleEvent>(m.payload().unwrap_or_default()))
            .collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut engine = lock(&self.engine);
            for (m, ev) in batch.iter().zip(&decoded) {
                let p = m.partition();
                if let Ok(ev) = ev {
                    let Some(st) = engine.partitions.get_mut(&p) else {
                        return Err(LoopError::Other(format!(
                            "record of partition {p}, which is not restored"
                        )));
                    };
                    outcomes.push(Some(st.apply_sale(ev, now)));
                } else {
                    outcomes.push(None);
                }
                engine.offsets.insert(p, m.offset() + 1);
            }
        }
        for ((m, ev), outcome) in batch.iter().zip(decoded).zip(outcomes) {
            let p = m.partition();
            let payload = m.payload().unwrap_or_default();
            match (ev, outcome) {
                (Ok(_), Some(Outcome::Counted)) => stats.counted += 1,
                (Ok(_), Some(Outcome::Duplicate)) => stats.duplicate += 1,
                (Ok(ev), Some(Outcome::Late)) => {
                    stats.late += 1;
                    let part = partition_for_key(ev.grid_id.as_bytes(), self.late_partitions);
                    self.send(&self.topics.late, part, ev.grid_id.as_bytes(), Some(payload))?;
                }
                (Ok(_), None) => {}
                (Err(e), _) => {
                    let reason = e.reason();
                    InvalidRecord { partition: p, offset: m.offset(), reason }.emit();
                    stats.invalid += 1;
                    let rejected = RejectedEvent::undecodable(
                        RejectSource::Aggregator,
                        &e,
                        "application/vnd.nearfield.sale-event+avro",
                        payload,
                        format!("{}/{p}/{}", m.topic(), m.offset()),
                        now,
                    );
                    let bytes = self
                        .codec
                        .encode(&rejected)
                        .map_err(|e| LoopError::Other(e.to_string()))?;
                    let key = m.key().unwrap_or_default();
                    let dlq_part = partition_for_key(key, self.dlq_partitions);
                    self.send(&self.topics.dlq, dlq_part, key, Some(&bytes))?;
                }
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
    let producer: ThreadedProducer<_> = txn::transactional_producer(
        settings,
        format!("{}-{instance}", cfg.group_id),
        cfg.transaction_timeout_ms,
    )?
    .create()?;
    let sales_parts = txn::partition_count(&producer, &topics.sales).map_err(LoopError::Other)?;
    let changelog_parts =
        txn::partition_count(&producer, &topics.aggregator_changelog).map_err(LoopError::Other)?;
    if sales_parts != changelog_parts {
        return Err(LoopError::Other(format!(
            "{} has {changelog_parts} partitions but {} has {sales_parts}: the changelog must be co-partitioned with its input",
            topics.aggregator_changelog, topics.sales
        )));
    }
    let demand_partitions =
        txn::partition_count(&producer, &topics.demand).map_err(LoopError::Other)?;
    let late_partitions =
        txn::partition_count(&producer, &topics.late).map_err(LoopError::Other)?;
    let dlq_partitions = txn::partition_count(&producer, &topics.dlq).map_err(LoopError::Other)?;
    producer.init_transactions(Duration::from_millis(cfg.transaction_timeout_ms.max(30_000)))?;
    producer.begin_transaction()?;
    let hb = txn::reader(settings, format!("{}-heartbeats", cfg.group_id), &[], &[])?;
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
    let consumer: BaseConsumer<Ctx> =
        txn::group_member(settings, cfg.group_id.clone())?.create_with_context(ctx)?;
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

/// Records applied under one engine lock.
const BATCH: usize = 512;

fn consume(
    consumer: &BaseConsumer<Ctx>,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<(), LoopError> {
    let ctx = consumer.context();
    let mut stats = EventsProcessed::default();
    let mut last_gauges = Instant::now();
    let mut last_size: Option<(Instant, StateSize)> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = ctx.take_failure() {
            return Err(LoopError::Other(f));
        }
        // Drain what is fetched, up to 50 ms, in batches of up to BATCH records.
        let until = Instant::now() + Duration::from_millis(50);
        let mut more = true;
        while more && Instant::now() < until {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                let wait =
                    if batch.is_empty() { Duration::from_millis(20) } else { Duration::ZERO };
                match consumer.poll(wait) {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        more = false;
                        break;
                    }
                    None => {
                        more = false;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            if let Err(e) = ctx.process_sales(&batch, &mut stats) {
                TransactionAborted { error: &e.to_string() }.emit();
                stats = EventsProcessed::default();
                drop(batch);
                ctx.recover(consumer, &[])?;
                break;
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
            // Sizing walks every key (2 % of the CPU at a million keys when done every
            // second, under the engine lock): every 10 s is enough for a memory gauge.
            if last_size.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10)) {
                last_size = Some((Instant::now(), engine.size()));
            }
            let now = now_ms();
            let delay = engine
                .partitions
                .values()
                .map(PartitionState::watermark)
                .filter(|w| *w > i64::MIN)
                .min()
                .map(|w| (now - w) / 1000);
            StateGauges {
                size: last_size.map(|(_, s)| s).unwrap_or_default(),
                partitions: engine.partitions.len(),
                watermark_delay_s: delay,
            }
            .emit();
        }
    }
    Ok(())
}
