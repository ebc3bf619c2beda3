//! Demand forecasting: additive Holt–Winters (exponential smoothing with a level and a
//! daily seasonal profile, ETS(A,N,A)) over the per-bucket net units of a region, with a
//! prediction interval from the one-step residuals.
//!
//! The method, in plain words (see `docs/emitter.md`):
//! - the *level* is an exponentially weighted average of recent demand with the time of
//!   day taken out (`alpha`: how fast it follows changes);
//! - the *season* is the typical deviation from the level at each bucket of the day
//!   (`gamma`: how fast the profile adapts);
//! - the forecast for a future bucket is level + that bucket's seasonal deviation, and a
//!   horizon's forecast is the sum over its buckets;
//! - the interval assumes the one-step errors are independent with the spread seen in the
//!   history; a horizon sum accumulates them together with the level's own uncertainty
//!   (each error also moves the level by `alpha` × error for every later bucket).
//!
//! With less than one season of history the profile is flat; with fewer than three
//! residuals the spread falls back to a Poisson one (variance = mean).

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Level smoothing, 0 < alpha < 1.
    pub alpha: f64,
    /// Seasonal smoothing, 0 <= gamma < 1.
    pub gamma: f64,
    /// Buckets per season (24 for hourly buckets and a daily profile).
    pub season: usize,
    /// Nominal coverage of the interval, e.g. 0.8 for p10..p90.
    pub coverage: f64,
}

/// A forecast of the sum over some future buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Median (point) forecast, never negative.
    pub point: f64,
    /// Lower bound of the interval, never negative.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
}

/// A model fitted to a history.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    level: f64,
    /// Seasonal deviations indexed by bucket index modulo the season.
    seasonal: Vec<f64>,
    /// Index of the next (first future) bucket.
    next: usize,
    sigma: f64,
    alpha: f64,
    z: f64,
    /// Buckets of history the model saw.
    pub history: usize,
}

/// The standard normal quantile for a two-sided interval of `coverage` (Acklam's rational
/// approximation of the inverse CDF; |error| < 1.2e-9).
pub fn z_for(coverage: f64) -> f64 {
    let p = 0.5 + coverage.clamp(0.0, 0.999_999) / 2.0;
    inverse_normal(p)
}

/// The standard normal quantile of `p` (the inverse CDF).
pub(crate) fn inverse_normal(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let plow = 0.024_25;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal(1.0 - p)
    }
}

impl Model {
    /// Fits the model to `history` (oldest first, one value per bucket) with the given
    /// smoothing parameters.
    pub fn fit(history: &[f64], p: &Params) -> Model {
        Self::fit_with(history, p, p.alpha, p.gamma).0
    }

    /// Fits the model with each `alpha` × `gamma` of a small grid (and the configured pair)
    /// and keeps the one with the smallest one-step squared error on the history, as
    /// exponential-smoothing libraries do.
    pub fn fit_best(history: &[f64], p: &Params) -> Model {
        const ALPHAS: [f64; 5] = [0.02, 0.05, 0.1, 0.2, 0.4];
        const GAMMAS: [f64; 3] = [0.02, 0.05, 0.15];
        let mut best = Self::fit_with(history, p, p.alpha, p.gamma);
        if history.len() < 2 * p.season.max(1) {
            // Too short to tell the parameters apart.
            return best.0;
        }
        for a in ALPHAS {
            for g in GAMMAS {
                let cand = Self::fit_with(history, p, a, g);
                if cand.1 < best.1 {
                    best = cand;
                }
            }
        }
        best.0
    }

    fn fit_with(history: &[f64], p: &Params, alpha: f64, gamma: f64) -> (Model, f64) {
        let m = p.season.max(1);
        let n = history.len();
        let mut seasonal = vec![0.0; m];
        let seasonal_on = n >= m && m > 1;
        let (mut level, start) = if seasonal_on {
            let mean = history[..m].iter().sum::<f64>() / m as f64;
            for (i, y) in history[..m].iter().enumerate() {
                seasonal[i] = y - mean;
            }
            (mean, m)
        } else {
            (history.first().copied().unwrap_or(0.0), 1.min(n))
        };
        let (mut sse, mut count) = (0.0, 0usize);
        for (t, y) in history.iter().enumerate().skip(start) {
            let s = if seasonal_on { seasonal[t % m] } else { 0.0 };
            let e = y - (level + s);
            sse += e * e;
            count += 1;
            level += alpha * e;
            if seasonal_on {
                // Update this bucket's deviation and keep the profile summing to zero (the
                // level carries the mean), so the season cannot drift into the level.
                let step = gamma * e;
                seasonal[t % m] = s + step;
                let shift = step / m as f64;
                for v in &mut seasonal {
                    *v -= shift;
                }
                level += shift;
            }
        }
        let sigma = if count >= 3 {
            (sse / count as f64).sqrt()
        } else {
            // Too little history to measure the spread: Poisson-like counts.
            level.max(1.0).sqrt()
        };
        let model =
            Model { level, seasonal, next: n, sigma, alpha, z: z_for(p.coverage), history: n };
        (model, if count == 0 { f64::INFINITY } else { sse / count as f64 })
    }

