//! The restore worker: a thread of its own that rebuilds assigned partitions from their
//! changelog while the loop goes on processing (and answering for) the partitions it
//! already has.
//!
//! For each partition it is asked to restore it first fetches the group's committed input
//! offset — *stable*, so it waits until every transaction that committed offsets for the
//! partition is complete — and then reads the changelog partition from its beginning up to
//! the last stable offset it had at that moment, applying every record to a fresh state.
//! Partitions restore together on one consumer and each is handed back as soon as it is
//! complete, with progress reported on the way. A partition revoked meanwhile is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nearfield_common::kafka::KafkaSettings;
use nearfield_common::time::now_ms;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::clients::{self, QuietEof};
use crate::error::EosError;
use crate::stage::{PartitionState, Stage};

/// What the loop asks of the worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Restore `partition`; `epoch` tells this assignment from earlier ones.
    Start { partition: i32, epoch: u64 },
    /// Forget `partition` (revoked).
    Cancel { partition: i32 },
    /// End the worker.
    Stop,
}

/// A restored partition.
#[derive(Debug)]
pub(crate) struct Restored<St> {
    pub(crate) state: St,
    /// The committed input offset to resume from (`None`: nothing committed yet).
    pub(crate) committed: Option<i64>,
    pub(crate) records: u64,
    pub(crate) elapsed: Duration,
}

/// What the worker reports.
#[derive(Debug)]
pub(crate) enum Report<St> {
    Progress { partition: i32, epoch: u64, read: u64, total: u64 },
    Done { partition: i32, epoch: u64, result: Result<Restored<St>, EosError> },
}

struct Job<St> {
    epoch: u64,
    state: St,
    committed: Option<i64>,
    /// Last stable offset of the changelog partition when the restore started.
    end: i64,
    low: i64,
    records: u64,
    last_offset: i64,
    started: Instant,
}

/// The worker's handle: commands in, reports out.
#[derive(Debug)]
pub(crate) struct Worker<St> {
    pub(crate) commands: Sender<Command>,
    pub(crate) reports: Receiver<Report<St>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<St> Drop for Worker<St> {
    /// Stops the thread and waits for it.
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) struct Setup {
    pub(crate) settings: KafkaSettings,
    pub(crate) group: String,
    pub(crate) input: String,
    pub(crate) changelog: String,
    pub(crate) timeout: Duration,
}

/// Starts the worker for `stage`.
pub(crate) fn spawn<S: Stage>(stage: Arc<S>, setup: Setup) -> Result<Worker<S::State>, EosError> {
    // The committed offsets of the group, read without joining it.
    let offsets: BaseConsumer = clients::reader(&setup.settings, &setup.group, &[], &[])?
        .create()
        .map_err(|source| EosError::Client { client: "offset reader", source })?;
    let consumer = clients::restore_consumer(&setup.settings, &format!("{}-restore", setup.group))?;
    let (commands, rx) = std::sync::mpsc::channel();
    let (tx, reports) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("{}-restore", S::NAME).chars().take(15).collect())
        .spawn(move || run(&*stage, &setup, &offsets, &consumer, &rx, &tx))
        .map_err(|source| EosError::Thread { thread: "restore", source })?;
    Ok(Worker { commands, reports, thread: Some(thread) })
}

