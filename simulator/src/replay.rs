//! `nearfield replay FILE`: backfills historical sales from a CSV file through ingest, as
//! the stores' own devices would have sent them (signed with their keys), at a chosen
//! speed-up of event time, with a progress bar.
//!
//! The CSV has a header row naming its columns, in any order:
//! `event_id`, `store_id`, `sku`, `quantity`, `unit_price_minor`, `occurred_at` (UTC
//! milliseconds), and optionally `kind` (SALE, RETURN or PREORDER; default SALE),
//! `currency` (default the simulator's), `device_id` (default the store's first device).
//! Rows are sent in file order — sort them by `occurred_at` — in batches per device; with
//! `--speedup S` a row is sent `(occurred_at − first occurred_at) / S` after the start
//! (0: as fast as ingest takes them). A row that cannot be read is reported with its line
//! and column and skipped; what ingest refuses is counted by rule in the summary.
//!
//! Replay into a deployment before device traffic starts (the aggregator's windows then
//! close by event time as history streams through), and raise
//! `ingest.limits.max_event_age_ms` to cover the history for the backfill.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearfield_common::shutdown::CancellationToken;

use crate::client::Request;
use crate::demand::{Device, EventJson, Truth};
use crate::report::{Stats, Summary};
use crate::{SimulateConfig, SimulateError, config};

/// A row could not be read: the message names the line, the column and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {column}: {rule}")]
pub struct RowError {
    pub line: usize,
    pub column: &'static str,
    pub rule: String,
}

/// One CSV row, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event_id: String,
    pub store_id: String,
    pub device_id: Option<String>,
    pub sku: String,
    pub kind: &'static str,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub currency: Option<String>,
    pub occurred_at: i64,
}

const REQUIRED: [&str; 6] =
    ["event_id", "store_id", "sku", "quantity", "unit_price_minor", "occurred_at"];

/// Column positions from the header row.
#[derive(Debug, Clone)]
pub struct Columns(HashMap<String, usize>);

impl Columns {
    /// Reads the header; names a missing column.
    pub fn from_header(header: &csv::StringRecord) -> Result<Self, RowError> {
        let map: HashMap<String, usize> =
            header.iter().enumerate().map(|(i, h)| (h.trim().to_ascii_lowercase(), i)).collect();
        for c in REQUIRED {
            if !map.contains_key(c) {
                return Err(RowError {
                    line: 1,
                    column: c,
                    rule: "required column missing".into(),
                });
            }
        }
        Ok(Columns(map))
    }

    /// Checks one row.
    pub fn row(&self, line: usize, rec: &csv::StringRecord) -> Result<Row, RowError> {
        let get = |c: &'static str| self.0.get(c).and_then(|i| rec.get(*i)).map(str::trim);
        let text = |c: &'static str| -> Result<String, RowError> {
            match get(c) {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(RowError { line, column: c, rule: "must not be empty".into() }),
            }
        };
        let int = |c: &'static str| -> Result<i64, RowError> {
            text(c)?.parse::<i64>().map_err(|_| RowError {
                line,
                column: c,
                rule: "must be an integer".into(),
            })
        };
        let kind = match get("kind").map(str::to_ascii_uppercase).as_deref() {
            None | Some("") | Some("SALE") => "SALE",
            Some("RETURN") => "RETURN",
            Some("PREORDER") => "PREORDER",
            Some(_) => {
                return Err(RowError {
                    line,
                    column: "kind",
                    rule: "must be SALE, RETURN or PREORDER".into(),
                });
            }
        };
        let optional = |c: &'static str| get(c).filter(|v| !v.is_empty()).map(str::to_string);
        Ok(Row {
            event_id: text("event_id")?,
            store_id: text("store_id")?,
            device_id: optional("device_id"),
            sku: text("sku")?,
            kind,
            quantity: int("quantity")?,
            unit_price_minor: int("unit_price_minor")?,
            currency: optional("currency"),
            occurred_at: int("occurred_at")?,
        })
    }
}

