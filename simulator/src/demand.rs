//! The traffic model: which store sells which SKU when, and how devices misbehave.

use std::collections::HashMap;
use std::path::Path;

use nearfield_common::stores::grid_of;
use nearfield_ingest::auth::{DeviceKey, MasterKey};
use nearfield_schemas::StoreRecord;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::client::{Body, Request};
use crate::config::SimulateConfig;

/// A simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    pub store_id: String,
    pub device_id: String,
    pub grid_id: String,
    pub key: DeviceKey,
    /// This device's clock error, ms.
    pub skew_ms: i64,
}

/// A simulated store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Indexes into [`City::devices`].
    pub devices: Vec<usize>,
}

/// Stores and devices of the simulated city.
#[derive(Debug)]
pub struct City {
    pub stores: Vec<Store>,
    pub devices: Vec<Device>,
    /// Cumulative store weights (busy shops sell more).
    store_cdf: Vec<f64>,
    /// Cumulative SKU popularity (Zipf).
    sku_cdf: Vec<f64>,
}

fn cdf(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    let mut out: Vec<f64> = weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect();
    if let Some(&total) = out.last() {
        for x in &mut out {
            *x /= total;
        }
    }
    out
}

fn sample(cdf: &[f64], rng: &mut StdRng) -> usize {
    let u: f64 = rng.random();
    cdf.partition_point(|&c| c < u).min(cdf.len().saturating_sub(1))
}

impl City {
    /// Loads active stores from a registry file and derives their device keys.
    pub fn load(
        path: &Path,
        master: &MasterKey,
        res: h3o::Resolution,
        cfg: &SimulateConfig,
    ) -> Result<City, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut rng: StdRng = rand::SeedableRng::seed_from_u64(cfg.seed ^ 0x5eed);
        let mut stores = Vec::new();
        let mut devices = Vec::new();
        let mut weights = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rec: StoreRecord = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            if !rec.active || rec.device_ids.is_empty() {
                continue;
            }
            let grid_id = grid_of(rec.lat, rec.lon, res)
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            let mut idx = Vec::new();
            for d in &rec.device_ids {
                idx.push(devices.len());
                devices.push(Device {
                    store_id: rec.store_id.clone(),
                    device_id: d.clone(),
                    grid_id: grid_id.clone(),
                    key: master.device_key(&rec.store_id, d, rec.key_version),
                    skew_ms: if cfg.clock_skew_ms > 0 {
                        rng.random_range(-cfg.clock_skew_ms..=cfg.clock_skew_ms)
                    } else {
                        0
                    },
                });
            }
            // Log-normal-ish shop sizes: most shops small, a few busy.
            let z: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
            weights.push((z * 0.8).exp());
            stores.push(Store { devices: idx });
        }
        if stores.is_empty() {
            return Err(format!("{}: no active store with a device", path.display()));
        }
        let sku_cdf = cdf((1..=cfg.skus).map(|k| 1.0 / (k as f64).powf(cfg.zipf_s)));
        Ok(City { store_cdf: cdf(weights.into_iter()), stores, devices, sku_cdf })
    }
}

/// Rate multiplier by local hour of day (UTC+8, the example city), peak 1.0.
pub fn daily_factor(cfg: &SimulateConfig, now_ms: i64) -> f64 {
    const CURVE: [f64; 24] = [
        0.06, 0.04, 0.03, 0.03, 0.04, 0.10, 0.30, 0.65, 0.85, 0.75, 0.70, 0.85, 1.00, 0.85, 0.70,
        0.70, 0.80, 0.95, 1.00, 0.90, 0.70, 0.50, 0.30, 0.12,
    ];
    if !cfg.daily_curve {
        return 1.0;
    }
    let hour = ((now_ms / 3_600_000 + 8) % 24) as usize;
    CURVE[hour]
}

/// An event as a device sends it.
#[derive(Debug, Clone, Serialize)]
pub struct EventJson {
    pub event_id: String,
    pub sku: String,
    pub kind: &'static str,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub currency: String,
    pub occurred_at: i64,
}

/// The ground truth of one event: where and what it counts for once acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub event_id: String,
    pub store_id: String,
    pub grid_id: String,
    pub sku: String,
    pub kind: &'static str,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub occurred_at: i64,
    /// Deliberately invalid: expected to be rejected, never acknowledged.
    #[serde(skip)]
    pub invalid: bool,
}

struct Offline {
    until: i64,
    backlog: Vec<(EventJson, Truth)>,
    device: usize,
}

/// Produces requests from the model.
pub struct Generator<'c> {
    city: &'c City,
    cfg: &'c SimulateConfig,
    seq: u64,
    offline: HashMap<usize, Offline>,
    next_heartbeat: usize,
}