fn run<S: Stage>(
    stage: &S,
    setup: &Setup,
    offsets: &BaseConsumer,
    consumer: &BaseConsumer<QuietEof>,
    commands: &Receiver<Command>,
    reports: &Sender<Report<S::State>>,
) {
    let mut jobs: BTreeMap<i32, Job<S::State>> = BTreeMap::new();
    let mut last_progress = Instant::now();
    loop {
        // Commands: wait for one when idle, else take what is there.
        let mut starts = Vec::new();
        let first = if jobs.is_empty() {
            match commands.recv_timeout(Duration::from_millis(200)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match commands.try_recv() {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        };
        for cmd in first.into_iter().chain(std::iter::from_fn(|| commands.try_recv().ok())) {
            match cmd {
                Command::Start { partition, epoch } => starts.push((partition, epoch)),
                Command::Cancel { partition } => {
                    starts.retain(|(p, _)| *p != partition);
                    if jobs.remove(&partition).is_some() {
                        unassign(consumer, &setup.changelog, partition);
                    }
                }
                Command::Stop => return,
            }
        }
        if !starts.is_empty() {
            for (partition, epoch, result) in begin(stage, setup, offsets, consumer, &starts) {
                match result {
                    Ok(Some(job)) => {
                        jobs.insert(partition, Job { epoch, ..job });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = reports.send(Report::Done { partition, epoch, result: Err(e) });
                    }
                }
            }
            // Partitions with an empty changelog are done at once.
            let empty: Vec<i32> =
                jobs.iter().filter(|(_, j)| j.end <= j.low).map(|(p, _)| *p).collect();
            for p in empty {
                finish(consumer, setup, &mut jobs, p, reports);
            }
        }
        if jobs.is_empty() {
            continue;
        }
        if jobs.values().any(|j| j.started.elapsed() > setup.timeout) {
            for (partition, job) in std::mem::take(&mut jobs) {
                unassign(consumer, &setup.changelog, partition);
                let e = EosError::RestoreTimeout {
                    topic: setup.changelog.clone(),
                    partition,
                    timeout: setup.timeout,
                };
                let _ = reports.send(Report::Done { partition, epoch: job.epoch, result: Err(e) });
            }
            continue;
        }
        // Apply what arrives for up to 100 ms.
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until && !jobs.is_empty() {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    let p = m.partition();
                    let Some(job) = jobs.get_mut(&p) else { continue };
                    if m.offset() < job.last_offset {
                        continue;
                    }
                    job.last_offset = m.offset();
                    if let Err(e) = job.state.restore(m.key().unwrap_or_default(), m.payload()) {
                        let err = EosError::CorruptChangelog {
                            topic: setup.changelog.clone(),
                            partition: p,
                            offset: m.offset(),
                            source: Box::new(e),
                        };
                        let epoch = job.epoch;
                        jobs.remove(&p);
                        unassign(consumer, &setup.changelog, p);
                        let _ =
                            reports.send(Report::Done { partition: p, epoch, result: Err(err) });
                        continue;
                    }
                    job.records += 1;
                    if m.offset() + 1 >= job.end {
                        finish(consumer, setup, &mut jobs, p, reports);
                    }
                }
                // The end: only transaction markers (or nothing) were left.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if jobs.contains_key(&p) {
                        finish(consumer, setup, &mut jobs, p, reports);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "restore consumer"),
                None => break,
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            for (p, j) in &jobs {
                let _ = reports.send(Report::Progress {
                    partition: *p,
                    epoch: j.epoch,
                    read: (j.last_offset + 1 - j.low).max(0) as u64,
                    total: (j.end - j.low).max(0) as u64,
                });
            }
        }
    }
}

/// Fetches the committed offsets of `starts` and assigns their changelog partitions.
#[allow(clippy::type_complexity)]
fn begin<S: Stage>(
    stage: &S,
    setup: &Setup,
    offsets: &BaseConsumer,
    consumer: &BaseConsumer<QuietEof>,
    starts: &[(i32, u64)],
) -> Vec<(i32, u64, Result<Option<Job<S::State>>, EosError>)> {
    let mut tpl = TopicPartitionList::new();
    for (p, _) in starts {
        tpl.add_partition(&setup.input, *p);
    }
    tracing::info!(partitions = ?starts.iter().map(|s| s.0).collect::<Vec<_>>(), "restore: fetching stable committed offsets");
    let committed = match offsets.committed_offsets(tpl, setup.timeout) {
        Ok(c) => c,
        Err(e) => {
            let err = |_| EosError::kafka("fetching committed offsets", e.clone());
            return starts.iter().map(|(p, ep)| (*p, *ep, Err(err(())))).collect();
        }
    };
    let mut out = Vec::new();
    let mut assign = TopicPartitionList::new();
    for (p, epoch) in starts {
        let committed_offset = committed
            .find_partition(&setup.input, *p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0);
        let job = match consumer.fetch_watermarks(&setup.changelog, *p, Duration::from_secs(30)) {
            Ok((low, end)) => {
                if end > low
                    && let Err(e) =
                        assign.add_partition_offset(&setup.changelog, *p, Offset::Beginning)
                {
                    out.push((*p, *epoch, Err(EosError::kafka("restore assignment", e))));
                    continue;
                }
                Ok(Some(Job {
                    epoch: *epoch,
                    state: stage.fresh(*p),
                    committed: committed_offset,
                    end,
                    low,
                    records: 0,
                    last_offset: low - 1,
                    started: Instant::now(),
                }))
            }
            Err(e) => Err(EosError::kafka("reading changelog watermarks", e)),
        };
        out.push((*p, *epoch, job));
    }
    if assign.count() > 0
        && let Err(e) = consumer.incremental_assign(&assign)
    {
        return out
            .into_iter()
            .map(|(p, ep, _)| (p, ep, Err(EosError::kafka("restore assignment", e.clone()))))
            .collect();
    }
    out
}

fn unassign(consumer: &BaseConsumer<QuietEof>, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if consumer.assignment().is_ok_and(|a| a.find_partition(topic, partition).is_some())
        && let Err(e) = consumer.incremental_unassign(&tpl)
    {
        tracing::warn!(error = %e, partition, "restore consumer: cannot unassign");
    }
}

fn finish<St: PartitionState>(
    consumer: &BaseConsumer<QuietEof>,
    setup: &Setup,
    jobs: &mut BTreeMap<i32, Job<St>>,
    partition: i32,
    reports: &Sender<Report<St>>,
) {
    let Some(mut job) = jobs.remove(&partition) else { return };
    unassign(consumer, &setup.changelog, partition);
    job.state.restored(now_ms());
    let result = Ok(Restored {
        state: job.state,
        committed: job.committed,
        records: job.records,
        elapsed: job.started.elapsed(),
    });
    let _ = reports.send(Report::Done { partition, epoch: job.epoch, result });
}
