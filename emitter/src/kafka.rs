//! The emitter's Kafka loop: consume `demand.v1` → decide → produce plan signals, exactly
//! once.
//!
//! The same shape as the aggregator's loop (see `aggregator/src/kafka.rs`): one dedicated
//! thread owns a consumer-group member on `demand.v1` (read_committed, cooperative-sticky)
//! and one transactional producer with a stable `transactional.id`. Every
//! `commit_interval` one transaction holds the changelog records of the SKUs that changed
//! (`emitter.changelog.v1`, compacted, co-partitioned with `demand.v1`), the signals on
//! `plan.<supplier>.v1`, and the input offsets with the group metadata. On assignment a
//! partition's state is restored from its changelog before any of its records is
//! processed; on revocation the open transaction is committed first; a failed transaction
//! is aborted and the owned partitions are rebuilt from the changelog and rewound.
//! Because decisions depend only on the input records in partition order, the replay
//! after a crash re-makes the aborted decisions with the same `signal_id`s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nearfield_common::kafka::{KafkaSettings, TopicSpec, Topics, partition_for_key};
use nearfield_common::time::now_ms;
use nearfield_common::txn;
use nearfield_schemas::{Codec, DemandWindow, PlanSignal, RejectSource, RejectedEvent};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::catalog::Catalog;
use crate::config::EmitConfig;
use crate::internal_events::{
    ConsumerLag, InvalidRecord, LoopRestarted, PartitionsRestored, Rebalanced, SignalsCommitted,
    StateGauges, TransactionAborted, TransactionCommitted, WindowConsumed,
};
use crate::state::{PartitionState, StateConfig, StateSize, Tally};

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Other(String),
}

/// What the HTTP server and the metrics read.
#[derive(Debug)]
pub struct Engine {
    pub cfg: Arc<StateConfig>,
    pub partitions: BTreeMap<i32, PartitionState>,
    offsets: HashMap<i32, i64>,
    /// Whether every owned partition is restored (readiness).
    pub ready: bool,
    /// The latest committed signals, newest last.
    pub recent: VecDeque<PlanSignal>,
    recent_cap: usize,
}

impl Engine {
    /// An engine owning no partition.
    pub fn new(cfg: Arc<StateConfig>, recent_cap: usize) -> Self {
        Engine {
            cfg,
            partitions: BTreeMap::new(),
            offsets: HashMap::new(),
            ready: false,
            recent: VecDeque::new(),
            recent_cap,
        }
    }

    /// Total state size.
    pub fn size(&self) -> StateSize {
        self.partitions.values().map(PartitionState::size).fold(StateSize::default(), |a, b| {
            StateSize {
                skus: a.skus + b.skus,
                cells: a.cells + b.cells,
                plans: a.plans + b.plans,
                bytes: a.bytes + b.bytes,
            }
        })
    }

    fn remember(&mut self, signals: &[PlanSignal]) {
        for s in signals {
            self.recent.push_back(s.clone());
        }
        while self.recent.len() > self.recent_cap {
            self.recent.pop_front();
        }
    }
}

/// Shared between the Kafka thread and the HTTP server.
pub type SharedEngine = Arc<Mutex<Engine>>;

