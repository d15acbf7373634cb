// The Sluice dashboard: loads /api/dashboard once, then follows /api/events (server-sent
// events) and redraws. Charts are uPlot (vendored, served by the binary). `window.sluice`
// exposes the state and the charts for tests and the curious.
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const KEEP = 600; // batches on the charts
  const state = {
    info: null, batches: [], waiting: new Map(), running: null, pluginEvents: [], audit: [],
    results: {}, stageTotals: {}, stageErrors: {}, versionErrors: {}, connected: false,
  };
  const charts = {};
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const fmt = (n) => (n == null ? "" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 }));
  const time = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false }) + "." + String(ms % 1000).padStart(3, "0");

  // ---- charts -------------------------------------------------------------------------
  function width(el) { return Math.max(el.clientWidth, 120); }

  function timeline(id, label, color, withInterval) {
    const el = $(id);
    const series = [{}, { label, stroke: color, width: 1.5, fill: color + "22", points: { show: false } }];
    if (withInterval) series.push({ label: "batch interval", stroke: "#c62828", dash: [6, 4], width: 1, points: { show: false } });
    const opts = {
      width: width(el), height: 150, legend: { show: false }, cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } },
      axes: [{ stroke: "#6b7585", grid: { stroke: "#eef0f3" } }, { stroke: "#6b7585", grid: { stroke: "#eef0f3" }, size: 60 }],
      series,
    };
    return new uPlot(opts, series.map(() => []), el);
  }

  function histogram(id, color) {
    const el = $(id);
    const opts = {
      width: width(el), height: 150, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      axes: [{ stroke: "#6b7585", size: 30, values: (u, v) => v.map(fmt) }, { stroke: "#6b7585", size: 40 }],
      series: [{}, { label: "batches", stroke: color, fill: color + "66", paths: uPlot.paths.bars({ size: [0.9, 60] }), points: { show: false } }],
    };
    return new uPlot(opts, [[], []], el);
  }

  function bins(values) {
    if (values.length === 0) return [[], []];
    const max = Math.max(...values, 1);
    const n = 12, step = max / n;
    const counts = new Array(n).fill(0);
    for (const v of values) counts[Math.min(n - 1, Math.floor(v / step))]++;
    return [counts.map((_, i) => (i + 0.5) * step), counts];
  }

  function makeCharts() {
    charts.rate = timeline("chart-rate", "records/s", "#1f6feb");
    charts.sched = timeline("chart-sched", "ms", "#8250df");
    charts.proc = timeline("chart-proc", "ms", "#2e7d32", true);
    charts.total = timeline("chart-total", "ms", "#b26a00");
    charts.rateHist = histogram("hist-rate", "#1f6feb");
    charts.schedHist = histogram("hist-sched", "#8250df");
    charts.procHist = histogram("hist-proc", "#2e7d32");
    charts.totalHist = histogram("hist-total", "#b26a00");
    window.addEventListener("resize", () => {
      for (const [name, chart] of Object.entries(charts)) {
        if (chart.root) chart.setSize({ width: width(chart.root.parentElement), height: chart.height });
      }
    });
  }

  function drawCharts() {
    const done = state.batches;
    const interval = state.info ? state.info.batch_interval_ms : 1000;
    const xs = done.map((b) => b.time_ms / 1000);
    const rate = done.map((b) => (b.records * 1000) / interval);
    const sched = done.map((b) => b.scheduling_delay_ms);
    const proc = done.map((b) => b.processing_ms);
    const total = done.map((b) => b.scheduling_delay_ms + b.processing_ms);
    charts.rate.setData([xs, rate]);
    charts.sched.setData([xs, sched]);
    charts.proc.setData([xs, proc, xs.map(() => interval)]);
    charts.total.setData([xs, total]);
    charts.rateHist.setData(bins(rate));
    charts.schedHist.setData(bins(sched));
    charts.procHist.setData(bins(proc));
    charts.totalHist.setData(bins(total));
    const last = done[done.length - 1];
    $("cur-rate").textContent = last ? fmt(rate[rate.length - 1]) : "";
    $("cur-sched").textContent = last ? fmt(last.scheduling_delay_ms) : "";
    $("cur-proc").textContent = last ? fmt(last.processing_ms) : "";
    $("cur-total").textContent = last ? fmt(last.scheduling_delay_ms + last.processing_ms) : "";
  }

  // ---- tables -------------------------------------------------------------------------
  function drawSummary() {
    const done = state.batches;
    const records = done.reduce((n, b) => n + b.records, 0);
    const failed = done.filter((b) => b.error).length;
    $("summary").innerHTML =
      `<span>batches <b>${fmt(done.length)}</b></span><span>records <b>${fmt(records)}</b></span>` +
      `<span>failed <b>${fmt(failed)}</b></span><span>waiting <b>${state.waiting.size}</b></span>`;
  }

  function drawBatches() {
    const rows = [];
    for (const [t, records] of [...state.waiting.entries()].sort((a, b) => b[0] - a[0])) {
      rows.push(`<tr class="waiting"><td>${time(t)}</td><td>waiting</td><td class="num">${fmt(records)}</td><td></td><td></td><td></td><td></td><td></td><td></td></tr>`);
    }
    if (state.running) {
      const [t, records] = state.running;
      rows.push(`<tr class="running"><td>${time(t)}</td><td>running</td><td class="num">${fmt(records)}</td><td></td><td></td><td></td><td></td><td></td><td></td></tr>`);
    }
    for (const b of state.batches.slice(-40).reverse()) {
      const errors = Object.entries(b.errors || {}).map(([c, n]) => `<span class="badge">${esc(c)} ×${n}</span>`).join("");
      rows.push(
        `<tr class="${b.error ? "failed" : ""}" data-batch="${b.time_ms}"><td>${time(b.time_ms)}${b.replayed ? " ↻" : ""}</td>` +
        `<td>${b.error ? "failed" : "completed"}</td><td class="num">${fmt(b.records)}</td>` +
        `<td class="num">${fmt(b.scheduling_delay_ms)} ms</td><td class="num">${fmt(b.processing_ms)} ms</td>` +
        `<td class="num">${fmt(b.scheduling_delay_ms + b.processing_ms)} ms</td><td class="num">${fmt(b.outputs)}</td>` +
        `<td title="${esc(b.error)}">${errors}</td><td class="hash">${esc((b.versions || []).join(" "))}</td></tr>`);
    }
    $("batches").tBodies[0].innerHTML = rows.join("");
  }

  function drawSources() {
    if (!state.info) return;
    const last = state.batches[state.batches.length - 1];
    const interval = state.info.batch_interval_ms;
    $("sources").tBodies[0].innerHTML = state.info.sources.map((s) => {
      const status = s.paused ? "paused" : s.last_error ? "error" : s.finished ? "finished" : "receiving";
      const rate = last && last.sources ? ((last.sources[s.name] || 0) * 1000) / interval : 0;
      return `<tr data-source="${esc(s.name)}"><td>${esc(s.name)}</td><td class="status-${status}">${status}</td>` +
        `<td class="num">${fmt(rate)}/s</td><td class="num">${s.rate_limit ? fmt(s.rate_limit) + "/s" : "—"}</td>` +
        `<td class="num">${fmt(s.received)}</td><td class="status-error">${esc(s.last_error)}</td>` +
        `<td><button data-action="${s.paused ? "resume" : "pause"}" data-name="${esc(s.name)}">${s.paused ? "Resume" : "Pause"}</button></td></tr>` +
        (s.partitions || []).map((p) =>
          `<tr class="partition" data-partition="${esc(p.topic)}/${p.partition}"><td class="muted">↳ ${esc(p.topic)}/${p.partition}</td>` +
          `<td colspan="6" class="muted">offset ${p.offset == null ? "—" : fmt(p.offset)}, end ${p.high_watermark == null ? "—" : fmt(p.high_watermark)}, ` +
          `lag <b class="lag">${p.lag == null ? "—" : fmt(p.lag)}</b></td></tr>`).join("") +
        (s.shards || []).map((h) =>
          `<tr class="partition" data-shard="${esc(h.shard)}"><td class="muted">↳ ${esc(h.shard)}</td>` +
          `<td colspan="6" class="muted">${esc(h.state)}, behind <b class="lag">${h.millis_behind == null ? "—" : fmt(h.millis_behind) + " ms"}</b>, ` +
          `buffered ${fmt(h.buffered)}${h.retries ? ", retried " + fmt(h.retries) + "×" : ""}</td></tr>`).join("") +
        (s.answers ? `<tr class="answers"><td class="muted">↳ answers</td><td colspan="6" class="muted">` +
          `OK ${fmt(s.answers.ok)}, try later ${fmt(s.answers.try_later)}, error ${fmt(s.answers.error)}; ` +
          `pending <b class="pending">${fmt(s.answers.pending)}</b>; connections ${fmt(s.answers.connections)}, ` +
          `closed bad ${fmt(s.answers.bad_connections)}</td></tr>` : "");
    }).join("");
  }

  // A cluster's members, from their heartbeats: partitions with lag, the versions each serves.
  function drawCluster() {
    const c = state.info && state.info.cluster;
    $("cluster-section").hidden = !c;
    if (!c) return;
    $("cluster-title").textContent = `Cluster ${c.group_id}: ${(c.members || []).length} members (this one: ${c.member})`;
    $("cluster").tBodies[0].innerHTML = (c.members || []).map((m) => {
      const parts = (m.partitions || []).map((p) => `${esc(p.topic)}/${p.partition}` +
        ` <span class="muted">lag</span> <b class="lag">${p.lag == null ? "—" : fmt(p.lag)}</b>`).join(", ");
      const serving = Object.entries(m.serving || {}).map(([p, h]) => `${esc(p)}@${esc(h)}`).join(" ");
      const age = state.info.now_ms ? Math.max(0, state.info.now_ms - m.updated_ms) : null;
      return `<tr data-member="${esc(m.member)}"><td>${esc(m.member)}${m.member === c.member ? " <span class=\"badge\">this</span>" : ""}</td>` +
        `<td>${parts || "<span class=\"muted\">none</span>"}</td><td class="hash">${serving}</td>` +
        `<td class="num">${age == null ? "—" : fmt(age) + " ms"}</td>` +
        `<td>${m.admin ? `<a href="${esc(m.admin)}/">${esc(m.admin)}</a>` : "—"}</td></tr>`;
    }).join("") + (c.members_error ? `<tr><td colspan="5" class="status-error">${esc(c.members_error)}</td></tr>` : "");
  }

  function drawStages() {
    if (!state.info) return;
    $("stages").tBodies[0].innerHTML = state.info.stages.map((s) => {
      if (s.fused_into) {
        return `<tr data-stage="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.op)}</td><td><code>${esc(s.function || "")}</code></td>` +
          `<td colspan="4" class="muted">runs fused into <b>${esc(s.fused_into)}</b>, one task per partition: see its figures</td></tr>`;
      }
      const t = state.stageTotals[s.name];
      const perCall = t && t.calls ? t.micros / t.calls / 1000 : null;
      const errors = Object.entries(state.stageErrors[s.name] || {}).map(([c, n]) => `<span class="badge">${esc(c)} ×${n}</span>`).join("");
      return `<tr data-stage="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.op)}</td><td><code>${esc(s.function || "")}</code></td>` +
        `<td class="num">${t ? fmt(t.records_in) : 0}</td><td class="num">${t ? fmt(t.records_out) : 0}</td>` +
        `<td class="num">${perCall == null ? "" : fmt(perCall) + " ms"}</td><td>${errors}</td></tr>`;
    }).join("");
  }

  function drawPlugins() {
    if (!state.info) return;
    $("plugins").tBodies[0].innerHTML = state.info.plugins.map((p) => {
      const errors = Object.entries(state.versionErrors)
        .filter(([v]) => v.startsWith(p.name + "@"))
        .map(([v, classes]) => `<div><span class="hash">${esc(v.slice(p.name.length + 1))}</span> ` +
          Object.entries(classes).map(([c, n]) => `<span class="badge">${esc(c)} ×${n}</span>`).join("") + "</div>")
        .join("");
      const s = p.shadow;
      const last = s && s.recent.length ? s.recent[s.recent.length - 1] : null;
      const shadow = !s ? "" : `<span class="hash">${esc(s.hash)}</span> ${fmt(s.batches)} batches, ` +
        `${(100 * s.differing_share).toFixed(1)}% differ, errors ${fmt(s.totals.serving_errors)}/${fmt(s.totals.shadow_errors)}` +
        (last ? `, µs/call ${last.serving_us_per_call.toFixed(0)}/${last.shadow_us_per_call.toFixed(0)}` : "");
      const metrics = (p.metrics || []).map((m) => `<div>${esc(m.stage || "-")} <span class="hash">${esc(m.version)}</span> ` +
        `${esc(m.name)} = ${m.kind === "histogram" ? fmt(m.count) + " obs, sum " + fmt(m.value) : fmt(m.value)}</div>`).join("");
      return `<tr data-plugin="${esc(p.name)}"><td>${esc(p.name)}</td><td class="hash serving">${esc(p.hash)}</td>` +
        `<td>${new Date(p.loaded_at_ms).toLocaleString("en-GB")}</td><td><code>${esc(p.functions.map((f) => f.name).join(", "))}</code></td><td>${errors}</td>` +
        `<td class="shadow">${shadow}</td><td class="plugin-metrics">${metrics}</td></tr>`;
    }).join("");
    $("plugin-history").tBodies[0].innerHTML = state.pluginEvents.slice().reverse().map((e) =>
      `<tr><td>${time(e.at_ms)}</td><td>${esc(e.plugin)}</td><td>${esc(e.action)}</td><td class="hash">${esc(e.from)}</td>` +
      `<td class="hash">${esc(e.to)}</td><td>${esc(e.detail)}</td></tr>`).join("");
  }

  function drawAudit() {
    $("audit").tBodies[0].innerHTML = state.audit.slice().reverse().map((e) =>
      `<tr class="${e.accepted ? "accepted" : "refused"}"><td>${time(e.at_ms)}</td><td>${esc(e.from)}</td><td>${esc(e.action)}</td>` +
      `<td>${esc(e.target)}</td><td>${e.accepted ? "accepted" : "refused"} (${e.status})</td><td class="hash">${esc(e.hash)}</td>` +
      `<td>${esc(e.detail)}</td></tr>`).join("");
  }

  function drawResults() {
    const sinks = Object.values(state.results);
    if (sinks.length === 0) return;
    const box = $("results");
    for (const r of sinks) {
      let panel = box.querySelector(`[data-sink="${CSS.escape(r.sink)}"]`);
      if (!panel) {
        if (!box.querySelector("[data-sink]")) box.innerHTML = "";
        panel = document.createElement("div");
        panel.className = "result";
        panel.dataset.sink = r.sink;
        panel.innerHTML = `<h3>${esc(r.sink)} <span class="muted batch"></span></h3><div class="chart"></div><table><thead></thead><tbody></tbody></table>`;
        box.appendChild(panel);
      }
      panel.querySelector(".batch").textContent = `batch ${time(r.batch_ms)} · ${fmt(r.total)} records`;
      panel.querySelector("thead").innerHTML = "<tr>" + r.columns.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr>";
      panel.querySelector("tbody").innerHTML = r.rows.map((row) =>
        "<tr>" + row.map((v) => `<td class="${typeof v === "number" ? "num" : ""}">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</td>`).join("") + "</tr>").join("");
      // A bar chart needs a number per row; without one, the table says it all.
      const numeric = r.rows.some((row) => row.some((v) => typeof v === "number"));
      panel.querySelector(".chart").style.display = r.chart === "bar" && numeric ? "" : "none";
      if (r.chart === "bar" && numeric) drawBar(panel, r);
    }
  }

  function drawBar(panel, r) {
    const labels = r.rows.map((row) => (typeof row[0] === "object" ? JSON.stringify(row[0]) : String(row[0])));
    const values = r.rows.map((row) => { const n = [...row].reverse().find((v) => typeof v === "number"); return n ?? 0; });
    const xs = labels.map((_, i) => i);
    const key = "bar:" + r.sink;
    const el = panel.querySelector(".chart");
    if (!charts[key]) {
      charts[key] = new uPlot({
        width: width(el), height: 260, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: false, range: (u) => [-0.5, Math.max(u.data[0].length - 0.5, 0.5)] }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } },
        axes: [{ stroke: "#6b7585", rotate: -40, size: 70, grid: { show: false }, splits: (u) => u.data[0],
                 values: (u, splits) => splits.map((i) => charts[key].labels[i] ?? "") },
               { stroke: "#6b7585", size: 60 }],
        series: [{}, { label: r.columns[r.columns.length - 1], stroke: "#1f6feb", fill: "#1f6feb99", paths: uPlot.paths.bars({ size: [0.8, 80] }), points: { show: false } }],
      }, [[], []], el);
    }
    charts[key].labels = labels;
    charts[key].setData([xs, values]);
  }

  function drawAll() {
    drawSummary(); drawCharts(); drawBatches(); drawSources(); drawCluster(); drawStages(); drawPlugins(); drawAudit(); drawResults();
  }

  // ---- data ---------------------------------------------------------------------------
  function absorbHistory(h) {
    state.batches = (h.completed || []).slice(-KEEP);
    state.waiting = new Map(Object.entries(h.waiting || {}).map(([t, n]) => [Number(t), n]));
    state.running = h.running;
    state.pluginEvents = h.plugins || [];
    state.audit = h.audit || [];
    state.results = h.results || {};
    state.stageTotals = h.stage_totals || {};
    state.stageErrors = h.stage_errors || {};
    state.versionErrors = h.version_errors || {};
  }

  async function load() {
    const response = await fetch("/api/dashboard" + query);
    if (!response.ok) throw new Error("GET /api/dashboard: " + response.status);
    state.info = await response.json();
    $("pipeline").textContent = state.info.pipeline;
    $("interval").textContent = `batch interval ${fmt(state.info.batch_interval_ms)} ms`;
    absorbHistory(state.info.history);
    drawAll();
  }

  let refresh = null;
  function refreshInfo() {
    // Sources and plugins (rates, errors, versions) change without events of their own.
    if (refresh) return;
    refresh = setTimeout(async () => {
      refresh = null;
      try {
        const r = await fetch("/api/dashboard" + (query ? query + "&" : "?") + "history=false");
        if (r.ok) {
          const info = await r.json();
          state.info.sources = info.sources; state.info.plugins = info.plugins; state.info.cluster = info.cluster; state.info.now_ms = info.now_ms;
          drawSources(); drawPlugins(); drawCluster();
        }
      } catch (e) { /* the event stream reports the connection */ }
    }, 250);
  }

  function handle(e) {
    switch (e.type) {
      case "batch_queued": state.waiting.set(e.time_ms, e.records); drawBatches(); drawSummary(); break;
      case "batch_started": state.waiting.delete(e.time_ms); state.running = [e.time_ms, e.records, Date.now()]; drawBatches(); break;
      case "batch_completed":
        state.running = null;
        state.batches.push(e);
        if (state.batches.length > KEEP) state.batches.shift();
        for (const s of e.stages || []) {
          const t = state.stageTotals[s.name] || (state.stageTotals[s.name] = { name: s.name, records_in: 0, records_out: 0, calls: 0, micros: 0 });
          t.records_in += s.records_in; t.records_out += s.records_out; t.calls += s.calls; t.micros += s.micros;
        }
        drawSummary(); drawCharts(); drawBatches(); drawStages(); refreshInfo();
        break;
      case "plugin": state.pluginEvents.push(e); drawPlugins(); refreshInfo(); break;
      case "receiver": refreshInfo(); break;
      case "results": state.results[e.sink] = e; drawResults(); break;
      case "audit": state.audit.push(e); if (state.audit.length > 200) state.audit.shift(); drawAudit(); break;
      case "lagged": load(); break;
    }
  }

  function connect() {
    const source = new EventSource("/api/events" + query);
    source.onopen = () => { $("connection").textContent = "live"; $("connection").className = "pill live"; state.connected = true; };
    source.onerror = () => { $("connection").textContent = "reconnecting"; $("connection").className = "pill down"; state.connected = false; };
    source.onmessage = (m) => handle(JSON.parse(m.data));
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const headers = token ? { Authorization: "Bearer " + token } : {};
    await fetch(`/api/sources/${encodeURIComponent(button.dataset.name)}/${button.dataset.action}`, { method: "POST", headers });
    refreshInfo();
  });

  window.sluice = { state, charts };
  makeCharts();
  load().then(connect).catch((err) => { $("connection").textContent = String(err); $("connection").className = "pill down"; });
})();
