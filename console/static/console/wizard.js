/* Release wizard: version -> target -> stages & gates -> delivery -> review, then POST. */
(function () {
  "use strict";
  const form = document.getElementById("wizard");
  if (!form) return;
  const data = JSON.parse(document.getElementById("wizard-data").textContent);
  const errorBox = document.getElementById("wizard-error");
  const $ = (id) => document.getElementById(id);
  let step = 1;
  let emptyTargetOk = false;
  let preview = null; // {total, stages: [...]} or null
  const DEFAULTS = data.stage_defaults; // releases/policy.py STAGE_DEFAULTS

  /* ---- step 1: version ---- */
  const taskSel = $("w-task"), versionSel = $("w-version");
  data.tasks.forEach((t) => taskSel.append(Walle.el("option", { value: t.id, text: t.name })));
  function fillVersions() {
    const task = data.tasks.find((t) => String(t.id) === taskSel.value);
    versionSel.replaceChildren(...(task ? task.versions : []).map((v) =>
      Walle.el("option", { value: v.id, text: "v" + v.number + (v.notes ? " — " + v.notes.slice(0, 50) : "") })));
    if (!versionSel.options.length) versionSel.append(Walle.el("option", { value: "", text: "no versions: upload one first" }));
  }
  if (data.preselect) {
    const owner = data.tasks.find((t) => t.versions.some((v) => v.id === data.preselect));
    if (owner) taskSel.value = owner.id;
  }
  fillVersions();
  if (data.preselect) versionSel.value = data.preselect;
  taskSel.addEventListener("change", fillVersions);

  function selected() {
    const task = data.tasks.find((t) => String(t.id) === taskSel.value);
    const version = task && task.versions.find((v) => String(v.id) === versionSel.value);
    return { task: task, version: version };
  }

  /* ---- step 2: target ---- */
  const countLine = form.querySelector("[data-target-count]");
  const editor = new WalleTarget.TargetEditor(form.querySelector("[data-target-editor]"), () => refreshPreview());

  /* ---- step 3: stages ---- */
  const tbody = $("stages").querySelector("tbody");
  const asPercent = (share) => +(100 * share).toFixed(2); // 0.95 -> 95, not 94.99999999999999
  function stageRow(s) {
    const tr = document.createElement("tr");
    const cell = (name, value, attrs) => {
      const input = Walle.el("input", Object.assign({ type: "number", "data-field": name, value: value === undefined || value === null ? "" : value }, attrs || {}));
      return Walle.el("td", {}, [input]);
    };
    tr.append(
      Walle.el("td", { className: "stage-no" }),
      cell("percent", s.basis_points / 100, { min: "0.01", max: "100", step: "0.01", "aria-label": "Share of target in percent", required: "" }),
      cell("soak_min", s.soak_s ? s.soak_s / 60 : "", { min: "0", step: "0.5", placeholder: "0", "aria-label": "Minimum soak in minutes" }),
      cell("success", asPercent(s.success_gate !== undefined ? s.success_gate : DEFAULTS.success_gate), { min: "0", max: "100", step: "1", "aria-label": "Success gate percent" }),
      cell("error", asPercent(s.error_gate !== undefined ? s.error_gate : DEFAULTS.error_gate), { min: "0", max: "100", step: "0.5", "aria-label": "Error gate percent" }),
      cell("min_finished", s.min_finished !== undefined ? s.min_finished : DEFAULTS.min_finished, { min: "0", step: "1", "aria-label": "Minimum finished devices before the error gate applies" }),
    );
    const auto = Walle.el("input", { type: "checkbox", "data-field": "auto", "aria-label": "Advance automatically" });
    auto.checked = s.auto_advance !== false;
    const worse = Walle.el("input", { type: "checkbox", "data-field": "worse", "aria-label": "Stop if the new version is significantly worse than control" });
    worse.checked = s.stop_if_worse === true;
    tr.append(Walle.el("td", {}, [auto]), Walle.el("td", {}, [worse]), Walle.el("td", { className: "num", "data-preview": "", text: "…" }));
    const remove = Walle.el("button", { type: "button", className: "small", text: "Remove", "aria-label": "Remove stage" });
    remove.addEventListener("click", () => { if (tbody.rows.length > 1) { tr.remove(); renumber(); refreshPreview(); } });
    tr.append(Walle.el("td", {}, [remove]));
    return tr;
  }
  function renumber() { [...tbody.rows].forEach((r, i) => { r.querySelector(".stage-no").textContent = i + 1; }); }
  function setStages(bps) {
    tbody.replaceChildren(...bps.map((bp) => stageRow({ basis_points: bp })));
    renumber();
    refreshPreview();
  }
  form.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => setStages(b.dataset.preset.split(",").map(Number))));
  $("add-stage").addEventListener("click", () => { tbody.append(stageRow({ basis_points: 10000 })); renumber(); refreshPreview(); });
  tbody.addEventListener("input", () => refreshPreview());
  tbody.addEventListener("change", () => showStageWarnings());

  function num(input) { const v = input.value.trim(); return v === "" ? null : Number(v); }
  function stages() {
    return [...tbody.rows].map((r) => {
      const f = (name) => r.querySelector('[data-field="' + name + '"]');
      const stage = { basis_points: Math.round((num(f("percent")) || 0) * 100) };
      const soak = num(f("soak_min")); if (soak !== null) stage.soak_s = Math.round(soak * 60);
      const ok = num(f("success")); if (ok !== null) stage.success_gate = ok / 100;
      const bad = num(f("error")); if (bad !== null) stage.error_gate = bad / 100;
      const min = num(f("min_finished")); if (min !== null) stage.min_finished = Math.round(min);
      stage.auto_advance = f("auto").checked;
      if (f("worse").checked) stage.stop_if_worse = true;
      return stage;
    });
  }
  function stageProblems(list) {
    const problems = [];
    let prev = 0;
    list.forEach((s, i) => {
      if (!(s.basis_points >= 1 && s.basis_points <= 10000)) problems.push("Stage " + (i + 1) + ": the share must be between 0.01% and 100%.");
      else if (s.basis_points <= prev) problems.push("Stage " + (i + 1) + ": each stage must reach more devices than the one before.");
      prev = Math.max(prev, s.basis_points);
    });
    if (list.length && list[list.length - 1].basis_points !== 10000) problems.push("The last stage must be 100%, so the release can complete.");
    return problems;
  }

  /* ---- preview: POST /api/v1/releases/preview/ with this release's salt ---- */
  let seq = 0;
  const refreshPreview = WalleTarget.debounce(async () => {
    const mine = ++seq;
    const body = { version: Number(versionSel.value) || null, target: editor.value(), stages: stages(), salt: data.salt };
    countLine.textContent = "Counting matching devices…";
    const res = await Walle.api("POST", form.dataset.previewApi, body);
    if (mine !== seq) return;
    if (res.ok) {
      preview = res.data;
      countLine.textContent = preview.total + " device" + (preview.total === 1 ? "" : "s") + " in the target now.";
      countLine.classList.remove("field-error");
    } else {
      preview = null;
      countLine.textContent = "Cannot preview: " + Walle.explainStatus(res, "The preview");
      countLine.classList.add("field-error");
    }
    [...tbody.rows].forEach((r, i) => {
      const cell = r.querySelector("[data-preview]");
      cell.textContent = preview && preview.stages && preview.stages[i] !== undefined ? preview.stages[i] : "—";
    });
    showStageWarnings();
  }, 300);

  /* ---- what a stage's gates can and cannot do with the devices it holds now ---- */
  function stageWarnings() {
    if (!preview || !preview.stages) return [];
    const list = stages();
    const out = [];
    list.forEach((s, i) => {
      // A stage's gates count the devices it admits: its share minus the previous stage's.
      const own = (preview.stages[i] || 0) - (i ? preview.stages[i - 1] || 0 : 0);
      const minFinished = s.min_finished !== undefined ? s.min_finished : DEFAULTS.min_finished;
      const gate = s.success_gate !== undefined ? s.success_gate : DEFAULTS.success_gate;
      const name = "Stage " + (i + 1) + " (" + s.basis_points / 100 + "%)";
      if (own === 0 && preview.total > 0) {
        out.push(name + " reaches no device now: it passes its gates at once and proves nothing. Raise its share.");
        return;
      }
      if (own > 0 && own < minFinished) {
        out.push(name + " holds " + own + " device" + (own === 1 ? "" : "s") + " now, fewer than its min finished (" + minFinished +
          "): it can never reach " + minFinished + " finished, so its error gate judges those " + own + " alone (" +
          (own === 1 ? "a single failure stops the release" : "one failure is " + Math.round(100 / own) + "%") +
          "). Raise the share or lower min finished.");
      }
      if (own > 0 && Math.floor(own * (1 - gate) + 1e-9) === 0 && gate > 0) {
        out.push(name + ": with " + own + " device" + (own === 1 ? "" : "s") + " and a " + Math.round(gate * 100) +
          "% success gate, any one failure or offline device keeps it from advancing on its own.");
      }
    });
    return out;
  }
  function showStageWarnings() {
    const lines = stageWarnings();
    const box = $("stage-warnings");
    box.replaceChildren(...lines.map((l) => Walle.el("div", { text: l })));
    box.hidden = !lines.length;
    return lines;
  }
  setStages([100, 2000, 10000]);
  editor.fire();

  /* ---- step 4: delivery ---- */
  $("w-start").addEventListener("change", () => {
    form.querySelector('[data-when="at"]').hidden = $("w-start").value !== "at";
  });
  /* The keys of releases/policy.py DELIVERY_DEFAULTS; empty fields keep the server's default. */
  function delivery() {
    const out = {};
    const n = (id) => num($(id));
    if (n("w-rate") !== null) out.notify_rate = n("w-rate");
    if ($("w-ramp").checked) out.ramp = 2;
    if (n("w-inflight") !== null) out.max_in_flight = Math.round(n("w-inflight"));
    if (n("w-timeout") !== null) out.timeout_s = n("w-timeout");
    if (n("w-retries") !== null) out.max_retries = Math.round(n("w-retries"));
    if (n("w-jitter") !== null) out.pull_jitter_s = n("w-jitter");
    return out;
  }
  function scheduledAt() {
    return $("w-start").value === "at" && $("w-start-at").value ? new Date($("w-start-at").value).toISOString() : null;
  }

  function body() {
    const sel = selected();
    const b = {
      version: sel.version ? sel.version.id : null,
      name: $("w-name").value.trim() || (sel.version ? sel.task.name + " v" + sel.version.number : ""),
      target: editor.value(),
      stages: stages(),
      delivery: delivery(),
      on_error: form.querySelector('input[name="on_error"]:checked').value,
      salt: data.salt,
    };
    if (scheduledAt()) b.scheduled_at = scheduledAt();
    return b;
  }

  /* ---- navigation ---- */
  function problems(n) {
    if (n === 1 && !selected().version) return ["Pick a task version; upload one first if the task has none."];
    if (n === 2 && preview && preview.total === 0 && !emptyTargetOk) {
      emptyTargetOk = true; // a second click goes on: devices that enroll later still join
      return ["No device matches this target now. Loosen the filters, or click Next again to release to devices that match later."];
    }
    if (n === 3) return stageProblems(stages());
    if (n === 4 && $("w-start").value === "at" && !$("w-start-at").value) return ["Pick the start time, or start right away."];
    return [];
  }
  function show(n) {
    step = n;
    form.querySelectorAll("[data-step]").forEach((s) => { s.hidden = Number(s.dataset.step) !== n; });
    document.querySelectorAll("[data-step-tab]").forEach((t) => {
      const k = Number(t.dataset.stepTab);
      if (k === n) t.setAttribute("aria-current", "step"); else t.removeAttribute("aria-current");
      t.classList.toggle("done", k < n);
    });
    $("w-back").hidden = n === 1;
    $("w-next").hidden = n === 5;
    $("w-submit").hidden = n !== 5;
    errorBox.hidden = true;
    if (n === 5) review();
    const first = form.querySelector('[data-step="' + n + '"] input, [data-step="' + n + '"] select');
    if (first) first.focus();
  }
  function fail(lines) { errorBox.replaceChildren(...lines.map((l) => Walle.el("div", { text: l }))); errorBox.hidden = false; }
  $("w-next").addEventListener("click", () => { const p = problems(step); if (p.length) fail(p); else show(step + 1); });
  $("w-back").addEventListener("click", () => show(step - 1));

  function review() {
    const b = body();
    const sel = selected();
    const dl = $("review");
    const row = (k, v) => [Walle.el("dt", { text: k }), Walle.el("dd", { text: v })];
    const stageText = b.stages.map((s, i) => (s.basis_points / 100) + "%" + (preview && preview.stages ? " (" + preview.stages[i] + " devices)" : "")).join(" → ");
    const startText = { now: "right after you confirm", at: "at " + ($("w-start-at").value || "?"), draft: "later (saved as a draft)" }[$("w-start").value];
    dl.replaceChildren(
      ...row("Version", sel.task.name + " v" + sel.version.number),
      ...row("Name", b.name),
      ...row("Target", Object.keys(b.target).length ? JSON.stringify(b.target) : "every device of " + data.app),
      ...row("Devices now", preview ? String(preview.total) : "unknown"),
      ...row("Stages", stageText),
      ...row("Error gate trips", b.on_error === "rollback" ? "roll back" : "pause"),
      ...row("Start", startText),
    );
    const pct = (v, d) => Math.round(100 * (v !== undefined ? v : d)) + "%";
    $("review-stages").querySelector("tbody").replaceChildren(...b.stages.map((s, i) => Walle.el("tr", {}, [
      Walle.el("td", { text: String(i + 1) }),
      Walle.el("td", { text: s.basis_points / 100 + "%" }),
      Walle.el("td", { className: "num", text: preview && preview.stages ? String(preview.stages[i]) : "?" }),
      Walle.el("td", { text: s.soak_s ? s.soak_s / 60 + " min" : "none" }),
      Walle.el("td", { text: "≥ " + pct(s.success_gate, DEFAULTS.success_gate) + " succeeded" }),
      Walle.el("td", { text: "stop above " + pct(s.error_gate, DEFAULTS.error_gate) + " failed, after " +
        (s.min_finished !== undefined ? s.min_finished : DEFAULTS.min_finished) + " finished" + (s.stop_if_worse ? "; stop if worse than control" : "") }),
      Walle.el("td", { text: s.auto_advance ? "automatic" : "by an operator" }),
    ])));
    const warnings = stageWarnings();
    $("review-warnings").replaceChildren(...warnings.map((l) => Walle.el("div", { text: l })));
    $("review-warnings").hidden = !warnings.length;
    $("review-json").textContent = JSON.stringify(b, null, 2);
    $("w-submit").textContent = $("w-start").value === "now" ? "Create and start release" : "Create release";
  }
  $("w-confirm").addEventListener("change", () => { $("w-submit").disabled = !$("w-confirm").checked; });

  $("w-submit").addEventListener("click", async () => {
    const submit = $("w-submit");
    submit.disabled = true;
    const created = await Walle.api("POST", "/api/v1/releases/", body());
    if (!created.ok) { submit.disabled = false; fail(["The release was not created: " + Walle.explainStatus(created, "Creating a release")]); return; }
    const id = created.data.id;
    const dashboard = form.dataset.dashboard + id + "/";
    if ($("w-start").value !== "draft") {
      const started = await Walle.api("POST", "/api/v1/releases/" + id + "/start/");
      if (!started.ok) { window.location.assign(dashboard + "?start_error=" + encodeURIComponent(Walle.explainStatus(started, "Starting"))); return; }
    }
    window.location.assign(dashboard);
  });

  show(1);
})();
