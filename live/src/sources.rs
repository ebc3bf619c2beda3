//! Reads the stages for the live page and builds the document it draws.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use h3o::CellIndex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::LiveError;
use crate::config::LiveConfig;

/// Query of `/api/state`: at most one of them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    pub sku: Option<String>,
    pub category: Option<String>,
}

/// Counters at one moment, for rates.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    accepted: f64,
    windows: f64,
    signals: f64,
}

/// The stages, the catalog's categories, and the last sample.
#[derive(Debug)]
pub struct Sources {
    cfg: LiveConfig,
    http: reqwest::Client,
    /// category → its SKUs.
    categories: BTreeMap<String, Vec<String>>,
    /// Samples of the last ten seconds, oldest first.
    last: Mutex<std::collections::VecDeque<Sample>>,
    /// The `health` part of the page and the stages that did not answer, as of the last
    /// sample (the page reads it; it never scrapes the stages itself).
    health: Mutex<(Value, Vec<String>)>,
}

/// The sum of every sample of `name` (any labels) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The hexagon of a cell as a closed ring of [lng, lat], wound clockwise (as d3-geo
/// expects of a polygon's exterior).
pub fn boundary(cell: &str) -> Option<Vec<[f64; 2]>> {
    let c: CellIndex = cell.parse().ok()?;
    let mut ring: Vec<[f64; 2]> = c.boundary().iter().map(|ll| [ll.lng(), ll.lat()]).collect();
    ring.reverse();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    Some(ring)
}

