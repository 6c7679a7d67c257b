/* Task data pages: results arriving over time, and run health by version (uPlot charts over
   a picked time range, from /api/v1/results/rate/ and /api/v1/run-health/). */
(function () {
  "use strict";
  const rangeSel = document.getElementById("range");
  if (!rangeSel) return;
  const COLOURS = ["#2f5bea", "#98a2b3", "#0e9f6e", "#d9822b", "#7c3aed", "#db2777"];
  const timeAxis = {
    space: 70,
    values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })),
  };
  const plots = {};

  /* One chart per box, rebuilt when its series change (versions come and go). */
  function draw(id, data, series, window_, yRange) {
    const box = document.getElementById(id);
    if (!box) return;
    if (!window.uPlot) { box.textContent = "Chart library failed to load."; return; }
    const key = series.map((s) => s.label).join("|");
    if (plots[id] && plots[id].key !== key) { plots[id].plot.destroy(); delete plots[id]; }
    if (!plots[id]) {
      const plot = new uPlot({
        width: Math.max(280, box.clientWidth), height: 220,
        scales: { x: { time: true, range: () => [window_.since, window_.until] }, y: yRange ? { range: yRange } : {} },
        series: [{}].concat(series),
        axes: [timeAxis, { size: 52 }],
      }, data, box);
      plots[id] = { plot: plot, key: key, window: window_ };
      window.addEventListener("resize", () => plot.setSize({ width: Math.max(280, box.clientWidth), height: 220 }));
    }
    plots[id].window.since = window_.since;
    plots[id].window.until = window_.until;
    plots[id].plot.setData(data);
  }
  function windowOf(body) { return { since: Date.parse(body.since) / 1000, until: Date.parse(body.until) / 1000 }; }
  const pct = (v) => (v == null ? "—" : (100 * v).toFixed(2) + "%");
  const ms = (v) => (v == null ? "—" : Number(v).toFixed(1));

  /* ---- results page: arrival rate ---- */
  const rateCard = document.getElementById("rate-card");
  async function loadRate() {
    const res = await Walle.api("GET", rateCard.dataset.rateApi + "&since=" + rangeSel.value);
    const summary = document.getElementById("rate-summary");
    if (!res.ok) { summary.textContent = Walle.explainStatus(res, "The result rate"); return; }
    const b = res.data;
    summary.textContent = b.total + " result" + (b.total === 1 ? "" : "s") + " in this window, " + b.per_minute.toFixed(1) +
      " per minute; one bar every " + (b.step >= 60 ? b.step / 60 + " min" : b.step + " s");
    summary.dataset.total = b.total;
    draw("chart-rate", [b.t, b.results], [{ label: "results", stroke: COLOURS[0], fill: "rgba(47,91,234,.15)", width: 2, paths: window.uPlot && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.8] }) : undefined }], windowOf(b));
  }

  /* ---- run health page ---- */
  const health = document.getElementById("health");
  async function loadHealth() {
    const res = await Walle.api("GET", health.dataset.api + "&since=" + rangeSel.value);
    const note = document.getElementById("health-note");
    const tbody = document.querySelector("#health-versions tbody");
    if (!res.ok) { note.textContent = Walle.explainStatus(res, "Run health"); return; }
    const b = res.data;
    note.textContent = b.total.runs + " runs on " + b.total.devices + " device" + (b.total.devices === 1 ? "" : "s") +
      " in this window" + (b.truncated ? " (only the newest reports were read)" : "");
    tbody.replaceChildren(...(b.versions.length ? b.versions.map((v) => Walle.el("tr", { "data-version": String(v.version) }, [
      Walle.el("td", { text: "v" + v.version }),
      Walle.el("td", { className: "num", "data-field": "devices", text: String(v.devices) }),
      Walle.el("td", { className: "num", "data-field": "runs", text: String(v.runs) }),
      Walle.el("td", { className: "num", "data-field": "errors", text: String(v.errors) }),
      Walle.el("td", { className: "num", "data-field": "error_rate", text: pct(v.error_rate) }),
      Walle.el("td", { className: "num", "data-field": "p50", text: ms(v.latency_ms_p50) }),
      Walle.el("td", { className: "num", "data-field": "p95", text: ms(v.latency_ms_p95) }),
    ])) : [Walle.el("tr", {}, [Walle.el("td", { colspan: "7", className: "muted", text: "No run reported in this window." })])]));
    const series = b.series; // newest version first
    const w = windowOf(b);
    const colour = (i) => COLOURS[i % COLOURS.length];
    // Rates and latencies have gaps (no run in a bucket): join across them and mark points.
    const sparse = { spanGaps: true, points: { show: true, size: 5 } };
    draw("chart-runs", [b.t, ...series.map((s) => s.runs)],
      series.map((s, i) => ({ label: "v" + s.version, stroke: colour(i), width: 2 })), w);
    draw("chart-errors", [b.t, ...series.map((s) => s.error_rate)],
      series.map((s, i) => ({ label: "v" + s.version, stroke: colour(i), width: 2, value: (u, x) => pct(x), ...sparse })), w, [0, 1]);
    draw("chart-latency", [b.t, ...series.flatMap((s) => [s.latency_ms_p50, s.latency_ms_p95])],
      series.flatMap((s, i) => [
        { label: "v" + s.version + " p50", stroke: colour(i), width: 2, ...sparse },
        { label: "v" + s.version + " p95", stroke: colour(i), width: 1, dash: [5, 4], ...sparse },
      ]), w);
  }

  const load = rateCard ? loadRate : health ? loadHealth : null;
  if (!load) return;
  rangeSel.addEventListener("change", load);
  load();
  setInterval(() => { if (!document.hidden) load(); }, 15000);
})();
