//! The operator commands of the `nearfield` binary that need no broker.

use std::process::Command;

fn nearfield(args: &[&str]) -> (bool, String, String) {
    nearfield_with(args, &[])
}

/// `nearfield args` with the environment variables `envs` set.
fn nearfield_with(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NEARFIELD_BROKERS")
        .output()
        .expect("run nearfield");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn device_key_matches_the_key_ingest_derives() {
    let (ok, out, err) = nearfield(&[
        "--config",
        "deploy/examples/nearfield.toml",
        "device-key",
        "--store",
        "store-000001",
        "--device",
        "pos-1",
    ]);
    assert!(ok, "{err}");
    let master = nearfield_ingest::auth::MasterKey::from_hex(
        "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579",
    )
    .expect("example key");
    assert_eq!(out.trim(), master.device_key("store-000001", "pos-1", 1).to_hex());
}

#[test]
fn schemas_and_decode_serve_the_contract() {
    let (ok, out, err) = nearfield(&["schemas"]);
    assert!(ok, "{err}");
    assert!(out.contains("SaleEvent") && out.contains("494b14c9eb9bd2b1"), "{out}");
    let (ok, out, err) =
        nearfield(&["decode", "--record", "SaleEvent", "schemas/testdata/SaleEvent/sale.avro"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["event_id"], "01JDQ4T7ZK3W9V6M2X8B5N4C1A");
    let (ok, _, err) =
        nearfield(&["decode", "--record", "PlanSignal", "schemas/testdata/SaleEvent/sale.avro"]);
    assert!(!ok && err.contains("fingerprint"), "{err}");
}

/// `nearfield forecast`, exactly the contract's interface: the history CSV in, one row per
/// series per origin out, a column per quantile asked; bad input named, exit non-zero.
#[test]
fn forecast_backtests_a_history_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("history.csv");
    let t0 = 1_764_547_200_000i64;
    let mut csv = String::from("series,ts_ms,units\n");
    for h in 0..24 * 10 {
        let units = if (7..22).contains(&(h % 24)) { 1 + h % 3 } else { 0 };
        csv.push_str(&format!("shop-1|SKU-A,{},{units}\n", t0 + h * 3_600_000));
        csv.push_str(&format!("shop-2|SKU-A,{},{}\n", t0 + h * 3_600_000, units / 2));
    }
    std::fs::write(&path, csv).expect("write");
    let p = path.to_str().expect("path");
    let args = [
        "forecast",
        "--history",
        p,
        "--lead-hours",
        "3",
        "--horizon-hours",
        "24",
        "--every-hours",
        "12",
        "--min-history-hours",
        "168",
        "--quantiles",
        "0.1,0.5,0.9",
    ];
    let (ok, out, err) = nearfield(&args);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "series,origin_ms,horizon_start_ms,horizon_end_ms,q0.1,q0.5,q0.9");
    // Origins at hours 168, 180, 192, …, 240 for each series: 7 each.
    assert_eq!(lines.len(), 1 + 2 * 7, "{out}");
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[0], "shop-1|SKU-A");
    let origin = t0 + 168 * 3_600_000;
    assert_eq!(
        first[1..4],
        [
            origin.to_string(),
            (origin + 3 * 3_600_000).to_string(),
            (origin + 27 * 3_600_000).to_string()
        ]
    );
    let q: Vec<f64> = first[4..].iter().map(|v| v.parse().expect("number")).collect();
    assert!(q[0] <= q[1] && q[1] <= q[2] && q[1] > 5.0, "{q:?}");
    let mut bad = args;
    bad[12] = "0.5,1.5";
    let (ok, _, err) = nearfield(&bad);
    assert!(!ok && err.contains("--quantiles: each level must be within (0, 1)"), "{err}");
}

