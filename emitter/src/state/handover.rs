//! Handing plan horizons from one emitter deployment to another (a grown partition count:
//! docs/SCALING.md). Which deployment decides a plan depends on the partitioning of its
//! input (its clock is the lowest watermark over the partitions), so two deployments
//! fed the same demand do not make the same decisions. Were both to plan the same
//! horizon, a factory's plan book would meet two chains of revisions for one key, and a
//! revision of the newer chain would supersede a plan the book no longer holds as
//! current (`STALE`): the book would keep the older deployment's plan. Instead the
//! horizons are split at a calendar boundary: the old deployment plans horizons starting
//! before it (`emit.horizons_before_ms`), the new one horizons from it
//! (`emit.horizons_from_ms`), so every plan key has one deployment's chain.
//!
//! A deployment refuses to start on state holding a plan outside its horizons: that plan
//! was sent under other settings, and its revisions would come from the wrong side.

use super::model::SkuState;

/// The horizons an emitter plans: those starting within `[from, before)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizons {
    pub from: i64,
    pub before: i64,
}

impl Default for Horizons {
    fn default() -> Self {
        Horizons { from: i64::MIN, before: i64::MAX }
    }
}

impl Horizons {
    /// From the settings (unset: unbounded on that side).
    pub fn new(from: Option<i64>, before: Option<i64>) -> Self {
        Horizons { from: from.unwrap_or(i64::MIN), before: before.unwrap_or(i64::MAX) }
    }

    /// Whether this emitter plans the horizon starting at `start`.
    pub fn plans(&self, start: i64) -> bool {
        (self.from..self.before).contains(&start)
    }

    /// Whether every horizon is planned here (no handover configured).
    pub fn all(&self) -> bool {
        *self == Horizons::default()
    }
}

/// A plan held in the state for a horizon this emitter does not plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "emit.{setting}: a plan of SKU {sku} for the horizon starting at {horizon_start} ms \
     (Unix time) was already sent by this deployment; {}",
    remedy(setting)
)]
pub struct Conflict {
    pub setting: &'static str,
    pub sku: String,
    pub horizon_start: i64,
}

/// What to do about a conflict with `setting`.
fn remedy(setting: &str) -> &'static str {
    if setting == "horizons_before_ms" {
        "hand over at a later horizon (docs/SCALING.md, growing the partition count)"
    } else {
        "the new deployment planned those horizons already (it ran without the bound): start \
         it again on a fresh changelog and group (docs/SCALING.md, growing the partition count)"
    }
}