impl std::fmt::Debug for Generator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl<'c> Generator<'c> {
    pub fn new(city: &'c City, cfg: &'c SimulateConfig) -> Self {
        Generator { city, cfg, seq: 0, offline: HashMap::new(), next_heartbeat: 0 }
    }

    fn event(&mut self, rng: &mut StdRng, device: usize, now: i64) -> (EventJson, Truth) {
        let d = &self.city.devices[device];
        self.seq += 1;
        let sku_idx = sample(&self.city.sku_cdf, rng);
        let sku = format!("SKU-{:05}", sku_idx + 1);
        let u: f64 = rng.random();
        let kind = if u < self.cfg.return_share {
            "RETURN"
        } else if u < self.cfg.return_share + self.cfg.preorder_share {
            "PREORDER"
        } else {
            "SALE"
        };
        let quantity = if rng.random_bool(0.8) { 1 } else { rng.random_range(2..=12) };
        let unit_price_minor = 150 + (sku_idx as i64 * 7919) % 4_850;
        let occurred_at = now + d.skew_ms - rng.random_range(0..200);
        let event_id = format!("{}-{}-{}", d.device_id, d.store_id, self.seq);
        let mut ev = EventJson {
            event_id: event_id.clone(),
            sku: sku.clone(),
            kind,
            quantity,
            unit_price_minor,
            currency: self.cfg.currency.clone(),
            occurred_at,
        };
        let invalid = rng.random_bool(self.cfg.invalid_share.clamp(0.0, 1.0));
        if invalid {
            match rng.random_range(0..3) {
                0 => ev.quantity = 0,
                1 => ev.currency = ev.currency.to_lowercase(),
                _ => ev.occurred_at = now + 3_600_000,
            }
        }
        let truth = Truth {
            event_id,
            store_id: d.store_id.clone(),
            grid_id: d.grid_id.clone(),
            sku,
            kind,
            quantity: ev.quantity,
            unit_price_minor,
            occurred_at: ev.occurred_at,
            invalid,
        };
        (ev, truth)
    }

    /// `n` events of one device, as one batch request or `n` single requests; or none,
    /// when the store is offline and buffers them.
    pub fn events(&mut self, rng: &mut StdRng, n: usize, batch: bool, now: i64) -> Vec<Request> {
        let store = sample(&self.city.store_cdf, rng);
        let devs = &self.city.stores[store].devices;
        let device = devs[rng.random_range(0..devs.len())];
        let events: Vec<(EventJson, Truth)> =
            (0..n).map(|_| self.event(rng, device, now)).collect();
        let mut out = Vec::new();
        if let Some(off) = self.offline.get_mut(&store) {
            if off.until > now {
                off.backlog.extend(events);
                return out;
            }
            if let Some(off) = self.offline.remove(&store) {
                out.extend(self.upload(off));
            }
        } else if rng.random_bool(self.cfg.offline_chance.clamp(0.0, 1.0)) {
            self.offline.insert(
                store,
                Offline { until: now + self.cfg.offline_ms, backlog: events, device },
            );
            return out;
        }
        if batch {
            out.push(Request::events(&self.city.devices[device], events, true));
        } else {
            out.extend(
                events
                    .into_iter()
                    .map(|e| Request::events(&self.city.devices[device], vec![e], false)),
            );
        }
        out
    }

    fn upload(&self, off: Offline) -> Vec<Request> {
        let d = &self.city.devices[off.device];
        let mut backlog = off.backlog;
        let mut out = Vec::new();
        while !backlog.is_empty() {
            let rest = backlog.split_off(backlog.len().min(self.cfg.batch_max));
            out.push(Request::events(d, std::mem::replace(&mut backlog, rest), true));
        }
        out
    }

    /// Backlogs of every store still offline, as late uploads.
    pub fn flush_offline(&mut self) -> Vec<Request> {
        let offline: Vec<Offline> = self.offline.drain().map(|(_, o)| o).collect();
        offline.into_iter().flat_map(|o| self.upload(o)).collect()
    }

    /// The next device's heartbeat (round robin).
    pub fn heartbeat(&mut self, now: i64) -> Request {
        let i = self.next_heartbeat % self.city.devices.len();
        self.next_heartbeat += 1;
        let d = &self.city.devices[i];
        let body = serde_json::json!({"sent_at": now + d.skew_ms}).to_string().into_bytes();
        Request {
            device: d.clone(),
            path: "/v1/heartbeat",
            body: Body::Json(body),
            truths: Vec::new(),
        }
    }
}
