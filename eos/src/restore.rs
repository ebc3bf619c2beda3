//! The restore workers: threads of their own that rebuild assigned partitions from their
//! changelog while the loop goes on processing (and answering for) the partitions it
//! already has. `restore_threads` of them (one per core, at most four, by default) take
//! the partitions to restore in turn, so an instance that takes over many partitions
//! restores them in parallel, each worker on its own restore consumer.
//!
//! For each partition it is asked to restore it first fetches the group's committed input
//! offset — *stable*, so it waits until every transaction that committed offsets for the
//! partition is complete — and then reads the changelog partition from its beginning up to
//! the last stable offset it had at that moment, applying every record to a fresh state.
//! A worker's partitions restore together on its consumer and each is handed back as
//! soon as it is complete, with progress reported on the way. A partition revoked
//! meanwhile is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// What the loop asks of the workers.
#[derive(Debug, Clone, Copy)]
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

/// Where the loop sends its commands: a partition to restore goes to the next worker in
/// turn; a cancel and the stop go to every worker (a worker not restoring the partition
/// ignores its cancel).
#[derive(Debug)]
pub(crate) struct Commands {
    workers: Vec<Sender<Command>>,
    next: AtomicUsize,
}

impl Commands {
    pub(crate) fn send(&self, command: Command) {
        match command {
            Command::Start { .. } => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
                if let Some(w) = self.workers.get(i) {
                    let _ = w.send(command);
                }
            }
            Command::Cancel { .. } | Command::Stop => {
                for w in &self.workers {
                    let _ = w.send(command);
                }
            }
        }
    }
}

/// The workers' handle: commands in, reports out (of every worker, on one channel).
#[derive(Debug)]
pub(crate) struct Worker<St> {
    pub(crate) commands: Arc<Commands>,
    pub(crate) reports: Receiver<Report<St>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<St> Drop for Worker<St> {
    /// Stops the threads and waits for them.
    fn drop(&mut self) {
        self.commands.send(Command::Stop);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(crate) struct Setup {
    pub(crate) settings: KafkaSettings,
    pub(crate) group: String,
    pub(crate) input: String,
    /// `None`: a stateless stage; its partitions only fetch their committed offsets.
    pub(crate) changelog: Option<String>,
    pub(crate) timeout: Duration,
    /// How many workers.
    pub(crate) threads: usize,
}

/// Starts the workers for `stage`.
pub(crate) fn spawn<S: Stage>(stage: Arc<S>, setup: Setup) -> Result<Worker<S::State>, EosError> {
    let setup = Arc::new(setup);
    let (tx, reports) = std::sync::mpsc::channel();
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    // The committed offsets of the group, read without joining it (one reader for all).
    let offsets: Arc<BaseConsumer> = Arc::new(
        clients::reader(&setup.settings, &setup.group, &[], &[])?
            .create()
            .map_err(|source| EosError::Client { client: "offset reader", source })?,
    );
    // One restore consumer made and dropped: its settings are checked at start, though the
    // workers make theirs only when they have partitions to restore.
    drop(restore_consumer(&setup)?);
    for i in 0..setup.threads.max(1) {
        let (commands, rx) = std::sync::mpsc::channel();
        let (stage, setup, tx) = (Arc::clone(&stage), Arc::clone(&setup), tx.clone());
        let offsets = Arc::clone(&offsets);
        // On an error the workers already started see their command channel close, and end.
        let thread = std::thread::Builder::new()
            .name(format!("{}-rst{i}", S::NAME).chars().take(15).collect())
            .spawn(move || run(&*stage, &setup, &offsets, &rx, &tx))
            .map_err(|source| EosError::Thread { thread: "restore", source })?;
        workers.push(commands);
        threads.push(thread);
    }
    let commands = Arc::new(Commands { workers, next: AtomicUsize::new(0) });
    Ok(Worker { commands, reports, threads })
}

fn restore_consumer(setup: &Setup) -> Result<BaseConsumer<QuietEof>, EosError> {
    clients::restore_consumer(&setup.settings, &setup.group)
}

/// A worker. Its restore consumer lives while it has partitions to restore: made when one
/// arrives, dropped when the last is done, so an idle worker costs no client.
fn run<S: Stage>(
    stage: &S,
    setup: &Setup,
    offsets: &BaseConsumer,
    commands: &Receiver<Command>,
    reports: &Sender<Report<S::State>>,
) {
    let mut jobs: BTreeMap<i32, Job<S::State>> = BTreeMap::new();
    let mut last_progress = Instant::now();
    let mut slot: Option<BaseConsumer<QuietEof>> = None;
    loop {
        if jobs.is_empty() {
            slot = None;
        }
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
                    if jobs.remove(&partition).is_some()
                        && let Some(consumer) = &slot
                    {
                        unassign(consumer, setup.changelog.as_deref(), partition);
                    }
                }
                Command::Stop => return,
            }
        }
        // A consumer for the partitions to start; one that cannot be made fails them.
        while slot.is_none()
            && let Some(&(partition, epoch)) = starts.first()
        {
            match restore_consumer(setup) {
                Ok(c) => slot = Some(c),
                Err(e) => {
                    starts.remove(0);
                    let _ = reports.send(Report::Done { partition, epoch, result: Err(e) });
                }
            }
        }
        let Some(consumer) = &slot else { continue };
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
                unassign(consumer, setup.changelog.as_deref(), partition);
                let e = EosError::RestoreTimeout {
                    topic: setup.changelog.clone().unwrap_or_default(),
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
                            topic: setup.changelog.clone().unwrap_or_default(),
                            partition: p,
                            offset: m.offset(),
                            source: Box::new(e),
                        };
                        let epoch = job.epoch;
                        jobs.remove(&p);
                        unassign(consumer, setup.changelog.as_deref(), p);
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
        // No changelog reads as an empty one.
        let marks = match &setup.changelog {
            Some(c) => {
                consumer.fetch_watermarks(c, *p, Duration::from_secs(30)).map(|m| (Some(c), m))
            }
            None => Ok((None, (0, 0))),
        };
        let job = match marks {
            Ok((changelog, (low, end))) => {
                if let Some(c) = changelog.filter(|_| end > low)
                    && let Err(e) = assign.add_partition_offset(c, *p, Offset::Beginning)
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

fn unassign(consumer: &BaseConsumer<QuietEof>, topic: Option<&str>, partition: i32) {
    let Some(topic) = topic else { return };
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
    unassign(consumer, setup.changelog.as_deref(), partition);
    job.state.restored(now_ms());
    let result = Ok(Restored {
        state: job.state,
        committed: job.committed,
        records: job.records,
        elapsed: job.started.elapsed(),
    });
    let _ = reports.send(Report::Done { partition, epoch: job.epoch, result });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_go_to_the_workers_in_turn_and_a_cancel_reaches_every_worker() {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..2).map(|_| std::sync::mpsc::channel::<Command>()).unzip();
        let c = Commands { workers: senders, next: AtomicUsize::new(0) };
        for p in 0..5 {
            c.send(Command::Start { partition: p, epoch: 1 });
        }
        c.send(Command::Cancel { partition: 3 });
        let got: Vec<Vec<String>> = receivers
            .iter()
            .map(|r| {
                r.try_iter()
                    .map(|c| match c {
                        Command::Start { partition, .. } => format!("start {partition}"),
                        Command::Cancel { partition } => format!("cancel {partition}"),
                        Command::Stop => "stop".into(),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(got[0], ["start 0", "start 2", "start 4", "cancel 3"]);
        assert_eq!(got[1], ["start 1", "start 3", "cancel 3"]);
    }
}
