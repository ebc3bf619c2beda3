//! Kafka connection settings shared by all stages.
//!
//! Any librdkafka property can be passed through `properties` (SASL and SSL included:
//! `security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, …). Stages
//! set the properties their guarantees depend on (acks, idempotence, isolation) after the
//! pass-through, so configuration cannot weaken them by accident; see each stage's
//! `kafka.rs`.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`. Default: `NEARFIELD_BROKERS`, else
    /// `127.0.0.1:9092`.
    pub brokers: String,
    /// librdkafka properties passed through as is.
    pub properties: BTreeMap<String, String>,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of the partitioned topics when nearfield creates them (`sales.v1`,
    /// `heartbeats.v1` and the changelogs share it, so they stay co-partitioned).
    pub partitions: i32,
    /// Replication factor of created topics; -1 takes the broker's default.
    pub replication: i32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: std::env::var("NEARFIELD_BROKERS")
                .ok()
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1:9092".to_string()),
            properties: BTreeMap::new(),
            topics: Topics::default(),
            partitions: 6,
            replication: -1,
        }
    }
}

/// Properties a stage owns; pass-through may not set them.
const RESERVED: &[&str] = &["bootstrap.servers"];

/// A pass-through property was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka.properties.{key}: {reason}")]
pub struct PropertyError {
    /// The property.
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

impl KafkaSettings {
    /// A client config with the brokers and every pass-through property, checked for
    /// syntax (librdkafka validates values when the client is created).
    pub fn client_config(&self) -> Result<ClientConfig, PropertyError> {
        let mut c = ClientConfig::new();
        self.apply(&mut c)?;
        Ok(c)
    }

    /// Sets the brokers and every pass-through property on `c`, over what it holds. Stages
    /// layer their own defaults before and their guarantees after this. (Never copy a
    /// config through `ClientConfig::config_map`: it replaces secrets such as
    /// `sasl.password` with a placeholder.)
    pub fn apply(&self, c: &mut ClientConfig) -> Result<(), PropertyError> {
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            if RESERVED.contains(&k.as_str()) {
                return Err(PropertyError {
                    key: k.clone(),
                    reason: "set it with kafka.brokers instead".into(),
                });
            }
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                return Err(PropertyError {
                    key: k.clone(),
                    reason: "not a librdkafka property name".into(),
                });
            }
            c.set(k, v);
        }
        Ok(())
    }
}

/// The prefix of the environment variables that set pass-through properties.
pub const PROPERTY_ENV_PREFIX: &str = "NEARFIELD_KAFKA_PROPERTY_";

/// The librdkafka property a `NEARFIELD_KAFKA_PROPERTY_<NAME>` variable sets (`_` for
/// `.`, any case: `SASL_PASSWORD` → `sasl.password`; property names hold dots, which
/// a variable's name cannot); `None` for any other variable.
pub fn property_of_env(var: &str) -> Option<String> {
    let name = var.strip_prefix(PROPERTY_ENV_PREFIX).filter(|n| !n.is_empty())?;
    Some(name.to_ascii_lowercase().replace('_', "."))
}

/// The `NEARFIELD_KAFKA_PROPERTY_<NAME>` variable that sets librdkafka property `name`
/// (the inverse of [`property_of_env`]: `sasl.password` → `…_SASL_PASSWORD`).
pub fn env_of_property(name: &str) -> String {
    format!("{PROPERTY_ENV_PREFIX}{}", name.replace('.', "_").to_ascii_uppercase())
}

/// The pass-through properties this process's environment sets
/// ([`property_of_env`]).
pub fn env_properties() -> BTreeMap<String, String> {
    std::env::vars().filter_map(|(k, v)| Some((property_of_env(&k)?, v))).collect()
}

/// Topic names (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub sales: String,
    pub heartbeats: String,
    pub dlq: String,
    pub late: String,
    pub demand: String,
    /// Per grid per closed window: how completely it reported (compacted).
    pub coverage: String,
    pub stores: String,
    pub catalog: String,
    /// The aggregator's state changelog (compacted, co-partitioned with `sales`).
    pub aggregator_changelog: String,
    /// The emitter's state changelog (compacted, co-partitioned with `demand`).
    pub emitter_changelog: String,
    /// Plan topics are `<plan_prefix><supplier_id><plan_suffix>`.
    pub plan_prefix: String,
    pub plan_suffix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            sales: "sales.v1".into(),
            heartbeats: "heartbeats.v1".into(),
            dlq: "sales.dlq.v1".into(),
            late: "sales.late.v1".into(),
            demand: "demand.v1".into(),
            coverage: "coverage.v1".into(),
            stores: "stores.v1".into(),
            catalog: "catalog.v1".into(),
            aggregator_changelog: "aggregator.changelog.v1".into(),
            emitter_changelog: "emitter.changelog.v1".into(),
            plan_prefix: "plan.".into(),
            plan_suffix: ".v1".into(),
        }
    }
}

