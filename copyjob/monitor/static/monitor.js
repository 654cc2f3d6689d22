// The copyjob monitor page: polls the JSON API (docs/monitor.md) and draws jobs, runs, a run's tables and the
// CDC lag charts. Every value is set with textContent: nothing from the API is parsed as HTML.
"use strict";

const state = { info: null, jobs: [], runs: {}, openRun: null, token: sessionStorage.getItem("copyjob-token") };
const $ = (id) => document.getElementById(id);
const drawn = {};

// Redraw a part only when what it shows changed: rows stay put (text selection, a hovered button) between polls.
function changed(part, data) {
  const text = JSON.stringify(data);
  if (drawn[part] === text) return false;
  drawn[part] = text;
  return true;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function headers(action) {
  const h = {};
  if (state.token) h["X-Copyjob-Token"] = state.token;
  if (action) h["X-Copyjob-Action"] = "1";
  return h;
}

async function api(path, options) {
  const action = options && options.method === "POST";
  const response = await fetch("/api/" + path, { method: action ? "POST" : "GET", headers: headers(action) });
  const body = await response.json();
  if (response.status === 401) {
    askToken(body.error);
    throw new Error(body.error);
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function askToken(why) {
  $("token-form").hidden = false;
  $("token-note").hidden = false;
  $("token-note").textContent = why || "a token is needed";
}

function showProblem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

// ---------------------------------------------------------------- formatting

function when(iso) {
  if (!iso || iso === "never") return iso || "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString();
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function status(text) {
  return el("span", { class: `status status-${text}` }, text);
}

function value(v) {
  return v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v);
}

// ---------------------------------------------------------------- jobs

function renderJobs() {
  if (!changed("jobs", state.jobs)) return;
  const body = $("jobs").querySelector("tbody");
  body.replaceChildren(...state.jobs.map((job) => {
    const plans = [...job.schedules.map((s) => `${s.expression} (${s.timezone})`),
      ...job.triggers.map((t) => `file_arrival ${t.path} ${t.pattern}`)];
    const next = job.schedules.map((s) => s.missed ? `missed: ${when(s.next_fire)}` : when(s.next_fire));
    const last = job.last_run;
    const lastCell = job.running ? status("running")
      : last ? el("span", {}, status(last.status), " ", el("span", { class: "muted" }, when(last.finished_at)))
        : el("span", { class: "muted" }, "never run");
    const cdc = job.cdc;
    const lag = !cdc ? "–" : cdc.error ? el("span", { class: "problem" }, cdc.error)
      : `${bytes(cdc.lag_bytes)}, ${seconds(cdc.lag_seconds)}`;
    const consumer = job.kafka_consumer_lag;
    const behind = !consumer ? null : consumer.error ? el("div", { class: "problem" }, consumer.error)
      : el("div", { class: "muted" },
        `apply: ${count(consumer.partitions.reduce((n, p) => n + p.lag, 0))} messages behind`);
    const run = el("button", { class: "run-now", type: "button", "data-job": job.job }, "run now");
    run.disabled = Boolean(job.running);
    run.addEventListener("click", () => runNow(job.job, run));
    const name = el("td", {}, el("strong", {}, job.job), el("div", { class: "muted" }, job.destination));
    if (job.error) name.append(el("div", { class: "problem" }, job.error));
    return el("tr", { class: "job", "data-job": job.job }, name, el("td", {}, job.modes.join(", ")),
      el("td", {}, job.transport), el("td", {}, plans.join("; ") || "–"), el("td", {}, next.join("; ") || "–"),
      el("td", {}, lastCell), el("td", {}, lag, behind), el("td", {}, run));
  }));
}

async function runNow(job, button) {
  button.disabled = true;
  try {
    await api(`jobs/${encodeURIComponent(job)}/run`, { method: "POST" });
    showProblem("");
  } catch (e) {
    showProblem(`run now: ${e.message}`);
  }
  refresh();
}

// ---------------------------------------------------------------- runs

function allRuns() {
  return Object.values(state.runs).flat().sort((a, b) => (b.started_at || "").localeCompare(a.started_at || ""));
}

function renderRuns() {
  const runs = allRuns();
  if (!changed("runs", [runs, state.openRun])) return;
  $("no-runs").hidden = runs.length > 0;
  $("runs").querySelector("tbody").replaceChildren(...runs.map((r) => {
    const row = el("tr", { class: "run" + (r.run_id === state.openRun ? " open" : ""), "data-run-id": r.run_id,
      "data-status": r.status, "data-job": r.job },
    el("td", {}, r.job), el("td", {}, r.trigger), el("td", {}, when(r.started_at)),
    el("td", {}, seconds(r.duration_s)), el("td", {}, status(r.status)),
    el("td", { class: "num" }, count(r.rows_read)), el("td", { class: "num" }, count(r.rows_written)),
    el("td", { class: "num" }, count(r.rows_per_s)));
    row.addEventListener("click", () => openRun(r.run_id));
    return row;
  }));
}

async function openRun(runId) {
  state.openRun = runId;
  renderRuns();
  await renderDetail();
}

async function renderDetail() {
  const runId = state.openRun;
  $("run-detail").hidden = !runId;
  if (!runId) return;
  const run = await api(`runs/${encodeURIComponent(runId)}`);
  if (state.openRun !== runId) return;
  const job = state.jobs.find((j) => j.job === run.job);
  if (!changed("detail", [run, job && job.tables])) return;
  const quarantined = Object.fromEntries((job ? job.tables : []).map((t) => [t.table, t.quarantined_files]));
  $("detail-id").textContent = run.run_id;
  $("detail-summary").replaceChildren(`${run.job} · ${run.trigger} · started ${when(run.started_at)} · `,
    `${seconds(run.duration_s)} · `, status(run.status));
  $("detail-error").hidden = !run.error;
  $("detail-error").textContent = run.error || "";
  $("detail-tables").querySelector("tbody").replaceChildren(...run.tables.map((t) => {
    const kinds = t.changes || {};
    const changes = ["inserts", "updates", "deletes"].filter((k) => kinds[k] !== undefined && kinds[k] !== null)
      .map((k) => `${count(kinds[k])} ${k}`).join(", ");
    const reset = el("button", { class: "reset", type: "button", "data-table": t.table }, "reset");
    reset.addEventListener("click", () => resetTable(run.job, t.table));
    return el("tr", { class: "table-run", "data-table": t.table, "data-status": t.status },
      el("td", {}, t.table), el("td", {}, t.mode), el("td", {}, status(t.status)),
      el("td", { class: "num" }, count(t.rows_read)), el("td", { class: "num" }, count(t.rows_written)),
      el("td", {}, seconds(t.duration_s)), el("td", { class: "num" }, count(t.rows_per_s)),
      el("td", {}, `${value(t.watermark_before)} → ${value(t.watermark_after)}`),
      el("td", {}, changes || "–"), el("td", {}, count(quarantined[t.table])),
      el("td", { class: "num" }, count(t.dead_letters)),
      el("td", { class: "problem" }, [t.error, t.note].filter(Boolean).join("\n")), el("td", {}, reset));
  }));
}

function resetTable(job, table) {
  const dialog = $("confirm");
  $("confirm-text").textContent =
    `Reset ${table} of ${job}? Its next run copies it in full (a snapshot for a cdc table).`;
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    try {
      await api(`jobs/${encodeURIComponent(job)}/tables/${encodeURIComponent(table)}/reset`, { method: "POST" });
      showProblem("");
    } catch (e) {
      showProblem(`reset ${table}: ${e.message}`);
    }
    refresh();
  };
  dialog.returnValue = "";
  dialog.showModal();
}

// ---------------------------------------------------------------- CDC lag

async function renderLag() {
  const cdcJobs = state.jobs.filter((j) => j.modes.includes("cdc"));
  $("cdc-section").hidden = cdcJobs.length === 0;
  const charts = [];
  for (const job of cdcJobs) {
    let lag;
    try {
      lag = await api(`jobs/${encodeURIComponent(job.job)}/lag`);
    } catch (e) {
      charts.push(el("div", { class: "chart problem" }, `${job.job}: ${e.message}`));
      continue;
    }
    charts.push(chart(job.job, lag.samples));
  }
  if (!changed("lag", charts.map((c) => c.outerHTML))) return;
  $("cdc-charts").replaceChildren(...charts);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function chart(job, samples) {
  const w = 480, h = 140, pad = 28;
  const box = el("div", { class: "chart", "data-job": job });
  const last = samples[samples.length - 1];
  box.append(el("h3", {}, job, " ", el("span", { class: "legend-bytes" }, `bytes ${bytes(last && last.lag_bytes)}`),
    " · ", el("span", { class: "legend-seconds" }, `seconds ${seconds(last && last.lag_seconds)}`)));
  const plot = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  plot.append(svg("line", { class: "axis", x1: pad, y1: h - pad, x2: w - 4, y2: h - pad }));
  const points = samples.filter((s) => s.lag_bytes !== null || s.lag_seconds !== null);
  if (points.length) {
    const t0 = points[0].at, t1 = Math.max(points[points.length - 1].at, t0 + 1);
    const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - pad - 4);
    // each line on its own scale, its top value written above the plot in its colour
    const lines = [["lag_bytes", "bytes", bytes, pad], ["lag_seconds", "seconds", seconds, w / 2]];
    for (const [key, cls, format, at] of lines) {
      const top = Math.max(1, ...points.map((p) => p[key] || 0));
      const y = (v) => h - pad - ((v || 0) / top) * (h - 2 * pad);
      const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      plot.append(svg("path", { class: cls, d }));
      const label = svg("text", { x: at, y: 14, class: `top-${cls}` });
      label.textContent = `max ${format(Math.max(...points.map((p) => p[key] || 0)))}`;
      plot.append(label);
    }
    const label = svg("text", { x: pad, y: h - 8 });
    label.textContent = `${new Date(t0 * 1000).toLocaleTimeString()} – ${new Date(t1 * 1000).toLocaleTimeString()}`;
    plot.append(label);
  } else {
    const label = svg("text", { x: pad, y: h / 2 });
    label.textContent = last && last.error ? last.error : "no sample yet";
    plot.append(label);
  }
  box.append(plot);
  return box;
}

// ---------------------------------------------------------------- the loop

let refreshing = null;

function refresh() {
  refreshing = refreshing || load().finally(() => { refreshing = null; });
  return refreshing;
}

async function load() {
  try {
    if (!state.info) {
      state.info = await api("info");
      $("mode").textContent = state.info.mode === "serve" ? "serving" : "watching";
      if (state.info.actions_need_token) {
        $("token-note").hidden = false;
        $("token-note").textContent = state.info.reads_need_token
          ? "not on loopback: reading and actions need the token"
          : "actions need the token";
        $("token-form").hidden = Boolean(state.token);
      }
    }
    const view = await api("jobs");
    state.jobs = view.jobs;
    const runs = await Promise.all(state.jobs.map((j) => api(`jobs/${encodeURIComponent(j.job)}/runs`)));
    state.runs = Object.fromEntries(state.jobs.map((j, i) => [j.job, runs[i]]));
    renderJobs();
    renderRuns();
    await renderDetail();
    await renderLag();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = String((Number(document.body.dataset.loaded) || 0) + 1);
  } catch (e) {
    showProblem(`cannot read the monitor's API: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("detail-close").addEventListener("click", () => { state.openRun = null; renderRuns(); renderDetail(); });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value;
    sessionStorage.setItem("copyjob-token", state.token);
    $("token-form").hidden = true;
    state.info = null;
    refresh();
  });
  refresh();
  setInterval(refresh, 1500);
});
