// The live page: polls /api/state and redraws the map, tables and health tiles in place.
"use strict";

const errorsEl = document.getElementById("errors");
function report(msg) {
  errorsEl.textContent = String(msg);
  document.body.dataset.error = String(msg);
}
window.addEventListener("error", (e) => report(e.message));
window.addEventListener("unhandledrejection", (e) => report(e.reason));

const svg = d3.select("#svg");
const gCells = svg.append("g");
const filterEl = document.getElementById("filter");
let refreshMs = 2000;
let timer = null;

const fmt = d3.format(",.0f");
const fmt1 = d3.format(",.1f");
const num = (v, f = fmt) => (v === null || v === undefined ? "–" : f(v));

function query() {
  const v = filterEl.value;
  if (!v) return "";
  const [kind, name] = v.split(":", 2);
  return "?" + kind + "=" + encodeURIComponent(name);
}

// Every cell seen so far, so the map keeps the city's shape while the current window
// fills up (a cell without demand in this window is drawn empty).
const known = new Map();
let projectionFor = 0;
let projection = null;

function drawMap(cells) {
  const node = svg.node();
  const width = node.clientWidth || 800;
  const height = node.clientHeight || 640;
  for (const c of cells) {
    if (Array.isArray(c.boundary) && !known.has(c.grid_id)) known.set(c.grid_id, c.boundary);
  }
  const now = new Map(cells.map((c) => [c.grid_id, c]));
  const features = [...known].map(([grid, ring]) => ({
    type: "Feature",
    properties: now.get(grid) || { grid_id: grid, net_units: 0, event_count: 0, quiet: true },
    geometry: { type: "Polygon", coordinates: [ring] },
  }));
  if (features.length === 0) return;
  if (!projection || projectionFor !== features.length) {
    // Refit only when the set of cells grew.
    projection = d3.geoMercator().fitExtent([[10, 10], [width - 10, height - 10]], {
      type: "FeatureCollection",
      features,
    });
    projectionFor = features.length;
  }
  const path = d3.geoPath(projection);
  const max = d3.max(cells, (c) => Math.max(c.net_units, 0)) || 1;
  const color = d3.scaleSequentialSqrt([0, max], d3.interpolateYlOrRd);
  gCells
    .selectAll("path.cell")
    .data(features, (f) => f.properties.grid_id)
    .join((enter) => enter.append("path").attr("class", "cell").call((p) => p.append("title")))
    .attr("d", path)
    .attr("data-grid", (f) => f.properties.grid_id)
    .attr("fill", (f) => (f.properties.quiet ? "#1f2833" : color(Math.max(f.properties.net_units, 0))))
    .select("title")
    .text((f) => `${f.properties.grid_id}: ${f.properties.net_units} net units, ${f.properties.event_count} events`);
  // Text and attributes only, never markup from data (the same rule as every table).
  const legend = d3.select("#legend");
  legend.text("");
  legend.append("span").text("0");
  legend
    .append("svg")
    .attr("width", 160)
    .attr("height", 10)
    .selectAll("rect")
    .data(d3.range(0, 1.01, 0.1))
    .join("rect")
    .attr("x", (_, i) => i * 14.5)
    .attr("width", 15)
    .attr("height", 10)
    .attr("fill", (t) => color(t * max));
  legend.append("span").text(`${fmt(max)} net units`);
  legend.append("span").text(`· ${cells.length} cells with demand of ${features.length} seen`);
}

// Table cells as [text, class] pairs, written with .text(): a SKU, supplier or reason is
// shown as the characters it is, never parsed as HTML.
function cellsOf(row, values) {
  row
    .selectAll("td")
    .data(values)
    .join("td")
    .attr("class", (v) => v[1] || null)
    .text((v) => v[0]);
}

