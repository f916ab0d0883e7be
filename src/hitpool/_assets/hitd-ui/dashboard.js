// hitd's dashboard. Plain script, no build step. Invariant: every string that comes from a
// job (task, args, error, result, worker names) reaches the page through textContent or an
// attribute set with setAttribute on our own elements, never as markup.
"use strict";
(function () {
  const ORDER = ["queued", "scheduled", "running", "succeeded", "failed", "dead", "cancelled"];
  const POLL_MS = 1000;
  const $ = (sel) => document.querySelector(sel);
  let state = { mode: "on", token: false };
  let rateChart = null;
  let lastSearch = "";
  let shownJob = null;  // the job on the job page; polled again until it is finished
  const FINISHED = ["succeeded", "failed", "dead", "cancelled"];

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function flash(message, bad) {
    const f = $("#flash");
    f.textContent = message;
    f.className = bad ? "bad" : "";
    f.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { f.hidden = true; }, 5000);
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (r.status === 401) { location.reload(); throw new Error("not logged in"); }
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  // Every action is a call of the job API; the header tells hitd it comes from this page.
  async function act(method, url, done, gone) {
    const r = await fetch(url, { method, headers: { "X-Requested-With": "hitd-ui" } });
    let body = {};
    try { body = await r.json(); } catch (e) { /* an empty answer */ }
    if (r.ok) flash(done(body)); else flash(body.message || method + " " + url + ": " + r.status, true);
    refresh();
    if (r.ok && gone && location.hash.startsWith("#job/")) location.hash = "";  // nothing to show
    else if (location.hash.startsWith("#job/")) showJob();
    return r.ok;
  }
  const retry = (id) => act("POST", "/jobs/" + id + "/retry", () => "job " + id + " queued to run now");
  const cancel = (id) => act("DELETE", "/jobs/" + id, () => "job " + id + " cancelled");
  const remove = (id) => act("DELETE", "/jobs/" + id + "?purge=1", () => "job " + id + " deleted", true);

  const actionsAllowed = () => state.mode === "on";

  function actionButtons(job) {
    const span = el("span", { class: "actions" });
    if (!actionsAllowed()) return span;
    const s = job.status;
    if (s === "failed" || s === "dead" || s === "queued" || s === "scheduled")
      span.append(el("button", { type: "button", class: "action", "data-action": "retry", text: "Retry now", on: { click: () => retry(job.id) } }));
    if (s === "queued" || s === "scheduled")
      span.append(el("button", { type: "button", class: "danger", "data-action": "cancel", text: "Cancel", on: { click: () => cancel(job.id) } }));
    if (s === "succeeded" || s === "failed" || s === "dead" || s === "cancelled")
      span.append(el("button", { type: "button", class: "danger", "data-action": "delete", text: "Delete", on: { click: () => remove(job.id) } }));
    return span;
  }

  function when(iso) { return iso ? new Date(iso).toLocaleTimeString() : "–"; }
  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    return (s / 60).toFixed(1) + " min";
  }
  const jobLink = (id) => el("a", { href: "#job/" + id, text: String(id) });

  function renderCounts(jobs) {
    const box = $("#counts");
    box.replaceChildren();
    if (!jobs) { box.append(el("span", { class: "muted", text: "the store did not answer" })); return; }
    const names = ORDER.filter((s) => s in jobs).concat(Object.keys(jobs).filter((s) => !ORDER.includes(s)));
    for (const s of names)
      box.append(el("div", { class: "card " + s, "data-status": s }, el("h3", { text: s }), el("div", { class: "n", text: String(jobs[s]) })));
    const select = $("#search select");
    if (select.options.length === 1)
      for (const s of names) select.append(el("option", { value: s, text: s }));
  }

  function renderStats(stats) {
    renderCounts(stats.jobs);
    $("#busy").textContent = stats.workers.busy + " / " + stats.workers.size;
    $("#depth").textContent = String(stats.queue.depth);
    $("#intake").textContent = stats.queue.in_flight + " in flight, queue-size " + stats.queue.size;
  }

  function renderRates(rates) {
    const data = [rates.t, rates.accepted, rates.completed, rates.failed];
    const box = $("#rates-chart");
    if (!rateChart) {
      rateChart = new uPlot({
        width: Math.max(300, box.clientWidth - 10), height: 220,
        series: [{}, { label: "accepted/s", stroke: "#2563eb" }, { label: "completed/s", stroke: "#1e8449" },
                 { label: "failed/s", stroke: "#c0392b" }],
        axes: [{}, { label: "per second" }],
      }, data, box);
    } else rateChart.setData(data);
  }

  function renderFailures(jobs) {
    const body = $("#failures tbody");
    body.replaceChildren();
    for (const j of jobs)
      body.append(el("tr", { "data-id": String(j.id) },
        el("td", {}, jobLink(j.id)), el("td", { text: j.task }), el("td", { text: j.status }),
        el("td", { text: String(j.attempts) }), el("td", { text: when(j.finished_at) }),
        el("td", { class: "error", title: j.error || "", text: j.error || "" }),
        el("td", {}, actionButtons(j))));
    if (!jobs.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "none" })));
  }

  function renderHitRuns(runs) {
    const body = $("#hit-runs tbody");
    body.replaceChildren();
    for (const r of runs) {
      const s = r.summary || {};
      body.append(el("tr", {}, el("td", {}, jobLink(r.id)), el("td", { text: s.url || "" }),
        el("td", { text: String(s.requests ?? "") }), el("td", { text: String(s.errors ?? "") }),
        el("td", { text: String(s.rps ?? "") }), el("td", { text: seconds(s.latency_s && s.latency_s.p99) }),
        el("td", { text: when(r.finished_at) })));
    }
    if (!runs.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "none" })));
  }

  function renderState(st) {
    state = st;
    $("#mode").textContent = st.mode === "on" ? "actions on" : st.mode;
    $("#logout").hidden = !st.token;
    $("#retry-dead").hidden = !actionsAllowed();
    $("#latency").textContent = st.queue_latency_s === null ? "0 (empty)" : seconds(st.queue_latency_s);
    const procs = Object.entries(st.workers.by_process).map(([w, n]) => w + ": " + n);
    $("#by-process").textContent = procs.length ? procs.join(", ") : "no process holds a job";
    renderRates(st.rates);
    renderFailures(st.recent_failures);
    renderHitRuns(st.hit_runs);
  }

  async function refresh() {
    try {
      const [stats, st] = await Promise.all([getJSON("/stats"), getJSON("/ui/state")]);
      renderStats(stats);
      renderState(st);
      $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
      if (location.hash.startsWith("#job/") && shownJob && !FINISHED.includes(shownJob.status)) showJob();
    } catch (e) {
      $("#updated").textContent = "hitd does not answer (" + e.message + ")";
    }
  }

  async function search(url) {
    const page = await getJSON(url);
    const body = $("#results tbody");
    if (url === lastSearch || !url.includes("before=")) body.replaceChildren();
    lastSearch = url;
    for (const j of page.jobs)
      body.append(el("tr", { "data-id": String(j.id) }, el("td", {}, jobLink(j.id)), el("td", { text: j.task }),
        el("td", { text: j.status }), el("td", { text: String(j.attempts) }), el("td", { text: when(j.created_at) }),
        el("td", { class: "args", text: JSON.stringify(j.args) })));
    const older = $("#older");
    older.hidden = !page.next;
    older.onclick = () => search(page.next);
  }

  function field(body, name, value) {
    body.append(el("tr", {}, el("th", { text: name }), el("td", { text: value })));
  }

  // The same charts as hit's HTML report, from the result's `charts` (hit/charts.py), drawn
  // by the report's own script (a result saved by an older hitd has none: its table only).
  function hitCharts(charts) {
    const box = $("#hit-charts");
    box.replaceChildren();
    for (const c of charts || []) {
      const div = el("div", { class: "chart", id: "hit-chart-" + c.id });
      box.append(div);
      hitReport.draw(c, div);
    }
  }

  function showHit(result) {
    const box = $("#hit-report");
    box.hidden = false;
    const lat = $("#hit-latency tbody");
    lat.replaceChildren();
    for (const [k, v] of Object.entries(result.latency_s || {})) field(lat, "latency " + k, seconds(v));
    field(lat, "requests", String(result.requests));
    field(lat, "errors", String(result.errors));
    field(lat, "rps", String(result.rps));
    for (const [code, n] of Object.entries(result.status_codes || {})) field(lat, "status " + code, String(n));
    hitCharts(Array.isArray(result.charts) ? result.charts : []);
  }

  async function showJob() {
    const id = location.hash.slice("#job/".length);
    $("#overview").hidden = true;
    $("#job").hidden = false;
    let j;
    try { j = await getJSON("/jobs/" + encodeURIComponent(id)); }
    catch (e) { shownJob = null; $("#job-title").textContent = "job " + id + ": not found"; return; }
    shownJob = j;
    $("#job-title").textContent = "job " + j.id + " · " + j.task + " · " + j.status;
    $("#job-actions").replaceChildren(actionButtons(j));
    const body = $("#job-fields tbody");
    body.replaceChildren();
    field(body, "status", j.status);
    field(body, "attempts", String(j.attempts));
    field(body, "created", j.created_at || "–");
    field(body, "started", j.started_at || "–");
    field(body, "finished", j.finished_at || "–");
    if (j.started_at && j.finished_at)
      field(body, "ran for", seconds((Date.parse(j.finished_at) - Date.parse(j.started_at)) / 1000));
    $("#job-args").textContent = JSON.stringify(j.args, null, 2);
    $("#job-error").textContent = j.error || "–";
    $("#job-result").textContent = j.result === null ? "–" : JSON.stringify(j.result, null, 2);
    $("#hit-report").hidden = true;
    if (j.task === "hit" && j.result && typeof j.result === "object") showHit(j.result);
  }

  function route() {
    if (location.hash.startsWith("#job/")) showJob();
    else { $("#job").hidden = true; $("#overview").hidden = false; }
  }

  $("#retry-dead").addEventListener("click", () =>
    act("POST", "/jobs/retry?status=dead", (b) => b.retried + " dead jobs queued to run now"));
  $("#search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const p = new URLSearchParams();
    for (const k of ["status", "task", "q"]) if (f.get(k)) p.set(k, f.get(k));
    search("/jobs?" + p.toString()).catch((e) => flash(e.message, true));
  });
  window.addEventListener("hashchange", route);
  route();
  refresh();
  setInterval(refresh, POLL_MS);
})();
