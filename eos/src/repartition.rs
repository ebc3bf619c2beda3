//! `nearfield repartition`: a stateless stage on the runtime that copies one topic into
//! another with a different partition count, exactly once, each record into the partition
//! Kafka's default partitioner gives its key there (murmur2, as ingest and the Java
//! client write). It is what growing the partition count of a live deployment needs
//! (docs/SCALING.md): the aggregator keeps a grid's state in the partition its key hashes
//! to, and replicators such as MirrorMaker 2 keep a record's partition *number*, which on
//! a topic with more partitions is not where its key hashes, so a grid's sales would be
//! split between two partitions' states and counted in neither whole.
//!
//! Each input partition's records are copied in order, with their keys and values (a
//! record without a key is partitioned as the empty key), in the transactions that commit
//! the input offsets: a copy that is SIGKILLed, fenced or rebalanced resumes from its last
//! commit, and a read_committed consumer of the target sees every record exactly once.
//! Each copy keeps its original's timestamp, so the target's retention expires it when
//! the source's would have; headers are not carried (nearfield's event topics have none).
//! A compacted source is refused: a tombstone would be copied as an empty value.
//!
//! It scales like every stage: more instances of the same group share the source's
//! partitions. `nearfield_repartition_records_total` counts the records copied, after
//! their transaction committed; `nearfield_repartition_consumer_lag` says how far the copy
//! is behind the source.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::RejectSource;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use serde::{Deserialize, Serialize};

use crate::config::{LoopSettings, Wiring};
use crate::error::EosError;
use crate::http::{Launch, Launched, ServeError};
use crate::internal_events::REPARTITION_RECORDS;
use crate::stage::{Emit, Input, Millis, Owned, PartitionState, Stage};

/// `[repartition]`: what to copy where, and the exactly-once loop's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepartitionConfig {
    /// Listen address (metrics, probes), group, instance id, commit interval, timeouts.
    /// An empty group (the default) is `nearfield-repartition-<from>`: copies of two
    /// topics are two groups, and their instances' transactional ids differ.
    #[serde(flatten)]
    pub exactly_once: LoopSettings,
    /// The topic copied (e.g. `sales.v1`).
    pub from: String,
    /// The topic written, created beforehand with the new partition count (e.g.
    /// `sales.v2`, by `nearfield topics` with the new `kafka.partitions`).
    pub to: String,
}

impl Default for RepartitionConfig {
    fn default() -> Self {
        RepartitionConfig {
            exactly_once: LoopSettings::stage("", 8083),
            from: String::new(),
            to: String::new(),
        }
    }
}

/// A setting that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repartition.{setting}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub rule: String,
}

impl RepartitionConfig {
    /// The consumer group: the configured one, else `nearfield-repartition-<from>`.
    pub fn group(&self) -> String {
        match self.exactly_once.group_id.trim() {
            "" => format!("nearfield-repartition-{}", self.from),
            g => g.to_string(),
        }
    }

    /// Checks that the copy names its source: all a revocation of its principal needs.
    pub fn validate_from(&self) -> Result<(), ConfigError> {
        if self.from.trim().is_empty() {
            let rule = "must name the topic to copy (--from)".into();
            return Err(ConfigError { setting: "from", rule });
        }
        Ok(())
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, rule: &str| Err(ConfigError { setting, rule: rule.into() });
        self.validate_from()?;
        if self.to.trim().is_empty() {
            return err("to", "must name the topic to write (--to)");
        }
        if self.from == self.to {
            return err("to", "must not be the topic copied");
        }
        let loop_settings = LoopSettings { group_id: self.group(), ..self.exactly_once.clone() };
        loop_settings
            .validate()
            .map_err(|(setting, rule)| ConfigError { setting, rule: rule.into() })
    }
}

