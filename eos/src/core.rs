//! The loop's state and the transaction: owned partitions (restored or restoring), the
//! open transaction, commit, abort-and-rewind, and the rebalance callbacks.
//!
//! Only the loop's thread touches it: librdkafka runs the rebalance callbacks inside
//! `poll` on that thread, and the loop never holds the [`Ctx::core`] lock across a poll,
//! so the lock is never contended. HTTP handlers see none of it (see `query.rs`).
//!
//! A partition's life: **assigned** (the callback pauses it and asks the restore worker)
//! → **restoring** (other partitions go on) → **active** (state installed, partition
//! resumed, then sought to the committed offset: `stall::reseek`) → **revoked** (the open
//! transaction commits first, then the state is dropped). An abortable error moves every
//! active partition back to restoring: their state rebuilds from the changelog, they
//! resume from the last commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nearfield_common::time::now_ms;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::clients;
use crate::config::{RuntimeConfig, Wiring};
use crate::error::{Class, EosError, TopicProblem};
use crate::internal_events::{
    ErrorSeen, Metrics, PartitionRestored, Rebalanced, Rewound, TransactionAborted,
    TransactionCommitted,
};
use crate::query::{PartitionStatus, Status};
use crate::restore::{Command, Commands, Report, Restored};
use crate::stage::{Deliveries, Emit, Input, Owned, PartitionState, Stage, Txn};
use crate::stall::{Sample, Watch};

/// A partition being restored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restoring {
    epoch: u64,
    read: u64,
    total: u64,
}

pub(crate) struct Core<S: Stage> {
    pub(crate) stage: Arc<S>,
    pub(crate) txn: Txn,
    pub(crate) wiring: Wiring,
    pub(crate) cfg: RuntimeConfig,
    /// Manually assigned consumer of the side inputs (partitions of the active ones).
    pub(crate) side: Option<BaseConsumer>,
    pub(crate) states: BTreeMap<i32, S::State>,
    /// Next input offset per active partition (committed at activation, then consumed).
    pub(crate) next: HashMap<i32, i64>,
    pub(crate) restoring: BTreeMap<i32, Restoring>,
    pub(crate) epoch: u64,
    pub(crate) commands: Arc<Commands>,
    /// The input offsets of the last commit (an idle interval commits nothing).
    pub(crate) committed: HashMap<i32, i64>,
    pub(crate) summary: S::Summary,
    pub(crate) last_commit: Instant,
    /// Took part in a group assignment.
    pub(crate) joined: bool,
    pub(crate) metrics: &'static Metrics,
    pub(crate) status_dirty: bool,
    /// Progress of the owned partitions between statistics samples.
    pub(crate) watch: Watch,
}

/// The consumer's context: the loop's state behind a lock only the loop's thread takes.
pub(crate) struct Ctx<S: Stage> {
    pub(crate) core: Mutex<Core<S>>,
    pub(crate) metrics: &'static Metrics,
    pub(crate) input: String,
    pub(crate) stopping: AtomicBool,
    failure: Mutex<Option<EosError>>,
    /// The last statistics sample of the input's partitions, until the loop reads it.
    fetching: Mutex<Option<Sample>>,
}

