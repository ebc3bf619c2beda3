//! The aggregator as a stage of the exactly-once runtime (`nearfield-eos`): what it does
//! with a sale record, a heartbeat and a commit. Everything around it — group membership,
//! transactions, restore, rebalances, errors — is the runtime's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearfield_common::kafka::{Topics, partition_for_key};
use nearfield_eos::{Emit, EosError, Input, Millis, Owned, Stage};
use nearfield_schemas::{Codec, Heartbeat, SaleEvent};

use crate::internal_events::{Committed, MisplacedGrid, StateGauges};
use crate::query::{self, Answer, Query};
use crate::state::{Beat, Outcome, PartitionState, Registry, StateConfig, StateSize};
use crate::stores::GridDirectory;

/// Content type of a dead-lettered sale record.
const SALE_CONTENT_TYPE: &str = "application/vnd.nearfield.sale-event+avro";

/// The aggregator stage.
#[derive(Debug)]
pub struct Aggregator {
    cfg: Arc<StateConfig>,
    directory: Arc<GridDirectory>,
    topics: Topics,
    codec: Codec,
    /// The last size walk (every key: done every 10 s, not with every gauge refresh).
    size: Mutex<Option<(Instant, StateSize)>>,
}

impl Aggregator {
    /// The stage over `topics`, with `expected` stores per grid from `directory`.
    pub fn new(cfg: Arc<StateConfig>, directory: Arc<GridDirectory>, topics: Topics) -> Self {
        Aggregator { cfg, directory, topics, codec: Codec::single_object(), size: Mutex::new(None) }
    }
}

impl nearfield_eos::PartitionState for PartitionState {
    type RestoreError = crate::changelog::Error;

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), Self::RestoreError> {
        PartitionState::restore(self, key, value)
    }

    fn restored(&mut self, _now: Millis) {
        PartitionState::restored(self);
    }

    fn side_offset(&self, _side: usize) -> i64 {
        self.heartbeat_offset()
    }

    fn watermark(&self) -> Option<Millis> {
        Some(PartitionState::watermark(self)).filter(|w| *w > Millis::MIN)
    }
}

/// The registered grids of one input partition.
struct PartitionGrids<'a> {
    directory: &'a GridDirectory,
    partition: i32,
    partitions: i32,
}

impl Registry for PartitionGrids<'_> {
    fn expected(&self, grid: &str) -> i32 {
        self.directory.expected(grid)
    }
    fn grids(&self) -> Vec<(String, i32)> {
        self.directory.grids_of_partition(self.partition, self.partitions)
    }
}

/// Header of a `sales.late.v1` record: why no window counted the event.
pub const LATE_REASON_HEADER: &str = "nearfield-late-reason";
/// Header of a `sales.late.v1` record: the watermark (ms) at which its last window expired.
pub const LATE_EXPIRED_AT_HEADER: &str = "nearfield-late-expired-at";

impl Stage for Aggregator {
    type State = PartitionState;
    type Summary = Committed;
    type Query = Query;
    type Answer = Answer;

    const NAME: &'static str = "aggregator";

    fn fresh(&self, partition: i32) -> PartitionState {
        PartitionState::of_partition(Arc::clone(&self.cfg), partition)
    }

