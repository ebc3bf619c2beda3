//! The count model: the demand of a series (a region's net units per bucket, or a shop's,
//! or any hourly count) over a future horizon, as quantiles of a negative binomial around
//! level × weekday × time of day.
//!
//! Shop demand is intermittent (most hours sell nothing), follows the day (shops close at
//! night) and the week, drifts, and jumps on promotions nobody announced. The model, in
//! plain words (`docs/forecast.md`):
//! - **time of day**: each bucket of the day's share of a day's demand, from the whole
//!   history, shrunk towards a flat day where the history is thin;
//! - **weekday**: each weekday's demand relative to the days around it, shrunk towards 1
//!   (two weeks give two samples of a weekday);
//! - **level**: demand per day with both taken out, an exponentially weighted mean over
//!   the complete days (recent days count more: the level drifts) and the part of today
//!   already seen; a day far above the typical day (a promotion) is capped before it
//!   enters the level, so it does not inflate tomorrow;
//! - **spread**: a negative binomial whose extra-Poisson variance is measured on the
//!   days of the history (promotion days included: they are why the upper quantiles are
//!   wide), plus the uncertainty of the level itself;
//! - quantiles of a count distribution are steps; they are reported at the middle of
//!   each step (mid-quantiles), so that p10..p90 covers 80 % of outcomes on average even
//!   where most outcomes are 0.
//!
//! A series with less than a day of history is forecast from its rate so far with a wide
//! spread. Negative units (returns above sales) count as 0.
//!
//! Buckets are identified by their absolute index (`start_ms / bucket_ms`), so the time
//! of day and the weekday of a bucket are known; `season` is the number of buckets in a
//! day.

/// Buckets of a series: `values[i]` is the bucket with absolute index `first + i`.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub values: &'a [f64],
    pub first: i64,
    /// Buckets per day.
    pub season: usize,
}

/// What many series share, fitted on their sum (a SKU's regions, a category's shops):
/// the time-of-day shares and weekday factors a single series is shrunk towards, so a
/// thin or new series borrows the shape of its peers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prior {
    profile: Vec<f64>,
    weekday: [f64; 7],
}

impl Prior {
    /// From its parts (as the changelog stores them).
    pub fn from_parts(profile: Vec<f64>, weekday: [f64; 7]) -> Prior {
        Prior { profile, weekday }
    }

    /// Per bucket of the day: its share × buckets per day (mean 1); per weekday (absolute
    /// day index mod 7) its factor (mean 1).
    pub fn parts(&self) -> (&[f64], &[f64; 7]) {
        (&self.profile, &self.weekday)
    }

    /// The shape of the sum of many series.
    pub fn of(total: &History<'_>) -> Prior {
        let f = fit(total, None);
        Prior { profile: f.profile, weekday: f.weekday }
    }
}

/// A forecast of the sum over buckets `from..to` (absolute indices).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Expected units.
    pub mean: f64,
    /// The quantiles asked, in the order asked.
    pub quantiles: Vec<f64>,
}

/// Shrinkage of the time-of-day shares towards flat (in days of evidence).
const PROFILE_PRIOR_DAYS: f64 = 3.0;
/// Shrinkage of the weekday factors towards 1 (in weeks of evidence).
const WEEKDAY_PRIOR: f64 = 6.0;
/// Weight of a day in the level, per day of age.
const LEVEL_DECAY: f64 = 0.95;
/// A day above this many times the typical day is capped there before it enters the
/// level (a promotion).
const CAP: f64 = 2.0;
/// Share of a promotion's lift expected to carry into the next day.
const PROMO_CARRY: f64 = 0.3;
/// Extra-Poisson variance (1 / negative-binomial size) when too few days to measure it.
const PRIOR_DISPERSION: f64 = 0.25;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The fitted model of one history.
#[derive(Debug, Clone)]
struct Fit {
    /// Per bucket of the day: share × season (mean 1).
    profile: Vec<f64>,
    /// Per weekday (absolute day index mod 7): factor (mean 1).
    weekday: [f64; 7],
    /// Demand per day with time of day and weekday taken out.
    level: f64,
    /// The level's multiplier for the next day: demand above the cap (promotions) comes
    /// back at its average rate, and a promotion seen in the latest day partly continues.
    lift: f64,
    /// 1 / negative-binomial size of a horizon's total.
    dispersion: f64,
}