impl Topics {
    /// The plan topic of a supplier.
    pub fn plan(&self, supplier_id: &str) -> String {
        format!("{}{supplier_id}{}", self.plan_prefix, self.plan_suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_variables_name_their_property() {
        assert_eq!(
            property_of_env("NEARFIELD_KAFKA_PROPERTY_SASL_PASSWORD").as_deref(),
            Some("sasl.password")
        );
        assert_eq!(
            property_of_env("NEARFIELD_KAFKA_PROPERTY_security_protocol").as_deref(),
            Some("security.protocol")
        );
        assert_eq!(property_of_env("NEARFIELD_KAFKA_PROPERTY_"), None);
        assert_eq!(env_of_property("sasl.password"), "NEARFIELD_KAFKA_PROPERTY_SASL_PASSWORD");
        for name in ["security.protocol", "ssl.ca.location", "linger.ms"] {
            assert_eq!(property_of_env(&env_of_property(name)).as_deref(), Some(name));
        }
        assert_eq!(property_of_env("NEARFIELD_BROKERS"), None);
    }

    #[test]
    fn pass_through_properties_reach_the_client_config() {
        let mut s = KafkaSettings { brokers: "b:1".into(), ..KafkaSettings::default() };
        s.properties.insert("security.protocol".into(), "SASL_SSL".into());
        s.properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        let c = s.client_config().expect("valid");
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn secrets_reach_a_layered_config_as_they_are() {
        let mut s = KafkaSettings { brokers: "b:1".into(), ..KafkaSettings::default() };
        s.properties.insert("sasl.password".into(), "s3cret".into());
        let mut c = ClientConfig::new();
        c.set("linger.ms", "5");
        s.apply(&mut c).expect("valid");
        c.set("acks", "all");
        // What a SCRAM handshake uses, not the placeholder `config_map` shows.
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("linger.ms"), Some("5"));
    }

    #[test]
    fn reserved_and_malformed_properties_are_refused_by_name() {
        let mut s = KafkaSettings::default();
        s.properties.insert("bootstrap.servers".into(), "x".into());
        let e = s.client_config().expect_err("reserved");
        assert_eq!(e.key, "bootstrap.servers");
        let mut s = KafkaSettings::default();
        s.properties.insert("acks all".into(), "x".into());
        assert!(
            s.client_config().expect_err("bad").to_string().contains("kafka.properties.acks all")
        );
    }

    #[test]
    fn plan_topic_per_supplier() {
        assert_eq!(Topics::default().plan("dairy-east"), "plan.dairy-east.v1");
    }
}

/// A topic nearfield needs, with its cleanup policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `delete` or `compact`.
    pub cleanup: &'static str,
    /// Further topic configs.
    pub configs: Vec<(&'static str, &'static str)>,
}

/// Topic configs of a state changelog: compaction that keeps up with a changelog whose
/// keys are replaced every flush (hour-long segments, cleaning once a tenth is dirty), and
/// room for the largest chunk record (`aggregator/src/changelog/chunk.rs`: ≤ 512 KiB).
pub const CHANGELOG_CONFIGS: [(&str, &str); 3] = [
    ("segment.ms", "3600000"),
    ("min.cleanable.dirty.ratio", "0.1"),
    ("max.message.bytes", "1048576"),
];

impl KafkaSettings {
    /// Every topic of SPEC §4 except the per-supplier plan topics (the emitter creates
    /// those as suppliers appear).
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        let t = &self.topics;
        let p = self.partitions;
        let spec = |name: &str, partitions, cleanup| TopicSpec {
            name: name.to_string(),
            partitions,
            cleanup,
            configs: Vec::new(),
        };
        let changelog = |name: &str| TopicSpec {
            configs: CHANGELOG_CONFIGS.to_vec(),
            ..spec(name, p, "compact")
        };
        vec![
            spec(&t.sales, p, "delete"),
            spec(&t.heartbeats, p, "delete"),
            spec(&t.dlq, p.min(3), "delete"),
            spec(&t.late, p, "delete"),
            spec(&t.demand, p, "compact"),
            spec(&t.coverage, p, "compact"),
            spec(&t.stores, 1, "compact"),
            spec(&t.catalog, 1, "compact"),
            changelog(&t.aggregator_changelog),
            changelog(&t.emitter_changelog),
        ]
    }

