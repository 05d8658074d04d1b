// runwatch's view: the training-dashboard format's terminal over runwatch's run API and /ws.
// Plain JavaScript, no build step of its own; uPlot (static/vendor/, from npm) draws the
// charts. Every text from a run (names, keys, messages, config) reaches the page through
// textContent or an attribute, never as HTML.
"use strict";

const CONFIG = JSON.parse(document.querySelector('meta[name="runwatch-config"]').content);
const COLORS = ["#FFD700", "#00FFFF", "#00FF00", "#FFA500", "#FF66FF", "#6699FF", "#FFFFFF", "#FF6666"];
const MAX_OVERLAY = 8;           // runs drawn together
const MAX_HISTORY_POINTS = 100000; // rows asked of a run's window for the charts
const MAX_LOG_LINES = 500;
const MAX_LEGEND = 3;             // series named under a chart; more overlaid: by colour in the run list
const MAX_LABEL = 28;             // characters of a run's name in a legend
const RUNS_REFRESH_MS = 5000;
const SYSTEM_REFRESH_MS = 5000;
const TRADING_REFRESH_MS = 2000;
const BADGES = {
  running: "[● RUNNING]", completed: "[✓ COMPLETED]", failed: "[✗ FAILED]",
  crashed: "[✗ CRASHED]", interrupted: "[■ INTERRUPTED]", ended: "[○ ENDED]",
};
const AXIS = { stroke: "#808080", grid: { stroke: "#333333", width: 1 }, ticks: { stroke: "#333333", width: 1 }, font: "11px monospace" };
const LEVELS = { failed: "error", crashed: "error", interrupted: "warn" };
const STATUS_ORDER = { running: 0, crashed: 1, failed: 2, interrupted: 3, completed: 4, ended: 5 };

const view = {
  runs: new Map(),        // run id -> the run as GET /api/runs shows it
  selected: null,         // run id shown in RUN CONFIG, CHECKPOINTS and first on the charts
  overlay: [],            // other run ids drawn on the charts
  window: "all",          // "100" | "1000" | "all": the last rows of each run drawn
  x: "step",              // "step" | "time"
  logAll: true,           // the event log: every run's lines, or the selected run's
  series: new Map(),      // run id -> {keys, step, time, values: {key: []}, next}
  sort: { column: "step", descending: true },
  socket: null,
  live: false,
  logSeeded: false,       // the log began with what the runs' state tells of the past
};

// ---- small helpers ---------------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replaceChildren(node, children) {
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

function money(value) {
  if (typeof value !== "number") return number(value);
  return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function number(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;  // "NaN", "Infinity": the API's spelling
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return value.toLocaleString("en-US");
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4) return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e15)) return value.toExponential(digits - 1);
  return String(Number(value.toPrecision(digits)));
}

function clockTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  return d.toTimeString().slice(0, 8);
}

function dateTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

function shortName(name) {
  return name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}…` : name;
}

function runPath(runId, rest = "") {
  return `api/runs/${encodeURIComponent(runId)}${rest}`;
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// A run's mark in the colour of its line on the charts (the order they are drawn in).
function colored(node, index) {
  if (index >= 0) node.style.color = COLORS[index % COLORS.length];
  return node;
}

function badge(status) {
  return el("span", { class: `badge ${status}` }, BADGES[status] || `[? ${String(status).toUpperCase()}]`);
}

function meter(fraction, level) {
  const width = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const bar = el("span", { class: `bar ${level || ""}` });
  bar.style.width = `${width}%`;
  return el("span", { class: "meter" }, bar);
}

function levelOf(value, warn, error) {
  if (value === null || value === undefined) return "";
  return value >= error ? "error" : value >= warn ? "warn" : "good";
}

function kv(pairs) {
  const list = el("dl", { class: "kv" });
  for (const [name, value, cls] of pairs) {
    list.append(el("dt", {}, name), el("dd", { class: cls || null }, value));
  }
  return list;
}

// ---- runs ------------------------------------------------------------------------------

let runsTimer = null;
function refreshRunsSoon() {
  if (runsTimer === null) runsTimer = setTimeout(() => { runsTimer = null; loadRuns(); }, 200);
}

async function loadRuns() {
  let runs;
  try {
    runs = await getJson("api/runs");
  } catch (error) {
    logLine({ level: "error", message: `could not read api/runs: ${error.message}` });
    return;
  }
  view.runs = new Map(runs.map((run) => [run.run_id, run]));
  if (!view.logSeeded) { view.logSeeded = true; seedLog(runs); }
  for (const id of [...view.series.keys()]) {
    if (!view.runs.has(id)) view.series.delete(id);
  }
  view.overlay = view.overlay.filter((id) => view.runs.has(id));
  if (view.selected === null || !view.runs.has(view.selected)) {
    const runs = orderedRuns();
    const logging = runs.filter((run) => Object.keys(run.metrics).length);
    const longest = logging.filter((run) => run.status === "running").sort((a, b) => (b.step || 0) - (a.step || 0));
    const first = longest[0] || logging[0] || runs[0];
    if (first) selectRun(first.run_id);
    else view.selected = null;
  }
  renderRuns();
  renderSelected();
  document.body.dataset.ready = "1";
}

function orderedRuns() {
  return [...view.runs.values()].sort((a, b) =>
    (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || (b.start || 0) - (a.start || 0));
}

function renderRuns() {
  const list = document.getElementById("runs");
  const runs = orderedRuns();
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.runId : null;
  replaceChildren(list, runs.map((run) => {
    const selected = run.run_id === view.selected;
    const overlaid = view.overlay.includes(run.run_id);
    const item = el("li", {
      class: "run", role: "option", tabindex: selected ? 0 : -1, "aria-selected": String(selected),
      "data-run-id": run.run_id, "data-status": run.status, title: run.run_id,
    },
    colored(el("span", { class: "mark" }, selected ? "▶" : overlaid ? "+" : ""), followedRuns().indexOf(run.run_id)),
    badge(run.status),
    el("span", { class: "name" }, run.name || run.run_id),
    el("span", { class: "muted" }, run.step === null ? (run.stage || "") : `step ${number(run.step)}`));
    item.addEventListener("click", (event) => (event.shiftKey || event.ctrlKey || event.metaKey ? toggleOverlay(run.run_id) : selectRun(run.run_id)));
    return item;
  }));
  const again = focused && [...list.children].find((item) => item.dataset.runId === focused);
  if (again) again.focus();  // the list is drawn anew: keyboard focus stays on its run
  document.getElementById("runs-empty").hidden = runs.length > 0;
  document.getElementById("run-count").textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}`;
}

