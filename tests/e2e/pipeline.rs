//! The end-to-end deployment: the three stages (and the live page) as `nearfield`
//! processes over unique topics on the shared broker, on free loopback ports, with the
//! example city's registry and catalog.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nearfield_testkit::http::get_blocking as http_get;
use nearfield_testkit::{Kafka, Process, free_port, repo_path};

pub const PARTITIONS: i32 = 3;
pub const WINDOW: i64 = 5_000;
pub const K: i32 = 3;

/// The end-to-end runs share the machine with nothing else of theirs.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// ingest, aggregator, emitter, live page.
    pub ports: [u16; 4],
    /// ingest's operator port (its metrics).
    pub operator_port: u16,
    pub sales: String,
    pub late: String,
    pub demand: String,
    pub plan_prefix: String,
}

pub const STAGES: [&str; 3] = ["ingest", "aggregate", "emit"];

pub fn setup(kafka: &Kafka) -> Pipeline {
    let id = Kafka::unique_topic("e2e");
    let t = |n: &str| format!("{n}-{id}");
    let compact: &[(&str, &str)] = &[("cleanup.policy", "compact")];
    let names = [
        ("sales", PARTITIONS, false),
        ("hb", PARTITIONS, false),
        ("dlq", 1, false),
        ("late", PARTITIONS, false),
        ("demand", PARTITIONS, true),
        ("stores", 1, true),
        ("catalog", 1, true),
        ("aggchangelog", PARTITIONS, true),
        ("emchangelog", PARTITIONS, true),
    ];
    for (n, p, c) in names {
        kafka.create_topic(&t(n), p, if c { compact } else { &[] });
    }
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let operator_port = free_port();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("nearfield.toml");
    let plan_prefix = format!("plan-{id}.");
    let stores = repo_path("deploy/examples/stores.jsonl");
    let catalog = repo_path("deploy/examples/catalog.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
partitions = {PARTITIONS}
[kafka.topics]
sales = "{sales}"
heartbeats = "{hb}"
dlq = "{dlq}"
late = "{late}"
demand = "{demand}"
stores = "{stores_t}"
catalog = "{catalog_t}"
aggregator_changelog = "{aggcl}"
emitter_changelog = "{emcl}"
plan_prefix = "{plan_prefix}"
[ingest]
listen = "127.0.0.1:{pi}"
operator_listen = "127.0.0.1:{po}"
stores_file = "{stores}"
follow_stores_topic = false
master_key = "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579"
[ingest.limits]
# The replay test backfills 3 h of history into a fresh deployment, past the 10 s
# windows' horizon (docs/lateness.md): allowed explicitly, as an operator would.
max_event_age_ms = 86400000
[aggregate]
listen = "127.0.0.1:{pa}"
group_id = "agg-{id}"
instance_id = "e2e"
windows_ms = [{WINDOW}]
out_of_orderness_ms = 1000
grace_ms = 500
allowed_lateness_ms = 3600000
max_close_delay_ms = 3000
commit_interval_ms = 200
follow_stores_topic = false
[emit]
listen = "127.0.0.1:{pe}"
group_id = "emit-{id}"
instance_id = "e2e"
catalog_file = "{catalog}"
follow_catalog_topic = false
# The signals are compared with the reference decisions on demand.v1 alone; completeness
# from coverage.v1 is tested in emitter/tests/emit.rs (it depends on when the follower
# read a bucket's coverage, which this test does not control).
follow_coverage_topic = false
bucket_ms = {WINDOW}
settle_ms = 1000
horizon_ms = 60000
schedule_ms = 20000
history_buckets = 120
season_buckets = 12
privacy_k = {K}
revision_retention_ms = 3600000
idle_advance_ms = 0
commit_interval_ms = 200
[live]
listen = "127.0.0.1:{pl}"
ingest_operator_url = "http://127.0.0.1:{po}"
aggregator_url = "http://127.0.0.1:{pa}"
emitter_url = "http://127.0.0.1:{pe}"
refresh_ms = 1000
[simulate]
target = "http://127.0.0.1:{pi}"
skus = 400
"#,
            brokers = kafka.brokers(),
            sales = t("sales"),
            hb = t("hb"),
            dlq = t("dlq"),
            late = t("late"),
            demand = t("demand"),
            stores_t = t("stores"),
            catalog_t = t("catalog"),
            aggcl = t("aggchangelog"),
            emcl = t("emchangelog"),
            stores = stores.display(),
            catalog = catalog.display(),
            pi = ports[0],
            pa = ports[1],
            pe = ports[2],
            pl = ports[3],
            po = operator_port,
        ),
    )
    .expect("config");
    Pipeline {
        dir,
        config,
        ports,
        operator_port,
        sales: t("sales"),
        late: t("late"),
        demand: t("demand"),
        plan_prefix,
    }
}

pub fn spawn(p: &Pipeline, stage: &str, n: usize) -> Process {
    let log = p.dir.path().join(format!("{stage}-{n}.log"));
    let args = ["--config".to_string(), p.config.display().to_string(), stage.to_string()];
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .args(&args)
            .env_remove("NEARFIELD_BROKERS")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn nearfield"),
    )
}

pub fn wait_ready(p: &Pipeline, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !http_get(p.ports[i], "/readyz").is_some_and(|(s, _)| s.starts_with("HTTP/1.1 200")) {
        let name = STAGES.get(i).copied().unwrap_or("live");
        assert!(Instant::now() < deadline, "{name} never ready:\n{}", logs(p));
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn logs(p: &Pipeline) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(p.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            // Warnings and errors, and the INFO lines of partitions moving.
            let moving = ["rebalance", "restore", "assign", "revoke", "fenced", "restart"];
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("INFO") || moving.iter().any(|m| l.contains(m)))
                .collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("--- {name}\n{}\n", tail.join("\n")));
        }
    }
    out
}

pub fn sigterm(Process(child): &mut Process) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a stage did not stop within 40 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
