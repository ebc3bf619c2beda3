//! `nearfield replay --late`: turns what is in `sales.late.v1` into corrections of the
//! windows it missed, so a sale that no window accepted is not lost for good.
//!
//! A late sale's windows have all expired: the aggregator dropped their state and will not
//! make them again (`docs/lateness.md`). Their final values are on `demand.v1` (compacted
//! by window), so the replay reads the latest revision of each window the late sales belong
//! to, adds them, and writes `revision + 1` — the record the aggregator would have written
//! had the sale come in time — or revision 0 for a window that had no sale before.
//!
//! Exactly once: the revised windows and the replay group's offsets on `sales.late.v1` are
//! written in one transaction, so a run that is killed starts again where the last one
//! committed, and a sale is applied once. A run reads the late topic from its beginning
//! (to know which event ids earlier runs applied) to the end it has when the run starts;
//! a device retry of an already-applied sale counts as a duplicate, not twice.
//!
//! `distinct_stores` of a revised window is an upper bound: the window's store set is gone,
//! so a late sale's store counts as new unless another late sale of the run already
//! brought it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use nearfield_common::kafka::{KafkaSettings, partition_for_key};
use nearfield_common::time::now_ms;
use nearfield_eos::{EosError, clients};
use nearfield_schemas::{Codec, DemandWindow, SaleEvent};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::counters::Counters;
use crate::ids::short_id;
use crate::window::{Millis, Windowing};

/// Default consumer group (and transactional id) of the replay.
pub const GROUP: &str = "nearfield-late-replay";
const TIMEOUT: Duration = Duration::from_secs(30);

/// What one run did (printed as JSON by the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Late sales applied as corrections.
    pub applied: u64,
    /// Late sales already applied (an earlier run, or a device retry).
    pub duplicates: u64,
    /// Records that are not a `SaleEvent` (left where they are).
    pub undecodable: u64,
    /// Windows revised (`revision + 1`) and windows written for the first time.
    pub windows_revised: u64,
    pub windows_created: u64,
    /// Why the applied sales were late, as the aggregator said (reason → count).
    pub reasons: BTreeMap<String, u64>,
    /// Corrections refused because a revenue would not fit (`revenue.overflow`):
    /// late sales, and windows whose revision would overflow (left as they are).
    pub revenue_overflow: u64,
}

/// Window key on `demand.v1`.
type Key = (String, String, Millis, Millis);