/// The first plan (by SKU) outside `horizons`, if any.
pub(super) fn conflict<'a>(
    horizons: Horizons,
    skus: impl Iterator<Item = (&'a String, &'a SkuState)>,
) -> Option<Conflict> {
    if horizons.all() {
        return None;
    }
    skus.flat_map(|(id, sku)| sku.plans.iter().map(move |p| (id, p.signal.horizon_start)))
        .find(|(_, start)| !horizons.plans(*start))
        .map(|(id, start)| Conflict {
            setting: if start < horizons.from { "horizons_from_ms" } else { "horizons_before_ms" },
            sku: id.clone(),
            horizon_start: start,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use nearfield_common::kafka::partition_for_key;
    use nearfield_schemas::PlanSignal;
    use nearfield_schemas::plan_book::{Outcome, PlanBook, PlanKey};

    use super::*;
    use crate::state::{PartitionState, StateConfig};
    use crate::synthetic::{self, Scenario, T0};

    const DAY: i64 = 86_400_000;
    /// The handover: horizons from the fourth day of the scenario on go to the new side.
    const T: i64 = T0 + 3 * DAY;

    fn scenario() -> Scenario {
        Scenario { skus: 12, grids: 6, hours: 120, seed: 11, surge_hour: Some(100) }
    }

    fn config(from: Option<i64>, before: Option<i64>) -> Arc<StateConfig> {
        synthetic::state_config(from, before)
    }

    /// What a deployment whose input has `partitions` partitions sends.
    fn plans(partitions: i32, cfg: &Arc<StateConfig>) -> Vec<PlanSignal> {
        let s = scenario();
        let by = |sku: &str| partition_for_key(sku.as_bytes(), partitions);
        synthetic::reference(&synthetic::stream(&s), by, cfg, &synthetic::catalog(&s))
    }

    /// A factory's book after reading `topic` in order, and how often each outcome came.
    fn read(topic: &[&PlanSignal]) -> (PlanBook, BTreeMap<&'static str, usize>) {
        let (mut book, mut outcomes) = (PlanBook::default(), BTreeMap::new());
        for p in topic {
            *outcomes.entry(book.apply(p).name()).or_insert(0) += 1;
        }
        (book, outcomes)
    }

    /// The last signal of each key in `signals` (what a book holds of one chain).
    fn last_of_each(signals: &[PlanSignal]) -> BTreeMap<PlanKey, &PlanSignal> {
        signals.iter().map(|p| (PlanKey::of(p), p)).collect()
    }

    /// Why the handover exists: the same demand on another partition count makes other
    /// decisions, and a new deployment replaying every horizon after the old one leaves
    /// books on plans the new one revised (its revisions meet the old chain: STALE).
    #[test]
    fn without_a_handover_a_book_keeps_plans_the_new_deployment_revised() {
        let all = config(None, None);
        let (old, new) = (plans(3, &all), plans(5, &all));
        let ids = |v: &[PlanSignal]| -> Vec<String> {
            let mut ids: Vec<String> = v.iter().map(|p| p.signal_id.clone()).collect();
            ids.sort();
            ids
        };
        assert_ne!(ids(&old), ids(&new), "decisions depend on the input's partitioning");
        let (book, outcomes) = read(&old.iter().chain(&new).collect::<Vec<_>>());
        assert!(outcomes.get("STALE").is_some_and(|n| *n > 0), "{outcomes:?}");
        let wrong = last_of_each(&new)
            .into_iter()
            .filter(|(k, p)| book.get(k).map(|c| &c.signal_id) != Some(&p.signal_id))
            .count();
        assert!(wrong > 0, "every book entry is the new deployment's latest: {outcomes:?}");
    }

    /// With one: the old deployment's plans of horizons before T are what it sent
    /// before, the new one plans the rest, and however the two topics' signals
    /// interleave a book holds each key's latest plan of its one chain, never STALE.
    #[test]
    fn a_handover_gives_every_plan_key_one_chain() {
        let old_alone = plans(3, &config(None, None));
        let (old, new) = (plans(3, &config(None, Some(T))), plans(5, &config(Some(T), None)));
        let before: Vec<&PlanSignal> = old_alone.iter().filter(|p| p.horizon_start < T).collect();
        assert_eq!(old.iter().collect::<Vec<_>>(), before, "the old side's plans unchanged");
        assert!(old.iter().all(|p| p.horizon_start < T) && !old.is_empty());
        assert!(new.iter().all(|p| p.horizon_start >= T) && !new.is_empty());
        // The new side's first plans come while the old one still revises its own.
        let (head, tail) = old.split_at(old.len() / 2);
        for topic in [
            old.iter().chain(&new).collect::<Vec<_>>(),
            new.iter().chain(&old).collect(),
            head.iter().chain(&new).chain(tail).collect(),
        ] {
            let (book, outcomes) = read(&topic);
            for o in [Outcome::Stale, Outcome::Duplicate] {
                assert!(!outcomes.contains_key(o.name()), "{outcomes:?}");
            }
            let mut want = last_of_each(&old);
            want.extend(last_of_each(&new));
            let got: BTreeMap<PlanKey, &PlanSignal> =
                book.current().map(|p| (PlanKey::of(p), p)).collect();
            assert_eq!(got, want, "each key's latest plan of its own chain");
        }
    }

    /// A deployment restarted with a handover its state contradicts (it already sent a
    /// plan on the other side) finds the conflict; one whose plans are all on its side
    /// does not.
    #[test]
    fn a_restore_finds_plans_on_the_other_side() {
        let s = scenario();
        let (windows, catalog) = (synthetic::stream(&s), synthetic::catalog(&s));
        let mut ran = PartitionState::new(config(None, None));
        let mut changelog = Vec::new();
        for w in &windows {
            ran.apply(w, &catalog, 0);
            changelog.extend(ran.flush(0, &catalog).changelog);
        }
        let restored = |cfg: Arc<StateConfig>| {
            let mut st = PartitionState::new(cfg);
            for (k, v) in &changelog {
                st.restore(k, v.as_deref()).expect("restores");
            }
            st.restored(0);
            st.conflict().cloned()
        };
        assert_eq!(restored(config(None, None)), None);
        let latest = ran.skus.values().flat_map(|s| &s.plans).map(|p| p.signal.horizon_start);
        let latest = latest.max().expect("plans held");
        assert_eq!(restored(config(None, Some(latest + DAY))), None);
        let c = restored(config(None, Some(latest))).expect("a plan from the handover on");
        assert_eq!((c.setting, c.horizon_start), ("horizons_before_ms", latest));
        assert!(c.to_string().starts_with("emit.horizons_before_ms: a plan of SKU"), "{c}");
        let c = restored(config(Some(latest + DAY), None)).expect("plans before it");
        assert_eq!(c.setting, "horizons_from_ms");
        assert!(c.to_string().contains("start it again on a fresh changelog"), "{c}");
    }

    #[test]
    fn a_horizon_is_planned_on_one_side_only() {
        let t = 10 * DAY;
        let (old, new) = (Horizons::new(None, Some(t)), Horizons::new(Some(t), None));
        for start in [t - DAY, t, t + DAY, i64::MIN, i64::MAX - 1] {
            assert!(old.plans(start) != new.plans(start), "horizon {start}");
        }
        assert!(Horizons::default().all() && !old.all() && !new.all());
        assert!(Horizons::default().plans(i64::MIN));
    }
}
