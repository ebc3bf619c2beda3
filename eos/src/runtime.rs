//! The loop: one dedicated thread per stage instance (rdkafka calls block; none of this
//! runs on the async runtime) that owns a consumer-group member on the input
//! (cooperative-sticky), a consumer of the side inputs, one transactional producer with a
//! stable `transactional.id`, and the restore worker.
//!
//! Each turn it installs the partitions the worker finished restoring, polls a batch of up
//! to `batch` records (≤ 50 ms) and hands each partition's run to the stage, applies side
//! input records, answers waiting queries, and every `commit_interval` commits one
//! transaction holding the stage's changelog records and outputs and the input offsets
//! with the group metadata (so a zombie of an older generation is fenced). At start the
//! topics are checked: each exists, is co-partitioned where it must be, and may be read
//! or written as the stage needs (a missing ACL stops it, named). Errors go by
//! their [`Class`]: fatal ones stop the stage; restart ones recreate the clients (with
//! backoff, counted); being fenced again and again means another instance shares this
//! one's id, which is fatal too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nearfield_access::Operation;
use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use crate::clients;
use crate::config::{CreateOnDemand, RuntimeConfig, Wiring};
use crate::core::{Core, Ctx};
use crate::error::{Class, EosError, TopicProblem};
use crate::internal_events::{Fatal, LoopRestarted, Metrics, Owned, Restoring};
use crate::query::{Asked, Queries, SharedStatus, Status, mailbox};
use crate::restore;
use crate::stage::{Deliveries, Input, Stage, Txn, TxnParts};

/// A running stage loop.
#[derive(Debug)]
pub struct Runtime<S: Stage> {
    /// What the loop last published (owned partitions, restore progress, readiness).
    pub status: SharedStatus,
    /// The mailbox whose questions the loop answers.
    pub queries: Queries<S::Query, S::Answer>,
    thread: std::thread::JoinHandle<Result<(), EosError>>,
}

impl<S: Stage> Runtime<S> {
    /// Waits for the loop to end: after `shutdown` (a graceful drain: last commit, leave
    /// the group) or on a fatal error.
    pub async fn join(self) -> Result<(), EosError> {
        let t = self.thread;
        match tokio::task::spawn_blocking(move || t.join()).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(EosError::Thread {
                thread: "loop",
                source: std::io::Error::other(format!("the {} loop panicked", S::NAME)),
            }),
        }
    }
}

/// Everything the loop is started with.
struct Spec<S: Stage> {
    stage: Arc<S>,
    wiring: Wiring,
    cfg: RuntimeConfig,
    settings: KafkaSettings,
    create: Arc<CreateOnDemand>,
    tokio: tokio::runtime::Handle,
}

/// Starts the loop of `stage` on its own thread. It runs until `shutdown` is cancelled or
/// a fatal error; `create` names the topics the stage creates when it first writes them.
/// Call from inside a tokio runtime (topic creation uses it).
pub fn spawn<S: Stage>(
    stage: Arc<S>,
    wiring: Wiring,
    cfg: RuntimeConfig,
    settings: KafkaSettings,
    create: Option<Arc<CreateOnDemand>>,
    shutdown: CancellationToken,
) -> Result<Runtime<S>, EosError> {
    let status: SharedStatus = Arc::new(ArcSwap::from_pointee(Status {
        stage: S::NAME,
        instance: cfg.instance_id.clone(),
        ..Status::default()
    }));
    let (queries, rx) = mailbox();
    let spec = Spec {
        stage,
        wiring,
        cfg,
        settings,
        create: create.unwrap_or_else(|| Arc::new(|_: &str| None)),
        tokio: tokio::runtime::Handle::current(),
    };
    let published = Arc::clone(&status);
    let thread = std::thread::Builder::new()
        .name(S::NAME.chars().take(15).collect())
        .spawn(move || run(&spec, &shutdown, rx, &published))
        .map_err(|source| EosError::Thread { thread: "loop", source })?;
    Ok(Runtime { status, queries, thread })
}

/// Fenced this many times within [`FENCE_WINDOW`]: another instance has the same id.
const FENCES: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(120);