/// Applies `kafka.topics.late` to `kafka.topics.demand` with the window settings and
/// currency of the aggregator, as group `group`.
pub fn replay(
    kafka: &KafkaSettings,
    windowing: &Windowing,
    currency: &str,
    group: &str,
) -> Result<Summary, EosError> {
    let (late, demand) = (kafka.topics.late.clone(), kafka.topics.demand.clone());
    let consumer: BaseConsumer = clients::reader(kafka, group, &[], &[])?
        .create()
        .map_err(|source| EosError::Client { client: "late replay consumer", source })?;
    let producer: ThreadedProducer<_> =
        clients::transactional_producer(kafka, format!("{group}-{late}"), Duration::from_secs(60))?
            .create()
            .map_err(|source| EosError::Client { client: "late replay producer", source })?;
    let partitions = clients::partition_count(consumer.client(), &late)?;
    let demand_partitions = clients::partition_count(producer.client(), &demand)?;
    producer.init_transactions(TIMEOUT).map_err(|e| EosError::kafka("initializing", e))?;
    let committed = committed(&consumer, &late, partitions)?;

    // 1. The late topic up to its current end: ids applied before, sales to apply now.
    let codec = Codec::single_object();
    let mut summary = Summary::default();
    // One event per (store, device, event_id), as the aggregator de-duplicates.
    let mut applied: HashSet<(String, String, String)> = HashSet::new();
    let mut todo: Vec<SaleEvent> = Vec::new();
    let mut ends = BTreeMap::new();
    for r in read(kafka, group, &late, partitions, &mut ends)? {
        let Ok(ev) = codec.decode::<SaleEvent>(&r.payload) else {
            summary.undecodable += 1;
            continue;
        };
        let done = committed.get(&r.partition).is_some_and(|c| r.offset < *c);
        if !applied.insert((ev.store_id.clone(), ev.device_id.clone(), ev.event_id.clone())) {
            if !done {
                summary.duplicates += 1;
            }
            continue;
        }
        if !done {
            *summary.reasons.entry(r.reason).or_default() += 1;
            todo.push(ev);
        }
    }

    // 2. The corrections per window.
    let mut deltas: HashMap<Key, Counters> = HashMap::new();
    for ev in &todo {
        for (_, start, end) in windowing.windows_of(ev.occurred_at) {
            let key = (ev.grid_id.clone(), ev.sku.clone(), start, end);
            if !deltas.entry(key).or_default().add(
                ev,
                short_id(&ev.store_id),
                ev.currency == currency,
            ) {
                summary.revenue_overflow += 1;
                tracing::error!(
                    store_id = %ev.store_id,
                    event_id = %ev.event_id,
                    reason = crate::counters::REVENUE_OVERFLOW,
                    "late sale not applied: its window's revenue would not fit"
                );
            }
        }
    }
    summary.applied = todo.len() as u64;

    // 3. The latest revision of each of those windows, from the partitions of their SKUs.
    let mut finals: HashMap<Key, DemandWindow> = HashMap::new();
    if !deltas.is_empty() {
        let wanted: HashSet<i32> =
            deltas.keys().map(|k| partition_for_key(k.1.as_bytes(), demand_partitions)).collect();
        let mut demand_ends = BTreeMap::new();
        for r in read_some(kafka, group, &demand, &wanted, &mut demand_ends)? {
            if let Ok(w) = codec.decode::<DemandWindow>(&r.payload) {
                let key = (w.grid_id.clone(), w.sku.clone(), w.window_start, w.window_end);
                if deltas.contains_key(&key) {
                    finals.insert(key, w);
                }
            }
        }
    }

    // 4. Revised windows and the offsets, in one transaction.
    producer.begin_transaction().map_err(|e| EosError::kafka("beginning a transaction", e))?;
    let now = now_ms();
    let mut record_key = Vec::with_capacity(64);
    for (key, delta) in &deltas {
        let w = match finals.get(key) {
            Some(old) => match revised(old, delta, now) {
                Some(w) => {
                    summary.windows_revised += 1;
                    w
                }
                None => {
                    summary.revenue_overflow += 1;
                    tracing::error!(
                        grid_id = %key.0,
                        sku = %key.1,
                        window_start = key.2,
                        reason = crate::counters::REVENUE_OVERFLOW,
                        "window not revised: its revenue would not fit"
                    );
                    continue;
                }
            },
            None => {
                summary.windows_created += 1;
                created(key, delta, currency, now)
            }
        };
        let bytes = codec.encode(&w).map_err(|source| EosError::Encode {
            record: "DemandWindow",
            topic: demand.clone(),
            source,
        })?;
        crate::window::output_key(
            &mut record_key,
            &[&w.sku, &w.grid_id],
            w.window_start,
            w.window_end,
        );
        let rec = BaseRecord::<[u8], [u8]>::to(&demand)
            .partition(partition_for_key(w.sku.as_bytes(), demand_partitions))
            .key(&record_key)
            .payload(&bytes);
        producer.send(rec).map_err(|(e, _)| EosError::kafka("writing a revised window", e))?;
    }
    let mut offsets = TopicPartitionList::new();
    for (p, end) in &ends {
        offsets
            .add_partition_offset(&late, *p, Offset::Offset(*end))
            .map_err(|e| EosError::kafka("building offsets", e))?;
    }
    let cgm = consumer.group_metadata().ok_or(EosError::NoGroupMetadata)?;
    producer
        .send_offsets_to_transaction(&offsets, &cgm, TIMEOUT)
        .map_err(|e| EosError::kafka("sending the replay's offsets", e))?;
    producer
        .commit_transaction(TIMEOUT)
        .map_err(|e| EosError::kafka("committing the replay", e))?;
    tracing::info!(
        applied = summary.applied,
        duplicates = summary.duplicates,
        revised = summary.windows_revised,
        created = summary.windows_created,
        "late replay committed"
    );
    Ok(summary)
}

