//! The live page shows data as text, never as markup (security issue: stored XSS through a
//! SKU). A fake aggregator and emitter serve SKUs, a supplier and a reason written as
//! HTML and script; headless Chromium renders the real page against them. The DOM must
//! hold the strings as text only (no element or handler they describe), the page must
//! report no script error and log nothing, and every asset carries the
//! Content-Security-Policy.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use nearfield_common::shutdown::CancellationToken;
use nearfield_live::LiveConfig;
use nearfield_testkit::browser;
use serde_json::json;

const HOSTILE: &str = "<img src=x onerror=\"document.body.dataset.pwned='1'\">";
const SCRIPT: &str = "</td><script>document.body.dataset.pwned='2'</script>";

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_shown_as_text() {
    let now = nearfield_common::time::now_ms();
    let cells = json!({
        "window_start": now - 300_000, "window_end": now, "window_ms": 300_000,
        "cells": [{"grid_id": "8831aa5551fffff", "net_units": 5, "event_count": 2}],
        "top_skus": [{"sku": HOSTILE, "net_units": 5}, {"sku": SCRIPT, "net_units": 1}],
    });
    let plans = json!({"signals": [{
        "signal_id": "s1", "supplier_id": SCRIPT, "sku": HOSTILE, "reason": HOSTILE,
        "firmness": SCRIPT, "recommended_units": 12, "contributing_stores": 5,
        "region": HOSTILE, "horizon_start": now, "forecast_units": 1.0,
        "forecast_low": 0.0, "forecast_high": 2.0,
    }]});
    let stage = |body: serde_json::Value, path: &'static str| {
        Router::new()
            .route(path, get(move || async move { axum::Json(body) }))
            .route("/metrics", get(|| async { "" }))
    };
    let aggregator = serve(stage(cells, "/v1/cells")).await;
    let emitter = serve(stage(plans, "/v1/plans")).await;
    let ingest = serve(Router::new().route("/metrics", get(|| async { "" }))).await;
    let shutdown = CancellationToken::new();
    let cfg = LiveConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ingest_operator_url: ingest,
        aggregator_url: aggregator,
        emitter_url: emitter,
        refresh_ms: 500,
        ..LiveConfig::default()
    };
    let live = nearfield_live::start(cfg, shutdown.clone()).await.expect("live page");
    let url = format!("http://{}/", live.local_addr);
    // Every asset carries the policy.
    for path in ["", "app.js", "vendor/d3.min.js"] {
        let r = reqwest::get(format!("{url}{path}")).await.expect("asset");
        let csp = r.headers().get("content-security-policy").and_then(|v| v.to_str().ok());
        assert_eq!(csp, Some(nearfield_live::CSP), "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}api/state")).await.map(|r| r.status().as_u16()).ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "live page state never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::task::spawn_blocking(move || browser::headless(&url, 5000, &["--dump-dom"]))
        .await
        .expect("chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout);
    let body = browser::body_tag(&dom);
    assert!(!body.contains("pwned"), "a string ran as code: {body}");
    assert!(!body.contains("data-error"), "script error on the page: {body}");
    assert!(body.contains("data-signals=\"1\""), "the signal was drawn: {body}");
    // The strings are there, as text: escaped in the serialised DOM, no element of theirs.
    assert!(dom.contains("&lt;img src=x onerror="), "the SKU is shown as text");
    assert!(dom.contains("&lt;/td&gt;&lt;script&gt;"), "the supplier is shown as text");
    assert!(!dom.contains("<img src=\"x\"") && !dom.contains("<img src=x"), "no element made");
    let console = browser::console(&out);
    assert!(console.is_empty(), "the page logged to the console: {console:#?}");
    shutdown.cancel();
    let _ = live.done.await;
}