function selectRun(runId) {
  if (view.selected === runId) return;
  view.selected = runId;
  view.overlay = view.overlay.filter((id) => id !== runId);
  follow();
  renderRuns();
  renderSelected();
  filterLog();
}

function moveSelection(by) {
  const runs = orderedRuns();
  if (!runs.length) return;
  const at = runs.findIndex((run) => run.run_id === view.selected);
  const next = runs[Math.max(0, Math.min(runs.length - 1, at + by))];
  selectRun(next.run_id);
  const item = document.querySelector(`li.run[aria-selected="true"]`);
  if (item) { item.focus(); item.scrollIntoView({ block: "nearest" }); }
}

// Overlays the run given (a shift-click), else the focused one (c), else the next run not
// drawn yet; a run overlaid already is taken off.
function toggleOverlay(runId) {
  const runs = orderedRuns();
  const focused = runId || (document.activeElement && document.activeElement.dataset.runId);
  const id = focused && focused !== view.selected ? focused : null;
  if (id) {
    view.overlay = view.overlay.includes(id) ? view.overlay.filter((x) => x !== id) : [...view.overlay, id].slice(-MAX_OVERLAY + 1);
  } else if (view.selected) {
    // no other run focused: overlay the next run below the selected one
    const at = runs.findIndex((run) => run.run_id === view.selected);
    const candidates = [...runs.slice(at + 1), ...runs.slice(0, at)].filter((run) => !view.overlay.includes(run.run_id));
    if (candidates.length) view.overlay = [...view.overlay, candidates[0].run_id].slice(-MAX_OVERLAY + 1);
  }
  follow();
  renderRuns();
  renderSelected();
}

function renderSelected() {
  const run = view.runs.get(view.selected) || null;
  renderConfig(run);
  renderCheckpoints(run);
  renderActions(run);
  renderKeys();
  drawSoon();
}

function renderConfig(run) {
  const body = document.getElementById("config");
  document.getElementById("config-run").textContent = run ? run.name : "";
  if (!run) { replaceChildren(body, [el("p", { class: "notice" }, "No run selected.")]); return; }
  const errors = run.errors.reduce((sum, e) => sum + e.count, 0);
  const summary = kv([
    ["run_id", run.run_id],
    ["status", badge(run.status)],
    ["stage", run.stage || "—"],
    ["step", number(run.step)],
    ["started", dateTime(run.start)],
    ["duration", duration(run.duration_seconds)],
    ["process", run.process_up === null ? "—" : run.process_up ? "up" : "down", run.process_up === false ? "error" : null],
    ["targets", run.targets_total ? `${run.targets_completed}/${run.targets_total}` : "—"],
    ["errors", String(errors), errors ? "warn" : null],
    ["last error", run.last_error ? `${run.last_error.error_type}: ${run.last_error.message}` : "—", run.last_error ? (run.last_error.recoverable ? "warn" : "error") : null],
  ]);
  const metrics = kv(Object.entries(run.metrics).slice(0, 50).map(([key, value]) => [key, number(value)]));
  const config = kv(Object.entries(run.config || {}).slice(0, 200).map(([key, value]) =>
    [key, typeof value === "string" ? value : JSON.stringify(value)]));
  replaceChildren(body, [summary, ...goodputSection(run.goodput), el("h3", { class: "muted" }, "LATEST"), metrics,
    el("h3", { class: "muted" }, "CONFIG"), Object.keys(run.config || {}).length ? config : el("p", { class: "muted" }, "none logged")]);
}

// The run's goodput account (docs/goodput.md): a bar of its wall clock split into kept
// step time, work at risk and each badput cause, with the figures beside it.
const GOODPUT_PARTS = [["goodput", "good"], ["at risk", "risk"], ["lost_work", "lost"]];