impl<S: Stage> Ctx<S> {
    pub(crate) fn new(core: Core<S>) -> Self {
        Ctx {
            metrics: core.metrics,
            input: core.wiring.input.clone(),
            core: Mutex::new(core),
            stopping: AtomicBool::new(false),
            failure: Mutex::new(None),
            fetching: Mutex::new(None),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core<S>> {
        self.core.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, e: EosError) {
        let mut f = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.get_or_insert(e);
    }

    /// The statistics sample that came since the last call, if any.
    pub(crate) fn take_fetching(&self) -> Option<Sample> {
        self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// An error raised in a callback, for the loop to act on.
    pub(crate) fn take_failure(&self) -> Option<EosError> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl<S: Stage> ClientContext for Ctx<S> {
    /// Keeps the sample for the loop (lag and stalls are judged against the owned
    /// partitions, which only the loop knows).
    fn stats(&self, stats: Statistics) {
        let sample = crate::stall::sample_of(&stats, &self.input);
        *self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sample);
    }
}

impl<S: Stage> ConsumerContext for Ctx<S> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let parts = partitions_of(tpl, &self.input);
        let lost = consumer.assignment_lost();
        Rebalanced { kind: "revoke", partitions: &parts, lost }.emit(self.metrics);
        let mut core = self.lock();
        if !self.stopping.load(Ordering::Relaxed)
            && parts.iter().any(|p| core.states.contains_key(p))
        {
            // Commit what was processed (offsets of the revoked partitions included) before
            // anyone else can own them; a lost assignment cannot commit any more.
            let result = if lost { Err(EosError::AssignmentLost) } else { core.commit(consumer) };
            if let Err(e) = result
                && let Err(e) = core.fail_txn(consumer, e, &parts)
            {
                self.fail(e);
            }
        }
        core.drop_partitions(&parts);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions_of(tpl, &self.input);
                Rebalanced { kind: "assign", partitions: &parts, lost: false }.emit(self.metrics);
                let mut core = self.lock();
                core.joined = true;
                core.status_dirty = true;
                if self.stopping.load(Ordering::Relaxed) {
                    return;
                }
                for p in parts {
                    if let Err(e) = core.restore(consumer, p) {
                        self.fail(e);
                    }
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// The partitions of `topic` in `tpl`.
pub(crate) fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect()
}

pub(crate) fn one(topic: &str, partition: i32, offset: Option<Offset>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    match offset {
        Some(o) => {
            let _ = tpl.add_partition_offset(topic, partition, o);
        }
        None => {
            tpl.add_partition(topic, partition);
        }
    }
    tpl
}

impl<S: Stage> Core<S> {
    fn timeout(&self) -> Duration {
        self.cfg.transaction_timeout
    }

    /// Pauses `p` and asks the worker to restore it.
    pub(crate) fn restore<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        p: i32,
    ) -> Result<(), EosError> {
        consumer
            .pause(&one(&self.wiring.input, p, None))
            .map_err(|e| EosError::kafka("pausing a partition to restore it", e))?;
        self.epoch += 1;
        self.restoring.insert(p, Restoring { epoch: self.epoch, read: 0, total: 0 });
        self.status_dirty = true;
        self.commands.send(Command::Start { partition: p, epoch: self.epoch });
        Ok(())
    }

    /// Forgets revoked partitions.
    fn drop_partitions(&mut self, parts: &[i32]) {
        for p in parts {
            self.states.remove(p);
            self.next.remove(p);
            self.committed.remove(p);
            if self.restoring.remove(p).is_some() {
                self.commands.send(Command::Cancel { partition: *p });
            }
            self.unassign_side(*p);
        }
        self.status_dirty = true;
    }

    fn unassign_side(&mut self, p: i32) {
        let Some(side) = &self.side else { return };
        let mut tpl = TopicPartitionList::new();
        let assigned = side.assignment().unwrap_or_default();
        for t in &self.wiring.side_inputs {
            if assigned.find_partition(t, p).is_some() {
                tpl.add_partition(t, p);
            }
        }
        if tpl.count() > 0
            && let Err(e) = side.incremental_unassign(&tpl)
        {
            tracing::warn!(error = %e, partition = p, "cannot unassign side inputs");
        }
    }

    /// Acts on a report of the restore worker.
    pub(crate) fn report<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        report: Report<S::State>,
    ) -> Result<(), EosError> {
        match report {
            Report::Progress { partition, epoch, read, total } => {
                if let Some(r) = self.restoring.get_mut(&partition).filter(|r| r.epoch == epoch) {
                    (r.read, r.total) = (read, total);
                    self.status_dirty = true;
                }
                Ok(())
            }
            Report::Done { partition, epoch, result } => {
                if self.restoring.get(&partition).is_none_or(|r| r.epoch != epoch) {
                    return Ok(()); // revoked (or restarted) meanwhile
                }
                self.activate(consumer, partition, result?)
            }
        }
    }

    /// Installs a restored partition: resumed, then sought to its committed offset.
    fn activate<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        p: i32,
        r: Restored<S::State>,
    ) -> Result<(), EosError> {
        let input = self.wiring.input.clone();
        let at = r.committed.map_or(Offset::Beginning, Offset::Offset);
        crate::stall::reseek(consumer, &input, p, at)?;
        if let Some(side) = &self.side {
            let mut tpl = TopicPartitionList::new();
            for (i, t) in self.wiring.side_inputs.iter().enumerate() {
                let at = match r.state.side_offset(i) {
                    o if o >= 0 => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                let _ = tpl.add_partition_offset(t, p, at);
            }
            side.incremental_assign(&tpl)
                .map_err(|e| EosError::kafka("assigning side inputs", e))?;
        }
        self.restoring.remove(&p);
        if let Some(o) = r.committed {
            self.next.insert(p, o);
        }
        PartitionRestored {
            partition: p,
            records: r.records,
            elapsed: r.elapsed,
            committed: r.committed,
        }
        .emit(self.metrics);
        self.states.insert(p, r.state);
        self.status_dirty = true;
        Ok(())
    }

    /// Applies a batch of input records: runs of one partition go to the stage together.
    pub(crate) fn process(&mut self, batch: &[Input<'_>]) -> Result<(), EosError> {
        let now = now_ms();
        let Core { stage, txn, states, next, summary, .. } = self;
        for run in batch.chunk_by(|a, b| a.partition == b.partition) {
            let p = run[0].partition;
            // A partition not restored (paused) or revoked: its records are read again
            // from the committed offset once it is.
            let Some(state) = states.get_mut(&p) else { continue };
            let mut out = Emit { txn, partition: p, summary };
            stage.process(state, run, now, &mut out)?;
            next.insert(p, run[run.len() - 1].offset + 1);
        }
        Ok(())
    }

    /// Applies waiting side-input records (non-blocking, at most `limit`).
    pub(crate) fn drain_side(&mut self, limit: usize) -> Result<(), EosError> {
        let Core { stage, txn, states, summary, side, wiring, .. } = self;
        let Some(side) = side else { return Ok(()) };
        for _ in 0..limit {
            let m = match side.poll(Duration::ZERO) {
                None => return Ok(()),
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "side input consumer");
                    return Ok(());
                }
            };
            use rdkafka::Message;
            let Some(idx) = wiring.side_inputs.iter().position(|t| t == m.topic()) else {
                continue;
            };
            let p = m.partition();
            let Some(state) = states.get_mut(&p) else { continue };
            let rec = Input::of(&m);
            let mut out = Emit { txn, partition: p, summary };
            stage.process_side(idx, state, &rec, now_ms(), &mut out)?;
        }
        Ok(())
    }

