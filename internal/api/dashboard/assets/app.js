// kiln's dashboard: reads the /v1 API, redraws every few seconds and as
// job events arrive (Server-Sent Events from /v1/dashboard/events).
// Plain JavaScript, no build step: what is in this file is what runs.
// Every value from the API reaches the page as text (textContent), never
// as markup. Numbers a test compares with the API carry data-k="name".
"use strict";

const REFRESH_MS = 2000;
const PALETTE = ["#3b6fd1", "#d2581f", "#2f8f4e", "#8e44ad", "#c28a00", "#16a2b8", "#c0392b", "#6b7385", "#e67e22", "#27ae60"];
const state = { page: "overview", data: {}, running: {}, events: [], lastOK: 0, timer: null, expDetail: {} };

// h builds an element: h("td", {class: "num", "data-k": "x"}, "text", child…).
function h(tag, attrs, ...kids) {
  const svg = ["svg", "path", "rect", "line", "text", "g", "circle", "polyline", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function fill(id, ...kids) {
  const el = document.getElementById(id);
  if (!el) return;
  el.replaceChildren(...kids.flat().filter((k) => k));
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}
const fmtRate = (n) => (n ? fmtBytes(n) + "/s" : "–");
const fmtPct = (f) => (f === null || f === undefined || isNaN(f) ? "–" : (100 * f).toFixed(1) + "%");
function fmtAgo(t) {
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
function fmtClock(t) { return new Date(t).toLocaleTimeString([], { hour12: false }); }
function fmtSecs(s) {
  if (s === null || s === undefined || isNaN(s)) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  return (s / 60).toFixed(1) + " min";
}
const shortID = (id) => (id && id.length > 12 ? id.slice(0, 12) + "…" : id || "");
const empty = (text) => h("p", { class: "empty" }, text);
function pill(text, kind) { return h("span", { class: "pill " + (kind || "") }, text); }
function bar(fraction, kind, label) {
  const inner = h("span");
  inner.style.width = Math.max(0, Math.min(1, fraction || 0)) * 100 + "%";
  return h("div", { class: "bar " + (kind || ""), title: label || "" }, inner);
}
function swatch(color) { const i = h("i"); i.style.background = color; return i; }
function num(key, value, text) { return h("td", { class: "num", "data-k": key, "data-v": value }, text === undefined ? value : text); }
function table(head, rows, emptyText) {
  if (!rows.length) return empty(emptyText || "none");
  return h("table", {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { class: c.endsWith("#") ? "num" : "" }, c.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (r.status === 404) return null; // a part this kiln runs without
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function refresh() {
  const paths = {
    dash: "/v1/dashboard", running: "/v1/jobs?state=running&limit=50", workers: "/v1/workers", devices: "/v1/devices",
    tiers: "/v1/tiers", policies: "/v1/policies", experiments: "/v1/experiments", vram: "/v1/dashboard/vram",
  };
  try {
    const keys = Object.keys(paths);
    const vals = await Promise.all(keys.map((k) => getJSON(paths[k])));
    keys.forEach((k, i) => { state.data[k] = vals[i]; });
    const exps = (state.data.experiments && state.data.experiments.experiments) || [];
    // The detail (decisions, evidence) of the newest few experiments.
    const wanted = exps.slice(0, 3).map((e) => e.id);
    const details = await Promise.all(wanted.map((id) => getJSON("/v1/experiments/" + encodeURIComponent(id))));
    state.expDetail = {};
    wanted.forEach((id, i) => { state.expDetail[id] = details[i]; });
    state.lastOK = Date.now();
    for (const j of (state.data.running && state.data.running.jobs) || []) state.running[j.id] = j;
    const live = new Set(((state.data.running && state.data.running.jobs) || []).map((j) => j.id));
    for (const id of Object.keys(state.running)) if (!live.has(id)) delete state.running[id];
    if (state.data.dash && state.events.length === 0) state.events = state.data.dash.events.slice();
    render();
    setStatus(true);
  } catch (err) {
    setStatus(false, err.message);
  }
}

function setStatus(ok, why) {
  const el = document.getElementById("status");
  el.className = "status " + (ok ? "live" : "down");
  el.textContent = ok ? (state.stream ? "live" : "polling") + " · updated " + fmtClock(Date.now()) : "unreachable: " + why;
}

function render() {
  const d = state.data;
  if (d.dash && d.dash.version) document.getElementById("version").textContent = d.dash.version;
  renderQueue(d.dash);
  renderRunning();
  renderEvents();
  renderDevices(d.devices, d.dash);
  renderVRAMChart(d.vram);
  renderTiers(d.tiers, d.dash);
  renderWorkers(d.workers);
  renderPolicies(d.policies);
  renderExperiments(d.experiments);
}

function renderQueue(dash) {
  if (!dash) return;
  const classes = Object.keys(dash.queue).sort();
  fill("queue", table(["class", "queued#", "running#"], classes.map((c) =>
    h("tr", {}, h("td", {}, c), num("queue." + c + ".queued", dash.queue[c].queued), num("queue." + c + ".running", dash.queue[c].running)))));
  const order = ["queued", "running", "done", "failed", "cancelled"];
  const states = order.filter((s) => s in dash.counts).concat(Object.keys(dash.counts).filter((s) => !order.includes(s)));
  const total = states.reduce((a, s) => a + dash.counts[s], 0) || 1;
  const kind = { done: "ok", failed: "warn", cancelled: "" };
  fill("counts", table(["state", "jobs#", ""], states.map((s) =>
    h("tr", {}, h("td", {}, s), num("counts." + s, dash.counts[s]), h("td", {}, bar(dash.counts[s] / total, kind[s]))))));
}

function jobFraction(j) {
  const p = j.progress;
  if (!p) return 0;
  if (p.max > 0) return p.value / p.max;
  return 0;
}

function renderRunning() {
  const jobs = Object.values(state.running).sort((a, b) => (a.started_at < b.started_at ? -1 : 1));
  fill("running", table(["job", "class", "worker", "phase", "progress", "", "started"], jobs.map((j) => {
    const p = j.progress || {};
    return h("tr", { "data-job": j.id },
      h("td", { class: "mono", title: j.id }, shortID(j.id)), h("td", {}, j.class), h("td", {}, j.worker || "–"),
      h("td", {}, p.phase || j.state, p.node ? " · node " + p.node : ""),
      h("td", {}, bar(jobFraction(j), "", p.max ? p.value + "/" + p.max : "")),
      h("td", { class: "num" }, p.max ? p.value + "/" + p.max : ""),
      h("td", {}, j.started_at ? fmtAgo(j.started_at) : "–"));
  }), "no job is running"));
}

function renderEvents() {
  const evs = state.events.slice(-25).reverse();
  const kind = { finished: "ok", requeued: "warn", preempted: "warn", started: "info", running: "info" };
  fill("events", table(["time", "event", "job", "worker", "detail"], evs.map((e) => {
    let k = kind[e.type] || "";
    if (e.type === "finished" && e.state !== "done") k = "bad";
    return h("tr", {}, h("td", {}, fmtClock(e.time)), h("td", {}, pill(e.type === "finished" ? e.state : e.type, k)),
      h("td", { class: "mono", title: e.job }, shortID(e.job)), h("td", {}, e.worker || ""), h("td", {}, e.error || ""));
  }), "no events yet"));
}

function renderDevices(devs, dash) {
  if (!devs) return;
  fill("devices", devs.devices.map((g) => {
    const degraded = g.degraded ? pill("degraded: " + g.degraded_reason, "bad") : pill("healthy", "ok");
    return h("div", { class: "card", "data-device": g.index },
      h("h3", {}, "GPU " + g.index + " · " + g.name + " ", g.simulated ? pill("simulated", "warn") : null, " ", degraded),
      h("div", { class: "kv" },
        h("div", {}, h("span", {}, "reserved (ledger)"), h("b", { "data-k": "device." + g.index + ".reserved", "data-v": g.reserved }, fmtBytes(g.reserved))),
        h("div", {}, h("span", {}, "usable"), h("b", { "data-k": "device." + g.index + ".usable", "data-v": g.usable }, fmtBytes(g.usable))),
        h("div", {}, h("span", {}, "used (device)"), h("b", {}, fmtBytes(g.memory_used))),
        h("div", {}, h("span", {}, "total"), h("b", { "data-k": "device." + g.index + ".total", "data-v": g.memory_total }, fmtBytes(g.memory_total)))),
      h("p", {}, bar(g.usable ? g.reserved / g.usable : 0, "", "reserved of usable")),
      h("div", { class: "kv" },
        h("div", {}, h("span", {}, "utilisation"), h("b", {}, g.utilization === null ? "–" : g.utilization + "%")),
        h("div", {}, h("span", {}, "temperature"), h("b", {}, g.temperature_c === null ? "–" : g.temperature_c + " °C")),
        h("div", {}, h("span", {}, "throttle"), h("b", {}, (g.throttle_reasons || []).join(", ") || "none")),
        h("div", {}, h("span", {}, "backend"), h("b", {}, g.backend))));
  }));
  if (!dash) return;
  const rows = [];
  for (const g of dash.ledger) {
    const keys = Object.keys(g.models).sort((a, b) => g.models[b] - g.models[a]);
    for (const k of keys) rows.push(h("tr", {}, h("td", {}, g.name), h("td", { class: "mono" }, k), h("td", { class: "num" }, fmtBytes(g.models[k])),
      h("td", {}, bar(g.usable ? g.models[k] / g.usable : 0))));
  }
  fill("ledger", table(["device", "reserved for", "bytes#", "share of usable"], rows, "nothing reserved"));
}

// colorOf gives each model a stable colour across redraws.
const colors = {};
function colorOf(key) {
  if (!(key in colors)) colors[key] = PALETTE[Object.keys(colors).length % PALETTE.length];
  return colors[key];
}

// renderVRAMChart draws, per device, the ledger's reservations stacked by
// model over time, with the device's used memory and usable limit as lines.
function renderVRAMChart(vram) {
  if (!vram || !vram.samples.length) return;
  const samples = vram.samples;
  const devCount = samples[samples.length - 1].devices.length;
  const charts = [];
  for (let di = 0; di < devCount; di++) {
    const series = samples.map((s) => s.devices[di]).filter(Boolean);
    const models = new Set();
    series.forEach((d) => Object.keys(d.models).forEach((m) => models.add(m)));
    const W = 560, H = 200, L = 56, R = 10, T = 10, B = 22;
    const t0 = new Date(samples[0].time).getTime();
    const t1 = Math.max(new Date(samples[samples.length - 1].time).getTime(), t0 + 1000);
    const top = Math.max(...series.map((d) => d.total || d.usable || 1));
    const x = (t) => L + ((new Date(t).getTime() - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "VRAM of " + series[0].name });
    for (let g = 0; g <= 4; g++) {
      const v = (top * g) / 4;
      svg.appendChild(h("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6eb" }));
      svg.appendChild(h("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmtBytes(v)));
    }
    // Stacked areas, one per model, in a fixed order.
    const keys = [...models].sort();
    const base = series.map(() => 0);
    for (const k of keys) {
      const upper = series.map((d, i) => base[i] + (d.models[k] || 0));
      const pts = series.map((d, i) => `${x(samples[i].time)},${y(upper[i])}`);
      const back = series.map((d, i) => `${x(samples[i].time)},${y(base[i])}`).reverse();
      svg.appendChild(h("path", { d: "M" + pts.concat(back).join("L") + "Z", fill: colorOf(k), "fill-opacity": 0.75, stroke: "none" }));
      upper.forEach((v, i) => { base[i] = v; });
    }
    const line = (vals, color, dash) => svg.appendChild(h("polyline", {
      points: series.map((d, i) => `${x(samples[i].time)},${y(vals(d))}`).join(" "), fill: "none", stroke: color, "stroke-width": 1.5, "stroke-dasharray": dash || "",
    }));
    line((d) => d.usable, "#c0392b", "5,3");
    if (series.every((d) => d.used !== null)) line((d) => d.used, "#1d2330");
    svg.appendChild(h("text", { x: L, y: H - 6 }, fmtClock(samples[0].time)));
    svg.appendChild(h("text", { x: W - R, y: H - 6, "text-anchor": "end" }, fmtClock(samples[samples.length - 1].time)));
    const last = series[series.length - 1];
    const free = last.usable - last.reserved;
    charts.push(h("div", {},
      h("h3", {}, last.name + " · reserved " + fmtBytes(last.reserved) + " · free " + fmtBytes(free) + " of " + fmtBytes(last.usable) + " usable"),
      svg,
      h("div", { class: "legend" },
        keys.map((k) => h("span", {}, swatch(colorOf(k)), k)),
        h("span", {}, swatch("#c0392b"), "usable (headroom above)"),
        h("span", {}, swatch("#1d2330"), "used, as the device reports"))));
  }
  fill("vram-chart", h("div", { class: "charts" }, charts));
}

function renderTiers(tiers, dash) {
  if (!tiers) return;
  fill("tiers", table(["tier", "used#", "capacity#", "", "entries#", "hits#", "misses#", "hit ratio#", "bytes in#", "bytes out#", "bandwidth#", "evictions#"],
    tiers.tiers.map((t) => {
      const lookups = t.hits + t.misses;
      return h("tr", {}, h("td", {}, t.name),
        num("tier." + t.name + ".used_bytes", t.used_bytes, fmtBytes(t.used_bytes)),
        num("tier." + t.name + ".capacity_bytes", t.capacity_bytes, t.capacity_bytes ? fmtBytes(t.capacity_bytes) : "–"),
        h("td", {}, bar(t.capacity_bytes ? t.used_bytes / t.capacity_bytes : 0)),
        num("tier." + t.name + ".entries", t.entries), num("tier." + t.name + ".hits", t.hits), num("tier." + t.name + ".misses", t.misses),
        h("td", { class: "num" }, lookups ? fmtPct(t.hits / lookups) : "–"),
        h("td", { class: "num" }, fmtBytes(t.bytes_in)), h("td", { class: "num" }, fmtBytes(t.bytes_out)),
        h("td", { class: "num" }, fmtRate(t.bandwidth_bytes_per_s)), num("tier." + t.name + ".evictions", t.evictions));
    }), tiers.note || "no tiers"));
  if (!dash) return;
  const yes = (b) => (b ? pill("yes", "ok") : pill("no"));
  const rows = dash.residency.slice().sort((a, b) => (b.vram.length - a.vram.length) || (b.ram - a.ram) || (b.disk - a.disk) || a.model.localeCompare(b.model));
  fill("residency", table(["model", "file#", "VRAM (workers)", "RAM (L2)", "disk (L3)"], rows.map((r) =>
    h("tr", { "data-model": r.model }, h("td", { class: "mono" }, r.model), h("td", { class: "num" }, fmtBytes(r.bytes)),
      h("td", {}, r.vram.length ? r.vram.map((w) => pill(w, "info")) : "–"), h("td", {}, yes(r.ram)), h("td", {}, yes(r.disk)))), "the catalog is empty"));
}

function renderWorkers(ws) {
  if (!ws) return;
  const kind = { ready: "ok", busy: "info", starting: "warn", restarting: "warn", dead: "bad", stopped: "bad" };
  fill("workers", table(["worker", "device", "state", "pid#", "generation#", "jobs done#", "restarts#", "resident in VRAM", "runtime", "last error"],
    ws.workers.map((w) => h("tr", { "data-worker": w.id },
      h("td", {}, w.id), h("td", {}, w.device_name || String(w.device)), h("td", {}, pill(w.state, kind[w.state] || "")),
      h("td", { class: "num" }, w.pid || "–"), h("td", { class: "num" }, w.generation),
      num("worker." + w.id + ".jobs_done", w.jobs_done), num("worker." + w.id + ".restarts", w.restarts),
      h("td", { class: "mono" }, Object.keys(w.resident || {}).sort().map((m) => h("div", {}, m + " (" + fmtBytes(w.resident[m]) + ")"))),
      h("td", {}, [w.name, w.version].filter(Boolean).join(" ")), h("td", {}, w.last_error || ""))), "no workers"));
}

function renderPolicies(ps) {
  if (!ps) { fill("policies", empty("this kiln runs without the policy host")); return; }
  const rows = [];
  const changes = [];
  for (const k of ps.policies) {
    for (const v of k.versions) {
      const id = v.name + "@" + v.version;
      rows.push(h("tr", { "data-policy": k.kind + "/" + id },
        h("td", {}, k.kind), h("td", {}, id, " ", v.active ? pill("active", "ok") : null),
        h("td", {}, v.source), num("policy." + k.kind + "." + id + ".calls", v.calls), num("policy." + k.kind + "." + id + ".faults", v.faults),
        h("td", {}, bar(v.calls ? Math.min(1, v.faults / v.calls) : 0, "warn", "faults per call")),
        h("td", { class: "mono" }, v.params ? Object.entries(v.params).map(([p, x]) => p + "=" + x).join(" ") : ""),
        h("td", {}, v.loaded_at ? fmtAgo(v.loaded_at) : "")));
    }
    for (const c of k.changes || []) changes.push(c);
  }
  fill("policies", table(["kind", "policy", "source", "decisions#", "faults#", "fault rate", "params", "loaded"], rows, "no policies"));
  changes.sort((a, b) => (a.time < b.time ? 1 : -1));
  const kind = { rollback: "bad", fault: "bad", activate: "info", start: "", promote: "ok" };
  fill("policy-changes", table(["time", "kind", "action", "from", "to", "reason"], changes.slice(0, 20).map((c) =>
    h("tr", {}, h("td", {}, fmtClock(c.time)), h("td", {}, c.kind), h("td", {}, pill(c.action, kind[c.action] || "")),
      h("td", {}, c.from || ""), h("td", {}, c.to || ""), h("td", {}, c.reason || ""))), "no changes"));
}

function verdictKind(s) {
  if (!s) return "";
  if (/promot|better|pass|done|conclud/.test(s)) return "ok";
  if (/roll|worse|fail|abort/.test(s)) return "bad";
  if (/insufficient|hold|inconclusive/.test(s)) return "warn";
  return "info";
}

function renderExperiments(ex) {
  if (!ex) { fill("experiments", empty("this kiln runs without experiments")); fill("experiment-detail"); return; }
  fill("experiments", table(["experiment", "type", "kind", "state", "verdict", "baseline", "candidate", "step#", "share#", "decisions#", "started"],
    ex.experiments.map((e) => h("tr", { "data-experiment": e.id },
      h("td", { class: "mono" }, e.id), h("td", {}, e.type), h("td", {}, e.kind), h("td", {}, pill(e.state, verdictKind(e.state))),
      h("td", {}, e.verdict ? pill(e.verdict, verdictKind(e.verdict)) : "–"), h("td", {}, e.baseline), h("td", {}, e.candidate),
      num("experiment." + e.id + ".step", e.step), h("td", { class: "num" }, e.share_pct + "%"),
      num("experiment." + e.id + ".decisions", e.decisions), h("td", {}, fmtAgo(e.started_at)))),
    "no experiments yet: kiln experiment canary --kind scheduling --policy edf"));
  fill("experiment-detail", Object.values(state.expDetail).filter(Boolean).map(experimentCard));
}

// experimentCard charts one experiment: the candidate's share over time
// with each decision marked, the arms, and each comparison's effect with
// its interval (a forest plot: left of zero is the candidate being faster
// when the metric is a latency).
function experimentCard(r) {
  const decisions = r.decisions || [];
  const W = 560, H = 170, L = 40, R = 10, T = 10, B = 22;
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "share over time" });
  const t0 = decisions.length ? decisions[0].at_s : 0;
  const t1 = Math.max(decisions.length ? decisions[decisions.length - 1].at_s : 1, t0 + 1);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (p) => T + (1 - p / 100) * (H - T - B);
  for (const p of [0, 50, 100]) {
    svg.appendChild(h("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), stroke: "#e3e6eb" }));
    svg.appendChild(h("text", { x: L - 4, y: y(p) + 4, "text-anchor": "end" }, p + "%"));
  }
  if (decisions.length) {
    const pts = [];
    decisions.forEach((d, i) => {
      if (i > 0) pts.push(`${x(d.at_s)},${y(decisions[i - 1].share_pct)}`);
      pts.push(`${x(d.at_s)},${y(d.share_pct)}`);
    });
    svg.appendChild(h("polyline", { points: pts.join(" "), fill: "none", stroke: "#3b6fd1", "stroke-width": 2 }));
    const color = { rollback: "#c0392b", promote: "#2f8f4e", advance: "#3b6fd1", hold: "#c28a00", abort: "#c0392b", conclude: "#2f8f4e" };
    for (const d of decisions) {
      const c = h("circle", { cx: x(d.at_s), cy: y(d.share_pct), r: 4, fill: color[d.action] || "#6b7385" });
      c.appendChild(h("title", {}, d.action + ": " + d.reason));
      svg.appendChild(c);
    }
  }
  svg.appendChild(h("text", { x: L, y: H - 6 }, "0 s"));
  svg.appendChild(h("text", { x: W - R, y: H - 6, "text-anchor": "end" }, (t1 - t0).toFixed(0) + " s"));

  const rep = r.report;
  const arms = rep ? rep.arms : [];
  const armTable = table(["arm", "policy", "n#", "failed#", "mean#", "p50#", "p95#", "p99#", "error rate#"], arms.map((a) =>
    h("tr", {}, h("td", {}, a.arm), h("td", {}, a.policy), num("arm." + r.id + "." + a.arm + ".n", a.n), h("td", { class: "num" }, a.failed),
      h("td", { class: "num" }, fmtSecs(a.mean_s)), h("td", { class: "num" }, fmtSecs(a.p50_s)), h("td", { class: "num" }, fmtSecs(a.p95_s)),
      h("td", { class: "num" }, fmtSecs(a.p99_s)), h("td", { class: "num" }, fmtPct(a.error_rate)))), "no report yet");

  const comps = (rep && rep.comparisons) || [];
  const rowH = 40;
  const forest = h("svg", { viewBox: `0 0 ${W} ${Math.max(40, rowH * comps.length + 10)}`, width: "100%", role: "img", "aria-label": "effects" });
  if (comps.length) {
    // Each metric on its own scale (seconds and rates do not share an
    // axis), symmetric about zero: the interval's position is what reads.
    // The label sits above its interval, the figures at the right.
    const fx = (v, span) => 10 + ((v + span) / (2 * span)) * (W - 190);
    forest.appendChild(h("line", { x1: fx(0, 1), x2: fx(0, 1), y1: 4, y2: rowH * comps.length + 6, stroke: "#6b7385", "stroke-dasharray": "3,3" }));
    comps.forEach((c, i) => {
      const top = rowH * i;
      const cy = top + 28;
      const sig = c.p < c.alpha;
      const span = Math.max(...[c.low, c.high, c.effect].map(Math.abs).filter(isFinite), 1e-9) * 1.1;
      const p = c.p < 0.001 ? c.p.toExponential(1) : c.p.toFixed(3);
      const test = c.test.length > 48 ? c.test.slice(0, 47) + "…" : c.test;
      const label = h("text", { x: 10, y: top + 13 }, c.metric + " · " + test + " · p=" + p);
      label.appendChild(h("title", {}, c.test));
      forest.appendChild(label);
      if (isFinite(c.low) && isFinite(c.high)) forest.appendChild(h("line", { x1: fx(c.low, span), x2: fx(c.high, span), y1: cy, y2: cy, stroke: sig ? "#d2581f" : "#6b7385", "stroke-width": 2 }));
      forest.appendChild(h("circle", { cx: fx(c.effect, span), cy: cy, r: 4, fill: sig ? "#d2581f" : "#6b7385" }));
      const fmt = (v) => (isFinite(v) ? (Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(2)) : "∞");
      forest.appendChild(h("text", { x: W - 4, y: cy + 4, "text-anchor": "end" }, fmt(c.effect) + " [" + fmt(c.low) + ", " + fmt(c.high) + "]"));
    });
  } else {
    forest.appendChild(h("text", { x: 4, y: 24 }, "no comparison yet"));
  }
  const last = decisions[decisions.length - 1];
  const verdict = (rep && rep.verdict) || r.verdict || r.state;
  return h("div", { class: "card", "data-experiment-detail": r.id },
    h("h3", {}, r.id + " · " + r.spec.type + " " + r.spec.kind + ": " + r.baseline + " vs " + r.candidate + " ", pill(String(verdict), verdictKind(String(verdict)))),
    last ? h("p", {}, "last decision: ", pill(last.action, verdictKind(last.action)), " " + last.reason) : null,
    h("div", { class: "charts" },
      h("div", {}, h("h2", {}, "candidate share and decisions"), svg),
      h("div", {}, h("h2", {}, "effects with intervals (candidate − baseline)"), forest)),
    h("h2", {}, "arms"), armTable);
}

function showPage() {
  const page = (location.hash || "#overview").slice(1);
  state.page = document.getElementById("page-" + page) ? page : "overview";
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + state.page));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === state.page));
}

// Live events: progress bars move as frames arrive; anything else (a job
// starting or ending) refreshes the numbers at once, at most every 300 ms.
let soon = null;
function refreshSoon() {
  if (soon) return;
  soon = setTimeout(() => { soon = null; refresh(); }, 300);
}
function connect() {
  if (!window.EventSource) return;
  const es = new EventSource("/v1/dashboard/events");
  es.onopen = () => { state.stream = true; };
  es.onerror = () => { state.stream = false; }; // EventSource reconnects by itself
  es.addEventListener("job", (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "progress") {
      const j = state.running[e.job];
      if (j) {
        j.progress = Object.assign({}, j.progress || {}, { phase: "running", node: e.node, value: e.value, max: e.max });
        renderRunning();
      }
      return;
    }
    state.events.push(e);
    if (state.events.length > 200) state.events.shift();
    renderEvents();
    refreshSoon();
  });
}

window.addEventListener("hashchange", showPage);
document.addEventListener("DOMContentLoaded", () => {
  showPage();
  refresh();
  connect();
  state.timer = setInterval(refresh, REFRESH_MS);
});
