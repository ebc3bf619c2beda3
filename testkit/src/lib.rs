//! Test support: a real Apache Kafka (KRaft) for integration tests.
//!
//! [`Kafka::shared`] gives every test in a process one single-node cluster: the one named
//! by `NEARFIELD_BROKERS` (as `make test` sets after `make kafka-up`), or else one this
//! process starts with `scripts/kafka.sh` and that a watchdog stops when the process
//! exits. [`Kafka::start`] starts a private cluster (e.g. three nodes for fault tests)
//! whose nodes can be stopped, killed and restarted; dropping it removes it.
//!
//! There is no fallback: if no broker can be had, the test fails loudly.
//!
//! # Layout
//! - [`Kafka`]: a running cluster, its nodes, and topic creation.
//! - [`read_to_end`]: everything a topic holds, read with a chosen isolation level.
//! - [`http`]: GET helpers for the stages' endpoints.
//! - [`bench`]: the process's CPU time and memory, for the benchmark tools.
//! - [`browser`]: headless Chromium for the live page's browser tests.
//! - [`deployment`]: a stage's instances as processes a test starts, kills and scales.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod bench;
pub mod browser;
pub mod deployment;
pub mod http;

pub use deployment::Deployment;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nearfield_common::kafka::{KafkaSettings, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A running Kafka cluster.
#[derive(Debug)]
pub struct Kafka {
    brokers: String,
    /// With `KAFKA_SECURITY=scram`: the admin's librdkafka properties.
    admin: Vec<(String, String)>,
    /// State dir of a cluster this process started (None: given by the environment).
    dir: Option<PathBuf>,
    nodes: usize,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A file of the repository (`deploy/examples/stores.jsonl`, …).
pub fn repo_path(p: &str) -> PathBuf {
    repo_root().join(p)
}

/// A loopback port free right now (for a stage a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn script() -> PathBuf {
    repo_root().join("scripts/kafka.sh")
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Kafka {
    /// The process-wide single-node cluster (see the module docs).
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Kafka> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("NEARFIELD_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => Kafka {
                brokers: brokers.trim().to_string(),
                admin: Vec::new(),
                dir: None,
                nodes: 1,
            },
            _ => {
                let mut k = Kafka::start(1);
                // Statics are never dropped: the watchdog started with the owner pid
                // removes this cluster when the test process exits.
                let dir = k.dir.take();
                std::mem::forget(dir);
                k
            }
        })
    }

    /// Starts a private cluster of `nodes` nodes (1 to 5). Three or more nodes run with
    /// replication 3 and `min.insync.replicas=2`. Panics with the broker log on failure.
    pub fn start(nodes: usize) -> Kafka {
        Kafka::start_with(nodes, "none")
    }

    /// Starts a private cluster with SASL/SCRAM and ACLs (`KAFKA_SECURITY=scram`); its
    /// [`Kafka::client_config`] authenticates as the admin (a super user).
    pub fn start_secured(nodes: usize) -> Kafka {
        Kafka::start_with(nodes, "scram")
    }

    fn start_with(nodes: usize, security: &str) -> Kafka {
        let dir = repo_root().join("target").join(format!(
            "kafka-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let out = Command::new(script())
            .arg("up")
            .arg(nodes.to_string())
            .env("NEARFIELD_KAFKA_DIR", &dir)
            .env("NEARFIELD_KAFKA_OWNER_PID", std::process::id().to_string())
            .env("KAFKA_SECURITY", security)
            .output()
            .expect("run scripts/kafka.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let brokers = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("NEARFIELD_BROKERS="))
            .next_back()
            .map(str::to_string);
        // After NEARFIELD_BROKERS=: NEARFIELD_KAFKA_PROPERTY_security_protocol=… lines.
        let admin = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| {
                Some((nearfield_common::kafka::property_of_env(k)?, v.to_string()))
            })
            .collect();
        match (out.status.success(), brokers) {
            (true, Some(brokers)) => Kafka { brokers, admin, dir: Some(dir), nodes },
            _ => panic!(
                "could not start a {nodes}-node Kafka cluster:\n{}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Bootstrap servers (`host:port,...`).
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// `scripts/kafka.sh ARGS` on this cluster; what it printed.
    fn node_cmd(&self, args: &[&str]) -> String {
        let dir =
            self.dir.as_ref().expect("only clusters started by this process have nodes to control");
        let out = Command::new(script())
            .args(args)
            .env("NEARFIELD_KAFKA_DIR", dir)
            .output()
            .expect("run scripts/kafka.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kafka.sh {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Kafka's ACL tool on this cluster as its admin (`scripts/kafka.sh acls ARGS`):
    /// e.g. one right taken from a principal while its stage runs. Returns what it printed.
    pub fn acls(&self, args: &[&str]) -> String {
        self.node_cmd(&[&["acls"][..], args].concat())
    }

    /// Stops node `i` (1-based) with SIGTERM, waiting until it exited.
    pub fn stop_node(&self, i: usize) {
        self.node_cmd(&["stop-node", &i.to_string()]);
    }

    /// Kills node `i` (1-based) with SIGKILL.
    pub fn kill_node(&self, i: usize) {
        self.node_cmd(&["stop-node", &i.to_string(), "--kill"]);
    }

    /// Starts node `i` again with its data. Returns once it accepts connections.
    pub fn start_node(&self, i: usize) {
        self.node_cmd(&["start-node", &i.to_string()]);
        let port =
            self.brokers.split(',').nth(i - 1).and_then(|b| b.rsplit(':').next()).expect("port");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port")))
            .is_err()
        {
            assert!(Instant::now() < deadline, "node {i} did not come back");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A client config pointing at this cluster (as its admin on a secured one).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.admin {
            c.set(k, v);
        }
        c
    }

    /// The admin's librdkafka properties on a secured cluster (empty otherwise).
    pub fn admin_properties(&self) -> &[(String, String)] {
        &self.admin
    }

    /// A topic name no other test uses: `<prefix>-<uuid>`.
    pub fn unique_topic(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    /// Creates `topic` with `partitions` partitions, the cluster's replication, and
    /// extra topic configs. Waits until its metadata is visible.
    pub fn create_topic(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let rf = if self.nodes >= 3 { 3 } else { self.nodes as i32 };
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        // A thread of its own, so this works from sync tests and from inside a runtime.
        let results = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                rt.block_on(admin.create_topics([&new], &opts)).expect("create_topics")
            })
            .join()
            .expect("admin thread")
        });
        for r in results {
            if let Err((t, e)) = r {
                panic!("create topic {t}: {e}");
            }
        }
        let consumer: BaseConsumer = self.client_config().create().expect("consumer");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
                && md.topics().first().is_some_and(|t| {
                    t.error().is_none() && t.partitions().len() == partitions as usize
                })
            {
                return;
            }
            assert!(Instant::now() < deadline, "topic {topic} not visible");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Kafka {
    /// An emitter's topics, each named `<name>-<id>` (`id` unique, returned) and created:
    /// the catalog and the dead-letter topic with one partition, coverage, demand and the
    /// emitter's changelog with `partitions` (all compacted but the dead-letter topic);
    /// plan topics are `plan-<id>.<supplier>`. With settings that name them.
    pub fn emitter_topics(&self, label: &str, partitions: i32) -> (String, KafkaSettings) {
        let id = Kafka::unique_topic(label);
        let t = |n: &str| format!("{n}-{id}");
        let topics = Topics {
            dlq: t("dlq"),
            demand: t("demand"),
            catalog: t("catalog"),
            coverage: t("coverage"),
            emitter_changelog: t("emchangelog"),
            plan_prefix: format!("plan-{id}."),
            ..Topics::default()
        };
        let compact: &[(&str, &str)] = &[("cleanup.policy", "compact")];
        self.create_topic(&topics.catalog, 1, compact);
        for topic in [&topics.coverage, &topics.demand, &topics.emitter_changelog] {
            self.create_topic(topic, partitions, compact);
        }
        self.create_topic(&topics.dlq, 1, &[]);
        let settings = KafkaSettings {
            brokers: self.brokers().to_string(),
            topics,
            partitions,
            ..KafkaSettings::default()
        };
        (id, settings)
    }

    /// Deletes `topic` and waits until the metadata no longer lists it.
    pub fn delete_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                for r in rt.block_on(admin.delete_topics(&[topic], &opts)).expect("delete_topics") {
                    if let Err((t, e)) = r {
                        panic!("delete topic {t}: {e}");
                    }
                }
            })
            .join()
            .expect("admin thread")
        });
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script()).arg("down").env("NEARFIELD_KAFKA_DIR", dir).output();
        }
    }
}

