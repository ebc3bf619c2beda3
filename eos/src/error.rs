//! What can go wrong in an exactly-once stage, sorted by what the runtime does about it
//! ([`Class`]): a **fatal** error stops the stage with a message naming what to fix (a
//! missing topic, a refused ACL, a corrupt changelog, an instance id used twice); a
//! **restart** error recreates the Kafka clients and restores the owned partitions (a
//! fenced producer, a broken client); an **abortable** one aborts the open transaction and
//! rebuilds the owned partitions from their changelog in place; a **retryable** one is
//! tried again with backoff. Every class is counted (`nearfield_<stage>_errors_total`).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What the runtime does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Stop the stage: retrying cannot help.
    Fatal,
    /// Recreate the clients, restore, go on.
    Restart,
    /// Abort the open transaction and rebuild the owned partitions from the changelog.
    Abort,
    /// Try the same operation again after a backoff.
    Retry,
}

impl Class {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Class::Fatal => "fatal",
            Class::Restart => "restart",
            Class::Abort => "abortable",
            Class::Retry => "retryable",
        }
    }
}

/// Why a topic cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicProblem {
    #[error("does not exist (create it, e.g. with `nearfield topics`)")]
    Missing,
    #[error("this principal is not authorized to use it (check its ACLs)")]
    Unauthorized,
    #[error(
        "this principal may see it but not {operation} it (check its ACLs: `nearfield access`, \
         docs/operations.md)"
    )]
    NotAllowed { operation: &'static str },
    #[error("metadata: {0}")]
    Metadata(String),
}