/// Replays `file` through ingest; returns the summary (rows read, acked, rejected by
/// rule, unreadable rows under `csv.<column>`).
pub async fn run(
    config: SimulateConfig,
    file: &Path,
    speedup: f64,
    batch: usize,
    shutdown: CancellationToken,
) -> Result<Summary, SimulateError> {
    if !(speedup >= 0.0 && speedup.is_finite()) {
        return Err(
            config::ConfigError { setting: "speedup", rule: "must be a number >= 0" }.into()
        );
    }
    let city = crate::load_city(&config)?;
    let mut devices: HashMap<(String, String), Device> = HashMap::new();
    let mut first_device: HashMap<String, Device> = HashMap::new();
    for d in &city.devices {
        let mut d = d.clone();
        d.skew_ms = 0;
        first_device.entry(d.store_id.clone()).or_insert_with(|| d.clone());
        devices.insert((d.store_id.clone(), d.device_id.clone()), d);
    }
    let total = count_rows(file)?;
    let (stats, client, permits) = crate::devices_client(&config)?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(file)
        .map_err(|e| SimulateError::Stores(format!("{}: {e}", file.display())))?;
    let header = reader
        .headers()
        .map_err(|e| SimulateError::Stores(format!("{}: {e}", file.display())))?
        .clone();
    let columns = Columns::from_header(&header)
        .map_err(|e| SimulateError::Stores(format!("{}: {e}", file.display())))?;
    let start = Instant::now();
    let mut first_t: Option<i64> = None;
    let mut pending: HashMap<(String, String), Vec<(EventJson, Truth)>> = HashMap::new();
    let mut read = 0u64;
    let mut last_progress = Instant::now();
    let mut last_t = 0i64;
    let mut unreadable: Vec<String> = Vec::new();
    let flush = |pending: &mut HashMap<(String, String), Vec<(EventJson, Truth)>>,
                 tasks: &mut tokio::task::JoinSet<()>| {
        let mut reqs = Vec::new();
        for ((store, device), events) in pending.drain() {
            if let Some(d) = devices.get(&(store, device)) {
                reqs.push(Request::events(d, events, true));
            }
        }
        for req in reqs {
            let (client, permits) = (Arc::clone(&client), Arc::clone(&permits));
            tasks.spawn(async move {
                if let Ok(p) = permits.acquire_owned().await {
                    client.send(req, false).await;
                    drop(p);
                }
            });
        }
    };
    for (i, rec) in reader.records().enumerate() {
        if shutdown.is_cancelled() {
            break;
        }
        let line = i + 2;
        read += 1;
        let row = rec
            .map_err(|e| RowError { line, column: "row", rule: e.to_string() })
            .and_then(|r| columns.row(line, &r));
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                if let Ok(mut s) = stats.lock() {
                    s.unreadable(e.column);
                }
                if unreadable.len() < 20 {
                    unreadable.push(e.to_string());
                }
                continue;
            }
        };
        let device = match &row.device_id {
            Some(d) => devices.get(&(row.store_id.clone(), d.clone())).cloned(),
            None => first_device.get(&row.store_id).cloned(),
        };
        let Some(device) = device else {
            if let Ok(mut s) = stats.lock() {
                s.unreadable("store_id");
            }
            if unreadable.len() < 20 {
                unreadable.push(format!(
                    "line {line}: store_id/device_id: {} has no such active device in the registry",
                    row.store_id
                ));
            }
            continue;
        };
        // Pace by event time.
        let t0 = *first_t.get_or_insert(row.occurred_at);
        last_t = row.occurred_at;
        if speedup > 0.0 {
            let due =
                Duration::from_secs_f64(((row.occurred_at - t0).max(0) as f64 / 1000.0) / speedup);
            if start.elapsed() < due {
                flush(&mut pending, &mut tasks);
                tokio::select! {
                    () = tokio::time::sleep(due.saturating_sub(start.elapsed())) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        let key = (device.store_id.clone(), device.device_id.clone());
        let ev = EventJson {
            event_id: row.event_id.clone(),
            sku: row.sku.clone(),
            kind: row.kind,
            quantity: row.quantity,
            unit_price_minor: row.unit_price_minor,
            currency: row.currency.clone().unwrap_or_else(|| config.currency.clone()),
            occurred_at: row.occurred_at,
        };
        let truth = Truth {
            event_id: row.event_id,
            store_id: device.store_id.clone(),
            grid_id: device.grid_id.clone(),
            sku: row.sku,
            kind: row.kind,
            quantity: row.quantity,
            unit_price_minor: row.unit_price_minor,
            occurred_at: row.occurred_at,
            invalid: false,
        };
        let list = pending.entry(key).or_default();
        list.push((ev, truth));
        if list.len() >= batch.max(1) {
            let mut full: HashMap<_, _> =
                pending.extract_if(|_, v| v.len() >= batch.max(1)).collect();
            flush(&mut full, &mut tasks);
        }
        while tasks.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            bar(&stats, read, total, last_t, start.elapsed());
        }
    }
    flush(&mut pending, &mut tasks);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = shutdown.cancelled() => { tasks.abort_all(); break; }
        }
    }
    bar(&stats, read, total, last_t, start.elapsed());
    eprintln!();
    for u in &unreadable {
        tracing::warn!("{}: {u}", file.display());
    }
    Ok(stats.lock().map(|mut s| s.summary(start.elapsed())).unwrap_or_default())
}