fn lock(e: &SharedEngine) -> MutexGuard<'_, Engine> {
    e.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Ctx {
    engine: SharedEngine,
    catalog: Arc<Catalog>,
    producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    stopping: AtomicBool,
    settings: KafkaSettings,
    topics: Topics,
    cfg: EmitConfig,
    dlq_partitions: i32,
    /// Partitions of each supplier's plan topic (created on first use).
    plan_partitions: Mutex<HashMap<String, i32>>,
    runtime: tokio::runtime::Handle,
    codec: Codec,
    failure: Mutex<Option<String>>,
    last_commit: Mutex<Instant>,
    produced: AtomicBool,
    committed: Mutex<HashMap<i32, i64>>,
    /// Signals and tallies of the open transaction, reported once it commits.
    pending: Mutex<(Vec<PlanSignal>, Tally)>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let topic = &self.topics.demand;
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
                let parts = txn::partitions_of(tpl, &self.topics.demand);
                Rebalanced { kind: "revoke", partitions: &parts }.emit();
                if !self.stopping.load(Ordering::Relaxed)
                    && let Err(e) = self.commit(consumer)
                {
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
            }
            Rebalance::Assign(tpl) => {
                let parts = txn::partitions_of(tpl, &self.topics.demand);
                Rebalanced { kind: "assign", partitions: &parts }.emit();
                if self.stopping.load(Ordering::Relaxed) {
                    return;
                }
                lock(&self.engine).ready = false;
                if let Err(e) = self.restore(consumer, &parts) {
                    self.fail(format!("restore: {e}"));
                }
                lock(&self.engine).ready = true;
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

impl Ctx {
    fn fail(&self, msg: String) {
        guard(&self.failure).get_or_insert(msg);
    }

    fn take_failure(&self) -> Option<String> {
        guard(&self.failure).take()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.transaction_timeout_ms)
    }

    /// Restores `parts` from the changelog after their committed offsets are stable.
    fn restore(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) -> Result<(), LoopError> {
        if parts.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            tpl.add_partition(&self.topics.demand, *p);
        }
        let deadline = Duration::from_millis(self.cfg.restore_timeout_ms);
        let committed = consumer.committed_offsets(tpl, deadline)?;
        let started = Instant::now();
        let cfg = Arc::clone(&lock(&self.engine).cfg);
        let now = now_ms();
        let restored = txn::read_to_stable_end(
            &txn::restore_consumer(&self.settings, format!("{}-restore", self.cfg.group_id))?,
            &self.topics.emitter_changelog,
            parts,
            || PartitionState::new(Arc::clone(&cfg)),
            |state, key, value| state.restore(key, value, now).map_err(|e| e.to_string()),
            deadline,
        )
        .map_err(|e| LoopError::Other(e.to_string()))?;
        let records = restored.values().map(|(_, n)| n).sum();
        PartitionsRestored { partitions: parts, records, elapsed: started.elapsed() }.emit();
        let mut engine = lock(&self.engine);
        for (p, (state, _)) in restored {
            let offset = committed
                .find_partition(&self.topics.demand, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            engine.partitions.insert(p, state);
            if let Some(o) = offset {
                engine.offsets.insert(p, o);
            }
        }
        Ok(())
    }

    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), LoopError> {
        self.produced.store(true, Ordering::Relaxed);
        Ok(txn::send_waiting(&self.producer, topic, partition, key, payload)?)
    }

    /// The partition count of a supplier's plan topic, creating the topic first if needed.
    fn plan_topic(&self, supplier: &str) -> Result<(String, i32), LoopError> {
        let topic = self.topics.plan(supplier);
        if let Some(n) = guard(&self.plan_partitions).get(supplier) {
            return Ok((topic, *n));
        }
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: self.cfg.plan_partitions,
            cleanup: "delete",
        };
        self.runtime
            .block_on(self.settings.ensure_topics(&[spec]))
            .map_err(|e| LoopError::Other(format!("creating {topic}: {e}")))?;
        let n = txn::partition_count(&self.producer, &topic).map_err(LoopError::Other)?;
        guard(&self.plan_partitions).insert(supplier.to_string(), n);
        Ok((topic, n))
    }

    /// Aborts the open transaction, rebuilds the owned partitions (except `leaving`) from
    /// the changelog and rewinds the consumer to the committed offsets.
    fn recover(&self, consumer: &BaseConsumer<Self>, leaving: &[i32]) -> Result<(), LoopError> {
        self.producer.abort_transaction(self.timeout())?;
        self.producer.begin_transaction()?;
        self.produced.store(false, Ordering::Relaxed);
        *guard(&self.pending) = (Vec::new(), Tally::default());
        guard(&self.committed).clear();
        let parts: Vec<i32> = txn::partitions_of(&consumer.assignment()?, &self.topics.demand)
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
        txn::rewind(consumer, &self.topics.demand, &parts, &offsets).map_err(LoopError::Other)?;
        lock(&self.engine).ready = true;
        tracing::warn!(partitions = ?parts, "recovered from the last commit after an aborted transaction");
        Ok(())
    }

    /// Flushes every owned partition and commits its changes, signals and offsets.
    fn commit(&self, consumer: &BaseConsumer<Self>) -> Result<(), LoopError> {
        let started = Instant::now();
        let now = now_ms();
        let mut flushed = Vec::new();
        let mut offsets = TopicPartitionList::new();
        let current: HashMap<i32, i64>;
        {
            let mut engine = lock(&self.engine);
            let Engine { partitions, offsets: next, .. } = &mut *engine;
            for (p, st) in partitions.iter_mut() {
                let f = st.flush(now, &self.catalog);
                let tally = std::mem::take(&mut st.tally);
                flushed.push((*p, f, tally));
                if let Some(o) = next.get(p) {
                    offsets.add_partition_offset(&self.topics.demand, *p, Offset::Offset(*o))?;
                }
            }
            current = next.clone();
        }
        let mut records = 0;
        {
            let mut pending = guard(&self.pending);
            for (p, f, tally) in flushed {
                for (k, v) in &f.changelog {
                    self.send(&self.topics.emitter_changelog, p, k, v.as_deref())?;
                }
                for s in &f.signals {
                    let (topic, n) = self.plan_topic(&s.supplier_id)?;
                    let payload =
                        self.codec.encode(s).map_err(|e| LoopError::Other(e.to_string()))?;
                    let part = partition_for_key(s.sku.as_bytes(), n);
                    self.send(&topic, part, s.sku.as_bytes(), Some(&payload))?;
                }
                records += f.changelog.len() + f.signals.len();
                pending.0.extend(f.signals);
                merge_tally(&mut pending.1, tally);
            }
        }
        let mut committed = guard(&self.committed);
        let last = &mut *guard(&self.last_commit);
        if records == 0 && !self.produced.load(Ordering::Relaxed) && current == *committed {
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
        let (signals, tally) = std::mem::take(&mut *guard(&self.pending));
        lock(&self.engine).remember(&signals);
        SignalsCommitted { signals: &signals, tally }.emit();
        TransactionCommitted { elapsed: started.elapsed(), records }.emit();
        Ok(())
    }

    /// Applies one demand record; undecodable ones go to the dead-letter topic.
    fn process(&self, m: &BorrowedMessage<'_>) -> Result<(), LoopError> {
        let p = m.partition();
        let payload = m.payload().unwrap_or_default();
        let now = now_ms();
        match self.codec.decode::<DemandWindow>(payload) {
            Ok(w) => {
                let mut engine = lock(&self.engine);
                let Some(st) = engine.partitions.get_mut(&p) else {
                    return Err(LoopError::Other(format!(
                        "record of partition {p}, which is not restored"
                    )));
                };
                let outcome = st.apply(&w, &self.catalog, now);
                engine.offsets.insert(p, m.offset() + 1);
                drop(engine);
                WindowConsumed { outcome: outcome.label() }.emit();
            }
            Err(e) => {
                let reason = e.reason();
                InvalidRecord { partition: p, offset: m.offset(), reason }.emit();
                let rejected = RejectedEvent::undecodable(
                    RejectSource::Emitter,
                    &e,
                    "application/vnd.nearfield.demand-window+avro",
                    payload,
                    format!("{}/{p}/{}", m.topic(), m.offset()),
                    now,
                );
                let bytes =
                    self.codec.encode(&rejected).map_err(|e| LoopError::Other(e.to_string()))?;
                let key = m.key().unwrap_or_default();
                self.send(
                    &self.topics.dlq,
                    partition_for_key(key, self.dlq_partitions),
                    key,
                    Some(&bytes),
                )?;
                lock(&self.engine).offsets.insert(p, m.offset() + 1);
            }
        }
        Ok(())
    }
}