    /// Forecast of the sum over the future buckets `from..=to` (1 = the next bucket).
    pub fn horizon(&self, from: usize, to: usize) -> Forecast {
        let from = from.max(1);
        if to < from {
            return Forecast { point: 0.0, low: 0.0, high: 0.0 };
        }
        let m = self.seasonal.len();
        let mut point = 0.0;
        for j in from..=to {
            point += self.level + self.seasonal[(self.next + j - 1) % m];
        }
        // The error of the sum is the buckets' own noise (H independent one-step errors)
        // plus H times the error of the estimated level, whose variance under exponential
        // smoothing is α / (2 − α) of the one-step variance.
        let h = (to - from + 1) as f64;
        let weights = h + h * h * self.alpha / (2.0 - self.alpha);
        let half = self.z * self.sigma * weights.sqrt();
        let point = point.max(0.0);
        Forecast { point, low: (point - half).max(0.0), high: point + half }
    }

    /// The spread of one-step errors.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }
}

/// The seasonal-naive forecast of the sum over future buckets `from..=to`: each bucket as
/// it was one season earlier (the baseline the model must beat).
pub fn seasonal_naive(history: &[f64], season: usize, from: usize, to: usize) -> f64 {
    let n = history.len();
    (from..=to)
        .map(|j| {
            let mut idx = n as i64 + j as i64 - 1;
            while idx >= n as i64 {
                idx -= season as i64;
            }
            if idx >= 0 { history[idx as usize] } else { 0.0 }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params { alpha: 0.2, gamma: 0.1, season: 24, coverage: 0.8 };

    /// A deterministic normal sample (xorshift + Box–Muller), so the tests are exact.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.uniform(), self.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn profile(t: usize) -> f64 {
        // A shop day: quiet at night, peaks at noon and in the evening.
        let h = (t % 24) as f64;
        40.0 + 25.0 * (2.0 * std::f64::consts::PI * (h - 9.0) / 24.0).sin()
            + 10.0 * (2.0 * std::f64::consts::PI * (h - 4.0) / 12.0).sin()
    }

    #[test]
    fn z_matches_the_normal_table() {
        assert!((z_for(0.8) - 1.281_551_6).abs() < 1e-6);
        assert!((z_for(0.95) - 1.959_964).abs() < 1e-6);
        assert!((z_for(0.5) - 0.674_49).abs() < 1e-4);
    }

    #[test]
    fn a_constant_series_forecasts_itself_with_no_spread() {
        let h = vec![12.0; 24 * 7];
        let m = Model::fit(&h, &P);
        let f = m.horizon(1, 24);
        assert!((f.point - 288.0).abs() < 1e-9, "{f:?}");
        assert!((f.high - f.low).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn a_noiseless_seasonal_series_is_forecast_exactly() {
        let h: Vec<f64> = (0..24 * 5).map(profile).collect();
        let m = Model::fit(&h, &P);
        for (from, to) in [(1, 1), (5, 5), (1, 24), (30, 53)] {
            let expected: f64 = (from..=to).map(|j| profile(h.len() + j - 1)).sum();
            let f = m.horizon(from, to);
            assert!((f.point - expected).abs() < 1e-6, "{from}..{to}: {f:?} vs {expected}");
        }
    }

    #[test]
    fn short_histories_still_forecast() {
        assert_eq!(Model::fit(&[], &P).horizon(1, 3).point, 0.0);
        let f = Model::fit(&[4.0, 6.0], &P).horizon(1, 1);
        assert!(f.point > 3.0 && f.point < 7.0 && f.high > f.point, "{f:?}");
    }

    #[test]
    fn beats_seasonal_naive_and_covers_about_its_nominal_share() {
        // 200 forecast origins on noisy seasonal series with a slowly moving level; each
        // origin forecasts the next bucket and the next day (24 buckets).
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut err_model, mut err_naive) = ([0.0; 2], [0.0; 2]);
        let (mut covered, mut total) = ([0usize; 2], 0usize);
        for series in 0..20 {
            let drift = 0.02 * (series as f64 - 10.0);
            let y: Vec<f64> = (0..24 * 21)
                .map(|t| (profile(t) + drift * t as f64 / 24.0 + 6.0 * rng.normal()).max(0.0))
                .collect();
            for origin in (24 * 14..24 * 20).step_by(15) {
                let hist = &y[..origin];
                let m = Model::fit_best(hist, &P);
                for (k, (from, to)) in [(1usize, 1usize), (1, 24)].into_iter().enumerate() {
                    let actual: f64 = y[origin + from - 1..origin + to].iter().sum();
                    let f = m.horizon(from, to);
                    err_model[k] += (f.point - actual).abs();
                    err_naive[k] += (seasonal_naive(hist, 24, from, to) - actual).abs();
                    if f.low <= actual && actual <= f.high {
                        covered[k] += 1;
                    }
                }
                total += 1;
            }
        }
        for k in 0..2 {
            assert!(
                err_model[k] < 0.85 * err_naive[k],
                "horizon {k}: model MAE {} vs seasonal naive {}",
                err_model[k] / total as f64,
                err_naive[k] / total as f64
            );
            let share = covered[k] as f64 / total as f64;
            eprintln!(
                "horizon {k}: MAE model {:.2} naive {:.2}, coverage {share:.3}",
                err_model[k] / total as f64,
                err_naive[k] / total as f64
            );
            assert!((0.72..=0.90).contains(&share), "horizon {k}: coverage {share} of nominal 0.8");
        }
    }
}