function goodputSection(account) {
  if (!account) return [];
  const wall = account.wall_clock_seconds;
  const parts = [["goodput", account.goodput_seconds], ["at risk", account.work_at_risk_seconds],
    ...Object.entries(account.badput_seconds).sort((a, b) => b[1] - a[1])].filter(([, s]) => s > 0);
  const bar = el("div", { class: "goodbar", role: "img", "aria-label": "goodput by cause" },
    ...parts.map(([name, seconds]) => {
      const kind = (GOODPUT_PARTS.find(([part]) => part === name) || [name, "bad"])[1];
      const part = el("span", { class: `part ${kind}`, title: `${name} ${duration(seconds)}` });
      part.style.width = `${wall > 0 ? (100 * seconds) / wall : 0}%`;
      return part;
    }));
  const share = wall > 0 ? account.goodput_seconds / wall : null;
  const percentile = (name) => account.step_time_seconds[name];
  const causes = parts.filter(([name]) => name !== "goodput" && name !== "at risk")
    .map(([name, seconds]) => `${name} ${duration(seconds)}`).join(" · ");
  const figures = kv([
    ["goodput", share === null ? "—" : `${(100 * share).toFixed(1)}% of ${duration(wall)}`, levelOf(1 - (share || 0), 0.3, 0.5)],
    ["at risk", duration(account.work_at_risk_seconds), account.work_at_risk_seconds > 600 ? "warn" : null],
    ["lost", `${duration(account.badput_seconds.lost_work)} · ${number(account.lost_steps)} steps · ${number(account.restarts)} restarts`, account.lost_steps ? "error" : null],
    ["badput", causes || "—"],
    ["pace", account.steps_per_second === null ? "—" : `${number(account.steps_per_second, 3)} steps/s · step p50 ${number(percentile("p50"), 3)} s, p99 ${number(percentile("p99"), 3)} s`],
    ["ETA", account.eta_seconds === null ? "—" : `${duration(account.eta_seconds)} (${number(account.planned_steps)} steps)`],
  ]);
  return [el("h3", { class: "muted" }, "GOODPUT"), bar, figures];
}

// ---- checkpoints -----------------------------------------------------------------------

function renderCheckpoints(run) {
  const table = document.getElementById("checkpoints");
  const checkpoints = run ? run.checkpoints : [];
  document.getElementById("checkpoint-count").textContent = run ? `${checkpoints.length}` : "";
  const metricKeys = [...new Set(checkpoints.flatMap((c) => Object.keys(c.metrics)))].slice(0, 6);
  const columns = [
    { id: "checkpoint_id", label: "ID", value: (c) => c.checkpoint_id },
    { id: "step", label: "STEP", value: (c) => c.step, num: true },
    ...metricKeys.map((key) => ({ id: `metric:${key}`, label: key.toUpperCase(), value: (c) => c.metrics[key], num: true })),
    { id: "timestamp", label: "TIMESTAMP", value: (c) => c.timestamp, show: dateTime },
    { id: "filepath", label: "PATH", value: (c) => c.filepath },
  ];
  const sort = columns.find((c) => c.id === view.sort.column) || columns[1];
  const sign = view.sort.descending ? -1 : 1;
  const rows = [...checkpoints].sort((a, b) => sign * compare(sort.value(a), sort.value(b)));
  const head = el("tr", {}, ...columns.map((column) => {
    const th = el("th", {
      class: column.num ? "num" : null, "data-sort": column.id, tabindex: 0, scope: "col",
      "aria-sort": column === sort ? (view.sort.descending ? "descending" : "ascending") : null,
    }, column.label);
    const resort = () => {
      view.sort = { column: column.id, descending: view.sort.column === column.id ? !view.sort.descending : column.num === true };
      renderCheckpoints(view.runs.get(view.selected) || null);
    };
    th.addEventListener("click", resort);
    th.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); resort(); } });
    return th;
  }));
  const focused = table.tHead.contains(document.activeElement) ? document.activeElement.dataset.sort : null;
  replaceChildren(table.tHead, [head]);
  const again = focused && head.querySelector(`th[data-sort="${CSS.escape(focused)}"]`);
  if (again) again.focus();  // Enter again reverses the order
  const body = rows.map((checkpoint) => el("tr", { "data-checkpoint-id": checkpoint.checkpoint_id, class: checkpoint.is_best ? "best" : null },
    ...columns.map((column) => {
      const value = column.value(checkpoint);
      if (column.id === "checkpoint_id") {
        const link = el("a", { href: `api/checkpoints/${encodeURIComponent(value)}?run_id=${encodeURIComponent(run.run_id)}`, target: "_blank", rel: "noopener" }, value);
        return el("td", {}, link, checkpoint.is_best ? el("span", { class: "info", title: "best" }, " ★") : null);
      }
      return el("td", { class: column.num ? "num" : null, title: column.id === "filepath" ? value : null },
        column.show ? column.show(value) : column.num ? number(value) : (value ?? "—"));
    })));
  if (!body.length) body.push(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, run ? "no checkpoints yet" : "")));
  replaceChildren(table.tBodies[0], body);
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), "en", { numeric: true });
}

// ---- actions ---------------------------------------------------------------------------