fn fit(h: &History<'_>, prior: Option<&Prior>) -> Fit {
    let s = h.season.max(1);
    let vals: Vec<f64> =
        h.values.iter().map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 }).collect();
    let n = vals.len();
    let total: f64 = vals.iter().sum();
    let per_bucket = if n > 0 { total / n as f64 } else { 0.0 };
    // Time of day.
    let (mut sum_h, mut cnt_h) = (vec![0.0; s], vec![0.0; s]);
    for (i, v) in vals.iter().enumerate() {
        let hod = (h.first + i as i64).rem_euclid(s as i64) as usize;
        sum_h[hod] += v;
        cnt_h[hod] += 1.0;
    }
    let prior = prior.filter(|p| p.profile.len() == s);
    let prior_profile = |k: usize| prior.map_or(1.0, |p| p.profile[k]);
    let mut profile: Vec<f64> = (0..s).map(prior_profile).collect();
    if per_bucket > 0.0 {
        for k in 0..s {
            let target = per_bucket * prior_profile(k);
            let m = (sum_h[k] + PROFILE_PRIOR_DAYS * target) / (cnt_h[k] + PROFILE_PRIOR_DAYS);
            profile[k] = m / per_bucket;
        }
        let mean = profile.iter().sum::<f64>() / s as f64;
        profile.iter_mut().for_each(|p| *p /= mean);
    }
    // Complete days: (absolute day, total).
    let mut days: Vec<(i64, f64)> = Vec::new();
    let mut partial: Option<(i64, f64, f64)> = None; // (day, units, profile share seen)
    let mut i = 0usize;
    while i < n {
        let abs = h.first + i as i64;
        let day = abs.div_euclid(s as i64);
        let day_end = ((day + 1) * s as i64 - h.first) as usize;
        let end = day_end.min(n);
        let units: f64 = vals[i..end].iter().sum();
        if end - i == s {
            days.push((day, units));
        } else if end == n {
            let seen: f64 =
                (i..end).map(|j| profile[(h.first + j as i64).rem_euclid(s as i64) as usize]).sum();
            partial = Some((day, units, seen / s as f64));
        }
        i = end;
    }
    // Weekday factors: each day against the mean of the days within three of it.
    let prior_weekday = prior.map_or([1.0; 7], |p| p.weekday);
    let mut weekday = prior_weekday;
    if days.len() >= 7 {
        let (mut sum_w, mut cnt_w) = ([0.0; 7], [0.0; 7]);
        for (j, (day, units)) in days.iter().enumerate() {
            let lo = j.saturating_sub(3);
            let hi = (j + 4).min(days.len());
            let local = days[lo..hi].iter().map(|d| d.1).sum::<f64>() / (hi - lo) as f64;
            if local > 0.0 {
                let w = day.rem_euclid(7) as usize;
                sum_w[w] += (units / local).min(2.0 * CAP);
                cnt_w[w] += 1.0;
            }
        }
        for w in 0..7 {
            weekday[w] = (sum_w[w] + WEEKDAY_PRIOR * prior_weekday[w]) / (cnt_w[w] + WEEKDAY_PRIOR);
        }
        let mean = weekday.iter().sum::<f64>() / 7.0;
        weekday.iter_mut().for_each(|w| *w /= mean);
    }
    let wd = |day: i64| weekday[day.rem_euclid(7) as usize];
    // Level.
    let z: Vec<f64> = days.iter().map(|(d, u)| u / wd(*d)).collect();
    let typical = median(z.clone()).max(z.iter().sum::<f64>() / z.len().max(1) as f64 * 0.5);
    let cap = |v: f64| if typical > 0.0 { v.min(CAP * typical) } else { v };
    let last_day = days.last().map(|d| d.0).or(partial.map(|p| p.0)).unwrap_or(0);
    let (mut wsum, mut zsum, mut w2) = (0.0, 0.0, 0.0);
    for ((day, _), zv) in days.iter().zip(&z) {
        let w = LEVEL_DECAY.powi((last_day - day).clamp(0, 1000) as i32);
        wsum += w;
        w2 += w * w;
        zsum += w * cap(*zv);
    }
    if let Some((day, units, seen)) = partial
        && seen > 0.0
    {
        let w = seen * LEVEL_DECAY.powi((last_day - day).clamp(0, 1000) as i32);
        wsum += w;
        w2 += w * w;
        zsum += w * cap(units / (wd(day) * seen));
    }
    let level = if wsum > 0.0 { zsum / wsum } else { per_bucket * s as f64 };
    // What the cap took out, on average over the days, comes back in the mean (a
    // promotion is unannounced, not absent); a promotion in the latest day is likely to
    // run on (they last a few days).
    let mut lift = 1.0;
    if typical > 0.0 && level > 0.0 && !z.is_empty() {
        let excess: f64 = z.iter().map(|v| (v - CAP * typical).max(0.0)).sum();
        let kept: f64 = z.iter().map(|v| cap(*v)).sum();
        lift += if kept > 0.0 { excess / kept } else { 0.0 };
        let latest = match partial {
            Some((day, units, seen)) if seen >= 0.5 => units / (wd(day) * seen),
            _ => z.last().copied().unwrap_or(0.0),
        };
        if latest > CAP * typical {
            lift += PROMO_CARRY * (latest / level - 1.0);
        }
    }
    // Spread of day totals around level × weekday.
    let mut dispersion = PRIOR_DISPERSION;
    if days.len() >= 4 && level > 0.0 {
        let (mut num, mut den) = (0.0, 0.0);
        for (day, units) in &days {
            let mu = level * wd(*day);
            num += (units - mu).powi(2) - mu;
            den += mu * mu;
        }
        let measured = if den > 0.0 { (num / den).max(0.0) } else { PRIOR_DISPERSION };
        // Few days measure it poorly: lean on the prior.
        let k = days.len() as f64;
        dispersion = (measured * k + PRIOR_DISPERSION * 3.0) / (k + 3.0);
    }
    // The level's own uncertainty: the days it averages, each with that spread.
    let n_eff = if w2 > 0.0 { wsum * wsum / w2 } else { 0.0 };
    dispersion += if n_eff > 0.0 && level > 0.0 {
        (dispersion + 1.0 / level) / n_eff
    } else {
        // Less than a day seen: the rate so far says little.
        1.0
    };
    Fit { profile, weekday, level, lift, dispersion: dispersion.clamp(1e-4, 25.0) }
}