    /// Flushes every active partition and commits its changes, outputs and input offsets
    /// in the open transaction, then opens the next one.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EosError> {
        self.commit_between(consumer, |_| {})
    }

    /// [`Self::commit`], calling `between` (the loop answers queries there) while the
    /// transaction's records are being delivered, so a commit does not hold queries up.
    pub(crate) fn commit_between<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        mut between: impl FnMut(&mut Self),
    ) -> Result<(), EosError> {
        let started = Instant::now();
        let now = now_ms();
        let partitions: Vec<i32> = self.states.keys().copied().collect();
        for p in partitions {
            let Core { stage, txn, states, summary, .. } = self;
            if let Some(state) = states.get_mut(&p) {
                let mut out = Emit { txn, partition: p, summary };
                stage.flush(state, now, &mut out)?;
            }
            between(self);
        }
        // Deliveries in slices (commit_transaction would wait for them in one block).
        let deadline = Instant::now() + self.timeout();
        while self.txn.producer.in_flight_count() > 0 && Instant::now() < deadline {
            let _ = self.txn.producer.flush(Duration::from_millis(5));
            between(self);
        }
        let current: HashMap<i32, i64> = self
            .next
            .iter()
            .filter(|(p, _)| self.states.contains_key(p))
            .map(|(p, o)| (*p, *o))
            .collect();
        if self.txn.records == 0 && current == self.committed {
            self.last_commit = Instant::now();
            return Ok(()); // idle: nothing written, offsets unchanged
        }
        let mut offsets = TopicPartitionList::new();
        for (p, o) in &current {
            offsets
                .add_partition_offset(&self.wiring.input, *p, Offset::Offset(*o))
                .map_err(|e| EosError::kafka("building the offsets", e))?;
        }
        let timeout = self.timeout();
        let producer = &self.txn.producer;
        if offsets.count() > 0 {
            let cgm = Arc::new(consumer.group_metadata().ok_or(EosError::NoGroupMetadata)?);
            let op = "sending offsets to the transaction";
            retrying(self.metrics, op, || {
                let (offsets, cgm) = (offsets.clone(), Arc::clone(&cgm));
                bounded(producer, op, timeout, move |p| {
                    p.send_offsets_to_transaction(&offsets, &cgm, timeout)
                })
            })?;
        }
        let op = "committing the transaction";
        retrying(self.metrics, op, || {
            bounded(producer, op, timeout, move |p| p.commit_transaction(timeout))
        })?;
        self.txn
            .producer
            .begin_transaction()
            .map_err(|e| EosError::kafka("beginning a transaction", e))?;
        let records = std::mem::take(&mut self.txn.records);
        self.committed = current;
        self.last_commit = Instant::now();
        self.stage.committed(std::mem::take(&mut self.summary));
        TransactionCommitted { elapsed: started.elapsed(), records }.emit(self.metrics);
        Ok(())
    }

    /// After a failed transaction: a permanent cause (a deleted or refused topic behind a
    /// failed delivery) is returned as such; an abortable error aborts the transaction and
    /// rewinds every active partition except `leaving`; anything else is returned for the
    /// loop to restart or stop.
    pub(crate) fn fail_txn<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        e: EosError,
        leaving: &[i32],
    ) -> Result<(), EosError> {
        let e = self.confirm_topics(e);
        let class = e.class();
        ErrorSeen { class, error: &e.to_string() }.emit(self.metrics);
        if !matches!(class, Class::Abort | Class::Retry) {
            return Err(e);
        }
        TransactionAborted { error: &e.to_string() }.emit(self.metrics);
        let timeout = self.timeout();
        bounded(&self.txn.producer, "aborting the transaction", timeout, move |p| {
            p.abort_transaction(timeout)
        })?;
        self.txn
            .producer
            .begin_transaction()
            .map_err(|e| EosError::kafka("beginning a transaction", e))?;
        self.txn.records = 0;
        self.summary = S::Summary::default();
        self.committed.clear();
        let parts: Vec<i32> =
            self.states.keys().copied().filter(|p| !leaving.contains(p)).collect();
        self.states.clear();
        self.next.clear();
        for p in &parts {
            self.unassign_side(*p);
            self.restore(consumer, *p)?;
        }
        Rewound { partitions: &parts }.emit(self.metrics);
        Ok(())
    }

    /// If a delivery of the failed transaction went to a topic that is gone or refused,
    /// that is the error (permanent); otherwise `e`.
    fn confirm_topics(&mut self, e: EosError) -> EosError {
        for (topic, code) in self.txn.producer.context().take() {
            if matches!(code, rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed) {
                return EosError::Topic { topic, problem: TopicProblem::Unauthorized };
            }
            if let Err(
                gone @ EosError::Topic {
                    problem: TopicProblem::Missing | TopicProblem::Unauthorized,
                    ..
                },
            ) = clients::partition_count(self.txn.producer.client(), &topic)
            {
                return gone;
            }
        }
        e
    }

    /// The stage's view of the owned partitions.
    pub(crate) fn owned(&self) -> (Vec<i32>, &BTreeMap<i32, S::State>) {
        (self.restoring.keys().copied().collect(), &self.states)
    }

    /// Answers a query.
    pub(crate) fn answer(&self, q: S::Query) -> S::Answer {
        let (restoring, active) = self.owned();
        self.stage.answer(&Owned { active, restoring: &restoring }, q)
    }

    /// Refreshes the stage's gauges.
    pub(crate) fn gauges(&self) {
        let (restoring, active) = self.owned();
        self.stage.gauges(&Owned { active, restoring: &restoring }, now_ms());
    }

    /// The status to publish.
    pub(crate) fn status(&self) -> Status {
        let mut partitions = BTreeMap::new();
        for (p, st) in &self.states {
            partitions.insert(*p, PartitionStatus::Active { watermark: st.watermark() });
        }
        for (p, r) in &self.restoring {
            partitions.insert(*p, PartitionStatus::Restoring { read: r.read, total: r.total });
        }
        Status {
            stage: S::NAME,
            instance: self.cfg.instance_id.clone(),
            running: self.joined,
            partitions,
        }
    }

    /// Wall clock minus the lowest watermark of the active partitions, in seconds.
    pub(crate) fn watermark_delay(&self) -> Option<i64> {
        let low = self.states.values().filter_map(PartitionState::watermark).min()?;
        Some((now_ms() - low) / 1000)
    }

    /// (partitions restoring, changelog offsets they have left).
    pub(crate) fn restore_backlog(&self) -> (usize, u64) {
        let left = self.restoring.values().map(|r| r.total.saturating_sub(r.read)).sum();
        (self.restoring.len(), left)
    }
}

