//! The pipeline on a secured cluster (SASL/SCRAM, the StandardAuthorizer, no ACL → no
//! access), every stage as its own principal with only the ACLs `nearfield access
//! grant-stage` gives it, and two suppliers granted with `nearfield access grant-supplier`:
//!
//! - the simulator's sales reach supplier A's plan topic through ingest, aggregator and
//!   emitter, each running with its own credentials;
//! - supplier A reads its own plans as its own group, and is refused supplier B's topic,
//!   `stores.v1` and `sales.v1`;
//! - the ingest principal cannot write `stores.v1` (a leaked device-facing credential
//!   cannot re-activate a store); the operator principal can;
//! - no credentials, or a wrong password, get nothing; a revoked supplier gets nothing.

use nearfield_testkit::{free_port, repo_path};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_testkit::http::get_blocking;
use nearfield_testkit::{Isolation, Kafka, Process, Record, read_to_end};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

const SUPPLIER_A: &str = "bright-dairy";
const SUPPLIER_B: &str = "master-kong";

/// `nearfield --config … <args>` with `env` (librdkafka's warnings logged): its stdout
/// and stderr, or a panic with stderr.
fn nearfield_said(config: &Path, env: &[(String, String)], args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("NEARFIELD_BROKERS")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .output()
        .expect("run nearfield");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nearfield {args:?}: {stderr}");
    (String::from_utf8(out.stdout).expect("utf-8"), stderr)
}

/// `nearfield --config … <args>` with `env`; stdout, or a panic with stderr.
fn nearfield(config: &Path, env: &[(String, String)], args: &[&str]) -> String {
    nearfield_said(config, env, args).0
}

/// librdkafka properties as `NEARFIELD_KAFKA_PROPERTY_*` variables (brokers come from the
/// config file).
fn as_env(props: &[(String, String)]) -> Vec<(String, String)> {
    props
        .iter()
        .filter(|(k, _)| k != "bootstrap.servers" && k != "group.id")
        .map(|(k, v)| (nearfield_common::kafka::env_of_property(k), v.clone()))
        .collect()
}

/// Parses `key=value` lines.
fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config_of(props: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// The error a topic's metadata answers `props` with (`None`: it may see it).
fn topic_error(
    props: &[(String, String)],
    topic: &str,
) -> Result<Option<RDKafkaErrorCode>, KafkaError> {
    let c: BaseConsumer = config_of(props).create().expect("consumer");
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md.topics().first().and_then(|t| t.error()).map(RDKafkaErrorCode::from))
}

/// Produces one tombstone to `topic` as `props`: the broker's answer.
fn produce(props: &[(String, String)], topic: &str) -> Result<(), KafkaError> {
    let mut c = config_of(props);
    c.remove("group.id");
    c.set("message.timeout.ms", "10000");
    let producer: FutureProducer = c.create().expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key("acl-probe");
    rt.block_on(producer.send(record, Duration::from_secs(10))).map(|_| ()).map_err(|(e, _)| e)
}