    fn process(
        &self,
        state: &mut PartitionState,
        records: &[Input<'_>],
        now: Millis,
        out: &mut Emit<'_, Committed>,
    ) -> Result<(), EosError> {
        // Decoded first, then applied as one run (`apply_sales` prefetches ahead).
        let mut decoded = Vec::with_capacity(records.len());
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            match out.decode_with::<SaleEvent, _>(r, Codec::decode_sale, SALE_CONTENT_TYPE, now)? {
                Some(ev) => {
                    decoded.push(r);
                    events.push(ev);
                }
                None => out.summary.events.invalid += 1,
            }
        }
        let mut outcomes = Vec::with_capacity(events.len());
        let grids_before = state.grids_interned();
        state.apply_sales(&events, now, &mut outcomes);
        // A grid new to the partition is checked once against where its key hashes; one
        // warning a run names the first misplaced one and counts them.
        let (partition, partitions) = (out.partition(), out.input_partitions());
        let mut misplaced = state
            .grids_from(grids_before)
            .map(|g| (g, partition_for_key(g.as_bytes(), partitions)))
            .filter(|&(_, to)| to != partition);
        if let Some((grid, hashes_to)) = misplaced.next() {
            let grids = 1 + misplaced.count() as u64;
            MisplacedGrid { grid, partition, hashes_to, grids }.emit();
            out.summary.misplaced += grids;
        }
        for ((r, ev), outcome) in decoded.into_iter().zip(&events).zip(outcomes) {
            match outcome {
                Outcome::Counted { .. } => out.summary.events.counted += 1,
                Outcome::Duplicate => out.summary.events.duplicate += 1,
                Outcome::Refused(reason) => {
                    out.summary.events.refused += 1;
                    let message = "its revenue does not fit 64 bits or would take a window's past 2^47 - 1; not counted";
                    out.reject(
                        r,
                        reason,
                        Some("unit_price_minor"),
                        message,
                        SALE_CONTENT_TYPE,
                        now,
                    )?;
                }
                Outcome::Late(late) => {
                    out.summary.events.late += 1;
                    let (reason, expired_at) = (late.to_string(), late.expired_at.to_string());
                    out.send_with_headers(
                        &self.topics.late,
                        ev.grid_id.as_bytes(),
                        r.payload,
                        &[(LATE_REASON_HEADER, &reason), (LATE_EXPIRED_AT_HEADER, &expired_at)],
                    )?;
                }
            }
        }
        Ok(())
    }

    fn process_side(
        &self,
        _side: usize,
        state: &mut PartitionState,
        r: &Input<'_>,
        now: Millis,
        out: &mut Emit<'_, Committed>,
    ) -> Result<(), EosError> {
        match self.codec.decode::<Heartbeat>(r.payload) {
            Ok(hb) => {
                let beat = Beat {
                    grid_id: &hb.grid_id,
                    store_id: &hb.store_id,
                    at: hb.received_at,
                    pending_events: hb.pending_events,
                    // The device's clock may be off: its backlog's age, on ingest's clock.
                    since: hb.last_upload_at.map(|u| {
                        hb.received_at.saturating_sub(hb.sent_at.saturating_sub(u).max(0))
                    }),
                };
                state.apply_heartbeat(beat, r.offset + 1, now);
                out.summary.events.heartbeats += 1;
            }
            Err(e) => tracing::warn!(
                partition = r.partition,
                offset = r.offset,
                reason = e.reason(),
                "undecodable heartbeat skipped"
            ),
        }
        Ok(())
    }

    fn flush(
        &self,
        state: &mut PartitionState,
        now: Millis,
        out: &mut Emit<'_, Committed>,
    ) -> Result<(), EosError> {
        let registry = PartitionGrids {
            directory: &self.directory,
            partition: out.partition(),
            partitions: out.input_partitions(),
        };
        let flushed = state.flush(now, &registry);
        for (k, v) in &flushed.changelog {
            out.changelog(k, v.as_deref())?;
        }
        let mut key = Vec::with_capacity(64);
        for w in &flushed.outputs {
            crate::window::output_key(
                &mut key,
                &[&w.sku, &w.grid_id],
                w.window_start,
                w.window_end,
            );
            out.send_record(&self.topics.demand, w.sku.as_bytes(), &key, w)?;
            if w.revision == 0 {
                out.summary.finals += 1;
            } else {
                out.summary.revisions += 1;
            }
        }
        for c in &flushed.coverage {
            crate::window::output_key(&mut key, &[&c.grid_id], c.window_start, c.window_end);
            out.send_record(&self.topics.coverage, c.grid_id.as_bytes(), &key, c)?;
        }
        out.summary.coverage += flushed.coverage.len();
        out.summary.expired += flushed.expired_windows;
        Ok(())
    }

    fn committed(&self, summary: Committed) {
        summary.emit();
    }

    fn answer(&self, owned: &Owned<'_, PartitionState>, q: Query) -> Answer {
        query::answer(owned, q)
    }

    fn gauges(&self, owned: &Owned<'_, PartitionState>, _now: Millis) {
        let mut last = self.size.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10)) {
            *last = Some((Instant::now(), owned.active.values().map(PartitionState::size).sum()));
        }
        StateGauges { size: last.map(|(_, s)| s).unwrap_or_default() }.emit();
    }
}