fn run<S: Stage>(
    spec: &Spec<S>,
    shutdown: &CancellationToken,
    mut queries: mpsc::Receiver<Asked<S::Query, S::Answer>>,
    status: &SharedStatus,
) -> Result<(), EosError> {
    let metrics = Metrics::of(S::NAME);
    let mut backoff = Duration::from_millis(500);
    let mut fences: VecDeque<Instant> = VecDeque::new();
    loop {
        let started = Instant::now();
        let result = run_once(spec, shutdown, &mut queries, status);
        status.store(Arc::new(Status {
            stage: S::NAME,
            instance: spec.cfg.instance_id.clone(),
            ..Status::default()
        }));
        let e = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let class = e.class();
        if class == Class::Fatal {
            let e = precise(spec, e);
            Fatal { error: &e.to_string() }.emit(metrics);
            return Err(e);
        }
        if shutdown.is_cancelled() {
            return Err(e);
        }
        if e.is_fenced() {
            fences.push_back(Instant::now());
            while fences.front().is_some_and(|t| t.elapsed() > FENCE_WINDOW) {
                fences.pop_front();
            }
            if fences.len() >= FENCES {
                let e = EosError::InstanceConflict {
                    transactional_id: spec.cfg.transactional_id(),
                    times: fences.len(),
                    window: FENCE_WINDOW,
                };
                Fatal { error: &e.to_string() }.emit(metrics);
                return Err(e);
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        LoopRestarted { error: &e.to_string(), backoff }.emit(metrics);
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shutdown.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Checks the topology, creates the clients and runs the loop until shutdown or an error.
fn run_once<S: Stage>(
    spec: &Spec<S>,
    shutdown: &CancellationToken,
    queries: &mut mpsc::Receiver<Asked<S::Query, S::Answer>>,
    status: &SharedStatus,
) -> Result<(), EosError> {
    let (w, cfg) = (&spec.wiring, &spec.cfg);
    let metrics = Metrics::of(S::NAME);
    let producer: ThreadedProducer<Deliveries> = clients::transactional_producer(
        &spec.settings,
        cfg.transactional_id(),
        cfg.transaction_timeout,
    )?
    .create_with_context(Deliveries::default())
    .map_err(|source| EosError::Client { client: "transactional producer", source })?;
    let input_partitions = clients::partition_count(producer.client(), &w.input)?;
    for co in w.changelog.iter().chain(&w.side_inputs) {
        let n = clients::partition_count(producer.client(), co)?;
        if n != input_partitions {
            return Err(EosError::NotCoPartitioned {
                changelog: co.clone(),
                changelog_partitions: n,
                input: w.input.clone(),
                input_partitions,
            });
        }
    }
    let mut partitions = HashMap::new();
    for t in w.outputs.iter().chain(&w.dlq) {
        partitions.insert(t.clone(), clients::partition_count(producer.client(), t)?);
    }
    clients::check_rights(&spec.settings, &rights(w))?;
    producer
        .init_transactions(cfg.transaction_timeout.max(Duration::from_secs(30)))
        .map_err(|e| classify_init(cfg, e))?;
    producer.begin_transaction().map_err(|e| EosError::kafka("beginning a transaction", e))?;
    let worker = restore::spawn(
        Arc::clone(&spec.stage),
        restore::Setup {
            settings: spec.settings.clone(),
            group: cfg.group_id.clone(),
            input: w.input.clone(),
            changelog: w.changelog.clone(),
            timeout: cfg.restore_timeout,
            threads: cfg.restore_threads,
        },
    )?;
    let side = if w.side_inputs.is_empty() {
        None
    } else {
        Some(
            clients::reader(&spec.settings, &cfg.group_id, &[], &[])?
                .create()
                .map_err(|source| EosError::Client { client: "side input consumer", source })?,
        )
    };
    let core = Core {
        stage: Arc::clone(&spec.stage),
        txn: Txn::new(TxnParts {
            producer: Arc::new(producer),
            changelog: w.changelog.clone(),
            dlq: w.dlq.clone(),
            reject_source: w.reject_source,
            partitions,
            create: Arc::clone(&spec.create),
            settings: spec.settings.clone(),
            tokio: spec.tokio.clone(),
            input_partitions,
        }),
        wiring: w.clone(),
        cfg: cfg.clone(),
        side,
        states: BTreeMap::new(),
        next: HashMap::new(),
        restoring: BTreeMap::new(),
        epoch: 0,
        commands: Arc::clone(&worker.commands),
        committed: HashMap::new(),
        summary: S::Summary::default(),
        last_commit: Instant::now(),
        joined: false,
        watch: Default::default(),
        metrics,
        status_dirty: true,
    };
    let consumer: BaseConsumer<Ctx<S>> = clients::group_member(
        &spec.settings,
        &cfg.group_id,
        cfg.advertised_url
            .as_deref()
            .map(|u| crate::plane::member_client_id(S::NAME, &cfg.instance_id, u)),
    )?
    .create_with_context(Ctx::new(core))
    .map_err(|source| EosError::Client { client: "group consumer", source })?;
    consumer.subscribe(&[&w.input]).map_err(|e| EosError::kafka("subscribing", e))?;
    tracing::info!(
        instance = cfg.instance_id,
        group = cfg.group_id,
        "{} consuming {}",
        S::NAME,
        w.input
    );
    let result = consume(&consumer, &worker, spec, shutdown, queries, status);
    let ctx = consumer.context();
    ctx.stopping.store(true, Ordering::Relaxed);
    let timeout = cfg.transaction_timeout;
    match &result {
        Ok(()) => {
            // Graceful: commit, then leave the group (the revocation has nothing left).
            let mut core = ctx.lock();
            if let Err(e) = core.commit(&consumer) {
                // E.g. the group rebalances as instances stop together: the partitions'
                // next owners resume from the previous commit.
                let _ = core.txn.producer.abort_transaction(timeout);
                tracing::warn!(error = %e, "last transaction aborted at shutdown; the next owners of these partitions resume from the previous commit");
            }
            drop(core);
            consumer.unsubscribe();
            let _ = consumer.poll(Duration::from_millis(100));
        }
        // A wedged producer is left to its helper thread: another call would wait too.
        Err(EosError::Wedged { .. }) => {}
        Err(_) => {
            let _ = ctx.lock().txn.producer.abort_transaction(timeout);
        }
    }
    drop(worker);
    result
}

/// A refusal as the broker reported it (`Topic authorization failed` while producing
/// names no topic) made precise by the rights check: the topic and the right missing,
/// when a topic's rights are what is missing.
fn precise<S: Stage>(spec: &Spec<S>, e: EosError) -> EosError {
    precise_by(e, || clients::check_rights(&spec.settings, &rights(&spec.wiring)))
}

/// [`precise`] with the rights check `check` (asked only for a refusal).
fn precise_by(e: EosError, check: impl FnOnce() -> Result<(), EosError>) -> EosError {
    if !matches!(e, EosError::Unauthorized { .. }) {
        return e;
    }
    match check() {
        Err(EosError::Topic { problem: TopicProblem::Metadata(_), .. }) => e,
        Err(named @ EosError::Topic { .. }) => named,
        _ => e,
    }
}

/// What the stage must be allowed to do on each topic it is wired to.
fn rights(w: &Wiring) -> Vec<(&str, &'static [Operation])> {
    const READ: &[Operation] = &[Operation::Read];
    const WRITE: &[Operation] = &[Operation::Write];
    const BOTH: &[Operation] = &[Operation::Read, Operation::Write];
    let mut needs = vec![(w.input.as_str(), READ)];
    needs.extend(w.changelog.iter().map(|c| (c.as_str(), BOTH)));
    needs.extend(w.side_inputs.iter().map(|s| (s.as_str(), READ)));
    needs.extend(w.outputs.iter().chain(&w.dlq).map(|o| (o.as_str(), WRITE)));
    needs
}

fn classify_init(cfg: &RuntimeConfig, e: KafkaError) -> EosError {
    let err = EosError::kafka("initializing transactions", e.clone());
    if err.is_fenced() {
        EosError::Fenced { transactional_id: cfg.transactional_id(), source: e }
    } else {
        err
    }
}

/// Consumer errors that mean the input cannot be read at all.
fn consumer_error<S: Stage>(c: &BaseConsumer<Ctx<S>>, e: &KafkaError) -> Option<EosError> {
    let code = e.rdkafka_error_code()?;
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            Some(EosError::Unauthorized { operation: "consuming the input", code })
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            clients::partition_count(c.client(), &c.context().input).err()
        }
        _ => None,
    }
}

/// Answers the questions waiting in the mailbox (at most a mailbox-full).
fn answer_waiting<S: Stage>(
    core: &mut Core<S>,
    queries: &mut mpsc::Receiver<Asked<S::Query, S::Answer>>,
) {
    for _ in 0..crate::query::MAILBOX {
        let Ok((q, reply)) = queries.try_recv() else { break };
        let _ = reply.send(core.answer(q));
    }
}

fn consume<S: Stage>(
    consumer: &BaseConsumer<Ctx<S>>,
    worker: &restore::Worker<S::State>,
    spec: &Spec<S>,
    shutdown: &CancellationToken,
    queries: &mut mpsc::Receiver<Asked<S::Query, S::Answer>>,
    status: &SharedStatus,
) -> Result<(), EosError> {
    let ctx = consumer.context();
    let (batch_max, interval) = (spec.cfg.batch.max(1), spec.cfg.commit_interval);
    let mut last_gauges = Instant::now() - Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        if let Some(e) = ctx.take_failure() {
            return Err(e);
        }
        {
            let mut core = ctx.lock();
            for r in worker.reports.try_iter() {
                core.report(consumer, r)?;
            }
        }
        // Drain what is fetched, up to 50 ms, in batches.
        let until = Instant::now() + Duration::from_millis(50);
        loop {
            let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(batch_max);
            while batch.len() < batch_max {
                let wait =
                    if batch.is_empty() { Duration::from_millis(20) } else { Duration::ZERO };
                match consumer.poll(wait) {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        if let Some(fatal) = consumer_error(consumer, &e) {
                            return Err(fatal);
                        }
                        tracing::warn!(stage = S::NAME, error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let inputs: Vec<Input<'_>> = batch.iter().map(Input::of).collect();
            let mut core = ctx.lock();
            if let Err(e) = core.process(&inputs) {
                core.fail_txn(consumer, e, &[])?;
                break;
            }
            // Queries wait one batch at most, not the whole drain.
            answer_waiting(&mut core, queries);
            drop(core);
            if Instant::now() >= until {
                break;
            }
        }
        let mut core = ctx.lock();
        if let Err(e) = core.drain_side(1000) {
            core.fail_txn(consumer, e, &[])?;
        }
        answer_waiting(&mut core, queries);
        if core.last_commit.elapsed() >= interval
            && let Err(e) = core.commit_between(consumer, |c| answer_waiting(c, queries))
        {
            core.fail_txn(consumer, e, &[])?;
        }
        if let Some(sample) = ctx.take_fetching()
            && let Err(e) = core.fetching(consumer, &sample)
        {
            core.fail_txn(consumer, e, &[])?;
        }
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            core.gauges();
            let (restoring, remaining) = core.restore_backlog();
            Restoring { partitions: restoring, remaining }.emit(ctx.metrics);
            Owned { partitions: core.states.len(), watermark_delay_s: core.watermark_delay() }
                .emit(ctx.metrics);
            core.status_dirty = true;
        }
        if std::mem::take(&mut core.status_dirty) {
            status.store(Arc::new(core.status()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nearfield_schemas::RejectSource;

    use super::*;

    fn wiring(changelog: Option<&str>, dlq: Option<&str>) -> Wiring {
        Wiring {
            input: "sales.v1".into(),
            changelog: changelog.map(str::to_string),
            side_inputs: vec!["heartbeats.v1".into()],
            outputs: vec!["demand.v1".into()],
            dlq: dlq.map(str::to_string),
            reject_source: RejectSource::Ingest,
        }
    }

    #[test]
    fn a_stage_needs_to_read_its_inputs_and_write_its_outputs() {
        use Operation::{Read, Write};
        let stateful = wiring(Some("changelog"), Some("sales.dlq.v1"));
        let needs: Vec<_> = rights(&stateful).into_iter().map(|(t, o)| (t, o.to_vec())).collect();
        assert_eq!(
            needs,
            vec![
                ("sales.v1", vec![Read]),
                ("changelog", vec![Read, Write]),
                ("heartbeats.v1", vec![Read]),
                ("demand.v1", vec![Write]),
                ("sales.dlq.v1", vec![Write]),
            ]
        );
        // A copy (no changelog, no dead letters) needs no right on either.
        let copy = wiring(None, None);
        let copy = rights(&copy);
        assert!(copy.iter().all(|(t, _)| *t != "changelog" && *t != "sales.dlq.v1"), "{copy:?}");
    }

    /// A fatal refusal is reported as the topic and right the check finds missing; when
    /// the check finds none (a group or transactional-id right, or the check itself
    /// failing), as the broker said it; any other fatal error as it is, unchecked.
    #[test]
    fn a_refusal_is_made_precise_by_the_rights_check() {
        use rdkafka::types::RDKafkaErrorCode::{
            TopicAuthorizationFailed, TransactionalIdAuthorizationFailed,
        };
        let refused = |code| EosError::Unauthorized { operation: "commit", code };
        let missing = || EosError::Topic {
            topic: "demand.v1".into(),
            problem: TopicProblem::NotAllowed { operation: "write" },
        };
        let e = precise_by(refused(TopicAuthorizationFailed), || Err(missing()));
        assert_eq!(
            e.to_string(),
            "topic demand.v1: this principal may see it but not write it (check its ACLs: \
             `nearfield access`, docs/operations.md)"
        );
        let e = precise_by(refused(TransactionalIdAuthorizationFailed), || Ok(()));
        assert!(matches!(
            e,
            EosError::Unauthorized { code: TransactionalIdAuthorizationFailed, .. }
        ));
        let failed = || {
            Err(EosError::Topic {
                topic: "x".into(),
                problem: TopicProblem::Metadata("timed out".into()),
            })
        };
        let e = precise_by(refused(TopicAuthorizationFailed), failed);
        assert!(matches!(e, EosError::Unauthorized { .. }), "the check's own failure: {e}");
        let other = precise_by(EosError::Unwired("changelog"), || panic!("checked"));
        assert!(matches!(other, EosError::Unwired(_)));
    }
}
