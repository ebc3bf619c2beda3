//! The emitter as a stage of the exactly-once runtime (`nearfield-eos`): what it does
//! with a demand window and at a commit. Signals go to `plan.<supplier>.v1`, created on
//! first use; the latest committed ones are kept for `/v1/plans`.

use std::collections::VecDeque;
use std::sync::Arc;

use arc_swap::ArcSwap;
use nearfield_common::kafka::{TopicSpec, Topics};
use nearfield_eos::{Emit, EosError, Input, Millis, Owned, Stage};
use nearfield_schemas::{DemandWindow, PlanSignal};

use crate::catalog::Catalog;
use crate::coverage::Coverage;
use crate::internal_events::{SignalsCommitted, StateGauges, WindowConsumed};
use crate::state::{PartitionState, Side, StateConfig, StateSize, Tally};

/// Content type of a dead-lettered demand record.
const DEMAND_CONTENT_TYPE: &str = "application/vnd.nearfield.demand-window+avro";

/// The latest committed signals, newest last (what `/v1/plans` serves).
pub type Recent = Arc<ArcSwap<VecDeque<PlanSignal>>>;

/// A question for the loop: which of these partitions does this instance serve?
pub type Asked = Vec<i32>;

/// The answer: those restored here, and those being restored.
#[derive(Debug, Clone, Default)]
pub struct Owns {
    pub answered: Vec<i32>,
    pub restoring: Vec<i32>,
}

/// The emitter stage.
#[derive(Debug)]
pub struct Emitter {
    cfg: Arc<StateConfig>,
    catalog: Arc<Catalog>,
    coverage: Option<Arc<Coverage>>,
    topics: Topics,
    plan_partitions: i32,
    recent: Recent,
    recent_cap: usize,
}

/// Signals and decision tallies of one transaction.
#[derive(Debug, Default)]
pub struct Committed {
    pub signals: Vec<PlanSignal>,
    pub tally: Tally,
}

impl Emitter {
    /// The stage; `recent_cap` signals are kept for `/v1/plans`. Without a coverage
    /// book, completeness comes from the demand windows alone.
    pub fn new(
        cfg: Arc<StateConfig>,
        (catalog, coverage): (Arc<Catalog>, Option<Arc<Coverage>>),
        topics: Topics,
        plan_partitions: i32,
        recent_cap: usize,
    ) -> Self {
        let recent = Arc::default();
        Emitter { cfg, catalog, coverage, topics, plan_partitions, recent, recent_cap }
    }

    fn side(&self) -> Side<'_> {
        Side { catalog: &self.catalog, coverage: self.coverage.as_deref() }
    }

    /// The latest committed signals.
    pub fn recent(&self) -> Recent {
        Arc::clone(&self.recent)
    }

    /// The spec of a plan topic the emitter may create (a supplier's first signal).
    pub fn plan_topic_spec(topics: &Topics, partitions: i32, topic: &str) -> Option<TopicSpec> {
        let supplier =
            topic.strip_prefix(&topics.plan_prefix)?.strip_suffix(&topics.plan_suffix)?;
        (!supplier.is_empty()).then(|| TopicSpec {
            name: topic.to_string(),
            partitions,
            cleanup: "delete",
            configs: Vec::new(),
        })
    }

    /// Which topics the runtime may create on first write.
    pub fn create_on_demand(&self) -> Arc<nearfield_eos::CreateOnDemand> {
        let (topics, n) = (self.topics.clone(), self.plan_partitions);
        Arc::new(move |topic: &str| Emitter::plan_topic_spec(&topics, n, topic))
    }
}

impl nearfield_eos::PartitionState for PartitionState {
    type RestoreError = crate::state::RestoreError;

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), Self::RestoreError> {
        PartitionState::restore(self, key, value)
    }

    fn restored(&mut self, now: Millis) {
        PartitionState::restored(self, now);
    }

    fn watermark(&self) -> Option<Millis> {
        Some(PartitionState::watermark(self)).filter(|w| *w > Millis::MIN)
    }
}

impl Stage for Emitter {
    const NAME: &'static str = "emitter";

    type State = PartitionState;
    type Summary = Committed;
    type Query = Asked;
    type Answer = Owns;

    fn process(
        &self,
        state: &mut PartitionState,
        records: &[Input<'_>],
        now: Millis,
        out: &mut Emit<'_, Committed>,
    ) -> Result<(), EosError> {
        for r in records {
            let outcome = match out.decode::<DemandWindow>(r, DEMAND_CONTENT_TYPE, now)? {
                Some(w) => state.apply(&w, self.side(), now).label(),
                None => "undecodable",
            };
            WindowConsumed { outcome }.emit();
        }
        Ok(())
    }

    fn flush(
        &self,
        state: &mut PartitionState,
        now: Millis,
        out: &mut Emit<'_, Committed>,
    ) -> Result<(), EosError> {
        if let Some(c) = state.conflict() {
            return Err(EosError::Setting(Box::new(c.clone())));
        }
        let flushed = state.flush(now, self.side());
        out.summary.tally.merge(std::mem::take(&mut state.tally));
        for (k, v) in &flushed.changelog {
            out.changelog(k, v.as_deref())?;
        }
        for s in &flushed.signals {
            let topic = self.topics.plan(&s.supplier_id);
            out.send_record(&topic, s.sku.as_bytes(), s.sku.as_bytes(), s)?;
        }
        out.summary.signals.extend(flushed.signals);
        Ok(())
    }

    fn committed(&self, summary: Committed) {
        if !summary.signals.is_empty() {
            self.recent.rcu(|old| {
                let mut v = (**old).clone();
                v.extend(summary.signals.iter().cloned());
                let excess = v.len().saturating_sub(self.recent_cap);
                v.drain(..excess);
                v
            });
        }
        SignalsCommitted { signals: &summary.signals, tally: summary.tally }.emit();
    }

    fn answer(&self, owned: &Owned<'_, PartitionState>, asked: Asked) -> Owns {
        let (answered, restoring) = owned.split(&asked);
        Owns { answered, restoring }
    }

    fn fresh(&self, _partition: i32) -> PartitionState {
        PartitionState::new(Arc::clone(&self.cfg))
    }

    fn gauges(&self, owned: &Owned<'_, PartitionState>, _now: Millis) {
        let size = owned.active.values().map(PartitionState::size).sum::<StateSize>();
        let coverage_regions = self.coverage.as_ref().map_or(0, |c| c.len().1);
        StateGauges { size, catalog_skus: self.catalog.len(), coverage_regions }.emit();
    }
}