function renderActions(run) {
  for (const button of document.querySelectorAll("[data-window]")) button.setAttribute("aria-pressed", String(button.dataset.window === view.window));
  for (const button of document.querySelectorAll("[data-x]")) button.setAttribute("aria-pressed", String(button.dataset.x === view.x));
  const logAll = document.getElementById("log-all");
  logAll.setAttribute("aria-pressed", String(view.logAll));
  logAll.textContent = view.logAll ? "ALL RUNS" : "THIS RUN";
  const names = view.overlay.map((id) => (view.runs.get(id) || { name: id }).name);
  document.getElementById("compare-list").textContent = names.length ? `+ ${names.join(", ")}` : "";
  const links = { "export-csv": "/metrics?format=csv", "export-json": "/metrics", "run-json": "" };
  for (const [id, rest] of Object.entries(links)) {
    const link = document.getElementById(id);
    if (run) link.href = runPath(run.run_id, rest); else link.removeAttribute("href");
  }
  const grafana = /^https?:\/\//.test(CONFIG.grafana_url) ? CONFIG.grafana_url.replace(/\/$/, "") : null;
  const board = document.getElementById("link-grafana");
  if (grafana) {
    board.href = `${grafana}/d/runwatch-training${run ? `?var-run=${encodeURIComponent(run.run_id)}` : ""}`;
    board.title = `the training board on ${grafana}`;
  }
  document.getElementById("link-metrics").href = CONFIG.telemetry_path.replace(/^\//, "");
}

// ---- charts ----------------------------------------------------------------------------

const plots = [...document.querySelectorAll("section.plot")].map((panel) => ({
  panel, chart: panel.querySelector(".chart"), select: panel.querySelector("select.key"),
  key: null, uplot: null, signature: "",
}));

function followedRuns() {
  return view.selected ? [view.selected, ...view.overlay].slice(0, MAX_OVERLAY) : [];
}

function keysOf(runId) {
  const run = view.runs.get(runId);
  return run ? Object.keys(run.metrics) : [];
}

function renderKeys() {
  const keys = [...new Set(followedRuns().flatMap(keysOf))].sort();
  for (const plot of plots) {
    if (!plot.key || !keys.includes(plot.key)) plot.key = defaultKey(plot, keys);
    const options = keys.map((key) => el("option", { value: key, selected: key === plot.key }, key));
    if (plot.select.options.length !== options.length || [...plot.select.options].some((o, i) => o.value !== keys[i])) {
      replaceChildren(plot.select, options);
    }
    plot.select.value = plot.key || "";
    plot.panel.dataset.key = plot.key || "";
  }
  for (const runId of followedRuns()) ensureSeries(runId);
}

function defaultKey(plot, keys) {
  const wanted = plot.panel.dataset.defaultKey;
  const pattern = wanted === "lr" ? /(^|[_./])(lr|learning_rate)($|[_./])/i : /loss/i;
  const taken = plots.filter((p) => p !== plot).map((p) => p.key);
  return keys.find((k) => k === wanted) || keys.find((k) => pattern.test(k) && !taken.includes(k))
    || keys.find((k) => !taken.includes(k)) || null;  // one key: the other panel waits for a pick
}

function wantedKeys() {
  return [...new Set(plots.map((plot) => plot.key).filter(Boolean))];
}

async function ensureSeries(runId) {
  const keys = wantedKeys();
  const have = view.series.get(runId);
  if (have && (have.loading || keys.every((k) => have.keys.includes(k)))) return;
  const series = { keys, step: [], time: [], values: {}, next: 0, loading: true, pending: [] };
  view.series.set(runId, series);
  try {
    const query = new URLSearchParams({ layout: "columns", keys: keys.join(","), max_points: String(MAX_HISTORY_POINTS) });
    const history = await getJson(runPath(runId, `/metrics?${query}`));
    if (view.series.get(runId) !== series) return;  // replaced meanwhile
    series.step = history.step;
    series.time = history.timestamp;
    for (const key of keys) series.values[key] = (history.values[key] || history.step.map(() => null)).map(toNumber);
    series.next = history.steps_logged;
  } catch (error) {
    logLine({ level: "error", run_id: runId, message: `could not read the run's history: ${error.message}` });
  } finally {
    series.loading = false;
  }
  for (const update of series.pending) appendUpdate(series, update);
  series.pending = [];
  subscribe(runId, series.next);
  drawSoon();
}

// A chart's value: NaN and the infinities (the API spells them as strings) are gaps, so
// one infinite gradient norm does not blank a chart's scale; RUN CONFIG shows them as logged.
function toNumber(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function appendUpdate(series, update) {
  if (update.seq < series.next) return;
  series.next = update.seq + 1;
  series.step.push(update.step);
  series.time.push(update.timestamp);
  for (const key of series.keys) series.values[key].push(key in update.metrics ? toNumber(update.metrics[key]) : null);
}

// Draws wait for the next frame: updates arriving together are drawn once, and a page in a
// background tab draws nothing until it is looked at.
let drawRequested = false;
function drawSoon() {
  if (!drawRequested) { drawRequested = true; requestAnimationFrame(() => { drawRequested = false; draw(); }); }
}

function draw() {
  for (const plot of plots) drawPlot(plot);
}

function windowed(array) {
  return view.window === "all" ? array : array.slice(-Number(view.window));
}

// One run's [x, y] for a key, sorted by x (a run resumed from a checkpoint logs its
// steps again: the later value of a step wins).
function columnsOf(runId, key) {
  const series = view.series.get(runId);
  if (!series || series.loading || !series.values[key]) return null;
  const xs = windowed(view.x === "time" ? series.time : series.step);
  const ys = windowed(series.values[key]);
  const points = new Map();
  let sorted = true, last = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (x === null) continue;
    if (x <= last) sorted = false;
    last = Math.max(last, x);
    points.set(x, ys[i]);
  }
  if (sorted && points.size === xs.length) return [xs, ys];
  const ordered = [...points.keys()].sort((a, b) => a - b);
  return [ordered, ordered.map((x) => points.get(x))];
}

function drawPlot(plot) {
  if (typeof uPlot === "undefined") {
    plot.panel.dataset.chart = "missing";
    replaceChildren(plot.chart, [el("p", { class: "notice" },
      "The charts need uPlot, which scripts/build-assets copies from npm when runwatch is installed; it was not built here. ",
      "Run scripts/build-assets (Node.js and npm on the PATH) and reload. The history is at api/runs/<run>/metrics.")]);
    return;
  }
  const runs = followedRuns();
  const tables = runs.map((runId) => [runId, columnsOf(runId, plot.key)]).filter(([, table]) => table);
  const points = tables.reduce((sum, [, [xs]]) => sum + xs.length, 0);
  const lastX = tables.length ? tables[0][1][0][tables[0][1][0].length - 1] : null;
  // what the chart shows, as attributes for scripts (the browser tests, bench/view.py), set
  // once uPlot has drawn it
  const shown = { points: String(points), lastStep: view.x === "step" && lastX !== undefined && lastX !== null ? String(lastX) : "" };
  plot.panel.querySelector(".points").textContent = plot.key ? `${number(points)} pts` : "";
  if (!plot.key || !tables.length) {
    if (plot.uplot) { plot.uplot.destroy(); plot.uplot = null; plot.signature = ""; }
    const why = !runs.length ? "select a run" : !plot.key ? "pick a key in the menu above" : "no values of this key yet";
    replaceChildren(plot.chart, [el("p", { class: "notice" }, why)]);
    Object.assign(plot.panel.dataset, shown);
    return;
  }
  plot.pending = { shown, started: performance.now() };
  const data = tables.length === 1 ? tables[0][1] : uPlot.join(tables.map(([, table]) => table));
  const signature = JSON.stringify([tables.map(([id]) => id), plot.key, view.x]);
  if (plot.uplot && plot.signature === signature) {
    plot.uplot.setData(data);
    return;
  }
  if (plot.uplot) plot.uplot.destroy();
  plot.chart.replaceChildren();
  plot.signature = signature;
  plot.uplot = new uPlot({
    width: 100, height: 80,
    scales: { x: { time: view.x === "time" } },
    legend: { show: tables.length <= MAX_LEGEND, live: true },  // more: the run list's colours say which
    cursor: { drag: { x: true, y: false } },
    axes: [{ ...AXIS }, { ...AXIS, size: 64, values: (u, splits) => splits.map((v) => number(v, 3)) }],
    series: [
      { label: view.x },
      ...tables.map(([runId], i) => ({
        label: shortName((view.runs.get(runId) || { name: runId }).name || runId),
        stroke: COLORS[i % COLORS.length], width: 1.25, spanGaps: true, points: { show: false },
        value: (u, v) => number(v),
      })),
    ],
    hooks: { draw: [() => drawn(plot)] },
  }, data, plot.chart);
  fit(plot.uplot, plot.chart);
}

function drawn(plot) {
  if (!plot.pending) return;
  Object.assign(plot.panel.dataset, plot.pending.shown);
  plot.panel.dataset.drawMs = (performance.now() - plot.pending.started).toFixed(1);
  plot.pending = null;
}

// A chart fills its panel, its legend included: the width first, then (once uPlot has laid
// the legend out at that width, after its own microtask) the height that is left.
function fit(chart, box) {
  const width = Math.max(100, Math.floor(box.getBoundingClientRect().width));
  if (width !== chart.width) chart.setSize({ width, height: chart.height });
  requestAnimationFrame(() => {
    const legend = chart.root.querySelector(".u-legend");
    const legendHeight = legend ? legend.getBoundingClientRect().height : 0;
    const height = Math.max(60, Math.floor(box.getBoundingClientRect().height - legendHeight - 4));
    if (height !== chart.height) chart.setSize({ width, height });
  });
}

const trend = { panel: document.getElementById("panel-portfolio"), chart: document.querySelector("#panel-portfolio .chart"), uplot: null };

async function loadTrend() {
  let history;
  try { history = await getJson("api/trading/history"); } catch (error) { return; }
  const data = [history.timestamp, history.portfolio_value.map(toNumber), history.cash.map(toNumber)];
  trend.panel.dataset.points = String(history.timestamp.length);
  trend.panel.querySelector(".points").textContent = `${number(history.timestamp.length)} polls`;
  if (typeof uPlot === "undefined" || trend.panel.closest("[hidden]")) return;
  if (trend.uplot) { trend.uplot.setData(data); return; }
  trend.uplot = new uPlot({
    width: 100, height: 80, scales: { x: { time: true } }, legend: { show: true, live: true },
    axes: [{ ...AXIS }, { ...AXIS, size: 80, values: (u, splits) => splits.map(money) }],
    series: [{}, { label: "portfolio", stroke: COLORS[0], width: 1.25, spanGaps: true, value: (u, v) => money(v) },
      { label: "cash", stroke: COLORS[1], width: 1.25, spanGaps: true, value: (u, v) => money(v) }],
  }, data, trend.chart);
  fit(trend.uplot, trend.chart);
}

const resizer = new ResizeObserver(() => {
  for (const plot of [...plots, trend]) if (plot.uplot) fit(plot.uplot, plot.chart);
});
resizer.observe(trend.chart);
for (const plot of plots) {
  resizer.observe(plot.chart);
  plot.select.addEventListener("change", () => {
    plot.key = plot.select.value;
    plot.panel.dataset.key = plot.key;
    for (const runId of followedRuns()) ensureSeries(runId);
    drawSoon();
  });
}

// ---- event log -------------------------------------------------------------------------

function logLine(message) {
  const log = document.getElementById("log");
  const run = message.run_id ? view.runs.get(message.run_id) : null;
  const item = el("li", { class: message.level === "info" ? null : message.level, "data-run-id": message.run_id || null },
    el("time", {}, clockTime(message.timestamp || Date.now() / 1000)),
    message.run_id ? el("span", { class: "secondary" }, run ? run.name : message.run_id) : null,
    " ", el("span", { class: "message" }, message.message));
  item.hidden = !view.logAll && message.run_id && message.run_id !== view.selected;
  log.prepend(item);
  while (log.childElementCount > MAX_LOG_LINES) log.lastElementChild.remove();
}

// The log of what happened before the page opened, as the runs' state tells it: starts,
// checkpoints, each run's last error, ends.
function seedLog(runs) {
  const lines = [];
  for (const run of runs) {
    lines.push({ timestamp: run.start, run_id: run.run_id, level: "info", message: `run started: ${run.name || run.run_id}` });
    for (const c of run.checkpoints) {
      lines.push({ timestamp: c.timestamp, run_id: run.run_id, level: "info", message: `checkpoint ${c.checkpoint_id} at step ${c.step}${c.is_best ? " (best)" : ""}` });
    }
    const error = run.last_error;
    if (error) lines.push({ timestamp: error.timestamp, run_id: run.run_id, level: error.recoverable ? "warn" : "error", message: `error ${error.error_type}: ${error.message}` });
    if (run.end !== null && run.status !== "running") {
      lines.push({ timestamp: run.end, run_id: run.run_id, level: LEVELS[run.status] || "info", message: `-> ${run.status}` });
    }
  }
  lines.sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
  for (const line of lines.slice(-MAX_LOG_LINES)) logLine(line);
}

function filterLog() {
  for (const item of document.querySelectorAll("#log li")) {
    const runId = item.dataset.runId;
    item.hidden = !view.logAll && runId !== undefined && runId !== view.selected;
  }
  renderActions(view.runs.get(view.selected) || null);
}

// ---- the WebSocket ---------------------------------------------------------------------

let reconnectDelay = 500;
function connect() {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  view.socket = socket;
  socket.addEventListener("open", () => {
    reconnectDelay = 500;
    setLive(true);
    send({ type: "subscribe", run_id: "*" });
    for (const runId of followedRuns()) {
      const series = view.series.get(runId);
      if (series && !series.loading) subscribe(runId, series.next);
    }
    loadRuns();
  });
  socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    setLive(false, event.reason);
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
  });
}