    /// Creates the given topics; ones that already exist, or that this principal may not
    /// create (ACLs), are left as they are. Returns the names created.
    pub async fn ensure_topics(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<String>, rdkafka::error::KafkaError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?
            .create()?;
        let new: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|s| {
                let t =
                    NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(self.replication))
                        .set("cleanup.policy", s.cleanup);
                s.configs.iter().fold(t, |t, (k, v)| t.set(k, v))
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
        let mut created = Vec::new();
        for r in admin.create_topics(new.iter(), &opts).await? {
            match r {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                // On a secured cluster a stage may not create what an operator provisions
                // (`nearfield topics` as admin): it goes on, and a topic that is missing
                // after all stops it where it is used, naming the topic.
                Err((
                    name,
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed,
                )) => {
                    tracing::debug!(
                        topic = name,
                        "not allowed to create; expecting it provisioned"
                    );
                }
                Err((name, code)) => {
                    return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic = name, error = %code, "cannot create topic");
                    });
                }
            }
        }
        Ok(created)
    }
}

/// The group the store-registry followers read `stores.v1` as.
pub const REGISTRY_FOLLOWER_GROUP: &str = "nearfield-registry-follower";
/// The group the catalog followers read `catalog.v1` as.
pub const CATALOG_FOLLOWER_GROUP: &str = "nearfield-catalog-follower";
/// The group the emitter's coverage follower reads `coverage.v1` as.
pub const COVERAGE_FOLLOWER_GROUP: &str = "nearfield-coverage-follower";
/// Every follower's group (they never commit; ACLs still name them).
pub const FOLLOWER_GROUPS: [&str; 3] =
    [REGISTRY_FOLLOWER_GROUP, CATALOG_FOLLOWER_GROUP, COVERAGE_FOLLOWER_GROUP];

/// A thread following a compacted topic, and the flag that stops it.
#[derive(Debug)]
pub struct Follower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Follower {
    /// Stops the thread and waits for it.
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = self.thread;
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

/// Follows a compacted topic (a registry: `stores.v1`, `catalog.v1`) from its beginning on
/// a dedicated thread until stopped, handing each record's key, value (`None` for a
/// tombstone) and offset to `apply`. Reads committed data only and never commits offsets:
/// every start reads the whole topic again, which compaction keeps small.
pub fn follow_compacted(
    settings: &KafkaSettings,
    topic: String,
    group: &str,
    mut apply: impl FnMut(&str, Option<&[u8]>, i64) + Send + 'static,
) -> rdkafka::error::KafkaResult<Follower> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let mut c = self_config(settings)?;
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = c.create()?;
    let name = format!("follow-{topic}");
    let thread = std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let stop = flag;
            let mut assigned = false;
            while !stop.load(Ordering::Relaxed) {
                if !assigned {
                    match consumer.fetch_metadata(Some(&topic), Duration::from_secs(3)) {
                        Ok(md) if md.topics().first().is_some_and(|t| t.error().is_none()) => {
                            let mut tpl = TopicPartitionList::new();
                            for p in md.topics()[0].partitions() {
                                let _ = tpl.add_partition_offset(&topic, p.id(), Offset::Beginning);
                            }
                            assigned = consumer.assign(&tpl).is_ok();
                            tracing::info!(topic, partitions = tpl.count(), "following topic");
                        }
                        _ => {
                            tracing::warn!(topic, "topic not available yet; retrying");
                            std::thread::sleep(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
                match consumer.poll(Duration::from_millis(250)) {
                    Some(Ok(m)) => {
                        let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                        apply(&key, m.payload(), m.offset());
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, topic, "follower consumer error"),
                    None => {}
                }
            }
        })
        .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
    Ok(Follower { stop, thread })
}

fn self_config(settings: &KafkaSettings) -> rdkafka::error::KafkaResult<ClientConfig> {
    settings.client_config().map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))
}

/// Kafka's default partitioner for a keyed record (murmur2 of the key, as the Java client
/// and librdkafka's `murmur2` partitioner compute it), so Java, Python and Rust producers
/// agree on where a key lives.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert!((0..6).contains(&partition_for_key(b"SKU-1", 6)));
    }
}
