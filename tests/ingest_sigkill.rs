//! SIGKILL of the ingest process under load: every event that got a 2xx is on the topic
//! (counted with an independent consumer), and a restarted ingest serves again.

use nearfield_testkit::free_port;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::{Codec, SaleEvent};
use nearfield_simulator::SimulateConfig;
use nearfield_testkit::{Isolation, Kafka, Process, read_to_end};

const MASTER: &str = "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579";

fn spawn_ingest(config: &std::path::Path, log: &std::path::Path) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .args(["--config", config.to_str().expect("utf8"), "ingest"])
            .env_remove("NEARFIELD_BROKERS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn nearfield ingest"),
    )
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status().as_u16() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn simulation(
    port: u16,
    secs: f64,
    acked_log: &std::path::Path,
    stores: &std::path::Path,
) -> SimulateConfig {
    SimulateConfig {
        target: format!("http://127.0.0.1:{port}"),
        rate: 3_000.0,
        duration_s: secs,
        invalid_share: 0.0,
        offline_chance: 0.0,
        max_retries: 1,
        acked_log: Some(acked_log.to_path_buf()),
        stores_file: Some(stores.to_path_buf()),
        master_key: Some(MASTER.into()),
        h3_resolution: Some(8),
        ..SimulateConfig::default()
    }
}

fn acked_ids(path: &std::path::Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .expect("acked log")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["event_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect()
}

/// An ingest deployment for one test: its own topics, a config file, a free port.
struct Deployment {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
    sales: String,
    stores: std::path::PathBuf,
}

fn deployment(prefix: &str) -> Deployment {
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic(prefix);
    let (sales, hb, dlq, stores_topic) =
        (format!("sales-{id}"), format!("hb-{id}"), format!("dlq-{id}"), format!("stores-{id}"));
    kafka.create_topic(&sales, 3, &[]);
    kafka.create_topic(&hb, 3, &[]);
    kafka.create_topic(&dlq, 1, &[]);
    kafka.create_topic(&stores_topic, 1, &[("cleanup.policy", "compact")]);
    let dir = tempfile::tempdir().expect("tmp");
    let stores =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/stores.jsonl");
    let port = free_port();
    let config = dir.path().join("nearfield.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.topics]\nsales = \"{sales}\"\nheartbeats = \"{hb}\"\ndlq = \"{dlq}\"\nstores = \"{stores_topic}\"\n\
             [ingest]\nlisten = \"127.0.0.1:{port}\"\noperator_listen = \"127.0.0.1:0\"\nstores_file = \"{}\"\nmaster_key = \"{MASTER}\"\n",
            kafka.brokers(),
            stores.display()
        ),
    )
    .expect("config");
    Deployment { dir, config, port, sales, stores }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let kafka = Kafka::shared();
    let Deployment { dir, config, port, sales, stores } = deployment("kill");
    let mut child = spawn_ingest(&config, &dir.path().join("ingest-1.log"));
    wait_ready(port).await;
    let log1 = dir.path().join("acked-1.jsonl");
    let sim = tokio::spawn(nearfield_simulator::run(
        simulation(port, 6.0, &log1, &stores),
        CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    child.0.kill().expect("SIGKILL ingest");
    let _ = child.0.wait();
    let summary = sim.await.expect("join").expect("simulation ran");
    assert!(summary.acked > 1_000, "load was acknowledged before the kill: {summary:?}");
    assert!(summary.failed > 0, "requests failed after the kill: {summary:?}");

    // Restart: it serves again and its acknowledged events join the others.
    let mut child = spawn_ingest(&config, &dir.path().join("ingest-2.log"));
    wait_ready(port).await;
    let log2 = dir.path().join("acked-2.jsonl");
    let summary2 = nearfield_simulator::run(
        SimulateConfig { seed: 99, ..simulation(port, 1.5, &log2, &stores) },
        CancellationToken::new(),
    )
    .await
    .expect("second simulation");
    assert!(summary2.acked > 0 && summary2.failed == 0, "{summary2:?}");
    child.0.kill().expect("stop ingest");
    let _ = child.0.wait();

    let on_topic: HashSet<String> =
        read_to_end(kafka, &sales, Isolation::ReadCommitted, Duration::from_secs(60))
            .into_iter()
            .filter_map(|r| Codec::single_object().decode::<SaleEvent>(&r.value?).ok())
            .map(|e| e.event_id)
            .collect();
    let mut acked = acked_ids(&log1);
    acked.extend(acked_ids(&log2));
    let missing: Vec<&String> = acked.difference(&on_topic).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "SIGKILL under load: {} acknowledged events (before kill {}, after restart {}), all on the topic ({} records)",
        acked.len(),
        summary.acked,
        summary2.acked,
        on_topic.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_flushes_and_exits_cleanly() {
    let kafka = Kafka::shared();
    let Deployment { dir, config, port, sales, stores } = deployment("term");
    let mut child = spawn_ingest(&config, &dir.path().join("ingest.log"));
    wait_ready(port).await;
    let log = dir.path().join("acked.jsonl");
    let sim = tokio::spawn(nearfield_simulator::run(
        simulation(port, 4.0, &log, &stores),
        CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let pid = child.0.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(term.success());
    let status =
        tokio::task::spawn_blocking(move || child.0.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "ingest exits 0 after SIGTERM, got {status:?}");
    let summary = sim.await.expect("join").expect("simulation ran");
    assert!(summary.acked > 0, "{summary:?}");
    let on_topic: HashSet<String> =
        read_to_end(kafka, &sales, Isolation::ReadCommitted, Duration::from_secs(60))
            .into_iter()
            .filter_map(|r| Codec::single_object().decode::<SaleEvent>(&r.value?).ok())
            .map(|e| e.event_id)
            .collect();
    let acked = acked_ids(&log);
    let missing = acked.difference(&on_topic).count();
    assert_eq!(missing, 0, "every event acknowledged before or during the drain is on the topic");
    let text = std::fs::read_to_string(dir.path().join("ingest.log")).expect("log");
    assert!(
        text.contains("SIGTERM received") && text.contains("ingest stopped"),
        "graceful path taken:\n{text}"
    );
}