/// An error of the exactly-once runtime or of a stage running on it.
#[derive(Debug, thiserror::Error)]
pub enum EosError {
    /// A topic the stage reads or writes is missing or refused.
    #[error("topic {topic}: {problem}")]
    Topic { topic: String, problem: TopicProblem },
    /// The changelog must have as many partitions as the input.
    #[error(
        "{changelog} has {changelog_partitions} partitions but {input} has {input_partitions}: \
         a changelog must be co-partitioned with its input"
    )]
    NotCoPartitioned {
        changelog: String,
        changelog_partitions: i32,
        input: String,
        input_partitions: i32,
    },
    /// The broker refused an operation for this principal.
    #[error("not authorized to {operation}: {code} (check the principal's ACLs)")]
    Unauthorized { operation: &'static str, code: RDKafkaErrorCode },
    /// A changelog record cannot be applied: the changelog is corrupt or from an
    /// incompatible release.
    #[error("changelog {topic}/{partition} at offset {offset} cannot be restored: {source}")]
    CorruptChangelog {
        topic: String,
        partition: i32,
        offset: i64,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Restoring took longer than allowed.
    #[error("restoring {topic} partition {partition} took longer than {timeout:?}")]
    RestoreTimeout { topic: String, partition: i32, timeout: Duration },
    /// An output could not be encoded (a bug: outputs are built by the stage).
    #[error("encoding a {record} for {topic}: {source}")]
    Encode { record: &'static str, topic: String, source: nearfield_schemas::EncodeError },
    /// Another producer took this instance's transactional id.
    #[error("producer fenced (transactional.id {transactional_id}): {source}")]
    Fenced { transactional_id: String, source: KafkaError },
    /// The transactional id keeps being taken: two running instances share an instance id.
    #[error(
        "transactional.id {transactional_id} was fenced {times} times within {window:?}: \
         another running instance uses the same instance id (give every instance its own)"
    )]
    InstanceConflict { transactional_id: String, times: usize, window: Duration },
    /// A Kafka client could not be created (its configuration is invalid).
    #[error("creating the {client}: {source}")]
    Client { client: &'static str, source: KafkaError },
    /// A Kafka operation failed; its class follows from the error code.
    #[error("{operation}: {source}")]
    Kafka { operation: &'static str, source: KafkaError },
    /// The group assignment was lost (the session timed out): the open transaction can no
    /// longer commit.
    #[error("the consumer group assignment was lost (session timed out)")]
    AssignmentLost,
    /// The consumer has no group metadata to commit offsets with.
    #[error("the consumer has no group metadata (not a group member)")]
    NoGroupMetadata,
    /// A transactional call did not return in time. librdkafka can wait forever for a
    /// coordinator on a broker that is gone (confluentinc/librdkafka#5456, #5511); the
    /// producer is abandoned and the loop restarts with new clients.
    #[error(
        "{operation} did not return within {after:?} (librdkafka waits for a coordinator \
         that is gone): restarting with new clients"
    )]
    Wedged { operation: &'static str, after: Duration },
    /// A thread could not be started.
    #[error("starting the {thread} thread: {source}")]
    Thread { thread: &'static str, source: std::io::Error },
    /// A setting contradicts what the stage's state holds (an operator must change it).
    #[error("{0}")]
    Setting(Box<dyn std::error::Error + Send + Sync>),
    /// A stage wired without a changelog (a stateless one) or a dead-letter topic (one
    /// that decodes nothing) wrote such a record: a bug.
    #[error("a {0} record was written by a stage wired without a {0} topic")]
    Unwired(&'static str),
}

/// Error codes that mean "this principal may not": permanent until an operator acts.
fn unauthorized(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
    )
}

fn fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

impl EosError {
    /// A Kafka operation failed.
    pub fn kafka(operation: &'static str, source: KafkaError) -> Self {
        if let Some(code) = source.rdkafka_error_code()
            && unauthorized(code)
        {
            return EosError::Unauthorized { operation, code };
        }
        EosError::Kafka { operation, source }
    }

    /// What the runtime does about it.
    pub fn class(&self) -> Class {
        match self {
            EosError::Topic { problem: TopicProblem::Metadata(_), .. } => Class::Restart,
            EosError::Topic { .. }
            | EosError::NotCoPartitioned { .. }
            | EosError::Unauthorized { .. }
            | EosError::CorruptChangelog { .. }
            | EosError::Encode { .. }
            | EosError::InstanceConflict { .. }
            | EosError::Client { .. }
            | EosError::Thread { .. }
            | EosError::Setting(_)
            | EosError::Unwired(_) => Class::Fatal,
            EosError::RestoreTimeout { .. }
            | EosError::Fenced { .. }
            | EosError::Wedged { .. }
            | EosError::NoGroupMetadata => Class::Restart,
            EosError::AssignmentLost => Class::Abort,
            EosError::Kafka { source, .. } => kafka_class(source),
        }
    }

    /// Whether this is the producer being fenced (its transactional id taken).
    pub fn is_fenced(&self) -> bool {
        match self {
            EosError::Fenced { .. } => true,
            EosError::Kafka { source, .. } => source.rdkafka_error_code().is_some_and(fenced),
            _ => false,
        }
    }
}

fn kafka_class(e: &KafkaError) -> Class {
    if let KafkaError::Transaction(t) = e {
        if t.is_fatal() || fenced(t.code()) {
            return Class::Restart;
        }
        if t.txn_requires_abort() {
            return Class::Abort;
        }
        if t.is_retriable() {
            return Class::Retry;
        }
        return Class::Abort;
    }
    match e.rdkafka_error_code() {
        Some(c) if unauthorized(c) => Class::Fatal,
        Some(c) if fenced(c) => Class::Restart,
        Some(RDKafkaErrorCode::Fatal) => Class::Restart,
        // Producing into the open transaction failed (e.g. the queue or a broker): the
        // transaction cannot commit any more.
        _ => Class::Abort,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_cause() {
        let missing = EosError::Topic { topic: "demand.v1".into(), problem: TopicProblem::Missing };
        assert_eq!(missing.class(), Class::Fatal);
        assert_eq!(
            missing.to_string(),
            "topic demand.v1: does not exist (create it, e.g. with `nearfield topics`)"
        );
        let acl = EosError::kafka(
            "send offsets",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(matches!(acl, EosError::Unauthorized { .. }));
        assert_eq!(acl.class(), Class::Fatal);
        let fence = EosError::kafka(
            "commit",
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
        );
        assert!(fence.is_fenced());
        assert_eq!(fence.class(), Class::Restart);
        let queue = EosError::kafka(
            "send",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(queue.class(), Class::Abort);
        assert_eq!(
            EosError::RestoreTimeout {
                topic: "c".into(),
                partition: 1,
                timeout: Duration::from_secs(1)
            }
            .class(),
            Class::Restart
        );
    }
}