function send(message) {
  if (view.socket && view.socket.readyState === WebSocket.OPEN) view.socket.send(JSON.stringify(message));
}

const subscribed = new Set();
function subscribe(runId, since) {
  subscribed.add(runId);
  send({ type: "subscribe", run_id: runId, since });
}

// Subscriptions follow the runs drawn: new ones are read (history, then a subscription from
// its end), runs no longer drawn are unsubscribed.
function follow() {
  const wanted = new Set(followedRuns());
  for (const runId of [...subscribed]) {
    if (!wanted.has(runId)) { subscribed.delete(runId); view.series.delete(runId); send({ type: "unsubscribe", run_id: runId }); }
  }
  renderKeys();
}

function receive(message) {
  switch (message.type) {
    case "metric_update": {
      const series = view.series.get(message.run_id);
      if (!series) break;
      if (series.loading) series.pending.push(message); else appendUpdate(series, message);
      const run = view.runs.get(message.run_id);
      if (run) {
        run.step = message.step;
        Object.assign(run.metrics, message.metrics);
        if (Object.keys(message.metrics).some((k) => !series.keys.includes(k))) renderKeys();
      }
      drawSoon();
      break;
    }
    case "status_change":
    case "checkpoint_saved":
      refreshRunsSoon();
      break;
    case "event":
      logLine(message);
      refreshRunsSoon();
      break;
    case "error":
      if (message.resync && message.run_id) { view.series.delete(message.run_id); ensureSeries(message.run_id); }
      else logLine({ level: "error", run_id: message.run_id, message: `live: ${message.message}` });
      break;
    default:  // subscribed, unsubscribed, pong
      break;
  }
}

