//! `nearfield forecast`: the emitter's forecast (`count_model`) replayed over a history
//! file, and the scoring of forecasts against the baselines a planner would otherwise use.
//!
//! Input: CSV with the header `series,ts_ms,units`, one row per series and hour (`ts_ms`
//! the hour's start, a whole hour; hours without a row count 0). For every series, origins
//! start `min_history_hours` after its first hour and repeat every `every_hours` up to the
//! end of its rows; at each origin the model sees the hours before it (at most the
//! emitter's `history_buckets`) and forecasts the sum over
//! `[origin + lead, origin + lead + horizon)`. Output: CSV
//! `series,origin_ms,horizon_start_ms,horizon_end_ms,q<p>…`, one row per series per origin.
//!
//! Scoring ([`score`]): the same origins, with the outcome, against seasonal-naive (the
//! same hours a whole number of days earlier), weekly-naive (weeks earlier), the 7-day
//! mean and ADIDA (the history aggregated into horizon-sized blocks, simple exponential
//! smoothing over the blocks).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use crate::count_model::{History, Prediction, Prior, predict};

const HOUR: i64 = 3_600_000;

/// The backtest's settings (the CLI's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub lead_hours: i64,
    pub horizon_hours: i64,
    pub every_hours: i64,
    pub min_history_hours: i64,
    pub quantiles: Vec<f64>,
    /// Most hours of history the model sees (the emitter's `history_buckets`).
    pub history_hours: usize,
}

/// Why the backtest cannot run; each names the flag or the line and field.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("--{flag}: {rule}")]
    Flag { flag: &'static str, rule: String },
    #[error("{file}:{line}: {field}: {rule}")]
    Row { file: String, line: usize, field: &'static str, rule: String },
    #[error("{file}: {0}", file = .1)]
    Io(std::io::Error, String),
}

impl Settings {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), BacktestError> {
        let bad = |flag, rule: &str| Err(BacktestError::Flag { flag, rule: rule.into() });
        if !(0..=24 * 366).contains(&self.lead_hours) {
            return bad("lead-hours", "must be within 0..=8784");
        }
        if !(1..=24 * 366).contains(&self.horizon_hours) {
            return bad("horizon-hours", "must be within 1..=8784");
        }
        if !(1..=24 * 366).contains(&self.every_hours) {
            return bad("every-hours", "must be within 1..=8784");
        }
        if !(1..=24 * 3660).contains(&self.min_history_hours) {
            return bad("min-history-hours", "must be within 1..=87840");
        }
        if self.quantiles.is_empty() || self.quantiles.len() > 99 {
            return bad("quantiles", "must list 1..=99 levels");
        }
        if self.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
            return bad("quantiles", "each level must be within (0, 1)");
        }
        Ok(())
    }
}

/// Parses `0.1,0.5,0.9`.
pub fn parse_quantiles(text: &str) -> Result<Vec<f64>, BacktestError> {
    text.split(',')
        .map(|t| {
            t.trim().parse::<f64>().map_err(|_| BacktestError::Flag {
                flag: "quantiles",
                rule: format!("{t:?} is not a number (expected a list like 0.1,0.5,0.9)"),
            })
        })
        .collect()
}

/// Hourly units per series, in the order series first appear.
#[derive(Debug, Default, Clone)]
pub struct Histories {
    pub series: Vec<(String, BTreeMap<i64, f64>)>,
}

