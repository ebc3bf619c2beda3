//! The operator commands of the `nearfield` binary that need no broker.

use std::process::Command;

fn nearfield(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .args(args)
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
