//! The runtime's settings (each stage builds them from its own `[aggregate]` / `[emit]`
//! section, whose names they keep) and the wiring a stage declares: what it reads, where
//! its changelog lives, what it writes.

use std::net::SocketAddr;
use std::time::Duration;

use nearfield_common::kafka::TopicSpec;
use nearfield_schemas::RejectSource;
use serde::{Deserialize, Serialize};

/// The settings every exactly-once stage has, flattened into its section of the
/// deployment file (`[aggregate]`, `[emit]`): the same keys, the same rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopSettings {
    /// HTTP listen address (queries, metrics, health). Without an operator token only a
    /// loopback address is served.
    pub listen: SocketAddr,
    /// Consumer group of all the stage's instances.
    pub group_id: String,
    /// This instance's stable identity; its transactional id is `<group_id>-<instance_id>`.
    /// Every instance needs its own (a Kubernetes StatefulSet pod name is ideal); the
    /// default is the host name. A restarted instance with the same id fences its former
    /// self at once; a new id waits up to `transaction_timeout_ms` for its transactions.
    pub instance_id: Option<String>,
    /// How often state changes, outputs and input offsets are committed in one
    /// transaction: the knob between latency and throughput.
    pub commit_interval_ms: u64,
    /// Kafka transaction timeout (how long a crashed instance's open transaction can hold
    /// back its partitions' new owner).
    pub transaction_timeout_ms: u64,
    /// Longest a partition's restore may take before the instance gives up and restarts.
    pub restore_timeout_ms: u64,
    /// Threads restoring partitions in parallel, each with its own restore consumer
    /// (1..=16). Default: one per core, at most four.
    pub restore_threads: Option<usize>,
    /// The address other instances reach this one's HTTP server at (queries for
    /// partitions it owns are forwarded there), e.g. `http://aggregator-1.aggregator:8081`.
    /// Default: the listen address, or `http://<host name>:<port>` when it listens on
    /// every interface.
    pub advertised_url: Option<String>,
    /// The operator token the stage's query endpoints require (set by `nearfield` from
    /// `NEARFIELD_OPERATOR_TOKEN` or `[operator] token_file`, never from this section).
    #[serde(skip)]
    pub operator_token: Option<nearfield_common::operator::OperatorToken>,
    /// Suppliers' own tokens, admitted where a stage serves a supplier its own data (set
    /// by `nearfield` from `[operator] supplier_tokens_file`).
    #[serde(skip)]
    pub supplier_tokens: nearfield_common::operator::SupplierTokens,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            group_id: "nearfield".into(),
            instance_id: None,
            commit_interval_ms: 500,
            transaction_timeout_ms: 10_000,
            restore_timeout_ms: 300_000,
            restore_threads: None,
            advertised_url: None,
            operator_token: None,
            supplier_tokens: nearfield_common::operator::SupplierTokens::default(),
        }
    }
}

impl LoopSettings {
    /// Defaults with the stage's own group and port.
    pub fn stage(group_id: &str, port: u16) -> Self {
        LoopSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            group_id: group_id.into(),
            ..LoopSettings::default()
        }
    }

    /// Checks the settings: `Err((setting, rule))`.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.group_id.trim().is_empty() {
            return Err(("group_id", "must not be empty"));
        }
        if !(10..=60_000).contains(&self.commit_interval_ms) {
            return Err(("commit_interval_ms", "must be within 10..=60000"));
        }
        if self.transaction_timeout_ms < self.commit_interval_ms.saturating_mul(2) {
            return Err(("transaction_timeout_ms", "must be at least twice commit_interval_ms"));
        }
        if self.restore_timeout_ms < 1_000 {
            return Err(("restore_timeout_ms", "must be at least 1000"));
        }
        if self.restore_threads.is_some_and(|n| !(1..=16).contains(&n)) {
            return Err(("restore_threads", "must be within 1..=16"));
        }
        if self.instance_id.as_deref().is_some_and(|i| i.contains(';') || i.len() > 200) {
            return Err(("instance_id", "must be at most 200 bytes without `;`"));
        }
        if let Some(u) = &self.advertised_url
            && (!(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains(';')
                || u.contains('?')
                || u.len() > 200)
        {
            return Err((
                "advertised_url",
                "must be an http:// or https:// base URL of at most 200 bytes, without `;` or `?`",
            ));
        }
        Ok(())
    }

    /// The runtime's settings.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            group_id: self.group_id.clone(),
            instance_id: crate::clients::instance_id(self.instance_id.as_deref()),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            transaction_timeout: Duration::from_millis(self.transaction_timeout_ms),
            restore_timeout: Duration::from_millis(self.restore_timeout_ms),
            restore_threads: self.restore_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
            }),
            batch: 512,
            advertised_url: self.advertised_url.clone(),
        }
    }
}

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
    /// Restore workers.
    pub restore_threads: usize,
    /// Most records handed to the stage at once.
    pub batch: usize,
    /// Where other instances forward queries for this one's partitions (carried in the
    /// group consumer's `client.id`; see [`crate::plane`]).
    pub advertised_url: Option<String>,
}

impl RuntimeConfig {
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
    /// The compacted changelog, co-partitioned with the input; `None` for a stateless
    /// stage (its partitions only resume from their committed offsets).
    pub changelog: Option<String>,
    /// Co-partitioned side inputs: partition p is read while input partition p is owned,
    /// from the position the partition's state records ([`crate::PartitionState::side_offset`]).
    pub side_inputs: Vec<String>,
    /// Topics written that must exist before the stage starts (and whose disappearance
    /// stops it).
    pub outputs: Vec<String>,
    /// Where undecodable or refused input goes; `None` for a stage that decodes nothing
    /// (`nearfield repartition`).
    pub dlq: Option<String>,
    /// Who rejected a dead-lettered record.
    pub reject_source: RejectSource,
}

/// Topics a stage creates when it first writes to them (the emitter's per-supplier plan
/// topics); `None` means the topic must already exist.
pub type CreateOnDemand = dyn Fn(&str) -> Option<TopicSpec> + Send + Sync;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_threads_default_to_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(LoopSettings::default().runtime().restore_threads, cores.min(4));
        let set = |n| LoopSettings { restore_threads: Some(n), ..LoopSettings::default() };
        assert_eq!(set(3).runtime().restore_threads, 3);
        assert_eq!(set(0).validate(), Err(("restore_threads", "must be within 1..=16")));
        assert_eq!(set(17).validate(), Err(("restore_threads", "must be within 1..=16")));
        assert_eq!(set(16).validate(), Ok(()));
    }
}
