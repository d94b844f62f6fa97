// The fsm_worker dashboard: log in with the room token, then render the board the server streams
// (server-sent events from /dashboard/events). Everything is built with textContent: peers' metadata is
// untrusted and never becomes markup.
"use strict";

const $ = (id) => document.getElementById(id);
let feed = null;
let selectedJob = null;
let lastBoard = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function fmtSeconds(s) {
  if (typeof s !== "number") return "–";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(2) + " h";
}

function fmtNumber(v) {
  return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4)) : String(v);
}

function showLoggedIn(on) {
  $("login").hidden = on;
  $("board").hidden = !on;
  $("logout").hidden = !on;
  if (!on) setLink("signed out", false);
}

function setLink(text, live) {
  $("link-state").textContent = text;
  $("link-state").classList.toggle("live", live);
}

function connect() {
  if (feed) feed.close();
  feed = new EventSource("/dashboard/events");
  feed.onopen = () => setLink("live", true);
  feed.onmessage = (event) => {
    showLoggedIn(true);
    setLink("live", true);
    render(JSON.parse(event.data));
  };
  feed.onerror = async () => {
    setLink("reconnecting…", false);
    const probe = await fetch("/dashboard/events", { method: "GET" }).catch(() => null);
    if (probe && probe.status === 401) {
      feed.close();
      feed = null;
      showLoggedIn(false);
    } else if (probe && probe.body) {
      probe.body.cancel();
    }
  };
}

function renderWorker(worker) {
  const status = String(worker.status || "unknown");
  const rows = [["GPU", worker.gpu_model ? `${worker.gpu_model} (${worker.gpu_memory_mb ?? "?"} MB)` : "none"],
                ["CUDA", worker.cuda_version || "–"],
                ["slots", `${status === "busy" ? 1 : 0} / ${worker.max_concurrent_jobs ?? 1}`],
                ["job types", (worker.supported_job_types || []).join(", ") || "–"]];
  if (worker.hostname) rows.push(["host", worker.hostname]);
  const job = worker.job;
  if (job) {
    rows.push(["job", `${job.label} (${job.job_type || "?"})`]);
    rows.push(["phase", `${job.status || ""} ${job.message || ""}`.trim() || "–"]);
    rows.push(["elapsed", fmtSeconds(job.elapsed_seconds)]);
    for (const [key, value] of Object.entries(job.metrics || {})) rows.push([key, fmtNumber(value)]);
  }
  const list = el("dl");
  for (const [key, value] of rows) list.append(el("dt", {}, key), el("dd", {}, value));
  const card = el("div", { class: `worker ${status}`, "data-peer": worker.peer_id },
    el("span", { class: "status" }, status), el("div", { class: "name" }, worker.peer_id), list);
  if (job) {
    const pct = Math.round(100 * Math.max(0, Math.min(1, Number(job.progress) || 0)));
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuenow": String(pct),
                            "aria-valuemin": "0", "aria-valuemax": "100" }, el("span"));
    bar.firstChild.style.width = pct + "%";
    card.append(bar, el("div", { class: "pct" }, pct + " %"));
    card.addEventListener("click", () => { selectedJob = job.label; if (lastBoard) drawPlot(lastBoard); });
  }
  return card;
}

function render(board) {
  lastBoard = board;
  const workers = board.workers || [];
  $("counts").textContent = `${workers.length} worker(s), ${board.clients || 0} client(s)`;
  $("workers").replaceChildren(...(workers.length ? workers.map(renderWorker)
                                                  : [el("p", {}, "No worker is connected to this room.")]));
  const body = $("recent").tBodies[0];
  body.replaceChildren(...(board.recent_jobs || []).map((job) => el("tr", {},
    el("td", {}, job.label), el("td", {}, job.job_type || "–"), el("td", {}, job.worker),
    el("td", { class: String(job.outcome) }, job.outcome), el("td", {}, fmtSeconds(job.duration_seconds)))));
  drawPlot(board);
}

function drawPlot(board) {
  const series = board.series || {};
  const running = (board.workers || []).map((w) => w.job && w.job.label).filter(Boolean);
  const ids = Object.keys(series);
  const jobId = (selectedJob && series[selectedJob]) ? selectedJob : (running.find((id) => series[id]) || ids[ids.length - 1]);
  $("plot-job").textContent = jobId ? `job ${jobId}` : "no job yet";
  const canvas = $("plot");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  const height = Math.max(160, Math.round(width * 0.32));
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { l: 44, r: 44, t: 10, b: 24 };
  const points = jobId ? series[jobId] : [];
  g.strokeStyle = "#d9dee6";
  g.strokeRect(pad.l, pad.t, width - pad.l - pad.r, height - pad.t - pad.b);
  canvas.dataset.points = String(points.length);
  if (!points.length) return;
  const xs = points.map((p) => p[0] ?? 0);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1e-9);
  const losses = points.map((p) => p[2]).filter((v) => typeof v === "number");
  const lmin = Math.min(...losses, Infinity), lmax = Math.max(...losses, -Infinity);
  const sx = (x) => pad.l + (width - pad.l - pad.r) * (x - x0) / (x1 - x0 || 1);
  const sy = (f) => height - pad.b - (height - pad.t - pad.b) * f;
  const line = (color, value) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false;
    for (const p of points) {
      const v = value(p);
      if (typeof v !== "number" || !isFinite(v)) continue;
      const x = sx(p[0] ?? 0), y = sy(v);
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    }
    g.stroke();
  };
  line("#2b6cb0", (p) => p[1]);
  if (losses.length) line("#c53030", (p) => typeof p[2] === "number" ? (p[2] - lmin) / ((lmax - lmin) || 1) : null);
  g.fillStyle = "#5d6778"; g.font = "11px system-ui, sans-serif";
  g.fillText("100 %", 4, pad.t + 8); g.fillText("0 %", 12, height - pad.b);
  if (losses.length) {
    g.fillText(fmtNumber(lmax), width - pad.r + 4, pad.t + 8);
    g.fillText(fmtNumber(lmin), width - pad.r + 4, height - pad.b);
  }
  g.fillText(fmtSeconds(x0), pad.l, height - 6);
  g.fillText(fmtSeconds(x1), width - pad.r - 40, height - 6);
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const response = await fetch("/dashboard/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  }).catch(() => null);
  if (!response) { $("login-error").textContent = "The server cannot be reached."; return; }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) { $("login-error").textContent = answer.message || `refused (${response.status})`; return; }
  $("token").value = "";
  connect();
});

$("logout").addEventListener("click", async () => {
  await fetch("/dashboard/logout", { method: "POST" }).catch(() => null);
  if (feed) feed.close();
  feed = null;
  showLoggedIn(false);
});

window.addEventListener("resize", () => { if (lastBoard) drawPlot(lastBoard); });
connect();  // an existing session (cookie) goes straight to the board