/// The environment of a running `nearfield` (reading a history from a pipe that stays open
/// until the environment was read), with `env` added to what it was started with.
fn running_environment(env: &[(&str, &str)]) -> String {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .args(["forecast", "--history", "/dev/stdin", "--lead-hours", "1"])
        .args(["--horizon-hours", "1", "--every-hours", "1", "--min-history-hours", "1"])
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run nearfield");
    let path = format!("/proc/{}/environ", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Re-executing replaces the environment under the same pid (`spawn` returns once the
    // program it started runs, with the environment given here): wait until it has the
    // setting, added by the re-execution or set by the operator.
    let mut environ = String::new();
    while std::time::Instant::now() < deadline {
        environ =
            std::fs::read(&path).map(|b| String::from_utf8_lossy(&b).into()).unwrap_or_default();
        if environ.contains("MIMALLOC_ARENA_EAGER_COMMIT=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(child.stdin.take());
    let _ = child.wait();
    environ
}

#[test]
fn the_allocator_commits_on_demand_unless_the_operator_says_otherwise() {
    let env = running_environment(&[]);
    assert!(env.split('\0').any(|v| v == "MIMALLOC_ARENA_EAGER_COMMIT=0"), "{env:?}");
    let env = running_environment(&[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]);
    assert!(env.split('\0').any(|v| v == "MIMALLOC_ARENA_EAGER_COMMIT=1"), "{env:?}");
}

/// `nearfield repartition` takes its topics from flags over `[repartition]`, and names the
/// rule a setting breaks before it connects to anything.
#[test]
fn repartition_refuses_settings_that_break_a_rule() {
    let (ok, _, err) = nearfield(&["repartition", "--to", "sales.v2"]);
    assert!(!ok && err.contains("repartition.from: must name the topic to copy"), "{err}");
    let (ok, _, err) = nearfield(&["repartition", "--from", "sales.v1", "--to", "sales.v1"]);
    assert!(!ok && err.contains("repartition.to: must not be the topic copied"), "{err}");
    // Flags over the environment over the file: `--from` wins over the variable (else
    // the topics would differ), and the variable's commit interval is read.
    let from_env = [("NEARFIELD_REPARTITION__FROM", "sales.v0")];
    let (ok, _, err) =
        nearfield_with(&["repartition", "--from", "sales.v1", "--to", "sales.v1"], &from_env);
    assert!(!ok && err.contains("repartition.to: must not be"), "{err}");
    let interval_env = [("NEARFIELD_REPARTITION__COMMIT_INTERVAL_MS", "5")];
    let (ok, _, err) =
        nearfield_with(&["repartition", "--from", "sales.v1", "--to", "sales.v2"], &interval_env);
    assert!(!ok && err.contains("repartition.commit_interval_ms: must be within"), "{err}");
    // The copy's principal is granted for the copy the same settings name, checked alike,
    // before any admin credential is asked for.
    let (ok, _, err) = nearfield(&["access", "grant-repartition", "--to", "sales.v2"]);
    assert!(!ok && err.contains("repartition.from: must name the topic to copy"), "{err}");
    let grant = ["access", "grant-repartition", "--from", "sales.v1", "--to", "sales.v1"];
    let (ok, _, err) = nearfield(&grant);
    assert!(!ok && err.contains("repartition.to: must not be the topic copied"), "{err}");
    let (ok, _, err) = nearfield(&["access", "revoke-repartition"]);
    assert!(!ok && err.contains("repartition.from: must name the topic to copy"), "{err}");
    // Named right, it asks for an admin's SASL settings.
    let grant = ["access", "grant-repartition", "--from", "sales.v1", "--to", "sales.v2"];
    let (ok, _, err) = nearfield(&grant);
    assert!(!ok && err.contains("needs the admin's SASL settings"), "{err}");
}

/// `access revoke-stage --retired FILE` reads FILE alone: the shell's `NEARFIELD_*`
/// variables are the current deployment's, so one renaming a topic for it makes the two
/// differ; a missing file is named as the flag's.
#[test]
fn a_retired_configuration_is_read_without_the_environment() {
    let example = "deploy/examples/nearfield.toml";
    let retire = ["--config", example, "access", "revoke-stage", "emit", "--retired", example];
    let (ok, _, err) = nearfield(&retire);
    assert!(!ok && err.contains("names the same topics and groups as --config"), "{err}");
    let renamed = [("NEARFIELD_KAFKA__TOPICS__DEMAND", "demand.v2")];
    let (ok, _, err) = nearfield_with(&retire, &renamed);
    assert!(!ok && err.contains("needs the admin's SASL settings"), "{err}");
    let missing = ["access", "revoke-stage", "emit", "--retired", "no-such.toml"];
    let (ok, _, err) = nearfield(&missing);
    assert!(!ok && err.contains("--retired no-such.toml") && err.contains("no such file"), "{err}");
    assert!(!err.contains("--config"), "{err}");
}
