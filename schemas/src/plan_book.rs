//! The latest plan per (sku, warehouse, region, horizon), built from a plan topic read in
//! order: what a factory keeps. The Java (`clients/java`) and Python (`clients/python`)
//! clients implement the same rules, and `tests/factory_clients.rs` checks that all three
//! agree on a plan topic the emitter wrote. See `docs/factories.md`.
//!
//! - a `signal_id` seen before is a re-emission: [`Outcome::Duplicate`], nothing changes;
//! - the first plan for a key is [`Outcome::New`];
//! - a plan whose `supersedes` is the current plan's id is [`Outcome::Revised`] and becomes
//!   current;
//! - a plan whose `supersedes` names a signal that is no longer current (a newer decision
//!   already replaced it) is [`Outcome::Stale`] and stays out of the book: the newer
//!   decision is revised on its own if the late data changes it;
//! - any other plan for the key is a newer decision for the same horizon:
//!   [`Outcome::Replaced`], and it becomes current.

use std::collections::{BTreeMap, HashMap};

use crate::records::{Millis, PlanSignal};

/// Where and when a plan applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanKey {
    pub sku: String,
    pub warehouse_id: Option<String>,
    pub region: String,
    pub horizon_start: Millis,
    pub horizon_end: Millis,
}

impl PlanKey {
    /// The key of a plan.
    pub fn of(p: &PlanSignal) -> Self {
        PlanKey {
            sku: p.sku.clone(),
            warehouse_id: p.warehouse_id.clone(),
            region: p.region.clone(),
            horizon_start: p.horizon_start,
            horizon_end: p.horizon_end,
        }
    }
}

/// What applying a signal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    New,
    Replaced,
    Revised,
    Duplicate,
    Stale,
}

impl Outcome {
    /// The upper-case name the Java and Python clients print.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::New => "NEW",
            Outcome::Replaced => "REPLACED",
            Outcome::Revised => "REVISED",
            Outcome::Duplicate => "DUPLICATE",
            Outcome::Stale => "STALE",
        }
    }
}

/// The latest plan per key. `current()` is ordered by key (`None` warehouse first).
#[derive(Debug, Default)]
pub struct PlanBook {
    current: BTreeMap<PlanKey, PlanSignal>,
    seen: HashMap<String, PlanKey>,
}

impl PlanBook {
    /// Applies the next signal read from the topic.
    pub fn apply(&mut self, plan: &PlanSignal) -> Outcome {
        if self.seen.contains_key(&plan.signal_id) {
            return Outcome::Duplicate;
        }
        let key = PlanKey::of(plan);
        self.seen.insert(plan.signal_id.clone(), key.clone());
        let cur = self.current.get(&key).map(|c| c.signal_id.clone());
        if let Some(sup) = &plan.supersedes
            && self.seen.contains_key(sup)
            && cur.as_ref() != Some(sup)
        {
            return Outcome::Stale;
        }
        self.current.insert(key, plan.clone());
        match cur {
            None => Outcome::New,
            Some(c) if plan.supersedes.as_ref() == Some(&c) => Outcome::Revised,
            Some(_) => Outcome::Replaced,
        }
    }

    /// The current plan for a key.
    pub fn get(&self, key: &PlanKey) -> Option<&PlanSignal> {
        self.current.get(key)
    }

    /// Every current plan, ordered by sku, warehouse, region, horizon.
    pub fn current(&self) -> impl Iterator<Item = &PlanSignal> {
        self.current.values()
    }

    /// Forgets plans whose horizon ended before `horizon_end` (bounded memory).
    pub fn evict_before(&mut self, horizon_end: Millis) {
        self.current.retain(|k, _| k.horizon_end >= horizon_end);
        self.seen.retain(|_, k| k.horizon_end >= horizon_end);
    }

    /// Number of current plans.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// No current plan.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Firmness, PlanReason};

    const DAY: Millis = 86_400_000;

    fn plan(id: &str, region: &str, horizon: Millis, rev: i32, sup: Option<&str>) -> PlanSignal {
        PlanSignal {
            signal_id: id.into(),
            supplier_id: "dairy-east".into(),
            factory_id: "plant-7".into(),
            sku: "SKU-MILK-1L".into(),
            warehouse_id: Some("wh-1".into()),
            region: region.into(),
            horizon_start: horizon,
            horizon_end: horizon + DAY,
            observed_units: 100,
            forecast_units: 100.0,
            forecast_low: 90.0,
            forecast_high: 110.0,
            interval_coverage: 0.8,
            recommended_units: 100,
            moq: 100,
            batch_size: 50,
            reason: if rev == 0 { PlanReason::Threshold } else { PlanReason::Revision },
            firmness: Firmness::Firm,
            contributing_grids: vec!["8831aa5551fffff".into()],
            contributing_stores: 6,
            stores_reporting: 6,
            stores_expected: 6,
            based_on_watermark: 0,
            generated_at: 0,
            revision: rev,
            supersedes: sup.map(Into::into),
            service_level: 0.5,
            need_units: 100.0,
            allocations: vec![],
        }
    }

    /// The same sequence as the Java and Python clients' PlanBook tests.
    #[test]
    fn revisions_and_newer_decisions_replace_duplicates_and_stale_ones_do_not() {
        let mut book = PlanBook::default();
        let a = plan("a", "r1", 0, 0, None);
        let b = plan("b", "r1", 0, 0, None);
        let a_rev = plan("a1", "r1", 0, 1, Some("a"));
        let b_rev = plan("b1", "r1", 0, 1, Some("b"));
        let other_region = plan("c", "r2", 0, 0, None);
        let other_horizon = plan("d", "r1", DAY, 0, None);
        let orphan_rev = plan("e1", "r3", 0, 1, Some("never-seen"));

        assert_eq!(book.apply(&a), Outcome::New);
        assert_eq!(book.apply(&a), Outcome::Duplicate);
        assert_eq!(book.apply(&b), Outcome::Replaced);
        assert_eq!(book.apply(&a_rev), Outcome::Stale);
        assert_eq!(book.get(&PlanKey::of(&b)), Some(&b));
        assert_eq!(book.apply(&b_rev), Outcome::Revised);
        assert_eq!(book.apply(&b), Outcome::Duplicate);
        assert_eq!(book.apply(&other_region), Outcome::New);
        assert_eq!(book.apply(&other_horizon), Outcome::New);
        assert_eq!(book.apply(&orphan_rev), Outcome::New);
        let ids: Vec<_> = book.current().map(|p| p.signal_id.as_str()).collect();
        assert_eq!(ids, ["b1", "d", "c", "e1"]);

        book.evict_before(DAY + 1);
        let ids: Vec<_> = book.current().map(|p| p.signal_id.as_str()).collect();
        assert_eq!(ids, ["d"]);
        assert_eq!(book.apply(&a), Outcome::New, "an evicted id is forgotten");
    }
}