/// Runs a transactional call, retrying it (up to three times, with backoff) while
/// librdkafka says the same call may succeed.
fn retrying(
    metrics: &Metrics,
    operation: &'static str,
    mut f: impl FnMut() -> Result<(), EosError>,
) -> Result<(), EosError> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let Err(err) = f() else { return Ok(()) };
        if err.class() != Class::Retry || attempt >= 3 {
            return Err(err);
        }
        ErrorSeen { class: Class::Retry, error: &err.to_string() }.emit(metrics);
        tracing::debug!(operation, attempt, "retrying");
        std::thread::sleep(backoff);
        backoff *= 2;
        attempt += 1;
    }
}

/// How long past its own timeout a transactional call may take before it counts as
/// wedged.
const WEDGE_MARGIN: Duration = Duration::from_secs(5);

/// Runs a transactional call of `producer` on a helper thread and waits at most its
/// `timeout` plus [`WEDGE_MARGIN`]. A call that has not returned by then is left behind
/// with its producer (it holds a reference), and [`EosError::Wedged`] restarts the loop
/// with new clients: a new producer with the same transactional id fences the old one.
fn bounded(
    producer: &Arc<ThreadedProducer<Deliveries>>,
    operation: &'static str,
    timeout: Duration,
    call: impl FnOnce(&ThreadedProducer<Deliveries>) -> rdkafka::error::KafkaResult<()> + Send + 'static,
) -> Result<(), EosError> {
    within(producer, operation, timeout + WEDGE_MARGIN, call)
}

