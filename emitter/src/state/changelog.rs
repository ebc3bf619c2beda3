//! The emitter's changelog: one small binary record per changed unit of state, written at
//! every flush for what changed and read back on restore.
//!
//! # Format 3 (current)
//! Every value starts with the format byte `3`; integers are zig-zag LEB128 varints,
//! strings a varint length and UTF-8 bytes; window ends in keys are 8 bytes big-endian.
//!
//! | key | value |
//! |---|---|
//! | `M` | the clock: watermark, completed, then per source: id, clock, idle |
//! | `C` sku cell | a (warehouse, region) cell: warehouse, region, series end and length, accumulation (units, from, to, stores per grid), then per grid of the accumulation the bound on its largest store's units, then the recent buckets that received late windows |
//! | `B` sku cell end | the cell's net units in the bucket ending at `end` (absent: 0) |
//! | `G` sku grid end | a grid's figures in one bucket: net, stores, reporting, expected, last event |
//! | `P` sku root | a revisable plan: first rule, basis, stores behind unpublished changes, members (a per-region plan's cells; none for a warehouse plan, whose groups are its allocations' regions), its latest published `PlanSignal` (Avro single-object), the prior it was forecast with (flag, then f64 LE), the late units held back per allocation (count, then each), and whether a re-decision is pending (a byte) |
//!
//! A tombstone deletes. A popular SKU's state is thus spread over records of a few
//! kilobytes: a warehouse plan names its groups (at most `max_allocations`), never its
//! grids or cells. Records of one SKU may come back in any order: [`Restoring`] gathers them and
//! [`PartitionState::restored`] assembles the SKUs.
//!
//! # Format 2 (read only)
//! The same records without the cells' store bounds and the plans' held late units (read
//! as none); its plans are per-region plans (one group: their members). The next change of a unit rewrites it in
//! format 3.
//!
//! # Format 1 (read only)
//! The first emitter wrote the whole SKU as JSON under `s/<sku>` and the clock as JSON
//! under `m`. Such records still restore; the next flush rewrites the SKU in format 2 and
//! tombstones the format-1 keys.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nearfield_schemas::{Codec, PlanReason, PlanSignal};

use super::PartitionState;
use super::model::{CellState, GridBucket, Meta, Plan, SkuState};

/// The format byte that starts every value.
pub(crate) const FORMAT: u8 = 3;

/// The previous format byte, still read.
const FORMAT_2: u8 = 2;

/// A changelog record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog key {0:?} is not one the emitter writes")]
    Key(String),
    #[error("changelog value of {key:?}: {reason}")]
    Value { key: String, reason: String },
    #[error("changelog value of {key:?}: format {format} is newer than this emitter (2)")]
    Format { key: String, format: u8 },
    #[error("changelog value (format 1): {0}")]
    Json(#[from] serde_json::Error),
}

const LEGACY_SKU: &[u8] = b"s/";
const LEGACY_META: &[u8] = b"m";

/// A unit of state changed since the last flush (its record is rewritten or deleted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dirty {
    Meta,
    Cell(String, String),
    Bucket(String, String, i64),
    Grid(String, String, i64),
    Plan(String, String),
    /// A format-1 key to delete.
    Legacy(Vec<u8>),
}