impl Sources {
    /// Loads the catalog's categories (if a file is configured).
    pub fn new(cfg: &LiveConfig) -> Result<Self, LiveError> {
        let mut categories: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(path) = &cfg.catalog_file {
            let cat = nearfield_emitter::catalog::Catalog::default();
            cat.load_file(path)?;
            for item in cat.items() {
                categories.entry(item.category.clone()).or_default().push(item.sku.clone());
            }
            for skus in categories.values_mut() {
                skus.sort();
            }
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
        Ok(Sources {
            cfg: cfg.clone(),
            http,
            categories,
            last: Mutex::new(std::collections::VecDeque::new()),
            health: Mutex::new((Value::Null, Vec::new())),
        })
    }

    /// Categories (with their SKU counts) and the refresh interval.
    pub fn options(&self) -> Value {
        json!({
            "categories": self.categories.iter().map(|(c, s)| json!({"name": c, "skus": s.len()})).collect::<Vec<_>>(),
            "refresh_ms": self.cfg.refresh_ms,
        })
    }

    async fn get(&self, url: String) -> Result<String, String> {
        let mut req = self.http.get(&url);
        if let Some(t) = &self.cfg.operator_token {
            req = req.header(reqwest::header::AUTHORIZATION, t.bearer());
        }
        let r = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url}: HTTP {}", r.status()));
        }
        r.text().await.map_err(|e| format!("{url}: {e}"))
    }

    /// Samples the stages' counters (run every `refresh_ms` in the background), so rates
    /// do not depend on how many pages are open.
    pub async fn sample(&self) {
        let (i, a, e) = tokio::join!(
            self.get(format!("{}/metrics", self.cfg.ingest_operator_url)),
            self.get(format!("{}/metrics", self.cfg.aggregator_url)),
            self.get(format!("{}/metrics", self.cfg.emitter_url)),
        );
        let v = |r: &Result<String, String>, name: &str| {
            r.as_deref().ok().and_then(|t| metric_sum(t, name)).unwrap_or(0.0)
        };
        let now = Instant::now();
        let cur = Sample {
            at: now,
            accepted: v(&i, "nearfield_ingest_events_accepted_total"),
            windows: v(&a, "nearfield_aggregator_windows_emitted_total"),
            signals: v(&e, "nearfield_emitter_signals_total"),
        };
        // Rates over the last 10 s; windows close in bursts (a whole minute's at once), so
        // they are counted over the last minute instead. The demo's summary reads these
        // same figures.
        let (prev, minute_ago) = {
            let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            last.push_back(cur);
            while last.front().is_some_and(|s| now.duration_since(s.at) > Duration::from_secs(60)) {
                last.pop_front();
            }
            let recent =
                last.iter().find(|s| now.duration_since(s.at) <= Duration::from_secs(10)).copied();
            (recent, last.front().copied())
        };
        let rates =
            prev.filter(|p| now.duration_since(p.at) > Duration::from_millis(200)).map(|p| {
                let dt = now.duration_since(p.at).as_secs_f64();
                (
                    ((cur.accepted - p.accepted) / dt).max(0.0),
                    ((cur.signals - p.signals) / dt).max(0.0),
                )
            });
        let windows_last_minute = minute_ago.map(|p| (cur.windows - p.windows).max(0.0));
        let m = |r: &Result<String, String>, name: &str| {
            r.as_deref().ok().and_then(|t| metric_sum(t, name))
        };
        let health = json!({
            "events_per_s": rates.map(|r| r.0),
            "events_accepted": m(&i, "nearfield_ingest_events_accepted_total"),
            "windows_emitted_total": m(&a, "nearfield_aggregator_windows_emitted_total"),
            "windows_per_min": windows_last_minute,
            "signals_per_s": rates.map(|r| r.1),
            "signals_total": m(&e, "nearfield_emitter_signals_total"),
            "aggregator_lag": m(&a, "nearfield_aggregator_consumer_lag"),
            "aggregator_watermark_delay_s": m(&a, "nearfield_aggregator_watermark_delay_seconds"),
            "emitter_lag": m(&e, "nearfield_emitter_consumer_lag"),
            "emitter_watermark_delay_s": m(&e, "nearfield_emitter_watermark_delay_seconds"),
            "stages_up": {"ingest": i.is_ok(), "aggregator": a.is_ok(), "emitter": e.is_ok()},
        });
        let errors = [i, a, e].into_iter().filter_map(Result::err).collect();
        *self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (health, errors);
    }

    /// The interval between samples.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.cfg.refresh_ms)
    }

    /// The whole page's data; an invalid query names the field.
    pub async fn state(&self, q: &StateQuery) -> Result<Value, (&'static str, String)> {
        let skus: Option<Vec<String>> = match (&q.sku, &q.category) {
            (Some(_), Some(_)) => {
                return Err(("sku", "give sku or category, not both".into()));
            }
            (Some(s), None) if s.is_empty() || s.len() > 64 => {
                return Err(("sku", "must be 1..=64 characters".into()));
            }
            (Some(s), None) => Some(vec![s.clone()]),
            (None, Some(c)) => match self.categories.get(c) {
                Some(skus) => Some(skus.clone()),
                None => return Err(("category", format!("unknown category {c:?}"))),
            },
            (None, None) => None,
        };
        // Parameters are percent-encoded: a SKU is the user's text.
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(w) = self.cfg.window_ms {
            params.push(("window_ms", w.to_string()));
        }
        if let Some(s) = &skus {
            params.push(("skus", s.join(",")));
        }
        let cells_url = reqwest::Url::parse_with_params(
            &format!("{}/v1/cells", self.cfg.aggregator_url),
            &params,
        )
        .map(String::from)
        .map_err(|e| ("aggregator_url", e.to_string()))?;
        let (cells, plans) = tokio::join!(
            self.get(cells_url),
            self.get(format!("{}/v1/plans?limit=40", self.cfg.emitter_url)),
        );
        let (health, mut errors) =
            self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut parsed = |r: Result<String, String>| -> Value {
            match r.and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(e);
                    Value::Null
                }
            }
        };
        let mut cells = parsed(cells);
        let plans = parsed(plans);
        if let Some(list) = cells.get_mut("cells").and_then(Value::as_array_mut) {
            for c in list {
                let ring = c["grid_id"].as_str().and_then(boundary);
                c["boundary"] = json!(ring);
            }
        }
        Ok(json!({
            "filter": {"sku": q.sku, "category": q.category},
            "window_start": cells.get("window_start"),
            "window_end": cells.get("window_end"),
            "window_ms": cells.get("window_ms"),
            "cells": cells.get("cells").cloned().unwrap_or(json!([])),
            "top_skus": cells.get("top_skus").cloned().unwrap_or(json!([])),
            "signals": plans.get("signals").cloned().unwrap_or(json!([])),
            "health": health,
            "errors": errors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_add_every_labelled_sample() {
        let text =
            "# HELP x\nnf_total{a=\"1\"} 2\nnf_total{a=\"2\"} 3.5\nnf_total_other 9\nnf_g 4\n";
        assert_eq!(metric_sum(text, "nf_total"), Some(5.5));
        assert_eq!(metric_sum(text, "nf_g"), Some(4.0));
        assert_eq!(metric_sum(text, "absent"), None);
    }

    #[test]
    fn a_boundary_is_a_closed_clockwise_hexagon() {
        let ring = boundary("8830e1d8b9fffff").expect("cell");
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.first(), ring.last());
        // Shoelace: negative area = clockwise in (lng, lat).
        let area: f64 = ring.windows(2).map(|w| w[0][0] * w[1][1] - w[1][0] * w[0][1]).sum();
        assert!(area < 0.0, "{area}");
        assert!(boundary("nope").is_none());
    }
}