fn refused(r: Result<(), KafkaError>) -> bool {
    matches!(
        r.as_ref().err().and_then(KafkaError::rdkafka_error_code),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// Reads records of `topic` as `props` (its group) until one arrives or `timeout`.
fn first_record(props: &[(String, String)], topic: &str, timeout: Duration) -> Option<Vec<u8>> {
    let mut c = config_of(props);
    c.set("auto.offset.reset", "earliest").set("isolation.level", "read_committed");
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => return Some(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => eprintln!("supplier consumer: {e}"),
            None => {}
        }
    }
    None
}

/// Waits up to 15 s for `cond` (credentials and ACLs reach the broker through its
/// metadata log, a moment after the admin call returned).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `nearfield --config CONFIG ARGS` with `env`, its log `<name>.log` in `dir`.
fn spawn(
    dir: &Path,
    config: &Path,
    name: &str,
    args: &[&str],
    env: &[(String, String)],
) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("NEARFIELD_BROKERS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            // A stage's error is its last line, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log"))
            .spawn()
            .expect("spawn nearfield"),
    )
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for stage in ["ingest", "aggregate", "emit", "simulate", "repartition", "aggregate-v2"] {
        let text = std::fs::read_to_string(dir.join(format!("{stage}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("INFO")).collect();
        out.push_str(&format!(
            "--- {stage}\n{}\n",
            lines[lines.len().saturating_sub(20)..].join("\n")
        ));
    }
    out
}

fn wait_ready(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ok = get_blocking(port, "/readyz").is_some_and(|(s, _)| s.contains(" 200 "));
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "a stage on :{port} never ready:\n{}", logs(dir));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The grid ids a query of `sku` answers with on the aggregator at `port`.
fn grids_of(port: u16, sku: &str) -> Vec<String> {
    let Some((status, body)) = get_blocking(port, &format!("/v1/demand?sku={sku}&limit=1000"))
    else {
        return Vec::new();
    };
    assert!(status.contains(" 200 "), "{status} {body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut grids: Vec<String> = page["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["grid_id"].as_str().map(str::to_string))
        .collect();
    grids.sort();
    grids
}

/// Waits up to `within` for `process` (its log `<name>.log` in `dir`) to stop, and checks
/// that it failed saying `message`: a stage refused a right stops, it does not run on.
fn stops_saying(process: &mut Process, dir: &Path, name: &str, within: Duration, message: &str) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{name} ran on without saying {message:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let errors = || said.lines().filter(|l| !l.contains("INFO")).collect::<Vec<_>>().join("\n");
    assert!(!status.success(), "{name} stopped as if all was well:\n{}", errors());
    assert!(said.contains(message), "{name} did not say {message:?}:\n{}", errors());
}

/// `nearfield replay --late` runs as the aggregate principal (docs/operations.md), its
/// readers as a group that principal is granted: a JSON summary, no refusal logged.
fn late_replay(config: &Path, aggregate: &[(String, String)]) {
    let (out, said) = nearfield_said(config, &as_env(aggregate), &["replay", "--late"]);
    let summary: serde_json::Value = serde_json::from_str(&out).expect("a JSON summary");
    assert!(summary["applied"].is_u64(), "{summary}");
    assert!(!said.contains("AuthorizationFailed"), "{said}");
}

/// A right taken from a running stage: the aggregate principal loses its write on
/// `demand.v1` while the v1 aggregator runs. The transaction of the next window it closes
/// fails, and the stage stops naming the topic and the right, instead of restarting into
/// the same failure (the rights check at the restart after a transaction in an invalid
/// state, or after a record refused by the broker, whichever librdkafka met). The right given
/// back, the aggregator starts again (returned, running).
fn revoked_mid_run(
    kafka: &Kafka,
    dir: &Path,
    config: &Path,
    mut aggregator: Process,
    aggregate: &[(String, String)],
    port: u16,
) -> Process {
    let right = [
        "--allow-principal",
        "User:nearfield-aggregate",
        "--operation",
        "Write",
        "--topic",
        "demand.v1",
    ];
    let writes = || kafka.acls(&["--list", "--topic", "demand.v1"]).contains("operation=WRITE");
    kafka.acls(&[&["--remove", "--force"][..], &right].concat());
    assert!(!writes(), "the write is still there");
    // Fresh sales (another seed: the first run's event ids again would all be
    // duplicates): windows close and the aggregator writes demand.v1 again.
    let sim_args = ["simulate", "--rate", "300", "--duration", "10"];
    let seed = [("NEARFIELD_SIMULATE__SEED".to_string(), "8".to_string())];
    let mut sim = spawn(dir, config, "simulate", &sim_args, &seed);
    let lacks = "topic demand.v1: this principal may see it but not write it";
    stops_saying(&mut aggregator, dir, "aggregate", Duration::from_secs(120), lacks);
    let _ = sim.0.wait();
    kafka.acls(&[&["--add"][..], &right].concat());
    eventually("the write given back is not listed", writes);
    let again = spawn(dir, config, "aggregate", &["aggregate"], &as_env(aggregate));
    wait_ready(port, dir);
    again
}

/// A stage's role, its principal's properties and a topic of the v2 names it needs.
type Principal<'a> = (&'a str, &'a [(String, String)], &'a str);

/// Growing the partition count on the secured cluster (docs/SCALING.md § Growing): a
/// `v2.toml` with 5 partitions and new topic names and groups; the v1 stage principals
/// given the v2 names' ACLs with their passwords kept (the v1 stages go on); the
/// copy of `sales.v1` as a principal of its own that reads that topic and writes
/// `sales.v2`, nothing else; every sale copied once, into the partition its key hashes
/// to; a v2 aggregator, with the v1 credentials, answers for the same grids as v1.
fn grow(
    kafka: &Kafka,
    dir: &Path,
    config: &Path,
    admin_env: &[(String, String)],
    aggregate: &[(String, String)],
    others: &[Principal<'_>],
    v1_port: u16,
) {
    let v1 = std::fs::read_to_string(config).expect("config");
    let renamed = ["sales", "heartbeats", "late", "demand", "coverage"]
        .map(|t| format!("{t} = \"{t}.v2\"\n"))
        .concat();
    let v2_text = v1
        .replace(
            "partitions = 3\n",
            &format!(
                "partitions = 5\n[kafka.topics]\n{renamed}aggregator_changelog = \
                 \"agg.v2\"\nemitter_changelog = \"emit.v2\"\n"
            ),
        )
        .replace("[aggregate]\n", "[aggregate]\ngroup_id = \"nearfield-aggregator-v2\"\n")
        .replace("[emit]\n", "[emit]\ngroup_id = \"nearfield-emitter-v2\"\n");
    assert_ne!(v1, v2_text);
    let v2 = dir.join("v2.toml");
    std::fs::write(&v2, v2_text).expect("v2.toml");
    nearfield(&v2, admin_env, &["topics"]);

    // The running aggregate principal gains the v2 names, its password kept.
    assert_eq!(
        topic_error(aggregate, "sales.v2").ok().flatten(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "the aggregate principal saw sales.v2 before its ACLs"
    );
    let printed =
        nearfield(&v2, admin_env, &["access", "grant-stage", "aggregate", "--keep-password"]);
    assert_eq!(printed, "", "--keep-password printed properties");
    eventually("the aggregate principal never saw sales.v2", || {
        topic_error(aggregate, "sales.v2").is_ok_and(|e| e.is_none())
    });
    // … and so do the other stages' (ingest writes sales.v2, the emitter reads demand.v2).
    for (role, props, topic) in others {
        assert_eq!(
            topic_error(props, topic).ok().flatten(),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "{role} saw {topic} before its ACLs"
        );
        let printed =
            nearfield(&v2, admin_env, &["access", "grant-stage", role, "--keep-password"]);
        assert_eq!(printed, "", "--keep-password printed properties");
        eventually("a stage principal never saw its v2 topic", || {
            topic_error(props, topic).is_ok_and(|e| e.is_none())
        });
    }

    // The copy, as its own principal.
    let copy_args = ["--from", "sales.v1", "--to", "sales.v2"];
    let grant = [&["access", "grant-repartition"][..], &copy_args].concat();
    let copy = parse_properties(&nearfield(&v2, admin_env, &grant));
    let user = copy.iter().find(|(k, _)| k == "sasl.username").map(|(_, v)| v.as_str());
    assert_eq!(user, Some("nearfield-repartition-sales.v1"));
    let copy_port = free_port();
    let listen = format!("127.0.0.1:{copy_port}");
    let args = [&["repartition"][..], &copy_args, &["--listen", &listen]].concat();
    let mut copier = spawn(dir, &v2, "repartition", &args, &as_env(&copy));
    wait_ready(copy_port, dir);
    let t = Duration::from_secs(60);
    let source = read_to_end(kafka, "sales.v1", Isolation::ReadCommitted, t);
    assert!(!source.is_empty(), "no sales to copy");
    let deadline = Instant::now() + Duration::from_secs(120);
    let target = loop {
        let target = read_to_end(kafka, "sales.v2", Isolation::ReadCommitted, t);
        if target.len() >= source.len() || Instant::now() > deadline {
            break target;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let pairs = |rs: &[Record]| {
        let mut p: Vec<_> = rs.iter().map(|r| (r.key.clone(), r.value.clone())).collect();
        p.sort();
        p
    };
    assert!(pairs(&source) == pairs(&target), "sales.v2 is not sales.v1 once:\n{}", logs(dir));
    for r in &target {
        let key = r.key.as_deref().unwrap_or_default();
        assert_eq!(r.partition, partition_for_key(key, 5), "a sale in another partition");
    }
    // … and nothing else; run the wrong way round, it stops at once, naming the topic and
    // the right it lacks.
    let backwards = ["repartition", "--from", "sales.v2", "--to", "sales.v1"];
    let mut wrong = spawn(
        dir,
        &v2,
        "backwards",
        &[&backwards[..], &["--listen", "127.0.0.1:0"]].concat(),
        &as_env(&copy),
    );
    let lacks = "topic sales.v2: this principal may see it but not read it";
    stops_saying(&mut wrong, dir, "backwards", Duration::from_secs(60), lacks);
    assert_eq!(
        topic_error(&copy, "demand.v1").ok().flatten(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    for topic in ["sales.v1", "stores.v1", "demand.v2"] {
        assert!(refused(produce(&copy, topic)), "the copy wrote {topic}");
    }

    // A v2 aggregator with the v1 aggregate credentials builds its state from the copy.
    let v2_port = free_port();
    let listen = format!("127.0.0.1:{v2_port}");
    let mut v2_aggregate =
        spawn(dir, &v2, "aggregate-v2", &["aggregate", "--listen", &listen], &as_env(aggregate));
    wait_ready(v2_port, dir);
    let v1_grids = grids_of(v1_port, "SKU-00001");
    assert!(!v1_grids.is_empty(), "v1 has no demand of SKU-00001");
    let deadline = Instant::now() + Duration::from_secs(60);
    while grids_of(v2_port, "SKU-00001") != v1_grids {
        assert!(Instant::now() < deadline, "v2 never held v1's grids:\n{}", logs(dir));
        std::thread::sleep(Duration::from_millis(500));
    }

    for Process(child) in [&mut copier, &mut v2_aggregate] {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = child.wait().expect("wait");
        assert!(status.success(), "the copy or v2 failed:\n{}", logs(dir));
    }
    nearfield(&v2, admin_env, &["access", "revoke-repartition", "--from", "sales.v1"]);
    eventually("a revoked copy still gets metadata", || topic_error(&copy, "sales.v1").is_err());
}

#[test]
fn the_pipeline_runs_on_a_secured_cluster_and_suppliers_see_only_their_own_plans() {
    let kafka = Kafka::start_secured(1);
    let admin: Vec<(String, String)> = kafka.admin_properties().to_vec();
    assert!(admin.iter().any(|(k, v)| k == "sasl.username" && v == "admin"), "{admin:?}");
    let admin_env = as_env(&admin);

    let dir = tempfile::tempdir().expect("tmp");
    let ports = [free_port(), free_port(), free_port()];
    let config = dir.path().join("nearfield.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
partitions = 3
[ingest]
listen = "127.0.0.1:{pi}"
operator_listen = "127.0.0.1:0"
stores_file = "{stores}"
master_key = "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579"
[aggregate]
listen = "127.0.0.1:{pa}"
instance_id = "secured"
windows_ms = [5000]
out_of_orderness_ms = 1000
grace_ms = 500
allowed_lateness_ms = 3600000
max_close_delay_ms = 3000
commit_interval_ms = 200
[emit]
listen = "127.0.0.1:{pe}"
instance_id = "secured"
catalog_file = "{catalog}"
bucket_ms = 5000
settle_ms = 1000
horizon_ms = 60000
schedule_ms = 10000
history_buckets = 120
season_buckets = 12
privacy_k = 3
idle_advance_ms = 0
commit_interval_ms = 200
[simulate]
target = "http://127.0.0.1:{pi}"
skus = 400
"#,
            brokers = kafka.brokers(),
            pi = ports[0],
            pa = ports[1],
            pe = ports[2],
            stores = repo_path("deploy/examples/stores.jsonl").display(),
            catalog = repo_path("deploy/examples/catalog.jsonl").display(),
        ),
    )
    .expect("config");

    // The operator provisions topics and principals as the admin.
    nearfield(&config, &admin_env, &["topics"]);
    let grant = |args: &[&str]| parse_properties(&nearfield(&config, &admin_env, args));
    let ingest = grant(&["access", "grant-stage", "ingest"]);
    let aggregate = grant(&["access", "grant-stage", "aggregate"]);
    let emit = grant(&["access", "grant-stage", "emit"]);
    let operator = grant(&["access", "grant-stage", "operator"]);
    let supplier_a = grant(&["access", "grant-supplier", SUPPLIER_A]);
    let supplier_b = grant(&["access", "grant-supplier", SUPPLIER_B]);
    for (k, want) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "supplier-bright-dairy"),
    ] {
        assert!(supplier_a.iter().any(|(pk, v)| pk == k && v == want), "{k} in {supplier_a:?}");
    }
    assert!(supplier_a.iter().any(|(k, v)| k == "sasl.password" && v.len() >= 32));

    // Each stage as its own principal.
    let mut stages = vec![
        spawn(dir.path(), &config, "ingest", &["ingest"], &as_env(&ingest)),
        spawn(dir.path(), &config, "aggregate", &["aggregate"], &as_env(&aggregate)),
        spawn(dir.path(), &config, "emit", &["emit"], &as_env(&emit)),
    ];
    for port in ports {
        wait_ready(port, dir.path());
    }
    let mut sim = Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .arg("--config")
            .arg(&config)
            .args(["simulate", "--rate", "300", "--duration", "25"])
            .env_remove("NEARFIELD_BROKERS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("simulate.log")).expect("log"))
            .spawn()
            .expect("spawn simulate"),
    );

    // Supplier A reads its own plans, as its own group.
    let plan_a = "plan.bright-dairy.v1";
    let plan_b = "plan.master-kong.v1";
    let got = first_record(&supplier_a, plan_a, Duration::from_secs(150));
    let _ = sim.0.wait();
    assert!(got.is_some(), "no plan reached supplier A:\n{}", logs(dir.path()));
    assert!(first_record(&supplier_b, plan_b, Duration::from_secs(60)).is_some(), "supplier B");

    // The query plane reads the group's assignment as the aggregate principal (a query
    // across every partition, answered with complete coverage) and the plans as the emit one.
    for (port, path) in [(ports[1], "/v1/demand?sku=SKU-00001"), (ports[2], "/v1/plans?limit=5")] {
        let (status, body) = get_blocking(port, path).expect("an answer");
        assert!(status.contains(" 200 "), "{path}: {status} {body}\n{}", logs(dir.path()));
        assert!(body.contains("\"complete\":true"), "{path}: {body}");
    }

    // … and nothing else.
    assert_eq!(
        topic_error(&supplier_a, plan_b).ok().flatten(),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    for topic in ["stores.v1", "sales.v1", plan_b] {
        assert!(refused(produce(&supplier_a, topic)), "supplier A wrote {topic}");
    }
    assert!(refused(produce(&supplier_a, plan_a)), "supplier A wrote its own plan topic");
    // Only the operator writes the registries.
    assert!(refused(produce(&ingest, "stores.v1")), "ingest wrote stores.v1");
    assert!(refused(produce(&aggregate, "stores.v1")), "aggregate wrote stores.v1");
    assert!(refused(produce(&emit, "catalog.v1")), "emit wrote catalog.v1");
    produce(&operator, "stores.v1").expect("the operator writes stores.v1");

    // No credentials, a wrong password: nothing.
    let plain = vec![("bootstrap.servers".to_string(), kafka.brokers().to_string())];
    assert!(topic_error(&plain, plan_a).is_err(), "an unauthenticated client got metadata");
    let wrong: Vec<(String, String)> = supplier_a
        .iter()
        .map(|(k, v)| (k.clone(), if k == "sasl.password" { "wrong".into() } else { v.clone() }))
        .collect();
    assert!(topic_error(&wrong, plan_a).is_err(), "a wrong password got metadata");

    // Revoked: nothing either, and re-granting re-keys (the old password stops working).
    nearfield(&config, &admin_env, &["access", "revoke-supplier", SUPPLIER_A]);
    eventually("a revoked supplier still gets metadata", || {
        topic_error(&supplier_a, plan_a).is_err()
    });
    let old_b = supplier_b.clone();
    let new_b = grant(&["access", "grant-supplier", SUPPLIER_B]);
    eventually("an old password still works", || topic_error(&old_b, plan_b).is_err());
    eventually("the new password does not", || {
        topic_error(&new_b, plan_b).is_ok_and(|e| e.is_none())
    });

    let others = [("ingest", &ingest[..], "sales.v2"), ("emit", &emit[..], "demand.v2")];
    grow(&kafka, dir.path(), &config, &admin_env, &aggregate, &others, ports[1]);
    late_replay(&config, &aggregate);
    let aggregator = stages.remove(1);
    let again = revoked_mid_run(&kafka, dir.path(), &config, aggregator, &aggregate, ports[1]);
    stages.push(again);

    for Process(child) in &mut stages {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for Process(child) in &mut stages {
        let status = child.wait().expect("wait");
        assert!(status.success(), "a stage failed on the secured cluster:\n{}", logs(dir.path()));
    }
    // Least privilege without noise: no client of a stage asked for what it may not do
    // (the restore and side-input readers once used groups of their own, and librdkafka
    // logged `GroupAuthorizationFailed` at every start).
    for stage in ["ingest", "aggregate", "emit", "aggregate-v2", "repartition"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{stage}.log"))).expect("log");
        assert!(!log.contains("AuthorizationFailed"), "{stage}:\n{log}");
    }
    let principals = [("ingest", &ingest[..]), ("aggregate", &aggregate[..]), ("emit", &emit[..])];
    retire_v1(dir.path(), &config, &admin_env, &principals);
}

/// The v1 stages stopped, the v1 names' rights are taken back from the stages'
/// principals (`revoke-stage ROLE --retired v1.toml`): no v1 topic of theirs any more,
/// every v2 one and the shared registries still.
fn retire_v1(
    dir: &Path,
    v1: &Path,
    admin_env: &[(String, String)],
    who: &[(&str, &[(String, String)])],
) {
    let v2 = dir.join("v2.toml");
    let retired = v1.to_str().expect("utf8");
    let same = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .arg("--config")
        .arg(&v2)
        .args(["access", "revoke-stage", "aggregate", "--retired"])
        .arg(&v2)
        .env_remove("NEARFIELD_BROKERS")
        .envs(admin_env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run nearfield");
    let said = String::from_utf8_lossy(&same.stderr);
    assert!(!same.status.success(), "retired the names in use: {said}");
    assert!(said.contains("names the same topics and groups as --config"), "{said}");
    for (role, props) in who {
        let kept =
            nearfield(&v2, admin_env, &["access", "revoke-stage", role, "--retired", retired]);
        assert_eq!(kept, "", "--retired printed something");
        let (gone, still) = match *role {
            "ingest" => ("sales.v1", ["sales.v2", "stores.v1"]),
            "aggregate" => ("demand.v1", ["sales.v2", "stores.v1"]),
            _ => ("demand.v1", ["demand.v2", "catalog.v1"]),
        };
        eventually("a retired topic still visible", || {
            topic_error(props, gone).ok().flatten()
                == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        });
        for topic in still {
            assert_eq!(topic_error(props, topic).ok().flatten(), None, "{role} lost {topic}");
        }
    }
}