// ---- wire primitives ----

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_s(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads what the `put_*` functions wrote; every error says what was being read.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u(&mut self, what: &'static str) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(format!("{what}: truncated"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what}: varint longer than 10 bytes"))
    }

    fn i(&mut self, what: &'static str) -> Result<i64, String> {
        let u = self.u(what)?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, String> {
        i32::try_from(self.i(what)?).map_err(|_| format!("{what}: out of range"))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.u(what)?).map_err(|_| format!("{what}: too long"))?;
        if n > self.buf.len() {
            return Err(format!("{what}: length {n} past the end"));
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    fn s(&mut self, what: &'static str) -> Result<String, String> {
        String::from_utf8(self.bytes(what)?.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("{what}: truncated"));
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    fn end8(&mut self, what: &'static str) -> Result<i64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_be_bytes(a))
    }

    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, String> {
        let n = usize::try_from(self.u(what)?).map_err(|_| format!("{what}: too many"))?;
        // Each entry takes at least `min_bytes`: a count the rest cannot hold is corrupt
        // (and must not size an allocation).
        if n.saturating_mul(min_bytes) > self.buf.len() {
            return Err(format!("{what}: {n} entries past the end"));
        }
        Ok(n)
    }

    fn done(&self, what: &'static str) -> Result<(), String> {
        if self.buf.is_empty() { Ok(()) } else { Err(format!("{what}: trailing bytes")) }
    }
}

// ---- keys ----

fn key(tag: u8, sku: &str, name: &str, end: Option<i64>) -> Vec<u8> {
    let mut k = vec![tag];
    put_s(&mut k, sku);
    put_s(&mut k, name);
    if let Some(e) = end {
        k.extend_from_slice(&e.to_be_bytes());
    }
    k
}

impl Dirty {
    /// The record's key.
    pub(crate) fn key(&self) -> Vec<u8> {
        match self {
            Dirty::Meta => vec![b'M'],
            Dirty::Cell(s, c) => key(b'C', s, c, None),
            Dirty::Bucket(s, c, e) => key(b'B', s, c, Some(*e)),
            Dirty::Grid(s, g, e) => key(b'G', s, g, Some(*e)),
            Dirty::Plan(s, r) => key(b'P', s, r, None),
            Dirty::Legacy(k) => k.clone(),
        }
    }

    /// The unit a key names.
    fn parse(k: &[u8]) -> Result<Dirty, String> {
        let (&tag, rest) = k.split_first().ok_or("empty key")?;
        if tag == b'M' {
            return if rest.is_empty() { Ok(Dirty::Meta) } else { Err("M: trailing bytes".into()) };
        }
        let mut r = Reader { buf: rest };
        let sku = r.s("key sku")?;
        let name = r.s("key name")?;
        let d = match tag {
            b'C' => Dirty::Cell(sku, name),
            b'P' => Dirty::Plan(sku, name),
            b'B' => Dirty::Bucket(sku, name, r.end8("key end")?),
            b'G' => Dirty::Grid(sku, name, r.end8("key end")?),
            _ => return Err(format!("unknown tag {tag:#04x}")),
        };
        r.done("key")?;
        Ok(d)
    }
}

// ---- values ----

fn cell_value(c: &CellState) -> Vec<u8> {
    let mut v = vec![FORMAT];
    put_s(&mut v, &c.warehouse);
    put_s(&mut v, &c.region);
    put_i(&mut v, c.series_end);
    put_u(&mut v, c.series.len() as u64);
    put_i(&mut v, c.acc_units);
    put_i(&mut v, c.acc_from);
    put_i(&mut v, c.acc_to);
    put_u(&mut v, c.acc_stores.len() as u64);
    for (g, n) in &c.acc_stores {
        put_s(&mut v, g);
        put_i(&mut v, i64::from(*n));
    }
    for g in c.acc_stores.keys() {
        put_i(&mut v, c.acc_top.get(g).copied().unwrap_or(0));
    }
    put_u(&mut v, c.late.len() as u64);
    for end in &c.late {
        put_i(&mut v, *end);
    }
    v
}

/// A cell as its record says, with the series' length to fill from bucket records.
fn read_cell(r: &mut Reader<'_>, history: usize, format: u8) -> Result<(CellState, usize), String> {
    let mut c = CellState::new(&r.s("warehouse")?, r.s("region")?);
    c.series_end = r.i("series_end")?;
    let len = usize::try_from(r.u("series length")?).map_err(|_| "series length: too long")?;
    if len > history {
        return Err(format!("series length {len} over history_buckets {history}"));
    }
    c.acc_units = r.i("acc_units")?;
    c.acc_from = r.i("acc_from")?;
    c.acc_to = r.i("acc_to")?;
    for _ in 0..r.count("acc_stores", 2)? {
        let g = r.s("acc_stores grid")?;
        c.acc_stores.insert(g, r.i32("acc_stores stores")?);
    }
    if format != FORMAT_2 {
        for g in c.acc_stores.keys() {
            c.acc_top.insert(g.clone(), r.i("acc_top")?);
        }
        for _ in 0..r.count("late buckets", 1)? {
            c.late.insert(r.i("late bucket")?);
        }
    }
    r.done("cell")?;
    Ok((c, len))
}

fn grid_value(b: &GridBucket) -> Vec<u8> {
    let mut v = vec![FORMAT];
    for x in
        [b.net, i64::from(b.stores), i64::from(b.reporting), i64::from(b.expected), b.last_event_at]
    {
        put_i(&mut v, x);
    }
    v
}

fn read_grid(r: &mut Reader<'_>, end: i64) -> Result<GridBucket, String> {
    let b = GridBucket {
        end,
        net: r.i("net")?,
        stores: r.i32("stores")?,
        reporting: r.i32("reporting")?,
        expected: r.i32("expected")?,
        last_event_at: r.i("last_event_at")?,
    };
    r.done("grid")?;
    Ok(b)
}

fn reason_code(r: PlanReason) -> u64 {
    match r {
        PlanReason::Threshold => 0,
        PlanReason::Scheduled => 1,
        PlanReason::Surge => 2,
        PlanReason::Revision => 3,
    }
}

fn plan_value(p: &Plan, codec: &Codec) -> Option<Vec<u8>> {
    let mut v = vec![FORMAT];
    put_u(&mut v, reason_code(p.base_reason));
    put_i(&mut v, p.basis_from);
    put_i(&mut v, p.basis_to);
    put_i(&mut v, i64::from(p.pending_stores));
    put_u(&mut v, p.members.len() as u64);
    for m in &p.members {
        put_s(&mut v, m);
    }
    let signal = codec.encode(&p.signal).ok()?;
    put_u(&mut v, signal.len() as u64);
    v.extend_from_slice(&signal);
    match &p.prior {
        None => v.push(0),
        Some(prior) => {
            v.push(1);
            let (profile, weekday) = prior.parts();
            put_u(&mut v, profile.len() as u64);
            for x in profile.iter().chain(weekday) {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    put_u(&mut v, p.held.len() as u64);
    for h in &p.held {
        put_i(&mut v, *h);
    }
    v.push(u8::from(p.revise_pending));
    Some(v)
}

fn read_plan(r: &mut Reader<'_>, root: String, codec: &Codec, format: u8) -> Result<Plan, String> {
    let base_reason = match r.u("base_reason")? {
        0 => PlanReason::Threshold,
        1 => PlanReason::Scheduled,
        2 => PlanReason::Surge,
        3 => PlanReason::Revision,
        n => return Err(format!("base_reason: unknown code {n}")),
    };
    let basis_from = r.i("basis_from")?;
    let basis_to = r.i("basis_to")?;
    let pending_stores = r.i32("pending_stores")?;
    let members: Vec<String> =
        (0..r.count("members", 1)?).map(|_| r.s("member")).collect::<Result<_, _>>()?;
    let signal: PlanSignal =
        codec.decode(r.bytes("signal")?).map_err(|e| format!("signal: {e}"))?;
    let prior = match r.take(1, "prior")?[0] {
        0 => None,
        1 => {
            let n = r.count("prior profile", 8)?;
            let mut f = |what| -> Result<f64, String> {
                let mut a = [0u8; 8];
                a.copy_from_slice(r.take(8, what)?);
                Ok(f64::from_le_bytes(a))
            };
            let profile = (0..n).map(|_| f("prior profile")).collect::<Result<Vec<_>, _>>()?;
            let mut weekday = [0.0; 7];
            for w in &mut weekday {
                *w = f("prior weekday")?;
            }
            Some(crate::count_model::Prior::from_parts(profile, weekday))
        }
        b => return Err(format!("prior: flag {b}")),
    };
    let (mut held, mut revise_pending) = (Vec::new(), false);
    if format != FORMAT_2 {
        for _ in 0..r.count("held", 1)? {
            held.push(r.i("held")?);
        }
        revise_pending = match r.take(1, "revise_pending")?[0] {
            0 => false,
            1 => true,
            b => return Err(format!("revise_pending: flag {b}")),
        };
    }
    r.done("plan")?;
    let plan = Plan {
        root,
        signal,
        base_reason,
        members,
        basis_from,
        basis_to,
        prior,
        pending_stores,
        held,
        revise_pending,
    };
    Ok(plan)
}

impl PartitionState {
    fn meta_value(&self) -> Vec<u8> {
        let mut v = vec![FORMAT];
        put_i(&mut v, self.watermark);
        put_i(&mut v, self.completed);
        let sources: Vec<_> = self.clock.sources().collect();
        put_u(&mut v, sources.len() as u64);
        for (id, s) in sources {
            put_i(&mut v, i64::from(id));
            put_i(&mut v, s.clock);
            v.push(u8::from(s.idle));
        }
        v
    }

    /// The current value of a unit's record (`None`: delete it).
    pub(crate) fn record(&self, d: &Dirty) -> Option<Vec<u8>> {
        match d {
            Dirty::Meta => Some(self.meta_value()),
            Dirty::Legacy(_) => None,
            Dirty::Cell(s, c) => self.skus.get(s)?.cells.get(c).map(cell_value),
            Dirty::Bucket(s, c, end) => {
                let cell = self.skus.get(s)?.cells.get(c)?;
                let back = usize::try_from((cell.series_end - end) / self.cfg.bucket).ok()?;
                let v = *cell.series.get(cell.series.len().checked_sub(1 + back)?)?;
                (v != 0).then(|| {
                    let mut out = vec![FORMAT];
                    put_i(&mut out, v);
                    out
                })
            }
            Dirty::Grid(s, g, end) => {
                let b = self.skus.get(s)?.grids.get(g)?.iter().find(|b| b.end == *end)?;
                Some(grid_value(b))
            }
            Dirty::Plan(s, root) => {
                let p = self.skus.get(s)?.plans.iter().find(|p| &p.root == root)?;
                plan_value(p, &self.codec)
            }
        }
    }

    /// Applies one changelog record while restoring.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        if key == LEGACY_META {
            if let Some(v) = value {
                let m: Meta = serde_json::from_slice(v)?;
                self.watermark = m.watermark;
                self.completed = m.completed;
            }
            self.restoring.legacy_meta = true;
            return Ok(());
        }
        if let Some(id) = key.strip_prefix(LEGACY_SKU) {
            let id = String::from_utf8_lossy(id).into_owned();
            let sku: Option<SkuState> = value.map(serde_json::from_slice).transpose()?;
            self.restoring.legacy.insert(id, sku);
            return Ok(());
        }
        let shown = || String::from_utf8_lossy(key).into_owned();
        let unit = Dirty::parse(key).map_err(|_| RestoreError::Key(shown()))?;
        let bad = |reason: String| RestoreError::Value { key: shown(), reason };
        let Some(value) = value else {
            self.restoring.forget(&unit);
            return Ok(());
        };
        let (&format, rest) = value.split_first().ok_or_else(|| bad("empty value".into()))?;
        if format != FORMAT && format != FORMAT_2 {
            return Err(RestoreError::Format { key: shown(), format });
        }
        let mut r = Reader { buf: rest };
        let history = self.cfg.history;
        let rs = &mut self.restoring;
        match unit {
            Dirty::Meta => {
                let watermark = r.i("watermark").map_err(bad)?;
                let completed = r.i("completed").map_err(bad)?;
                let mut sources = Vec::new();
                for _ in 0..r.count("sources", 3).map_err(bad)? {
                    let id = r.i32("source").map_err(bad)?;
                    let clock = r.i("source clock").map_err(bad)?;
                    let idle = r.take(1, "source idle").map_err(bad)?[0] != 0;
                    sources.push((id, clock, idle));
                }
                r.done("meta").map_err(bad)?;
                self.watermark = watermark;
                self.completed = completed;
                for (id, clock, idle) in sources {
                    self.clock.insert(id, clock, idle);
                }
            }
            Dirty::Cell(s, c) => {
                let cell = read_cell(&mut r, history, format).map_err(bad)?;
                rs.cells.insert((s, c), cell);
            }
            Dirty::Bucket(s, c, end) => {
                let v = r.i("net").map_err(bad)?;
                r.done("bucket").map_err(bad)?;
                rs.buckets.insert((s, c, end), v);
            }
            Dirty::Grid(s, g, end) => {
                let b = read_grid(&mut r, end).map_err(bad)?;
                rs.grids.insert((s, g, end), b);
            }
            Dirty::Plan(s, root) => {
                let p = read_plan(&mut r, root.clone(), &self.codec, format).map_err(bad)?;
                rs.plans.insert((s, root), p);
            }
            Dirty::Legacy(_) => {}
        }
        Ok(())
    }

    /// The restore is complete at wall-clock `now`: assembles the SKUs from their records
    /// (idleness counts from here).
    pub fn restored(&mut self, now: i64) {
        let rs = std::mem::take(&mut self.restoring);
        if rs.legacy_meta {
            self.dirty.insert(Dirty::Legacy(LEGACY_META.to_vec()));
            self.dirty.insert(Dirty::Meta);
        }
        for (id, sku) in rs.legacy {
            let mut k = LEGACY_SKU.to_vec();
            k.extend_from_slice(id.as_bytes());
            self.dirty.insert(Dirty::Legacy(k));
            let Some(mut sku) = sku else { continue };
            for p in &mut sku.plans {
                p.root = p.root_id();
            }
            self.mark_all(&id, &sku);
            self.skus.insert(id, sku);
        }
        let bucket = self.cfg.bucket;
        for ((s, c), (mut cell, len)) in rs.cells {
            let end = cell.series_end;
            cell.series = (0..len as i64)
                .rev()
                .map(|back| rs.buckets.get(&(s.clone(), c.clone(), end - back * bucket)))
                .map(|v| v.copied().unwrap_or(0))
                .collect::<VecDeque<i64>>();
            self.skus.entry(s).or_default().cells.insert(c, cell);
        }
        for ((s, g, _), b) in rs.grids {
            let v = self.skus.entry(s).or_default().grids.entry(g).or_default();
            let at = v.partition_point(|x| x.end < b.end);
            if v.get(at).is_some_and(|x| x.end == b.end) {
                v[at] = b;
            } else {
                v.insert(at, b);
            }
        }
        for ((s, _), p) in rs.plans {
            let plans = &mut self.skus.entry(s).or_default().plans;
            plans.retain(|x| x.root != p.root);
            plans.push(p);
        }
        for sku in self.skus.values_mut() {
            // Plans in decision order (the order revisions look for them in).
            sku.plans.sort_by(|a, b| {
                (a.basis_to, a.signal.based_on_watermark, &a.root).cmp(&(
                    b.basis_to,
                    b.signal.based_on_watermark,
                    &b.root,
                ))
            });
        }
        if self.watermark != i64::MIN {
            self.last_input_wall = now;
        }
        self.clock.heard_all(now);
        self.conflict = super::handover::conflict(self.cfg.horizons, self.skus.iter());
    }

    /// Marks every unit of a SKU for rewriting (a SKU restored from format 1).
    fn mark_all(&mut self, id: &str, sku: &SkuState) {
        for (c, cell) in &sku.cells {
            self.dirty.insert(Dirty::Cell(id.into(), c.clone()));
            for (i, v) in cell.series.iter().enumerate() {
                if *v != 0 {
                    let end = cell.series_start(self.cfg.bucket) + i as i64 * self.cfg.bucket;
                    self.dirty.insert(Dirty::Bucket(id.into(), c.clone(), end));
                }
            }
        }
        for (g, bs) in &sku.grids {
            for b in bs {
                self.dirty.insert(Dirty::Grid(id.into(), g.clone(), b.end));
            }
        }
        for p in &sku.plans {
            self.dirty.insert(Dirty::Plan(id.into(), p.root.clone()));
        }
    }

    /// The changelog records of every unit marked since the last flush.
    pub(crate) fn changelog(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.iter().map(|d| (d.key(), self.record(d))).collect()
    }
}

/// Format-2 records read back, gathered until the restore completes.
#[derive(Debug, Default)]
pub(crate) struct Restoring {
    cells: BTreeMap<(String, String), (CellState, usize)>,
    buckets: BTreeMap<(String, String, i64), i64>,
    grids: BTreeMap<(String, String, i64), GridBucket>,
    plans: BTreeMap<(String, String), Plan>,
    /// Format-1 SKUs (`None`: deleted).
    legacy: BTreeMap<String, Option<SkuState>>,
    legacy_meta: bool,
}

impl Restoring {
    fn forget(&mut self, unit: &Dirty) {
        match unit {
            Dirty::Cell(s, c) => {
                self.cells.remove(&(s.clone(), c.clone()));
            }
            Dirty::Bucket(s, c, e) => {
                self.buckets.remove(&(s.clone(), c.clone(), *e));
            }
            Dirty::Grid(s, g, e) => {
                self.grids.remove(&(s.clone(), g.clone(), *e));
            }
            Dirty::Plan(s, r) => {
                self.plans.remove(&(s.clone(), r.clone()));
            }
            Dirty::Meta | Dirty::Legacy(_) => {}
        }
    }
}

/// Keeps the set type in one place for the state.
pub(crate) type DirtySet = BTreeSet<Dirty>;
