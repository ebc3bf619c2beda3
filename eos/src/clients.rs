//! The Kafka clients of the runtime, configured so that configuration cannot weaken a
//! guarantee: defaults < pass-through properties (`kafka.properties`, SASL/SSL included)
//! < the settings exactly-once depends on. Also topic metadata: partition counts, and the
//! check that a topic exists and may be used.

use std::time::Duration;

use nearfield_common::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use nearfield_access::{Admin, Operation};

use crate::error::{EosError, TopicProblem};

/// A client config layered as defaults < pass-through properties < `owned`.
pub fn layered(
    settings: &KafkaSettings,
    defaults: &[(&str, String)],
    owned: &[(&str, String)],
) -> Result<ClientConfig, EosError> {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, v);
    }
    settings.apply(&mut c).map_err(|e| EosError::Client {
        client: "client config",
        source: KafkaError::ClientCreation(e.to_string()),
    })?;
    for (k, v) in owned {
        c.set(*k, v);
    }
    Ok(c)
}

/// A read_committed consumer config that never commits or stores offsets by itself, as
/// consumer group `group`. A reader that assigns itself partitions never joins it, but
/// librdkafka still looks its coordinator up (an assignment needs a group), so such
/// readers use the group their principal is granted: the stage's own (a group of their
/// own made librdkafka log `GroupAuthorizationFailed` at every start on a secured cluster).
pub fn reader(
    settings: &KafkaSettings,
    group: &str,
    defaults: &[(&str, String)],
    extra: &[(&str, String)],
) -> Result<ClientConfig, EosError> {
    let mut owned = vec![
        ("group.id", group.to_string()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("isolation.level", "read_committed".into()),
        ("auto.offset.reset", "earliest".into()),
        ("allow.auto.create.topics", "false".into()),
    ];
    owned.extend(extra.iter().cloned());
    layered(settings, defaults, &owned)
}

/// The config of a transactional producer with the stable id `transactional_id`. It never
/// creates topics by writing to them: a deleted output must stop the stage, not come back
/// with the broker's defaults.
pub fn transactional_producer(
    settings: &KafkaSettings,
    transactional_id: String,
    transaction_timeout: Duration,
) -> Result<ClientConfig, EosError> {
    layered(
        settings,
        &[
            ("linger.ms", "5".into()),
            ("compression.type", "lz4".into()),
            ("queue.buffering.max.messages", "1000000".into()),
            ("queue.buffering.max.kbytes", "1048576".into()),
        ],
        &[
            ("transactional.id", transactional_id),
            ("transaction.timeout.ms", transaction_timeout.as_millis().to_string()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("allow.auto.create.topics", "false".into()),
        ],
    )
}

/// The config of a consumer-group member that reads committed data only and commits its
/// offsets through transactions (never by itself); `client_id` tells the other members
/// where it answers queries ([`crate::plane::member_client_id`]).
pub fn group_member(
    settings: &KafkaSettings,
    group: &str,
    client_id: Option<String>,
) -> Result<ClientConfig, EosError> {
    let defaults = [
        ("partition.assignment.strategy", "cooperative-sticky".to_string()),
        ("session.timeout.ms", "10000".into()),
        ("heartbeat.interval.ms", "1000".into()),
        ("fetch.queue.backoff.ms", "10".into()),
        ("statistics.interval.ms", "5000".into()),
        // The prefetch queue is memory every instance holds whatever its state: at the
        // defaults (100 000 messages a partition, 64 MiB) it held ~100 MiB of messages and
        // their per-message bookkeeping; 10 000 a partition still covers ~100 ms of
        // consumption at 500 k events/s over 6 partitions.
        ("queued.min.messages", "10000".into()),
        ("queued.max.messages.kbytes", "16384".into()),
    ];
    let owned: Vec<(&str, String)> = client_id.map(|c| ("client.id", c)).into_iter().collect();
    reader(settings, group, &defaults, &owned)
}

/// Client context of a restore consumer: end-of-partition is how a restore ends, not an
/// error worth logging.
#[derive(Debug)]
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(error = %error, reason, "restore consumer");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer for reading changelog partitions to their stable end (read_committed,
/// reports end of partition).
pub fn restore_consumer(
    settings: &KafkaSettings,
    group: &str,
) -> Result<BaseConsumer<QuietEof>, EosError> {
    reader(
        settings,
        group,
        // A restore reads whole changelog partitions as fast as it can: large fetches
        // (changelog records are up to 512 KiB chunks), defaults a user may override.
        &[
            ("max.partition.fetch.bytes", (16 << 20).to_string()),
            ("fetch.max.bytes", (64 << 20).to_string()),
        ],
        &[("enable.partition.eof", "true".into()), ("fetch.wait.max.ms", "20".into())],
    )?
    .create_with_context(QuietEof)
    .map_err(|source| EosError::Client { client: "restore consumer", source })
}

/// The number of partitions of `topic`; an error says whether it is missing or refused.
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<i32, EosError> {
    let problem = |problem| EosError::Topic { topic: topic.to_string(), problem };
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| problem(TopicProblem::Metadata(e.to_string())))?;
    let Some(t) = md.topics().first() else {
        return Err(problem(TopicProblem::Missing));
    };
    match t.error() {
        None if t.partitions().is_empty() => Err(problem(TopicProblem::Missing)),
        None => Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)),
        Some(e) => match RDKafkaErrorCode::from(e) {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                Err(problem(TopicProblem::Missing))
            }
            RDKafkaErrorCode::TopicAuthorizationFailed => Err(problem(TopicProblem::Unauthorized)),
            other => Err(problem(TopicProblem::Metadata(other.to_string()))),
        },
    }
}

