/* Release dashboard: live counts over the console websocket (polling when it fails), why the
   current stage waits, charts rebuilt from the server (deployments by state, success and
   error rate per stage, new vs control), failure reasons, the per-device table, actions. */
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const releaseId = Number(root.dataset.release);
  // The release state machine and the deployment state groups, from releases/choices.py.
  const MACHINE = JSON.parse(document.getElementById("release-machine").textContent);
  const STATES = MACHINE.deployment_states;
  const ACTIONS = MACHINE.actions;
  const sum = (counts, states) => states.reduce((n, s) => n + (counts[s] || 0), 0);
  const liveBox = document.getElementById("live-status");
  const resultBox = document.getElementById("action-result");
  const rangeSel = document.getElementById("range");
  let lastCounts = null;
  let lastState = (document.querySelector("#release-state .badge") || { className: "" }).className.replace(/.*state-/, "") || null;

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
  function inProgress(c) { return sum(c, MACHINE.in_flight); }
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
    // The bar's segments are the tiles' numbers: every device of the total is in one of them.
    const total = counts.total || 0;
    const ok = counts.succeeded || 0, bad = sum(counts, MACHINE.failed);
    const rolled = counts.rolled_back || 0, busy = inProgress(counts), pending = counts.pending || 0;
    const bar = document.getElementById("progress-bar");
    const pct = (n) => (total ? (100 * n) / total : 0) + "%";
    bar.querySelector(".ok").style.width = pct(ok);
    bar.querySelector(".bad").style.width = pct(bad);
    bar.querySelector(".rolled").style.width = pct(rolled);
    bar.querySelector(".busy").style.width = pct(busy);
    bar.setAttribute("aria-label", ok + " of " + total + " succeeded, " + bad + " failed or timed out, " + rolled +
      " rolled back, " + busy + " in progress, " + pending + " pending");
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
    if (snap.explain) renderExplain(snap.explain);
    if (snap.running) renderRunning(snap.running);
    lastCounts = counts;
    sample(counts);
    scheduleDetails();
  }

  /* ---- why the current stage waits ---- */
  function renderExplain(explain) {
    document.getElementById("release-why").textContent = explain.summary || "";
    (explain.stages || []).forEach((s) => {
      const list = document.querySelector('#stages .stage[data-stage="' + s.index + '"] [data-stage-why]');
      if (!list) return;
      list.replaceChildren(...(s.conditions || []).map((c) => Walle.el("li", {
        className: (c.met ? "met" : "unmet") + (c.blocking ? "" : " info"), "data-condition": c.name, text: c.text,
      })));
    });
  }
  function renderRunning(r) {
    const box = document.getElementById("running-now");
    if (!r || !r.by_version || !r.by_version.length) { box.textContent = ""; return; }
    const others = {};
    r.by_version.filter((x) => x.version !== r.version).forEach((x) => { others[x.version] = (others[x.version] || 0) + x.devices; });
    const rest = Object.entries(others).map(([v, n]) => n + " on v" + v).join(", ");
    box.textContent = r.on_version + " of this release's devices run v" + r.version + " now (as they reported)" + (rest ? "; " + rest : "");
  }

  /* ---- the time window of every chart ---- */
  function rangeQuery() {
    const v = rangeSel.value;
    return v ? "?since=" + encodeURIComponent(v) : "";
  }
  let window_ = null; // {since, until} in seconds, from the last timeline answer
  function xRange() {
    if (!window_) { const now = Date.now() / 1000; return [now - 60, now]; }
    const live = !lastState || lastState === "draft" || MACHINE.rolling_out.includes(lastState);
    const until = live ? Math.max(window_.until, Date.now() / 1000) : window_.until;
    return [window_.since, Math.max(until, window_.since + 60)];
  }
  function timeAxis() {
    // Whole seconds: a window is at least a minute, so ticks never read ":11.250".
    return { space: 70, values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })) };
  }
  function makePlot(box, series, yAxis) {
    if (!window.uPlot) { box.textContent = "Chart library failed to load; the numbers on this page are live."; return null; }
    const plot = new uPlot({
      width: Math.max(280, box.clientWidth), height: 220,
      scales: { x: { time: true, range: () => xRange() }, y: yAxis || {} },
      series: [{}].concat(series),
      axes: [timeAxis(), { size: 48 }],
    }, [[], ...series.map(() => [])], box);
    window.addEventListener("resize", () => plot.setSize({ width: Math.max(280, box.clientWidth), height: 220 }));
    return plot;
  }

  /* ---- chart: deployments by state over time (server history + live samples) ---- */
  const stateSeries = { t: [], succeeded: [], failed: [], in_progress: [], pending: [], rolled_back: [] };
  const STATE_LINES = [
    ["succeeded", "succeeded", "#1f9d55", 2], ["failed", "failed + timed out", "#d64545", 2],
    ["in_progress", "in progress", "#3b82f6", 2], ["pending", "pending", "#98a2b3", 1], ["rolled_back", "rolled back", "#7e22ce", 1],
  ];
  const statesPlot = makePlot(document.getElementById("chart-states"),
    STATE_LINES.map(([, label, stroke, width]) => ({ label: label, stroke: stroke, width: width })));
  function drawStates() {
    if (statesPlot) statesPlot.setData([stateSeries.t, ...STATE_LINES.map(([k]) => stateSeries[k])]);
    // What the chart shows, readable from outside (browser tests, debugging).
    const n = stateSeries.t.length;
    root.dataset.chartPoints = n;
    root.dataset.chartFirst = n ? stateSeries.t[0] : "";
    root.dataset.chartLast = n ? JSON.stringify(Object.fromEntries(STATE_LINES.map(([k]) => [k, stateSeries[k][n - 1]]))) : "";
  }
  function sample(counts) {
    if (!window_ || !stateSeries.t.length) return; // the server's history comes first
    const now = Date.now() / 1000;
    const last = stateSeries.t[stateSeries.t.length - 1];
    if (now <= last) return;
    const point = { succeeded: counts.succeeded || 0, failed: sum(counts, MACHINE.failed),
      in_progress: inProgress(counts), pending: counts.pending || 0, rolled_back: counts.rolled_back || 0 };
    stateSeries.t.push(now);
    for (const [k] of STATE_LINES) stateSeries[k].push(point[k]);
    drawStates();
  }

  /* ---- chart: success and error rate per stage ---- */
  // Rates have gaps (nobody admitted or finished yet): join across them and mark the points.
  const SPARSE = { spanGaps: true, points: { show: true, size: 5 } };
  const STAGE_COLOURS = ["#2f5bea", "#0e9f6e", "#d9822b", "#7c3aed", "#db2777", "#0891b2"];
  const nStages = document.querySelectorAll("#stages .stage").length || 1;
  const ratesPlot = makePlot(document.getElementById("chart-rates"),
    [...Array(nStages).keys()].flatMap((i) => [
      { label: "stage " + (i + 1) + " success", stroke: STAGE_COLOURS[i % 6], width: 2, value: (u, v) => (v == null ? "—" : (100 * v).toFixed(0) + "%"), ...SPARSE },
      { label: "stage " + (i + 1) + " errors", stroke: STAGE_COLOURS[i % 6], width: 1, dash: [5, 4], value: (u, v) => (v == null ? "—" : (100 * v).toFixed(0) + "%"), ...SPARSE },
    ]), { range: [0, 1] });

  let timelineSeq = 0;
  async function loadTimeline() {
    const mine = ++timelineSeq;
    const res = await Walle.api("GET", root.dataset.api + "timeline/" + rangeQuery());
    if (mine !== timelineSeq) return;
    const note = document.getElementById("range-note");
    if (!res.ok) { note.textContent = Walle.explainStatus(res, "The history"); return; }
    const tl = res.data;
    window_ = { since: Date.parse(tl.since) / 1000, until: Date.parse(tl.until) / 1000 };
    note.textContent = "one point every " + (tl.step >= 60 ? tl.step / 60 + " min" : tl.step + " s");
    stateSeries.t = tl.t.slice();
    for (const [k] of STATE_LINES) stateSeries[k] = tl.states[k].slice();
    drawStates();
    if (ratesPlot) ratesPlot.setData([tl.t, ...tl.stages.flatMap((s) => [s.success_rate, s.error_rate])]);
  }

  /* ---- new version vs control ---- */
  const pctText = (v) => (v == null ? "no data" : (100 * v).toFixed(2) + "%");
  const msText = (v) => (v == null ? "no data" : Number(v).toFixed(1) + " ms");
  const comparePlot = makePlot(document.getElementById("chart-compare"), [
    { label: "new: error rate", stroke: "#2f5bea", width: 2, value: (u, v) => pctText(v), ...SPARSE },
    { label: "control: error rate", stroke: "#98a2b3", width: 2, value: (u, v) => pctText(v), ...SPARSE },
  ], { range: (u, min, max) => [0, Math.max(0.05, max || 0)] });
  function renderCompare(m) {
    const note = document.getElementById("chart-metrics-note");
    const box = document.getElementById("chart-metrics");
    if (!m || !m.new) { note.textContent = "No run metrics from devices yet (they arrive with run_stats reports)."; return; }
    const labels = m.labels || { new: "new version", control: "control" };
    if (labels.question) document.getElementById("compare-question").textContent = labels.question;
    const rows = ["new", "control"].map((k) => {
      const g = m[k] || {};
      return Walle.el("tr", { "data-group": k }, [
        Walle.el("td", { text: labels[k] }),
        Walle.el("td", { className: "num", "data-field": "devices", text: String(g.devices || 0) }),
        Walle.el("td", { className: "num", "data-field": "runs", text: String(g.runs || 0) }),
        Walle.el("td", { className: "num", "data-field": "errors", text: String(g.errors || 0) }),
        Walle.el("td", { className: "num", "data-field": "error_rate", text: g.error_rate == null ? "—" : (100 * g.error_rate).toFixed(2) + "%" }),
        Walle.el("td", { className: "num", "data-field": "p50", text: g.latency_ms_p50 != null ? Number(g.latency_ms_p50).toFixed(1) : "—" }),
        Walle.el("td", { className: "num", "data-field": "p95", text: g.latency_ms_p95 != null ? Number(g.latency_ms_p95).toFixed(1) : "—" }),
      ]);
    });
    const head = ["", "Devices", "Runs", "Errors", "Error rate", "p50 ms", "p95 ms"].map((h, i) => Walle.el("th", { className: i ? "num" : "", text: h }));
    const table = Walle.el("table", { className: "data", id: "metrics-table" }, [Walle.el("thead", {}, [Walle.el("tr", {}, head)]), Walle.el("tbody", {}, rows)]);
    box.replaceChildren(compareBars(m, labels), table);
    const v = m.verdicts || {};
    const verdict = (name, what) => {
      const x = v[name] || {};
      return Walle.el("p", { className: "verdict verdict-" + (x.outcome || "none"), "data-verdict": name }, [
        Walle.el("strong", { text: what + ": " }), Walle.el("span", { text: x.text || "—" }),
        Walle.el("span", { className: "muted small", text: x.test ? " (" + x.test + ")" : "" }),
      ]);
    };
    document.getElementById("verdicts").replaceChildren(verdict("error_rate", "Error rate"), verdict("latency", "Latency"));
    note.textContent = "Runs reported by targeted devices over the same window: on " + labels.new +
      ", and on " + labels.control + " (devices not yet on the new version)." + (m.truncated ? " Only the newest reports were read." : "");
    if (comparePlot && m.series) comparePlot.setData([m.series.t, m.series.new.error_rate, m.series.control.error_rate]);
  }
  function compareBars(m, labels) {
    const n = m.new || {}, c = m.control || {};
    const rows = [
      ["Error rate", n.error_rate, c.error_rate, pctText],
      ["Latency p50", n.latency_ms_p50, c.latency_ms_p50, msText],
      ["Latency p95", n.latency_ms_p95, c.latency_ms_p95, msText],
    ];
    return Walle.el("div", { className: "compare" }, rows.map(([label, a, b, fmt]) => {
      const max = Math.max(a || 0, b || 0) || 1;
      const bar = (v, cls, who) => Walle.el("div", { className: "cmp-row" }, [
        Walle.el("span", { className: "cmp-who", text: who }),
        Walle.el("span", { className: "cmp-track" }, [Walle.el("span", { className: "cmp-fill " + cls, style: "width:" + (v == null ? 0 : (100 * v) / max) + "%" })]),
        Walle.el("span", { className: "cmp-val", text: fmt(v) }),
      ]);
      return Walle.el("div", { className: "cmp" }, [Walle.el("div", { className: "cmp-label", text: label }), bar(a, "new", "new"), bar(b, "control", "control")]);
    }));
  }
  async function loadCompare() {
    const res = await Walle.api("GET", root.dataset.api + "compare/" + rangeQuery());
    if (res.ok) renderCompare(res.data);
    else document.getElementById("chart-metrics-note").textContent = Walle.explainStatus(res, "The comparison");
  }

  /* ---- details: failures, stages, why (every 5 s at most), the device table (2 s) ---- */
  function throttle(fn, ms) {
    let timer = null, last = 0;
    return function () {
      if (timer) return;
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, Math.max(0, ms - (Date.now() - last)));
    };
  }
  const scheduleMonitoring = throttle(() => loadDetails(), 5000);
  const scheduleCharts = throttle(() => { loadTimeline(); loadCompare(); }, 15000);
  const scheduleTable = throttle(() => loadDeployments(), 2000);
  function scheduleDetails() { scheduleMonitoring(); scheduleTable(); scheduleCharts(); }
  const deviceUrl = (uid) => root.dataset.deviceUrl.replace("UID", encodeURIComponent(uid));

  function renderFailures(failures) {
    const box = document.getElementById("failures");
    if (!failures || !failures.length) { box.replaceChildren(Walle.el("p", { className: "empty", text: "No failures so far." })); return; }
    const rows = failures.map((f) => {
      const links = (f.sample_devices || []).map((uid) => Walle.el("a", { href: deviceUrl(uid), text: uid + " " }));
      return Walle.el("tr", {}, [
        Walle.el("td", {}, [Walle.el("code", { text: f.error_code || "(no code)" }), Walle.el("div", { className: "small muted", text: (f.model ? f.model + ": " : "") + (f.message || "").slice(0, 140) })]),
        Walle.el("td", { className: "num", text: String(f.count || 0) }),
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
      const li = document.querySelector('#stages .stage[data-stage="' + i + '"]');
      if (!li || !s.counts) return;
      const c = s.counts;
      li.querySelector("[data-stage-total]").textContent = c.total;
      li.querySelector("[data-stage-ok]").textContent = c.succeeded;
      li.querySelector("[data-stage-failed]").textContent = sum(c, MACHINE.failed);
      // Pending = admitted but not rung yet: the stage is not finished while they wait.
      const pending = li.querySelector("[data-stage-pending]");
      if (pending && c.pending !== undefined) pending.textContent = c.pending;
    });
  }

  async function loadDetails() {
    const res = await Walle.api(
      "GET", root.dataset.api + "monitoring/?sections=failure_reasons,stages,explain,running");
    if (res.ok) {
      const m = res.data;
      renderFailures(m.failure_reasons);
      renderStages(m.stages);
      if (m.explain) renderExplain(m.explain);
      if (m.running) renderRunning(m.running);
      return;
    }
    document.getElementById("chart-metrics-note").textContent =
      "Failure reasons come from the release monitoring API, which did not answer (" +
      Walle.explainStatus(res, "It") + "). The counts above are still live.";
  }

  /* ---- per-device table: the same numbers as the tiles, filtered by state and stage ---- */
  let depOffset = 0;
  const PAGE = 20;
  const stateSel = document.getElementById("dep-state");
  const stageSel = document.getElementById("dep-stage");
  let tableSeq = 0;
  async function loadDeployments() {
    const mine = ++tableSeq;
    const state = stateSel.value;
    const stage = stageSel ? stageSel.value : "";
    const url = root.dataset.api + "deployments/?limit=" + PAGE + "&offset=" + depOffset +
      (state ? "&state=" + encodeURIComponent(state) : "") + (stage ? "&stage=" + stage : "");
    const res = await Walle.api("GET", url);
    if (mine !== tableSeq) return; // a newer filter answered first
    const tbody = document.querySelector("#deployments tbody");
    const countLine = document.getElementById("dep-count");
    if (!res.ok) {
      countLine.textContent = "";
      tbody.replaceChildren(Walle.el("tr", {}, [Walle.el("td", { colspan: "5", className: "field-error", text: Walle.explainStatus(res, "The device list") })]));
      return;
    }
    const rows = res.data.results || [];
    const n = res.data.count || 0;
    countLine.textContent = n + " device" + (n === 1 ? "" : "s") + (state || stage ? " match" : " in this release") +
      (n > PAGE ? " (showing " + (depOffset + 1) + "–" + Math.min(n, depOffset + PAGE) + ")" : "");
    countLine.dataset.total = n;
    if (!rows.length) { tbody.replaceChildren(Walle.el("tr", {}, [Walle.el("td", { colspan: "5", className: "muted", text: state || stage ? "No device matches these filters." : "No device has been admitted yet." })])); }
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
  stateSel.addEventListener("change", () => { depOffset = 0; loadDeployments(); });
  if (stageSel) stageSel.addEventListener("change", () => { depOffset = 0; loadDeployments(); });
  document.querySelectorAll("#counts [data-filter-state]").forEach((tile) => tile.addEventListener("click", () => {
    stateSel.value = tile.dataset.filterState;
    if (stageSel) stageSel.value = "";
    depOffset = 0;
    loadDeployments();
    document.getElementById("deployments").scrollIntoView({ block: "nearest" });
  }));
  document.getElementById("dep-prev").addEventListener("click", () => { depOffset = Math.max(0, depOffset - PAGE); loadDeployments(); });
  document.getElementById("dep-next").addEventListener("click", () => { depOffset += PAGE; loadDeployments(); });
  rangeSel.addEventListener("change", () => { loadTimeline(); loadCompare(); });

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

  loadTimeline();
  loadCompare();
  // Quiet periods bring no snapshot: the charts still follow the clock (and new run stats).
  setInterval(() => { if (!document.hidden && MACHINE.rolling_out.includes(lastState)) scheduleCharts(); }, 30000);
  loadDetails();
  loadDeployments();
  if ("WebSocket" in window) connect(); else startPolling();
})();