function setLive(live, reason) {
  view.live = live;
  const badgeNode = document.getElementById("live");
  badgeNode.dataset.state = live ? "live" : "reconnecting";
  badgeNode.className = live ? "good" : "warn";
  badgeNode.textContent = live ? "[● LIVE]" : "[○ RECONNECTING]";
  badgeNode.title = reason ? `closed: ${reason}` : "";
}

// ---- system status ---------------------------------------------------------------------

async function loadSystem() {
  const body = document.getElementById("system");
  let status;
  try { status = await getJson("api/system/status"); } catch (error) {
    replaceChildren(body, [el("p", { class: "error" }, error.message)]);
    return;
  }
  const rows = [];
  const host = status.host;
  if (host) {
    rows.push(el("div", {}, el("span", { class: "muted" }, "CPU  "), meter(host.cpu_percent / 100, levelOf(host.cpu_percent, 80, 95)), `${number(host.cpu_percent, 3)}% of ${host.cpu_count ?? "?"}`));
    rows.push(el("div", {}, el("span", { class: "muted" }, "MEM  "), meter(host.memory_percent / 100, levelOf(host.memory_percent, 80, 95)),
      `${number(host.memory_percent, 3)}% ${(host.memory_used / 2 ** 30).toFixed(1)}/${(host.memory_total / 2 ** 30).toFixed(1)} GiB`));
  }
  for (const gpu of status.gpus) {
    const memory = gpu.memory_total ? gpu.memory_used / gpu.memory_total : null;
    rows.push(el("div", { class: "gpu", "data-gpu": gpu.index },
      el("span", { class: "secondary" }, `GPU${gpu.index} `), el("span", { class: "muted" }, gpu.name || ""),
      el("div", {}, el("span", { class: "muted" }, "UTIL "), meter((gpu.utilization_percent ?? 0) / 100), `${number(gpu.utilization_percent, 3)}%`),
      el("div", {}, el("span", { class: "muted" }, "VRAM "), meter(memory, levelOf(memory, 0.85, 0.95)),
        memory === null ? "—" : `${(gpu.memory_used / 2 ** 30).toFixed(1)}/${(gpu.memory_total / 2 ** 30).toFixed(1)} GiB`),
      el("div", {}, el("span", { class: "muted" }, "TEMP "), el("span", { class: levelOf(gpu.temperature, 80, 90) }, gpu.temperature === null ? "—" : `${gpu.temperature}°C`),
        el("span", { class: "muted" }, "  POWER "), gpu.power === null ? "—" : `${number(gpu.power, 3)} W`)));
  }
  if (!host && !status.gpus.length) rows.push(el("p", { class: "muted" }, "no host or GPU readings (sampling off, or not yet read)"));
  const sources = Object.entries(status.sources).map(([name, source]) =>
    el("span", { class: source.up ? "good" : "error", title: source.sampled_at ? `sampled ${dateTime(source.sampled_at)}` : "never sampled" }, `${source.up ? "●" : "✗"} ${name}  `));
  rows.push(el("div", { class: "sources" }, ...sources));
  replaceChildren(body, rows);
  document.getElementById("system-age").textContent = clockTime(Date.now() / 1000);
}

