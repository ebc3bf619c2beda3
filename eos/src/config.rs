//! The runtime's settings (each stage builds them from its own `[aggregate]` / `[emit]`
//! section, whose names they keep) and the wiring a stage declares: what it reads, where
//! its changelog lives, what it writes.

use std::time::Duration;

use nearfield_common::kafka::TopicSpec;
use nearfield_schemas::RejectSource;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Consumer group of every instance of the stage.
    pub group_id: String,
    /// This instance's stable id; its transactional id is `<group_id>-<instance_id>`.
    pub instance_id: String,
    /// How often state changes, outputs and input offsets commit in one transaction.
    pub commit_interval: Duration,
    /// Kafka transaction timeout.
    pub transaction_timeout: Duration,
    /// Longest a partition's restore may take before the runtime restarts.
    pub restore_timeout: Duration,
    /// Most records handed to the stage at once.
    pub batch: usize,
}

impl RuntimeConfig {
    /// From a stage's settings in milliseconds (`commit_interval_ms`,
    /// `transaction_timeout_ms`, `restore_timeout_ms`); the instance id is the configured
    /// one, else the host name.
    pub fn from_millis(
        group_id: &str,
        instance_id: Option<&str>,
        [commit_interval, transaction_timeout, restore_timeout]: [u64; 3],
    ) -> Self {
        RuntimeConfig {
            group_id: group_id.to_string(),
            instance_id: crate::clients::instance_id(instance_id),
            commit_interval: Duration::from_millis(commit_interval),
            transaction_timeout: Duration::from_millis(transaction_timeout),
            restore_timeout: Duration::from_millis(restore_timeout),
            batch: 512,
        }
    }

    /// The producer's stable transactional id.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
    }
}

/// What a stage reads and writes.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The input topic, consumed as a group member.
    pub input: String,
    /// The compacted changelog, co-partitioned with the input.
    pub changelog: String,
    /// Co-partitioned side inputs: partition p is read while input partition p is owned,
    /// from the position the partition's state records ([`crate::PartitionState::side_offset`]).
    pub side_inputs: Vec<String>,
    /// Topics written that must exist before the stage starts (and whose disappearance
    /// stops it).
    pub outputs: Vec<String>,
    /// Where undecodable input goes.
    pub dlq: String,
    /// Who rejected a dead-lettered record.
    pub reject_source: RejectSource,
}

/// Topics a stage creates when it first writes to them (the emitter's per-supplier plan
/// topics); `None` means the topic must already exist.
pub type CreateOnDemand = dyn Fn(&str) -> Option<TopicSpec> + Send + Sync;
