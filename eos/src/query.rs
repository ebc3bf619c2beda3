//! How HTTP handlers see a running stage without touching the loop's state: the
//! [`Status`] snapshot the loop publishes (owned partitions, restore progress, readiness)
//! and a bounded mailbox ([`Queries`]) whose questions the loop answers between batches.
//! A full mailbox answers [`QueryError::Busy`] at once: slow or many clients cannot pile
//! work onto the loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// One owned partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum PartitionStatus {
    /// Being restored from the changelog: `read` of `total` changelog offsets.
    Restoring { read: u64, total: u64 },
    /// Restored and processing.
    Active { watermark: Option<i64> },
}

/// What the loop last published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The stage (`aggregator`, `emitter`).
    pub stage: &'static str,
    /// This instance's id.
    pub instance: String,
    /// The loop runs and has taken part in a group assignment.
    pub running: bool,
    /// Owned partitions.
    pub partitions: BTreeMap<i32, PartitionStatus>,
}

impl Status {
    /// Ready: running, in the group, and every owned partition restored.
    pub fn ready(&self) -> bool {
        self.running
            && self.partitions.values().all(|p| matches!(p, PartitionStatus::Active { .. }))
    }
}

/// The published status, shared lock-free with readers.
pub type SharedStatus = Arc<ArcSwap<Status>>;

/// A question could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("too many queries are waiting; retry shortly")]
    Busy,
    #[error("the stage's loop is not running (starting, restarting or stopped)")]
    Stopped,
    #[error("the stage did not answer within {0:?}")]
    Timeout(Duration),
    /// The group's assignment could not be read (the query plane cannot route).
    #[error("cannot find the partitions' owners: {0}")]
    Plane(String),
}

pub(crate) type Asked<Q, A> = (Q, oneshot::Sender<A>);

/// Asks the loop; cloneable, for HTTP handlers.
#[derive(Debug)]
pub struct Queries<Q, A> {
    tx: mpsc::Sender<Asked<Q, A>>,
    timeout: Duration,
}

impl<Q, A> Clone for Queries<Q, A> {
    fn clone(&self) -> Self {
        Queries { tx: self.tx.clone(), timeout: self.timeout }
    }
}

/// Questions waiting at most (beyond them, [`QueryError::Busy`]).
pub const MAILBOX: usize = 256;

pub(crate) fn mailbox<Q, A>() -> (Queries<Q, A>, mpsc::Receiver<Asked<Q, A>>) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    (Queries { tx, timeout: Duration::from_secs(10) }, rx)
}

impl<Q: Send, A: Send> Queries<Q, A> {
    /// Asks `q` and waits for the answer.
    pub async fn ask(&self, q: Q) -> Result<A, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((q, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueryError::Busy,
            mpsc::error::TrySendError::Closed(_) => QueryError::Stopped,
        })?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(_)) => Err(QueryError::Stopped),
            Err(_) => Err(QueryError::Timeout(self.timeout)),
        }
    }
}
