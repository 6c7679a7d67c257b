/* Release dashboard: live counts over the console websocket (polling when it fails), charts,
   failure reasons, the per-device table and the release actions. */
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const releaseId = Number(root.dataset.release);
  const STATES = ["pending", "notified", "downloading", "installed", "succeeded", "failed", "timed_out", "rolled_back"];
  const ACTIONS = {
    draft: ["start", "abort"], running: ["pause", "advance", "abort", "rollback"], paused: ["resume", "advance", "abort", "rollback"],
    completed: ["rollback"], aborted: ["rollback"], rolled_back: [],
  };
  const liveBox = document.getElementById("live-status");
  const resultBox = document.getElementById("action-result");
  let lastCounts = null;
  let lastState = null;

  function setLive(mode, text) {
    liveBox.className = "live " + mode;
    liveBox.querySelector("span:last-child").textContent = text;
  }
  function notify(kind, text) {
    resultBox.className = "msg msg-" + kind;
    resultBox.textContent = text;
    resultBox.hidden = false;
  }
  const startError = new URLSearchParams(window.location.search).get("start_error");
  if (startError) notify("error", "The release was created but not started: " + startError);

  /* ---- counts, state, progress ---- */
  function applySnapshot(snap) {
    const counts = snap.counts || {};
    for (const key of [...STATES, "total"]) {
      const node = root.querySelector('[data-count="' + key + '"]');
      if (!node) continue;
      const value = counts[key] || 0;
      if (node.textContent !== String(value)) {
        node.textContent = value;
        if (lastCounts) { const box = node.closest(".count"); box.classList.remove("flash"); void box.offsetWidth; box.classList.add("flash"); }
      }
    }
    const total = counts.total || 0;
    const ok = counts.succeeded || 0, bad = (counts.failed || 0) + (counts.timed_out || 0);
    const busy = (counts.notified || 0) + (counts.downloading || 0) + (counts.installed || 0);
    const bar = document.getElementById("progress-bar");
    const pct = (n) => (total ? (100 * n) / total : 0) + "%";
    bar.querySelector(".ok").style.width = pct(ok);
    bar.querySelector(".bad").style.width = pct(bad);
    bar.querySelector(".busy").style.width = pct(busy);
    bar.setAttribute("aria-label", ok + " of " + total + " succeeded, " + bad + " failed, " + busy + " in progress");
    if (snap.state && snap.state !== lastState) {
      const badge = document.querySelector("#release-state .badge");
      badge.className = "badge state-" + snap.state;
      badge.textContent = snap.state.replace("_", " ");
      const allowed = ACTIONS[snap.state] || [];
      document.querySelectorAll("#actions [data-action]").forEach((b) => { b.hidden = !allowed.includes(b.dataset.action); });
      lastState = snap.state;
    }
    if (snap.reason !== undefined) {
      const reason = document.getElementById("release-reason");
      reason.hidden = !snap.reason;
      reason.querySelector("span:last-child").textContent = snap.reason || "";
    }
    if (snap.current_stage !== undefined) {
      document.querySelectorAll("#stages .stage").forEach((li) => {
        const i = Number(li.dataset.stage);
        li.classList.toggle("done", i < snap.current_stage);
        li.classList.toggle("current", i === snap.current_stage && snap.state !== "draft");
      });
    }
    if (snap.stages) renderStages(snap.stages);
    lastCounts = counts;
    sample(counts);
    scheduleDetails();
  }

  /* ---- chart: deployments by state over time ---- */
  const chartSeries = { t: [], succeeded: [], failed: [], progress: [], pending: [] };
  let chart = null;
  function chartData() { return [chartSeries.t, chartSeries.succeeded, chartSeries.failed, chartSeries.progress, chartSeries.pending]; }
  function makeChart() {
    const box = document.getElementById("chart-states");
    if (!window.uPlot) { box.textContent = "Chart library failed to load; the counts above are live."; return; }
    chart = new uPlot({
      width: Math.max(280, box.clientWidth), height: 220,
      scales: { x: { time: true } },
      series: [
        {},
        { label: "succeeded", stroke: "#1f9d55", width: 2 },
        { label: "failed + timed out", stroke: "#d64545", width: 2 },
        { label: "in progress", stroke: "#3b82f6", width: 2 },
        { label: "pending", stroke: "#98a2b3", width: 1 },
      ],
      axes: [{}, { size: 44 }],
    }, chartData(), box);
    window.addEventListener("resize", () => chart.setSize({ width: Math.max(280, box.clientWidth), height: 220 }));
  }
  function sample(counts) {
    const now = Date.now() / 1000;
    const last = chartSeries.t.length ? chartSeries.t[chartSeries.t.length - 1] : 0;
    const point = [counts.succeeded || 0, (counts.failed || 0) + (counts.timed_out || 0),
      (counts.notified || 0) + (counts.downloading || 0) + (counts.installed || 0), counts.pending || 0];
    if (now - last < 0.2 && chartSeries.t.length) {  // same instant: replace, keep x increasing
      chartSeries.succeeded[chartSeries.succeeded.length - 1] = point[0];
      chartSeries.failed[chartSeries.failed.length - 1] = point[1];
      chartSeries.progress[chartSeries.progress.length - 1] = point[2];
      chartSeries.pending[chartSeries.pending.length - 1] = point[3];
    } else {
      chartSeries.t.push(now); chartSeries.succeeded.push(point[0]); chartSeries.failed.push(point[1]);
      chartSeries.progress.push(point[2]); chartSeries.pending.push(point[3]);
    }
    if (chart) chart.setData(chartData());
  }
  /* Seed the chart with the server's per-minute transitions, as cumulative "reached" counts.
     Accepts rows [{minute, state, count}] (the monitoring API) or [{t, <state>: n}] (console). */
  function seedFromSeries(series) {
    if (!Array.isArray(series) || !series.length || seeded) return;
    seeded = true;
    const perMinute = new Map();
    for (const row of series) {
      const t = typeof row.t === "number" ? row.t : Date.parse(row.minute || row.t || row.at) / 1000;
      if (!isFinite(t)) continue;
      const bucket = perMinute.get(t) || {};
      if (row.state !== undefined) bucket[row.state] = (bucket[row.state] || 0) + (row.count || 0);
      else for (const k of STATES) bucket[k] = (bucket[k] || 0) + (row[k] || 0);
      perMinute.set(t, bucket);
    }
    let ok = 0, bad = 0, started = 0;
    // Minute buckets are plotted at their start; the current minute is left to the live samples.
    const firstLive = Math.min(chartSeries.t.length ? chartSeries.t[0] : Infinity, Date.now() / 1000 - 60);
    const past = { t: [], succeeded: [], failed: [], progress: [], pending: [] };
    for (const t of [...perMinute.keys()].sort((a, b) => a - b)) {
      const c = perMinute.get(t);
      ok += c.succeeded || 0; bad += (c.failed || 0) + (c.timed_out || 0); started += c.downloading || 0;
      if (t >= firstLive) break;
      past.t.push(t); past.succeeded.push(ok); past.failed.push(bad);
      past.progress.push(Math.max(0, started - ok - bad)); past.pending.push(null);
    }
    for (const k of Object.keys(chartSeries)) chartSeries[k] = past[k].concat(chartSeries[k]);
    if (chart) chart.setData(chartData());
  }
  let seeded = false;

  /* ---- details: failures, stages, metrics (every 5 s at most: the monitoring query
     looks at the whole target) and the device table (every 2 s at most), after updates ---- */
  function throttle(fn, ms) {
    let timer = null, last = 0;
    return function () {
      if (timer) return;
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, Math.max(0, ms - (Date.now() - last)));
    };
  }
  const scheduleMonitoring = throttle(() => loadDetails(), 5000);
  const scheduleTable = throttle(() => loadDeployments(), 2000);
  function scheduleDetails() { scheduleMonitoring(); scheduleTable(); }
  const deviceUrl = (uid) => root.dataset.deviceUrl.replace("UID", encodeURIComponent(uid));

  function renderFailures(failures) {
    const box = document.getElementById("failures");
    if (!failures || !failures.length) { box.replaceChildren(Walle.el("p", { className: "empty", text: "No failures so far." })); return; }
    const rows = failures.map((f) => {
      const code = f.error_code || f.code || f.reason || "(no code)";
      const devices = f.devices || f.sample_devices || f.samples || [];
      const links = devices.map((d) => { const uid = typeof d === "string" ? d : d.uid || d.device; return Walle.el("a", { href: deviceUrl(uid), text: uid + " " }); });
      return Walle.el("tr", {}, [
        Walle.el("td", {}, [Walle.el("code", { text: code }), Walle.el("div", { className: "small muted", text: (f.model ? f.model + ": " : "") + (f.message || "").slice(0, 140) })]),
        Walle.el("td", { className: "num", text: String(f.count || f.n || 0) }),
        Walle.el("td", { className: "small" }, links),
      ]);
    });
    const table = Walle.el("table", { className: "data" }, [
      Walle.el("thead", {}, [Walle.el("tr", {}, [Walle.el("th", { text: "Error" }), Walle.el("th", { className: "num", text: "Devices" }), Walle.el("th", { text: "Sample devices" })])]),
      Walle.el("tbody", {}, rows),
    ]);
    box.replaceChildren(table);
  }
  function renderStages(stages) {
    if (!Array.isArray(stages)) return;
    stages.forEach((s, i) => {
      const li = document.querySelector('#stages .stage[data-stage="' + (s.index !== undefined ? s.index : i) + '"]');
      if (!li || typeof s !== "object") return;
      const c = s.counts || s;
      const set = (sel, v) => { const n = li.querySelector(sel); if (n && v !== undefined) n.textContent = v; };
      set("[data-stage-total]", c.total);
      set("[data-stage-ok]", c.succeeded);
      // Pending = admitted but not rung yet: the stage is not finished while they wait.
      set("[data-stage-pending]", c.pending);
      set("[data-stage-failed]", c.failed !== undefined ? c.failed + (s.counts && c.timed_out ? c.timed_out : 0) : undefined);
    });
  }
  function renderMetrics(m) {
    const note = document.getElementById("chart-metrics-note");
    const box = document.getElementById("chart-metrics");
    const groups = m && (m.new || m.control) ? m : null;
    if (!groups) { note.textContent = "No run metrics from devices yet (they arrive with run_stats reports)."; return; }
    const rows = ["new", "control"].map((k) => {
      const g = groups[k] || {};
      const rate = g.error_rate !== undefined ? g.error_rate : g.runs ? (g.errors || 0) / g.runs : null;
      return Walle.el("tr", {}, [
        Walle.el("td", { text: k === "new" ? "new version" : "control (old version)" }),
        Walle.el("td", { className: "num", text: g.devices !== undefined ? String(g.devices) : "—" }),
        Walle.el("td", { className: "num", text: g.runs !== undefined ? String(g.runs) : "—" }),
        Walle.el("td", { className: "num", text: rate === null ? "—" : (100 * rate).toFixed(2) + "%" }),
        Walle.el("td", { className: "num", text: g.latency_ms_p50 != null ? Number(g.latency_ms_p50).toFixed(1) : "—" }),
        Walle.el("td", { className: "num", text: g.latency_ms_p95 != null ? Number(g.latency_ms_p95).toFixed(1) : "—" }),
      ]);
    });
    const head = ["", "Devices", "Runs", "Error rate", "p50 ms", "p95 ms"].map((h, i) => Walle.el("th", { className: i ? "num" : "", text: h }));
    const table = Walle.el("table", { className: "data", id: "metrics-table" }, [Walle.el("thead", {}, [Walle.el("tr", {}, head)]), Walle.el("tbody", {}, rows)]);
    box.replaceChildren(compareBars(groups), table);
    note.textContent = "Task runs reported by devices on the new version, next to targeted devices still on the old one (the control group).";
  }
  /* Side-by-side bars: error rate and latency, new version vs control. */
  function compareBars(groups) {
    const n = groups.new || {}, c = groups.control || {};
    const rate = (g) => (g.error_rate != null ? g.error_rate : g.runs ? (g.errors || 0) / g.runs : null);
    const rows = [
      ["Error rate", rate(n), rate(c), (v) => (100 * v).toFixed(2) + "%"],
      ["Latency p50", n.latency_ms_p50, c.latency_ms_p50, (v) => Number(v).toFixed(1) + " ms"],
      ["Latency p95", n.latency_ms_p95, c.latency_ms_p95, (v) => Number(v).toFixed(1) + " ms"],
    ];
    return Walle.el("div", { className: "compare" }, rows.map(([label, a, b, fmt]) => {
      const max = Math.max(a || 0, b || 0) || 1;
      const bar = (v, cls, who) => Walle.el("div", { className: "cmp-row" }, [
        Walle.el("span", { className: "cmp-who", text: who }),
        Walle.el("span", { className: "cmp-track" }, [Walle.el("span", { className: "cmp-fill " + cls, style: "width:" + (v == null ? 0 : (100 * v) / max) + "%" })]),
        Walle.el("span", { className: "cmp-val", text: v == null ? "no data" : fmt(v) }),
      ]);
      return Walle.el("div", { className: "cmp" }, [Walle.el("div", { className: "cmp-label", text: label }), bar(a, "new", "new"), bar(b, "control", "control")]);
    }));
  }

  async function loadDetails() {
    const res = await Walle.api("GET", root.dataset.api + "monitoring/");
    if (res.ok) {
      const m = res.data;
      renderFailures(m.failure_reasons);
      renderStages(m.stages);
      seedFromSeries(m.time_series);
      renderMetrics(m.run_metrics);
      return;
    }
    document.getElementById("chart-metrics-note").textContent =
      "Run metrics and failure reasons come from the release monitoring API, which did not answer (" +
      Walle.explainStatus(res, "It") + "). The counts above are still live.";
  }

  /* ---- per-device table ---- */
  let depOffset = 0;
  const PAGE = 20;
  async function loadDeployments() {
    const state = document.getElementById("dep-state").value;
    const stageSel = document.getElementById("dep-stage");
    const stage = stageSel ? stageSel.value : "";
    const url = root.dataset.api + "deployments/?limit=" + PAGE + "&offset=" + depOffset +
      (state ? "&state=" + state : "") + (stage ? "&stage=" + stage : "");
    const res = await Walle.api("GET", url);
    const tbody = document.querySelector("#deployments tbody");
    if (!res.ok) { tbody.replaceChildren(Walle.el("tr", {}, [Walle.el("td", { colspan: "5", className: "field-error", text: Walle.explainStatus(res, "The device list") })])); return; }
    const rows = res.data.results || [];
    if (!rows.length) { tbody.replaceChildren(Walle.el("tr", {}, [Walle.el("td", { colspan: "5", className: "muted", text: state ? "No device in this state." : "No device has been admitted yet." })])); }
    else tbody.replaceChildren(...rows.map((d) => Walle.el("tr", {}, [
      Walle.el("td", {}, [Walle.el("a", { href: deviceUrl(d.device) }, [Walle.el("code", { text: d.device })])]),
      Walle.el("td", { text: String(d.stage + 1) }),
      Walle.el("td", {}, [Walle.el("span", { className: "badge state-" + d.state, text: d.state.replace("_", " ") })]),
      Walle.el("td", { className: "small", text: d.error_code ? d.error_code + ": " + (d.error_message || "").slice(0, 80) : "" }),
      Walle.el("td", { className: "small nowrap", text: new Date(d.updated_at).toLocaleTimeString() }),
    ])));
    document.getElementById("dep-prev").hidden = depOffset === 0;
    document.getElementById("dep-next").hidden = !res.data.next;
  }
  document.getElementById("dep-state").addEventListener("change", () => { depOffset = 0; loadDeployments(); });
  const stageFilter = document.getElementById("dep-stage");
  if (stageFilter) stageFilter.addEventListener("change", () => { depOffset = 0; loadDeployments(); });
  document.getElementById("dep-prev").addEventListener("click", () => { depOffset = Math.max(0, depOffset - PAGE); loadDeployments(); });
  document.getElementById("dep-next").addEventListener("click", () => { depOffset += PAGE; loadDeployments(); });

  /* ---- live updates: websocket first, polling as the fallback ---- */
  let socket = null, pollTimer = null, retry = 0;
  async function poll() {
    const res = await Walle.api("GET", root.dataset.api);
    if (res.ok) applySnapshot(res.data);
    else if (res.status === 401 || res.status === 403) setLive("off", "your session ended: reload the page to log in again");
    else setLive("off", "cannot reach the server; retrying");
  }
  function startPolling() {
    if (pollTimer) return;
    setLive("poll", "live socket unavailable; refreshing every 2 s");
    poll();
    pollTimer = setInterval(poll, 2000);
  }
  function stopPolling() { clearInterval(pollTimer); pollTimer = null; }
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    try { socket = new WebSocket(scheme + window.location.host + root.dataset.ws); }
    catch (e) { startPolling(); return; }
    socket.onopen = () => { retry = 0; stopPolling(); setLive("on", "live"); };
    socket.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "release.snapshot") applySnapshot(msg);
    };
    socket.onclose = (event) => {
      socket = null;
      if (event.code === 4403) { setLive("off", "not allowed to watch this release"); return; }
      startPolling();
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, Math.min(30000, 1000 * 2 ** retry) * (0.5 + Math.random() / 2));
    };
  }

  /* ---- actions ---- */
  const dialog = document.getElementById("confirm-dialog");
  const TEXT = {
    start: "Start this release? Devices in the first stage get the new version.",
    pause: "Pause this release? No new devices are notified; devices already updating finish.",
    resume: "Resume this release? Notifications continue from the current stage.",
    advance: "Advance to the next stage now, without waiting for its gates?",
    abort: "Abort this release? No new devices are notified; this cannot be resumed.",
    rollback: "Roll back? A new release of the previous good version goes to the targeted devices; they switch to their cached copy.",
  };
  async function act(action) {
    const payload = {};
    if (action === "rollback") {
      const v = document.getElementById("rb-version").value;
      if (v) payload.version = Number(v);
      payload.skip_stages = document.getElementById("rb-skip").checked;
    }
    const reason = document.getElementById("confirm-reason").value.trim();
    if (reason) payload.reason = reason;
    const res = await Walle.api("POST", root.dataset.api + action + "/", payload);
    if (!res.ok) { notify("error", Walle.explainStatus(res, "The " + action + " action")); return; }
    if (res.data && res.data.id && res.data.id !== releaseId) {
      notify("success", "Rollback release #" + res.data.id + " created. Opening it…");
      window.location.assign(root.dataset.releaseUrl.replace(/0\/$/, res.data.id + "/"));
      return;
    }
    notify("success", { start: "Started.", pause: "Paused.", resume: "Resumed.", advance: "Advanced to the next stage.", abort: "Aborted.", rollback: "Rolled back." }[action]);
    if (res.data && res.data.state) applySnapshot(res.data);
    if (socket && socket.readyState === 1) socket.send(JSON.stringify({ type: "refresh" }));
  }
  document.querySelectorAll("[data-action]").forEach((button) => button.addEventListener("click", () => {
    const action = button.dataset.action;
    document.getElementById("confirm-title").textContent = button.textContent.replace("…", "");
    document.getElementById("confirm-text").textContent = TEXT[action];
    dialog.querySelector('[data-for="rollback"]').hidden = action !== "rollback";
    dialog.querySelector('[data-for="reason"]').hidden = !["pause", "abort", "rollback"].includes(action);
    document.getElementById("confirm-reason").value = "";
    document.getElementById("confirm-ok").dataset.pending = action;
    dialog.returnValue = "";
    dialog.showModal();
  }));
  if (dialog) dialog.addEventListener("close", () => { if (dialog.returnValue === "ok") act(document.getElementById("confirm-ok").dataset.pending); });

  makeChart();
  loadDetails();
  loadDeployments();
  if ("WebSocket" in window) connect(); else startPolling();
})();