/// The demand over buckets `from..to` (absolute indices) after `history`, at the
/// quantile levels `qs` (each within (0, 1)).
pub fn predict(
    history: &History<'_>,
    from: i64,
    to: i64,
    qs: &[f64],
    prior: Option<&Prior>,
) -> Prediction {
    let mut out = predict_spans(history, &[(from, to, qs)], prior);
    out.pop().unwrap_or(Prediction { mean: 0.0, quantiles: vec![0.0; qs.len()] })
}

/// [`predict`] for several spans `(from, to, qs)` of one history, fitted once.
pub fn predict_spans(
    history: &History<'_>,
    spans: &[(i64, i64, &[f64])],
    prior: Option<&Prior>,
) -> Vec<Prediction> {
    let s = history.season.max(1) as i64;
    let f = fit(history, prior);
    spans
        .iter()
        .map(|(from, to, qs)| {
            let mut mean = 0.0;
            for b in *from..(*to).max(*from) {
                let hod = b.rem_euclid(s) as usize;
                let day = b.div_euclid(s);
                mean += f.level * f.lift / s as f64
                    * f.weekday[day.rem_euclid(7) as usize]
                    * f.profile[hod];
            }
            let quantiles = qs.iter().map(|q| nb_mid_quantile(mean, f.dispersion, *q)).collect();
            Prediction { mean, quantiles }
        })
        .collect()
}