/// Reads the history CSV (`file` names it in errors).
pub fn read_history(input: impl BufRead, file: &str) -> Result<Histories, BacktestError> {
    let mut out = Histories::default();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let row = |line: usize, field: &'static str, rule: String| BacktestError::Row {
        file: file.to_string(),
        line,
        field,
        rule,
    };
    for (i, l) in input.lines().enumerate() {
        let line = i + 1;
        let l = l.map_err(|e| BacktestError::Io(e, file.to_string()))?;
        let l = l.trim_end_matches('\r');
        if line == 1 {
            if l.trim() != "series,ts_ms,units" {
                return Err(row(1, "header", "must be series,ts_ms,units".into()));
            }
            continue;
        }
        if l.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = l.split(',').collect();
        if cols.len() != 3 {
            return Err(row(line, "row", format!("{} columns, expected 3", cols.len())));
        }
        let name = cols[0].trim();
        if name.is_empty() || name.len() > 200 || name.contains('"') {
            return Err(row(line, "series", "must be 1..=200 characters without quotes".into()));
        }
        let ts: i64 = cols[1]
            .trim()
            .parse()
            .map_err(|_| row(line, "ts_ms", format!("{:?} is not an integer", cols[1])))?;
        if ts % HOUR != 0 || !(0..=253_402_300_799_999).contains(&ts) {
            return Err(row(
                line,
                "ts_ms",
                "must be the start of an hour (UTC ms, years 1970..=9999)".into(),
            ));
        }
        let units: f64 = cols[2]
            .trim()
            .parse()
            .ok()
            .filter(|u: &f64| u.is_finite() && u.abs() <= 1e12)
            .ok_or_else(|| row(line, "units", format!("{:?} is not a number", cols[2])))?;
        let at = *index.entry(name.to_string()).or_insert_with(|| {
            out.series.push((name.to_string(), BTreeMap::new()));
            out.series.len() - 1
        });
        if out.series[at].1.insert(ts, units).is_some() {
            return Err(row(line, "ts_ms", format!("{name} at {ts} appears twice")));
        }
    }
    Ok(out)
}

/// One forecast of one series at one origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub origin_ms: i64,
    pub horizon_start_ms: i64,
    pub horizon_end_ms: i64,
    pub prediction: Prediction,
}

/// The hourly values of `hours` from hour `first` (absolute hour index) for `n` hours.
fn dense(hours: &BTreeMap<i64, f64>, first: i64, n: usize) -> Vec<f64> {
    (0..n as i64).map(|i| hours.get(&((first + i) * HOUR)).copied().unwrap_or(0.0)).collect()
}

/// The sum of every series per hour: the peers a series' prior comes from.
#[derive(Debug, Clone, Default)]
pub struct Pooled {
    first: i64,
    total: Vec<f64>,
}

impl Pooled {
    /// The hourly sum of `series`.
    pub fn of<'a>(series: impl IntoIterator<Item = &'a BTreeMap<i64, f64>> + Clone) -> Pooled {
        let span: Vec<(i64, i64)> = series
            .clone()
            .into_iter()
            .filter_map(|h| Some((*h.first_key_value()?.0 / HOUR, *h.last_key_value()?.0 / HOUR)))
            .collect();
        let (Some(first), Some(last)) =
            (span.iter().map(|x| x.0).min(), span.iter().map(|x| x.1).max())
        else {
            return Pooled::default();
        };
        let mut total = vec![0.0; (last - first + 1) as usize];
        for h in series {
            for (ts, u) in h {
                total[(ts / HOUR - first) as usize] += u.max(0.0);
            }
        }
        Pooled { first, total }
    }

    /// The prior at origin `o` (absolute hour): the shape of the peers' hours before it.
    pub fn prior(&self, o: i64, history_hours: usize) -> Option<Prior> {
        let end = (o - self.first).clamp(0, self.total.len() as i64) as usize;
        let start = end.saturating_sub(history_hours);
        (end > start).then(|| {
            Prior::of(&History {
                values: &self.total[start..end],
                first: self.first + start as i64,
                season: 24,
            })
        })
    }
}

/// The forecasts of one series at every origin, each with the peers' prior of its time.
pub fn origins(hours: &BTreeMap<i64, f64>, s: &Settings, peers: &Pooled) -> Vec<Origin> {
    let (Some((&first, _)), Some((&last, _))) = (hours.first_key_value(), hours.last_key_value())
    else {
        return Vec::new();
    };
    let (first, end) = (first / HOUR, last / HOUR + 1);
    let mut out = Vec::new();
    let mut o = first + s.min_history_hours;
    while o <= end {
        let from = (o - s.history_hours as i64).max(first);
        let values = dense(hours, from, (o - from) as usize);
        let h = History { values: &values, first: from, season: 24 };
        let (a, b) = (o + s.lead_hours, o + s.lead_hours + s.horizon_hours);
        out.push(Origin {
            origin_ms: o * HOUR,
            horizon_start_ms: a * HOUR,
            horizon_end_ms: b * HOUR,
            prediction: predict(&h, a, b, &s.quantiles, peers.prior(o, s.history_hours).as_ref()),
        });
        o += s.every_hours;
    }
    out
}