// ---- the trading view ------------------------------------------------------------------

async function loadTrading() {
  let status;
  try { status = await getJson("api/trading/status"); } catch (error) {
    document.getElementById("bridge-up").textContent = error.message;
    return;
  }
  const bridge = status.sources.bridge;
  const up = document.getElementById("bridge-up");
  up.className = bridge ? (bridge.up ? "good" : "error") : "muted";
  up.textContent = bridge ? (bridge.up ? "[● BRIDGE UP]" : "[✗ BRIDGE DOWN]") : "no bridge configured (--bridge-url)";
  const trading = status.trading || {};
  const metrics = trading.metrics || {};
  const pnlClass = (v) => (typeof v === "number" ? (v >= 0 ? "good" : "error") : null);
  replaceChildren(document.getElementById("engine"), [status.trading ? kv([
    ["portfolio", money(metrics.portfolio_value)],
    ["daily P&L", money(metrics.daily_pnl), pnlClass(metrics.daily_pnl)],
    ["cash", money(metrics.cash)],
    ["positions", number(metrics.positions_count)],
    ["trades", number(metrics.trades_total)],
    ["cycles", number(metrics.cycles_total)],
    ["errors", number(metrics.errors_total), metrics.errors_total ? "warn" : null],
  ]) : el("p", { class: "notice" }, bridge ? "the bridge has not answered yet" : "Start runwatch with --bridge-url URL (runwatch demo runs a reference bridge).")]);
  const state = trading.state || {};
  replaceChildren(document.getElementById("pipeline"), [
    kv([["status", state.status || "—"], ["stage", state.current_stage || "—", "info"]]),
    el("ol", { class: "log" }, ...(trading.stages_seen || []).map((stage) =>
      el("li", { class: stage === state.current_stage ? "info" : "muted" }, `${stage === state.current_stage ? "▶" : " "} ${stage}`))),
  ]);
  const risk = trading.risk || {};
  const allowed = risk.trading_allowed;
  replaceChildren(document.getElementById("risk"), [kv([
    ["trading", allowed === undefined || allowed === null ? "—" : allowed ? "[● ALLOWED]" : "[✗ HALTED]", allowed === false ? "error" : allowed ? "good" : null],
    ["drawdown", el("span", {}, meter(Math.abs(risk.drawdown_pct || 0) / 100, levelOf(Math.abs(risk.drawdown_pct || 0), 5, 10)), `${number(risk.drawdown_pct, 3)}%`)],
    ["exposure", el("span", {}, meter((risk.exposure_pct || 0) / 100, levelOf(risk.exposure_pct, 80, 95)), `${number(risk.exposure_pct, 3)}%`)],
    ["daily P&L", `${number(risk.daily_pnl_pct, 3)}%`, pnlClass(risk.daily_pnl_pct)],
  ])]);
  const positions = trading.positions || [];
  document.getElementById("position-count").textContent = `${positions.length}`;
  table("positions", ["SYMBOL", "QTY", "AVG ENTRY", "PRICE", "VALUE", "UNREALIZED P&L"], positions.map((p) => [
    p.symbol, number(p.quantity), money(p.avg_entry_price), money(p.current_price), money(p.market_value),
    el("span", { class: pnlClass(p.unrealized_pnl) }, money(p.unrealized_pnl))]));
  replaceChildren(document.getElementById("activity"), [
    el("h3", { class: "muted" }, "TRADES"),
    kv((trading.trades || []).map((t) => [t.side, `${number(t.count)}  vol ${money(t.volume)}`])),
    el("h3", { class: "muted" }, "DECISIONS"),
    kv((trading.decisions || []).map((d) => [d.action, number(d.count)])),
  ]);
  const arms = trading.arms || [];
  const heaviest = Math.max(1e-9, ...arms.map((a) => a.weight || 0));
  table("cils", ["ARM", "WEIGHT", "", "PULLS", "MEAN REWARD"], arms.map((a) => [
    a.arm, number(a.weight, 3), meter((a.weight || 0) / heaviest), number(a.pulls), number(a.mean_reward, 4)]));
  const jobs = status.backend_jobs;
  replaceChildren(document.getElementById("jobs"), [jobs ? kv(Object.entries(jobs).map(([name, count]) => [name, number(count)]))
    : el("p", { class: "notice" }, "no training backend configured (--backend-url)")]);
}