/// Data rows of a CSV file (lines after the header).
fn count_rows(file: &Path) -> Result<u64, SimulateError> {
    use std::io::BufRead;
    let f = std::fs::File::open(file)
        .map_err(|e| SimulateError::Stores(format!("{}: {e}", file.display())))?;
    let lines = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(lines.saturating_sub(1) as u64)
}

/// Redraws the progress bar on stderr.
fn bar(stats: &Mutex<Stats>, read: u64, total: u64, event_time: i64, elapsed: Duration) {
    let Ok(mut s) = stats.lock() else { return };
    let sum = s.summary(elapsed);
    let rejected: u64 = sum.rejected.values().sum();
    let share = if total > 0 { read as f64 / total as f64 } else { 1.0 };
    let width = 30;
    let done = (share * width as f64).round() as usize;
    eprint!(
        "\rreplay [{}{}] {:>5.1}%  {read}/{total} rows  acked {}  rejected {rejected}  {:.0} rows/s  event time {}   ",
        "#".repeat(done.min(width)),
        " ".repeat(width - done.min(width)),
        share * 100.0,
        sum.acked,
        read as f64 / elapsed.as_secs_f64().max(0.001),
        event_time,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(fields.to_vec())
    }

    #[test]
    fn rows_are_read_by_header_name_and_errors_name_the_column() {
        let cols = Columns::from_header(&rec(&[
            "occurred_at",
            "store_id",
            "event_id",
            "sku",
            "quantity",
            "unit_price_minor",
            "kind",
        ]))
        .expect("header");
        let row = cols
            .row(2, &rec(&["1764000000000", "store-000001", "e1", "SKU-1", "2", "650", "return"]))
            .expect("row");
        assert_eq!(row.kind, "RETURN");
        assert_eq!(row.occurred_at, 1_764_000_000_000);
        assert_eq!(row.device_id, None);
        let e =
            cols.row(3, &rec(&["yesterday", "s", "e", "k", "1", "1", ""])).expect_err("bad time");
        assert_eq!(e.to_string(), "line 3: occurred_at: must be an integer");
        let e = cols.row(4, &rec(&["1", "s", "e", "k", "1", "1", "GIFT"])).expect_err("bad kind");
        assert_eq!(e.column, "kind");
        let e = Columns::from_header(&rec(&["event_id"])).expect_err("missing");
        assert_eq!(e.column, "store_id");
    }
}