function drawTables(state) {
  d3.select("#top")
    .selectAll("tr")
    .data(state.top_skus || [])
    .join("tr")
    .attr("title", "show this SKU on the map")
    .style("cursor", "pointer")
    .on("click", (_, d) => selectSku(d.sku))
    .each(function (d) {
      cellsOf(d3.select(this), [[d.sku], [fmt(d.net_units), "num"]]);
    });
  d3.select("#signals")
    .selectAll("tr")
    .data(state.signals || [], (s) => s.signal_id)
    .join("tr")
    .attr("class", "signal")
    .attr("title", (s) => `${s.signal_id} · region ${s.region} · horizon ${new Date(s.horizon_start).toISOString()} · forecast ${fmt1(s.forecast_units)} [${fmt1(s.forecast_low)}, ${fmt1(s.forecast_high)}]`)
    .each(function (s) {
      const reason = /^[A-Z]+$/.test(s.reason) ? `reason ${s.reason}` : "reason";
      cellsOf(d3.select(this), [
        [s.supplier_id],
        [s.sku],
        [s.reason, reason],
        [s.firmness],
        [fmt(s.recommended_units), "num"],
        [s.contributing_stores, "num"],
      ]);
    });
}

function drawHealth(h) {
  const up = h.stages_up || {};
  const tiles = [
    ["events/s accepted", num(h.events_per_s)],
    ["events accepted", num(h.events_accepted)],
    ["windows emitted (last minute)", num(h.windows_per_min)],
    ["signals", num(h.signals_total)],
    ["aggregator lag (records)", num(h.aggregator_lag)],
    ["aggregator watermark delay (s)", num(h.aggregator_watermark_delay_s)],
    ["emitter lag (records)", num(h.emitter_lag)],
    ["emitter watermark delay (s)", num(h.emitter_watermark_delay_s)],
  ];
  d3.select("#health")
    .selectAll("div.tile")
    .data(tiles)
    .join((enter) =>
      enter
        .append("div")
        .attr("class", "tile")
        .call((t) => t.append("div").attr("class", "v"))
        .call((t) => t.append("div").attr("class", "k"))
    )
    .call((t) => t.select("div.v").text((d) => d[1]))
    .call((t) => t.select("div.k").text((d) => d[0]));
  const status = d3.select("#status");
  status.text("");
  ["ingest", "aggregator", "emitter"].forEach((s, i) => {
    if (i > 0) status.append("span").text(" · ");
    status
      .append("span")
      .attr("class", up[s] ? null : "down")
      .text(up[s] ? s : `${s} down`);
  });
}

function selectSku(sku) {
  known.clear();
  projection = null;
  const value = "sku:" + sku;
  if (![...filterEl.options].some((o) => o.value === value)) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = "SKU " + sku;
    filterEl.appendChild(o);
  }
  filterEl.value = value;
  clearTimeout(timer);
  refresh();
}

// With an operator token the page is opened as /#token=<token>: it is sent as a bearer
// token and never leaves the browser otherwise (a fragment is not sent to servers).
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const api = (path) =>
  fetch(path, token ? { headers: { Authorization: "Bearer " + token } } : {});

async function refresh() {
  try {
    const r = await api("/api/state" + query());
    if (!r.ok) throw new Error(`/api/state: HTTP ${r.status}`);
    const state = await r.json();
    drawMap(state.cells || []);
    drawTables(state);
    drawHealth(state.health || {});
    const w = state.window_start
      ? `window ${new Date(state.window_start).toISOString().slice(11, 16)}–${new Date(state.window_end).toISOString().slice(11, 16)} UTC`
      : "waiting for the first window…";
    document.getElementById("window").textContent = w;
    errorsEl.textContent = (state.errors || []).join("\n");
    document.body.dataset.cells = String((state.cells || []).length);
    document.body.dataset.signals = String((state.signals || []).length);
  } catch (e) {
    report(e);
  } finally {
    timer = setTimeout(refresh, refreshMs);
  }
}

async function start() {
  const r = await api("/api/options");
  if (!r.ok) throw new Error(`/api/options: HTTP ${r.status} (open the page as /#token=<operator token>)`);
  const opts = await r.json();
  refreshMs = opts.refresh_ms || refreshMs;
  for (const c of opts.categories || []) {
    const o = document.createElement("option");
    o.value = "category:" + c.name;
    o.textContent = `category ${c.name} (${c.skus} SKUs)`;
    filterEl.appendChild(o);
  }
  filterEl.addEventListener("change", () => {
    known.clear();
    projection = null;
    clearTimeout(timer);
    refresh();
  });
  refresh();
}

start().catch(report);