function table(id, headers, rows) {
  const node = document.getElementById(id);
  replaceChildren(node.tHead, [el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))]);
  replaceChildren(node.tBodies[0], rows.length ? rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell))))
    : [el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "none"))]);
}

// ---- views, keys, timers ---------------------------------------------------------------

function showView() {
  const trading = window.location.hash === "#trading";
  document.getElementById("training").hidden = trading;
  document.getElementById("trading").hidden = !trading;
  document.getElementById("nav-training").toggleAttribute("aria-current", !trading);
  document.getElementById("nav-trading").toggleAttribute("aria-current", trading);
  if (trading) document.getElementById("nav-trading").setAttribute("aria-current", "page");
  else document.getElementById("nav-training").setAttribute("aria-current", "page");
  if (trading) { loadTrading(); loadTrend(); } else drawSoon();
}

function setWindow(value) { view.window = value; renderActions(view.runs.get(view.selected) || null); drawSoon(); }
function setX(value) { view.x = value; renderActions(view.runs.get(view.selected) || null); drawSoon(); }

document.addEventListener("click", (event) => {
  const target = event.target.closest("button");
  if (!target) return;
  if (target.dataset.window) setWindow(target.dataset.window);
  else if (target.dataset.x) setX(target.dataset.x);
  else if (target.id === "compare") toggleOverlay(null);
  else if (target.id === "compare-clear") { view.overlay = []; follow(); renderRuns(); renderSelected(); }
  else if (target.id === "log-all") { view.logAll = !view.logAll; filterLog(); }
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("select, input, textarea")) return;
  const windows = ["100", "1000", "all"];
  const actions = {
    j: () => moveSelection(1), k: () => moveSelection(-1),
    c: () => toggleOverlay(null),
    w: () => setWindow(windows[(windows.indexOf(view.window) + 1) % windows.length]),
    x: () => setX(view.x === "step" ? "time" : "step"),
    a: () => { view.logAll = !view.logAll; filterLog(); },
    1: () => { window.location.hash = "#training"; },
    2: () => { window.location.hash = "#trading"; },
  };
  if (event.target.closest("#runs")) {  // the arrows move in the list, and scroll elsewhere
    actions.ArrowDown = actions.j;
    actions.ArrowUp = actions.k;
  }
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
});

window.addEventListener("hashchange", showView);

function tick() {
  document.getElementById("clock").textContent = clockTime(Date.now() / 1000);
}

document.getElementById("version").textContent = `v${CONFIG.version}`;
tick();
setInterval(tick, 1000);
showView();
loadRuns();
loadSystem();
connect();
setInterval(loadRuns, RUNS_REFRESH_MS);
setInterval(loadSystem, SYSTEM_REFRESH_MS);
setInterval(() => { if (window.location.hash === "#trading") { loadTrading(); loadTrend(); } }, TRADING_REFRESH_MS);