/// `old` with the corrections `d`; `None` when its revenue would not fit
/// ([`crate::counters::REVENUE_MAX`]).
fn revised(old: &DemandWindow, d: &Counters, now: Millis) -> Option<DemandWindow> {
    let distinct =
        old.distinct_stores.saturating_add(i32::try_from(d.stores.len()).unwrap_or(i32::MAX));
    Some(DemandWindow {
        units_sold: old.units_sold.saturating_add(d.units_sold),
        units_returned: old.units_returned.saturating_add(d.units_returned),
        preorder_units: old.preorder_units.saturating_add(d.preorder_units),
        net_units: old.net_units.saturating_add(d.net_units()),
        revenue_minor: crate::counters::add_revenue(old.revenue_minor, d.revenue_minor)?,
        event_count: old.event_count.saturating_add(d.event_count),
        distinct_stores: distinct,
        stores_reporting: old.stores_reporting.max(distinct),
        revision: old.revision.saturating_add(1),
        is_final: true,
        last_event_at: old.last_event_at.max(d.last_event_at),
        emitted_at: now,
        ..old.clone()
    })
}

fn created(
    (grid, sku, start, end): &Key,
    d: &Counters,
    currency: &str,
    now: Millis,
) -> DemandWindow {
    let distinct = i32::try_from(d.stores.len()).unwrap_or(i32::MAX);
    DemandWindow {
        grid_id: grid.clone(),
        sku: sku.clone(),
        window_start: *start,
        window_end: *end,
        units_sold: d.units_sold,
        units_returned: d.units_returned,
        preorder_units: d.preorder_units,
        net_units: d.net_units(),
        revenue_minor: d.revenue_minor,
        currency: currency.to_string(),
        event_count: d.event_count,
        distinct_stores: distinct,
        stores_reporting: distinct,
        stores_expected: 0,
        stores_pending: 0,
        revision: 0,
        is_final: true,
        watermark: 0,
        source_partition: -1,
        last_event_at: d.last_event_at,
        emitted_at: now,
    }
}

/// The group's committed offsets on `topic` (absent: nothing applied yet).
fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<HashMap<i32, i64>, EosError> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, TIMEOUT)
        .map_err(|e| EosError::kafka("fetching the replay's committed offsets", e))?;
    Ok(c.elements()
        .iter()
        .filter_map(|e| e.offset().to_raw().filter(|o| *o >= 0).map(|o| (e.partition(), o)))
        .collect())
}

struct Read {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    reason: String,
}

fn read(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: i32,
    ends: &mut BTreeMap<i32, i64>,
) -> Result<Vec<Read>, EosError> {
    read_some(kafka, group, topic, &(0..partitions).collect(), ends)
}

/// Every committed record of `partitions` of `topic`, up to the ends they have now
/// (recorded in `ends`), read as `group` (assigned, never joined or committed).
fn read_some(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &HashSet<i32>,
    ends: &mut BTreeMap<i32, i64>,
) -> Result<Vec<Read>, EosError> {
    let consumer: BaseConsumer = clients::reader(kafka, group, &[], &[])?
        .create()
        .map_err(|source| EosError::Client { client: "late replay reader", source })?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(|e| EosError::kafka("reading watermarks", e))?;
        ends.insert(p, high);
        if high > low {
            open.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| EosError::kafka("assigning", e))?;
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| EosError::kafka("assigning", e))?;
    let mut idle = 0;
    while !open.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            // Only transaction markers may be left before the recorded end.
            idle += 1;
            if idle >= 20 {
                break;
            }
            continue;
        };
        idle = 0;
        let m = m.map_err(|e| EosError::kafka("reading", e))?;
        let (p, offset) = (m.partition(), m.offset());
        if open.get(&p).is_some_and(|end| offset + 1 >= *end) {
            open.remove(&p);
        }
        if ends.get(&p).is_some_and(|end| offset >= *end) {
            continue;
        }
        let reason = m
            .headers()
            .and_then(|h| {
                h.iter().find(|x| x.key == crate::stage::LATE_REASON_HEADER).and_then(|x| x.value)
            })
            .map(|v| {
                let text = String::from_utf8_lossy(v);
                text.split(" (").next().unwrap_or_default().to_string()
            })
            .unwrap_or_else(|| "unknown".into());
        out.push(Read {
            partition: p,
            offset,
            payload: m.payload().unwrap_or_default().to_vec(),
            reason,
        });
    }
    Ok(out)
}
