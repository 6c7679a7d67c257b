/* Device group editor: static members or a dynamic filter with a live match count. */
(function () {
  "use strict";
  const form = document.getElementById("group-form");
  if (!form) return;
  const hidden = document.getElementById("g-filter");
  const count = document.getElementById("match-count");
  let seq = 0;

  const refresh = WalleTarget.debounce(async (filter) => {
    const mine = ++seq;
    count.textContent = "Counting matching devices…";
    const res = await Walle.api("POST", form.dataset.matchUrl, { filter: filter });
    if (mine !== seq) return; // a newer edit is being counted
    if (res.ok) {
      const sample = res.data.sample.length ? " — e.g. " + res.data.sample.join(", ") : "";
      count.textContent = res.data.count + " device" + (res.data.count === 1 ? "" : "s") + " match now" + sample;
      count.classList.remove("field-error");
    } else {
      count.textContent = Walle.errorLines(res.data).join(" ");
      count.classList.add("field-error");
    }
  }, 250);

  const editor = new WalleTarget.TargetEditor(form.querySelector("[data-target-editor]"), (value) => {
    hidden.value = JSON.stringify(value);
    refresh(value);
  });
  let initial = {};
  try { initial = JSON.parse(hidden.value || "{}"); } catch (e) { initial = {}; }
  editor.set(initial);

  function showKind() {
    const kind = (form.querySelector('input[name="kind"]:checked') || {}).value || "dynamic";
    form.querySelectorAll("[data-kind]").forEach((n) => { n.hidden = n.dataset.kind !== kind; });
  }
  form.addEventListener("change", (e) => { if (e.target.name === "kind") showKind(); });
  showKind();
  if (form.querySelector("fieldset[disabled]") === null && !document.querySelector(".buttons .primary")) {
    form.querySelectorAll("[data-target-editor] input").forEach((i) => { i.disabled = true; });
  }
})();
