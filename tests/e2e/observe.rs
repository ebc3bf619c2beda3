//! The alert rules on a real Prometheus (the Debian package `make test` installs): it
//! scrapes the running stages with `deploy/prometheus/rules.yml`; a stage is SIGKILLed and
//! Prometheus' own API shows `NearfieldStageDown` for that stage pending (then firing),
//! and for no other.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nearfield_testkit::{Kafka, Process, free_port, repo_path};

use crate::pipeline::{SERIAL, logs, setup, sigterm, spawn, wait_ready};

/// A Prometheus scraping `targets` (job → host:port) every second with the project's rules.
fn prometheus(dir: &Path, targets: &[(&str, u16)]) -> (Process, u16) {
    let port = free_port();
    let rules = repo_path("deploy/prometheus/rules.yml");
    let jobs: String = targets
        .iter()
        .map(|(job, p)| {
            format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{p}\"]\n"
            )
        })
        .collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            rules.display()
        ),
    )
    .expect("prometheus config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus (the Debian package; scripts/bootstrap.sh --test installs it)");
    (Process(child), port)
}

fn api(port: u16, path: &str) -> serde_json::Value {
    static RT: std::sync::LazyLock<tokio::runtime::Runtime> =
        std::sync::LazyLock::new(|| tokio::runtime::Runtime::new().expect("runtime"));
    let url = format!("http://127.0.0.1:{port}{path}");
    RT.block_on(async {
        let r = reqwest::get(&url).await.ok()?;
        r.json::<serde_json::Value>().await.ok()
    })
    .unwrap_or(serde_json::Value::Null)
}

/// The state of `NearfieldStageDown` per job, from Prometheus' alerts API.
fn stage_down(port: u16) -> Vec<(String, String)> {
    api(port, "/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == "NearfieldStageDown")
        .map(|a| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            (s(&a["labels"]["job"]), s(&a["state"]))
        })
        .collect()
}

#[test]
fn a_killed_stage_raises_its_alert_in_a_real_prometheus() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kafka = Kafka::shared();
    let p = setup(kafka);
    let status = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .args(["--config", &p.config.display().to_string(), "topics"])
        .env_remove("NEARFIELD_BROKERS")
        .stdout(Stdio::null())
        .status()
        .expect("topics");
    assert!(status.success());
    let mut stages: Vec<Process> =
        ["ingest", "aggregate", "emit"].iter().map(|s| spawn(&p, s, 0)).collect();
    for i in 0..3 {
        wait_ready(&p, i);
    }
    let targets =
        [("ingest", p.operator_port), ("aggregator", p.ports[1]), ("emitter", p.ports[2])];
    let (mut prom, port) = prometheus(p.dir.path(), &targets);
    let prom_log =
        || std::fs::read_to_string(p.dir.path().join("prometheus.log")).unwrap_or_default();
    // Every stage scraped and up, the rules loaded, nothing alerting.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = api(port, "/api/v1/query?query=up");
        let ones = up["data"]["result"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|s| s["value"][1] == "1").count());
        let groups = api(port, "/api/v1/rules")["data"]["groups"].as_array().map_or(0, Vec::len);
        if ones == 3 && groups > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "targets never up: {up}\n{}", prom_log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stage_down(port).is_empty(), "an alert with every stage up: {:?}", stage_down(port));

    // The aggregator dies.
    let mut aggregator = stages.remove(1);
    aggregator.0.kill().expect("SIGKILL");
    let _ = aggregator.0.wait();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    let state = loop {
        let down = stage_down(port);
        if let Some((_, state)) = down.iter().find(|(job, _)| job == "aggregator") {
            assert!(down.iter().all(|(job, _)| job == "aggregator"), "others alerting: {down:?}");
            break state.clone();
        }
        assert!(Instant::now() < deadline, "no alert for the killed aggregator\n{}", logs(&p));
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(state == "pending" || state == "firing", "{state}");
    eprintln!(
        "NearfieldStageDown{{job=\"aggregator\"}} {state} {:?} after the SIGKILL",
        killed.elapsed()
    );
    for s in &mut stages {
        sigterm(s);
    }
    let Process(child) = &mut prom;
    let _ = child.kill();
    let _ = child.wait();
}