fn merge_tally(into: &mut Tally, t: Tally) {
    into.suppressed += t.suppressed;
    into.forecast_abs_errors.extend(t.forecast_abs_errors);
    into.forecast_hits += t.forecast_hits;
    into.revisions_absorbed += t.revisions_absorbed;
    into.latencies_ms.extend(t.latencies_ms);
}

/// Runs the loop until `stop` is set; after an error it restarts from the last commit
/// (with backoff) until stopped.
pub fn run_loop(
    settings: KafkaSettings,
    cfg: EmitConfig,
    engine: SharedEngine,
    catalog: Arc<Catalog>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) -> Result<(), LoopError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match run_once(&settings, &cfg, &engine, &catalog, &runtime, &stop) {
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
    cfg: &EmitConfig,
    engine: &SharedEngine,
    catalog: &Arc<Catalog>,
    runtime: &tokio::runtime::Handle,
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
    let demand_parts = txn::partition_count(&producer, &topics.demand).map_err(LoopError::Other)?;
    let changelog_parts =
        txn::partition_count(&producer, &topics.emitter_changelog).map_err(LoopError::Other)?;
    if demand_parts != changelog_parts {
        return Err(LoopError::Other(format!(
            "{} has {changelog_parts} partitions but {} has {demand_parts}: the changelog must be co-partitioned with its input",
            topics.emitter_changelog, topics.demand
        )));
    }
    let dlq_partitions = txn::partition_count(&producer, &topics.dlq).map_err(LoopError::Other)?;
    producer.init_transactions(Duration::from_millis(cfg.transaction_timeout_ms.max(30_000)))?;
    producer.begin_transaction()?;
    let ctx = Ctx {
        engine: Arc::clone(engine),
        catalog: Arc::clone(catalog),
        producer,
        stopping: AtomicBool::new(false),
        settings: settings.clone(),
        topics: topics.clone(),
        cfg: cfg.clone(),
        dlq_partitions,
        plan_partitions: Mutex::new(HashMap::new()),
        runtime: runtime.clone(),
        codec: Codec::single_object(),
        failure: Mutex::new(None),
        last_commit: Mutex::new(Instant::now()),
        produced: AtomicBool::new(false),
        committed: Mutex::new(HashMap::new()),
        pending: Mutex::new((Vec::new(), Tally::default())),
    };
    let consumer: BaseConsumer<Ctx> =
        txn::group_member(settings, cfg.group_id.clone())?.create_with_context(ctx)?;
    consumer.subscribe(&[&topics.demand])?;
    tracing::info!(instance, group = cfg.group_id, "emitter consuming {}", topics.demand);
    let interval = Duration::from_millis(cfg.commit_interval_ms);
    let result = consume(&consumer, interval, stop);
    let ctx = consumer.context();
    ctx.stopping.store(true, Ordering::Relaxed);
    match &result {
        Ok(()) => {
            if let Err(e) = ctx.commit(&consumer) {
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
    let mut last_gauges = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = ctx.take_failure() {
            return Err(LoopError::Other(f));
        }
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    if let Err(e) = ctx.process(&m) {
                        TransactionAborted { error: &e.to_string() }.emit();
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
        let due = guard(&ctx.last_commit).elapsed() >= interval;
        if due {
            if let Some(f) = ctx.take_failure() {
                return Err(LoopError::Other(f));
            }
            if let Err(e) = ctx.commit(consumer) {
                TransactionAborted { error: &e.to_string() }.emit();
                ctx.recover(consumer, &[])?;
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
                catalog_skus: ctx.catalog.len(),
                watermark_delay_s: delay,
            }
            .emit();
        }
    }
    Ok(())
}