/// [`bounded`] for any shared client, waiting at most `after`.
fn within<P: Send + Sync + 'static>(
    producer: &Arc<P>,
    operation: &'static str,
    after: Duration,
    call: impl FnOnce(&P) -> rdkafka::error::KafkaResult<()> + Send + 'static,
) -> Result<(), EosError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = Arc::clone(producer);
    std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            let _ = tx.send(call(&p));
        })
        .map_err(|source| EosError::Thread { thread: "transactional call", source })?;
    match rx.recv_timeout(after) {
        Ok(r) => r.map_err(|e| EosError::kafka(operation, e)),
        Err(_) => Err(EosError::Wedged { operation, after }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_does_not_return_is_wedged_and_left_behind() {
        let client = Arc::new(());
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let stuck = within(&client, "sending offsets", Duration::from_millis(50), move |_| {
            let _ = wait.recv();
            Ok(())
        });
        assert!(matches!(stuck, Err(EosError::Wedged { operation: "sending offsets", .. })));
        assert_eq!(stuck.map_err(|e| e.class()), Err(Class::Restart));
        // The helper still holds the client until its call returns.
        assert_eq!(Arc::strong_count(&client), 2);
        drop(release);
        let done = within(&client, "committing", Duration::from_secs(30), |_| Ok(()));
        assert!(done.is_ok());
        let failed = within(&client, "committing", Duration::from_secs(30), |_| {
            Err(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::ProducerFenced,
            ))
        });
        assert!(failed.is_err_and(|e| e.is_fenced()));
    }
}
