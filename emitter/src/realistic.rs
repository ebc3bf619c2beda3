//! A generator of realistic shop demand for judging forecasts: hourly unit counts per
//! series (a SKU in a shop or a small region) with what real shop sales have and a
//! forecast shaped like itself would not survive:
//! - **intermittent counts**: most series sell a few units a day, most hours nothing
//!   (about half of all hours are 0);
//! - **a daily cycle**: shut at night, a morning and an evening peak, different per shop;
//! - **a weekly cycle**: weekends busier for most series, not all;
//! - **drift**: the level wanders from day to day (a random walk);
//! - **over-dispersion**: a day's demand varies more than a Poisson count would
//!   (weather, events: a gamma-distributed day factor);
//! - **promotions**: unannounced, 1–3 days at 1.8–3.5 × demand, about 3 % of days;
//! - **new SKUs**: a tenth of the series start selling late in the history;
//! - **offline periods**: a shop offline for 8 hours now and then: those hours read 0.
//!
//! Deterministic for a seed. Each series also says, per day, whether it was a
//! promotion day, so results can be reported for those days apart.

/// Per series: hourly units from `start_ms`, the first hour it sold, and the promotion
/// flag of each day.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub units: Vec<f64>,
    /// Index of the first hour the SKU was on sale (0 for most).
    pub launched: usize,
    pub promo_days: Vec<bool>,
    /// Per day: the expected units of the day (level × weekday × promotion), what an
    /// oracle forecast would know; the day's own factor and the counts' noise are not in it.
    pub expected: Vec<f64>,
}

/// 2025-12-01 00:00 UTC, a Monday.
pub const START_MS: i64 = 1_764_547_200_000;
pub const HOUR_MS: i64 = 3_600_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, 1) (Marsaglia–Tsang; shape ≥ 1).
    fn gamma(&mut self, shape: f64) -> f64 {
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            if self.unit().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    fn poisson(&mut self, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            return 0.0;
        }
        if lambda > 60.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0);
        }
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, self.unit());
        while p > limit {
            k += 1.0;
            p *= self.unit();
        }
        k
    }
}

/// `n` series of `days` days of hourly demand.
pub fn generate(n: usize, days: usize, seed: u64) -> Vec<Series> {
    let mut rng = Rng(seed ^ 0x05ee_d0f5_a1e5);
    (0..n).map(|i| one(&mut rng, i, days)).collect()
}

fn one(rng: &mut Rng, i: usize, days: usize) -> Series {
    // Units a day: log-normal around 8 (a few units for most, dozens for some).
    let mut level = (8f64.ln() + 0.9 * rng.normal()).exp().clamp(0.5, 400.0);
    // The shop's day: open 7..22 with a morning and an evening peak of its own.
    let (am, pm) = (8.0 + 2.0 * rng.unit(), 17.0 + 3.0 * rng.unit());
    let pm_weight = 0.8 + 0.8 * rng.unit();
    let mut profile: Vec<f64> = (0..24)
        .map(|h| {
            let h = h as f64;
            if !(7.0..22.0).contains(&h) {
                return 0.0;
            }
            0.3 + (-(h - am).powi(2) / 4.0).exp() + pm_weight * (-(h - pm).powi(2) / 6.0).exp()
        })
        .collect();
    let sum: f64 = profile.iter().sum();
    profile.iter_mut().for_each(|p| *p /= sum);
    // Weekdays (Monday first): weekends busier for most, quieter for a few.
    let weekend = if rng.unit() < 0.8 { 1.15 + 0.3 * rng.unit() } else { 0.75 };
    let mut week = [0.9, 0.92, 0.95, 1.0, 1.08, weekend * 1.05, weekend];
    for w in &mut week {
        *w *= 1.0 + 0.08 * rng.normal();
    }
    let mean = week.iter().sum::<f64>() / 7.0;
    week.iter_mut().for_each(|w| *w /= mean);
    let launched_day = if rng.unit() < 0.1 {
        days / 3 + (rng.next() % (days as u64 / 3).max(1)) as usize
    } else {
        0
    };
    let launched =
        launched_day * 24 + if launched_day > 0 { 6 + (rng.next() % 8) as usize } else { 0 };
    let mut units = vec![0.0; days * 24];
    let mut promo_days = vec![false; days];
    let mut promo_left = 0u32;
    let mut promo_lift = 1.0;
    let mut expected = vec![0.0; days];
    for d in 0..days {
        level *= (0.03 * rng.normal()).exp();
        if promo_left == 0 && rng.unit() < 0.03 {
            promo_left = 1 + (rng.next() % 3) as u32;
            promo_lift = 1.8 + 1.7 * rng.unit();
        }
        let lift = if promo_left > 0 {
            promo_left -= 1;
            promo_days[d] = true;
            promo_lift
        } else {
            1.0
        };
        let open: f64 = profile
            .iter()
            .enumerate()
            .filter(|(h, _)| d * 24 + h >= launched)
            .map(|(_, p)| p)
            .sum();
        expected[d] = level * week[d % 7] * lift * open;
        // A day factor with mean 1 and coefficient of variation 0.35.
        let day_factor = rng.gamma(8.0) / 8.0;
        let offline = if rng.unit() < 0.02 { Some((rng.next() % 16) as usize + 6) } else { None };
        for (h, share) in profile.iter().enumerate() {
            let t = d * 24 + h;
            if t < launched || offline.is_some_and(|o| (o..o + 8).contains(&h)) {
                continue;
            }
            let lambda = level * week[d % 7] * lift * day_factor * share;
            units[t] = rng.poisson(lambda);
        }
    }
    Series { name: format!("shop-{i:04}"), units, launched, promo_days, expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demand_is_intermittent_cyclic_and_has_promotions() {
        let s = generate(200, 42, 7);
        let hours: Vec<f64> = s.iter().flat_map(|x| x.units.iter().copied()).collect();
        let zero = hours.iter().filter(|v| **v == 0.0).count() as f64 / hours.len() as f64;
        assert!((0.45..0.75).contains(&zero), "zero share {zero}");
        let night: f64 = s.iter().flat_map(|x| x.units.chunks(24).map(|d| d[2])).sum();
        assert_eq!(night, 0.0, "shut at night");
        let promos = s.iter().flat_map(|x| &x.promo_days).filter(|p| **p).count();
        assert!(promos > 100, "{promos} promotion days");
        assert!(s.iter().filter(|x| x.launched > 0).count() > 5, "new SKUs");
        assert_eq!(generate(3, 5, 1)[2].units, generate(3, 5, 1)[2].units, "deterministic");
    }
}