/// Why the copy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "repartition.from: {topic} is compacted (cleanup.policy={policy}); only event \
         topics are copied (a tombstone would arrive as an empty value)"
    )]
    Compacted { topic: String, policy: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The copy stage: every input record to `to`, by its key.
#[derive(Debug)]
pub struct Repartition {
    to: String,
}

/// A copy has no state: a partition resumes from its committed offset.
#[derive(Debug, Default)]
pub struct Nothing;

impl PartitionState for Nothing {
    type RestoreError = Infallible;

    fn restore(&mut self, _: &[u8], _: Option<&[u8]>) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Stage for Repartition {
    type State = Nothing;
    /// Records written in the open transaction.
    type Summary = u64;
    type Query = Infallible;
    type Answer = ();

    const NAME: &'static str = "repartition";

    fn fresh(&self, _partition: i32) -> Nothing {
        Nothing
    }

    fn process(
        &self,
        _: &mut Nothing,
        records: &[Input<'_>],
        _now: Millis,
        out: &mut Emit<'_, u64>,
    ) -> Result<(), EosError> {
        for r in records {
            out.send_copy(&self.to, r)?;
        }
        *out.summary += records.len() as u64;
        Ok(())
    }

    fn flush(&self, _: &mut Nothing, _: Millis, _: &mut Emit<'_, u64>) -> Result<(), EosError> {
        Ok(())
    }

    fn committed(&self, copied: u64) {
        REPARTITION_RECORDS.inc_by(copied);
    }

    fn answer(&self, _: &Owned<'_, Nothing>, query: Infallible) {
        match query {}
    }
}

/// Starts copying `config.from` into `config.to` (which must exist) until `shutdown`;
/// returns once the HTTP server (metrics, probes) listens.
pub async fn start(
    config: RepartitionConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<Launched<Repartition>, RepartitionError> {
    config.validate()?;
    LazyLock::force(&REPARTITION_RECORDS);
    refuse_compacted(&kafka, &config.from).await?;
    let wiring = Wiring {
        input: config.from.clone(),
        changelog: None,
        side_inputs: Vec::new(),
        outputs: vec![config.to.clone()],
        // A copy decodes nothing and refuses nothing.
        dlq: None,
        reject_source: RejectSource::Ingest,
    };
    let launch = Launch {
        stage: Arc::new(Repartition { to: config.to.clone() }),
        wiring,
        config: LoopSettings { group_id: config.group(), ..config.exactly_once.clone() }.runtime(),
        settings: kafka,
        create: None,
        listen: config.exactly_once.listen,
        operator_token: config.exactly_once.operator_token.clone(),
        supplier_tokens: Default::default(),
        listen_setting: "repartition.listen",
    };
    tracing::info!(from = %config.from, to = %config.to, "repartition: copying by key");
    // No query routes: probes and metrics only.
    let routes = |_: &_, _| axum::Router::new();
    Ok(crate::http::launch(launch, routes, Vec::new(), shutdown).await?)
}

/// Refuses a compacted `topic`. A topic whose configs cannot be read (no DescribeConfigs
/// right) is not refused: the log says so.
async fn refuse_compacted(kafka: &KafkaSettings, topic: &str) -> Result<(), RepartitionError> {
    let described = async {
        let admin: AdminClient<DefaultClientContext> = kafka
            .client_config()
            .map_err(|e| e.to_string())?
            .create()
            .map_err(|e| e.to_string())?;
        let opts = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(30)));
        let found = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(|e| e.to_string())?;
        let resource = found.into_iter().next().ok_or("no answer")?.map_err(|e| e.to_string())?;
        let configs: HashMap<String, Option<String>> =
            resource.entries.into_iter().map(|e| (e.name, e.value)).collect();
        Ok::<_, String>(configs.get("cleanup.policy").cloned().flatten())
    };
    match described.await {
        Ok(Some(policy)) if policy.contains("compact") => {
            Err(RepartitionError::Compacted { topic: topic.to_string(), policy })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(topic, error = %e, "repartition: cannot read the source's configs");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_rule_they_break() {
        let ok = RepartitionConfig {
            from: "sales.v1".into(),
            to: "sales.v2".into(),
            ..RepartitionConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.group(), "nearfield-repartition-sales.v1", "one group a source");
        let named = |g: &str| {
            let mut c = ok.clone();
            c.exactly_once.group_id = g.into();
            c.group()
        };
        assert_eq!(named("migrate-48"), "migrate-48");
        let broken = |f: &dyn Fn(&mut RepartitionConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().expect_err("refused").to_string()
        };
        assert!(broken(&|c| c.from.clear()).starts_with("repartition.from: must name"));
        assert!(broken(&|c| c.to = " ".into()).starts_with("repartition.to: must name"));
        assert_eq!(
            broken(&|c| c.to = "sales.v1".into()),
            "repartition.to: must not be the topic copied"
        );
        assert_eq!(
            broken(&|c| c.exactly_once.commit_interval_ms = 1),
            "repartition.commit_interval_ms: must be within 10..=60000"
        );
    }
}