/// Checks that this principal may do what `needs` lists on each topic, as the broker
/// computes it from the principal's ACLs (DescribeTopics with authorized operations): a
/// topic it may see but not read or write stops the stage at start, naming the topic
/// and the right, where the first transaction would fail with a state error that names
/// neither, and the loop would restart into the same failure. When the broker does not
/// say (or the call fails) the check is skipped with a warning: it is a diagnosis, and
/// the transactions still enforce the ACLs.
pub fn check_rights(
    settings: &KafkaSettings,
    needs: &[(&str, &[Operation])],
) -> Result<(), EosError> {
    let config = layered(settings, &[], &[])?;
    let admin = match Admin::new(&config, Duration::from_secs(30)) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the topics' ACLs");
            return Ok(());
        }
    };
    for &(topic, ops) in needs {
        let allowed = match admin.topic_operations(topic) {
            Ok(Some(allowed)) => allowed,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot check the topic's ACLs");
                continue;
            }
        };
        if let Some(op) = ops.iter().find(|op| !allowed.contains(op)) {
            let problem = TopicProblem::NotAllowed { operation: op.label() };
            return Err(EosError::Topic { topic: topic.to_string(), problem });
        }
    }
    Ok(())
}

/// A stage instance's stable identity: the configured one, else the host name (a
/// Kubernetes StatefulSet pod name), else `local`.
pub fn instance_id(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Creates the group member's consumer on `topics` helper: `Consumer` trait in scope for
/// callers of this module.
pub fn subscribe<C: ConsumerContext>(c: &BaseConsumer<C>, topic: &str) -> Result<(), EosError> {
    c.subscribe(&[topic]).map_err(|e| EosError::kafka("subscribe", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layered_config_carries_the_sasl_password_itself() {
        let mut s = KafkaSettings { brokers: "b:1".into(), ..KafkaSettings::default() };
        s.properties.insert("sasl.password".into(), "s3cret".into());
        s.properties.insert("linger.ms".into(), "50".into());
        let c = layered(&s, &[("linger.ms", "5".into())], &[("acks", "all".into())]).expect("ok");
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("linger.ms"), Some("50"), "pass-through over defaults");
        assert_eq!(c.get("acks"), Some("all"));
    }

    /// A group member's prefetch queue is bounded by default, and a deployment's
    /// pass-through properties may size it otherwise.
    #[test]
    fn a_group_members_prefetch_is_bounded_and_overridable() {
        let mut s = KafkaSettings { brokers: "b:1".into(), ..KafkaSettings::default() };
        let c = group_member(&s, "g", None).expect("ok");
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("16384"));
        s.properties.insert("queued.min.messages".into(), "50000".into());
        let c = group_member(&s, "g", None).expect("ok");
        assert_eq!(c.get("queued.min.messages"), Some("50000"));
    }
}