/// The `p` mid-quantile of a negative binomial with mean `mu` and variance
/// `mu + dispersion × mu²`: within the step of count k, interpolated from k − ½ to k + ½.
pub fn nb_mid_quantile(mu: f64, dispersion: f64, p: f64) -> f64 {
    if mu.is_nan() || mu <= 0.0 || !mu.is_finite() {
        return 0.0;
    }
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    if mu > 5_000.0 {
        // Summing the terms gets long: a log-normal with the same mean and variance keeps
        // the skew (a normal would put the median at the mean).
        let s2 = (1.0 + (mu + dispersion * mu * mu) / (mu * mu)).ln();
        let z = crate::forecast::inverse_normal(p);
        return (mu.ln() - s2 / 2.0 + z * s2.sqrt()).exp();
    }
    let r = 1.0 / dispersion.max(1e-9);
    let q = mu / (r + mu);
    let sd = (mu + dispersion * mu * mu).sqrt();
    // The mass below 12 standard deviations under the mean is far below 1e-15 (the
    // negative binomial's left tail is lighter than a normal's): start there.
    let mut k = (mu - 12.0 * sd).floor().max(0.0);
    // P(k) = Γ(k + r) / (Γ(r) k!) (1 − q)^r q^k, then P(k+1) = P(k) (k + r) / (k + 1) q —
    // in logarithms while the terms underflow, then as plain products (no exp/ln a term).
    let mut log_pk = r * (1.0 - q).ln();
    if k > 0.0 {
        log_pk += ln_gamma(k + r) - ln_gamma(r) - ln_gamma(k + 1.0) + k * q.ln();
    }
    let mut pk = log_pk.exp();
    let mut below = 0.0;
    // Enough terms to pass any p: far into the tail.
    let limit = mu + 50.0 * sd + 50.0;
    while k <= limit {
        if below + pk >= p {
            let frac = if pk > 0.0 { (p - below) / pk } else { 0.5 };
            return (k - 0.5 + frac).max(0.0);
        }
        below += pk;
        let step = (k + r) / (k + 1.0) * q;
        if pk > 1e-250 {
            pk *= step;
        } else {
            log_pk = if pk > 0.0 { pk.ln() } else { log_pk } + step.ln();
            pk = log_pk.exp();
        }
        k += 1.0;
    }
    // Rounding left the sum short of p: the tail's end.
    mu + 50.0 * sd
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 0.0f64;
        for n in 1..=170u32 {
            // ln Γ(n + 1) = ln n!
            fact += f64::from(n).ln();
            let g = ln_gamma(f64::from(n) + 1.0);
            assert!((g - fact).abs() <= 1e-10 * fact.max(1.0), "n = {n}: {g} vs {fact}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    /// The quantile by the plain sum from 0 in logarithms (the definition).
    fn by_definition(mu: f64, dispersion: f64, p: f64) -> f64 {
        let r = 1.0 / dispersion;
        let q = mu / (r + mu);
        let (mut log_pk, mut below, mut k) = (r * (1.0 - q).ln(), 0.0, 0.0f64);
        loop {
            let pk = log_pk.exp();
            if below + pk >= p {
                return (k - 0.5 + if pk > 0.0 { (p - below) / pk } else { 0.5 }).max(0.0);
            }
            below += pk;
            log_pk += ((k + r) / (k + 1.0)).ln() + q.ln();
            k += 1.0;
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_sum_gives_the_definitions_quantiles(
            mu in 0.01f64..4_900.0, dispersion in 1e-4f64..5.0, p in 0.01f64..0.99,
        ) {
            let (fast, slow) = (nb_mid_quantile(mu, dispersion, p), by_definition(mu, dispersion, p));
            proptest::prop_assert!((fast - slow).abs() <= 1e-6 * slow.max(1.0), "{fast} vs {slow}");
        }
    }

    #[test]
    fn mid_quantiles_of_a_poisson_like_count() {
        // Mean 0.1: P(0) ≈ 0.905; the median sits in the middle of the 0 step.
        let m = nb_mid_quantile(0.1, 1e-4, 0.5);
        assert!((m - (-0.5 + 0.5 / 0.905)).abs() < 0.01, "{m}");
        assert_eq!(nb_mid_quantile(0.0, 0.3, 0.9), 0.0);
        // Large means: the log-normal approximation, increasing in p, the median below
        // the mean as a skewed count's is.
        let lo = nb_mid_quantile(10_000.0, 0.01, 0.1);
        let med = nb_mid_quantile(10_000.0, 0.01, 0.5);
        let hi = nb_mid_quantile(10_000.0, 0.01, 0.9);
        assert!(lo < med && med < 10_000.0 && hi > 10_000.0, "{lo} {med} {hi}");
        assert!((hi - lo - 2.0 * 1.2816 * 1_004.99).abs() < 60.0, "{lo} {hi}");
        // A large mean with little dispersion (Poisson-like): P(0) underflows, the
        // quantiles are still around the mean.
        for mu in [800.0, 3_000.0, 4_900.0] {
            let (lo, med, hi) = (
                nb_mid_quantile(mu, 1e-4, 0.1),
                nb_mid_quantile(mu, 1e-4, 0.5),
                nb_mid_quantile(mu, 1e-4, 0.9),
            );
            let sd = (mu + 1e-4 * mu * mu).sqrt();
            assert!((med - mu).abs() < 2.0, "{mu}: {med}");
            assert!((hi - mu - 1.2816 * sd).abs() < 2.0 && (mu - lo - 1.2816 * sd).abs() < 2.0);
        }
        // Monotone in p on a small mean.
        let qs: Vec<f64> = (1..10).map(|i| nb_mid_quantile(3.0, 0.5, i as f64 / 10.0)).collect();
        assert!(qs.windows(2).all(|w| w[0] <= w[1]), "{qs:?}");
    }

    #[test]
    fn a_steady_daily_pattern_is_forecast_at_its_level_and_shape() {
        // 14 days: 10 units at hour 9, 20 at hour 18, nothing else.
        let mut v = vec![0.0; 14 * 24];
        for d in 0..14 {
            v[d * 24 + 9] = 10.0;
            v[d * 24 + 18] = 20.0;
        }
        let h = History { values: &v, first: 0, season: 24 };
        let day = predict(&h, 14 * 24, 15 * 24, &[0.1, 0.5, 0.9], None);
        assert!((day.mean - 30.0).abs() < 1.5, "{day:?}");
        assert!(day.quantiles[0] < 30.0 && day.quantiles[2] > 30.0, "{day:?}");
        let evening = predict(&h, 14 * 24 + 12, 15 * 24, &[0.5], None);
        let morning = predict(&h, 14 * 24, 14 * 24 + 12, &[0.5], None);
        assert!(evening.mean > morning.mean * 1.5, "{evening:?} {morning:?}");
    }

    #[test]
    fn a_promotion_day_does_not_inflate_the_level() {
        let mut v = vec![1.0; 14 * 24];
        for x in &mut v[13 * 24..] {
            *x = 4.0; // yesterday ×4
        }
        let h = History { values: &v, first: 0, season: 24 };
        let p = predict(&h, 14 * 24, 15 * 24, &[0.5], None);
        // Part of it may run on (promotions last days), most of it not.
        assert!(p.mean < 96.0 * 0.6, "{p:?}");
    }

    #[test]
    fn a_short_history_is_forecast_from_its_rate_with_a_wide_spread() {
        let v = vec![2.0; 6];
        let h = History { values: &v, first: 100 * 24 + 8, season: 24 };
        let p = predict(&h, 100 * 24 + 14, 101 * 24 + 14, &[0.1, 0.9], None);
        assert!((p.mean - 48.0).abs() < 1e-6, "{p:?}");
        assert!(p.quantiles[1] / p.quantiles[0].max(1.0) > 3.0, "{p:?}");
    }
}