/// A quantile level as a column name: `q0.1`.
fn column(q: f64) -> String {
    format!("q{q}")
}

/// Runs the backtest: reads `input`, writes the CSV to `out`.
pub fn run(
    s: &Settings,
    input: impl BufRead,
    file: &str,
    mut out: impl Write,
) -> Result<usize, BacktestError> {
    s.validate()?;
    let h = read_history(input, file)?;
    let io = |e| BacktestError::Io(e, "stdout".into());
    let cols: Vec<String> = s.quantiles.iter().map(|q| column(*q)).collect();
    writeln!(out, "series,origin_ms,horizon_start_ms,horizon_end_ms,{}", cols.join(","))
        .map_err(io)?;
    let mut rows = 0;
    let peers = Pooled::of(h.series.iter().map(|x| &x.1));
    for (name, hours) in &h.series {
        for o in origins(hours, s, &peers) {
            let qs: Vec<String> =
                o.prediction.quantiles.iter().map(|q| format!("{q:.3}")).collect();
            writeln!(
                out,
                "{name},{},{},{},{}",
                o.origin_ms,
                o.horizon_start_ms,
                o.horizon_end_ms,
                qs.join(",")
            )
            .map_err(io)?;
            rows += 1;
        }
    }
    out.flush().map_err(io)?;
    Ok(rows)
}

#[path = "backtest_score.rs"]
mod score_impl;
pub use score_impl::{Baselines, Report, Scores, score};

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            lead_hours: 2,
            horizon_hours: 24,
            every_hours: 24,
            min_history_hours: 48,
            quantiles: vec![0.1, 0.5, 0.9],
            history_hours: 336,
        }
    }

    #[test]
    fn one_row_per_series_per_origin_with_the_quantiles_asked() {
        let mut csv = String::from("series,ts_ms,units\n");
        for h in 0..96 {
            csv.push_str(&format!("a,{},{}\n", h * HOUR, h % 3));
            if h % 2 == 0 {
                csv.push_str(&format!("b,{},1\n", h * HOUR));
            }
        }
        let mut out = Vec::new();
        let rows = run(&settings(), csv.as_bytes(), "h.csv", &mut out).expect("runs");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "series,origin_ms,horizon_start_ms,horizon_end_ms,q0.1,q0.5,q0.9");
        // Origins at hours 48, 72 and 96 (the end of a's rows); b's rows end at hour 95.
        assert_eq!(rows, 5);
        assert!(
            lines[1].starts_with(&format!("a,{},{},{},", 48 * HOUR, 50 * HOUR, 74 * HOUR)),
            "{}",
            lines[1]
        );
        for l in &lines[1..] {
            let q: Vec<f64> = l.split(',').skip(4).map(|v| v.parse().expect("number")).collect();
            assert!(q[0] <= q[1] && q[1] <= q[2], "{l}");
        }
    }

    #[test]
    fn bad_input_names_the_line_and_field() {
        let err = |csv: &str| {
            run(&settings(), csv.as_bytes(), "h.csv", Vec::new()).expect_err("refused").to_string()
        };
        assert_eq!(err("s,t,u\n"), "h.csv:1: header: must be series,ts_ms,units");
        assert_eq!(err("series,ts_ms,units\na,x,1\n"), "h.csv:2: ts_ms: \"x\" is not an integer");
        assert!(
            err("series,ts_ms,units\na,5,1\n")
                .starts_with("h.csv:2: ts_ms: must be the start of an hour")
        );
        assert_eq!(err("series,ts_ms,units\na,0,NaN\n"), "h.csv:2: units: \"NaN\" is not a number");
        assert!(
            err("series,ts_ms,units\na,0,1\na,0,2\n")
                .contains("h.csv:3: ts_ms: a at 0 appears twice")
        );
        let s = Settings { quantiles: vec![0.0], ..settings() };
        assert_eq!(
            run(&s, "series,ts_ms,units\n".as_bytes(), "h.csv", Vec::new())
                .expect_err("bad")
                .to_string(),
            "--quantiles: each level must be within (0, 1)"
        );
        assert!(parse_quantiles("0.1,x").is_err());
    }
}