/// Isolation level for [`read_to_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (what downstream consumers see).
    ReadCommitted,
    /// Everything written, aborted transactions included.
    ReadUncommitted,
}

/// A record as read back: partition, offset, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Record headers (name, value as UTF-8, lossy).
    pub headers: Vec<(String, String)>,
    /// Its timestamp (ms), when it has one.
    pub timestamp: Option<i64>,
}

/// Reads every record of `topic` from the beginning up to the end offsets taken when the
/// call starts (the last stable offsets under read_committed), as the cluster's admin on
/// a secured one. Panics after `timeout`.
pub fn read_to_end(
    kafka: &Kafka,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
) -> Vec<Record> {
    read_with(kafka.client_config(), topic, isolation, timeout)
}

/// A consumer context that does not log the end-of-partition events a reader to the end
/// asks for (librdkafka reports them as errors); other errors go to stderr.
struct AtEndQuiet;
impl rdkafka::ClientContext for AtEndQuiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            eprintln!("testkit reader: {error}: {reason}");
        }
    }
}
impl rdkafka::consumer::ConsumerContext for AtEndQuiet {}

/// [`read_to_end`] on any cluster, named by its bootstrap servers (benchmark tools).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
) -> Vec<Record> {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", brokers);
    read_with(base, topic, isolation, timeout)
}

/// [`read_to_end`] with the client settings of `base` (brokers, credentials).
fn read_with(
    mut base: ClientConfig,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
) -> Vec<Record> {
    let level = match isolation {
        Isolation::ReadCommitted => "read_committed",
        Isolation::ReadUncommitted => "read_uncommitted",
    };
    let consumer: BaseConsumer<AtEndQuiet> = base
        .set("group.id", format!("testkit-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", level)
        .set("enable.partition.eof", "true")
        .create_with_context(AtEndQuiet)
        .expect("consumer");
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut open: std::collections::HashSet<i32> = parts.into_iter().collect();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "read_to_end({topic}) timed out; partitions {open:?} not at end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                timestamp: m.timestamp().to_millis(),
                headers: m
                    .headers()
                    .map(|h| {
                        use rdkafka::message::Headers;
                        h.iter()
                            .map(|x| {
                                let v = x.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (x.key.to_string(), v.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            // A node of the cluster may be down on purpose (fault tests): librdkafka
            // reports it and fails over; the deadline above bounds the wait.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// A child process (a stage under test), killed when dropped, so a failing test leaves
/// nothing running.
#[derive(Debug)]
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
