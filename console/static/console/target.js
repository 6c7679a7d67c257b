/* Target / dynamic-filter editor: form fields <-> the JSON filter the server understands. */
(function () {
  "use strict";
  function splitList(text) { return text.split(",").map((s) => s.trim()).filter(Boolean); }

  function TargetEditor(root, onChange) {
    this.root = root;
    const fire = () => { const value = this.value(); root.querySelector("[data-json-preview]").textContent = JSON.stringify(value, null, 2); onChange(value); };
    root.addEventListener("input", fire);
    root.addEventListener("change", fire);
    this.fire = fire;
  }
  TargetEditor.prototype.value = function () {
    const out = {};
    this.root.querySelectorAll("[data-key]").forEach((input) => {
      const v = input.value.trim();
      if (!v) return;
      out[input.dataset.key] = input.hasAttribute("data-list") ? splitList(v) : v;
    });
    const groups = [...this.root.querySelectorAll("[data-group]:checked")].map((c) => Number(c.dataset.group));
    if (groups.length) out.groups = groups;
    return out;
  };
  TargetEditor.prototype.set = function (value) {
    this.root.querySelectorAll("[data-key]").forEach((input) => {
      const v = value[input.dataset.key];
      input.value = v === undefined ? "" : Array.isArray(v) ? v.join(", ") : String(v);
    });
    this.root.querySelectorAll("[data-group]").forEach((c) => { c.checked = (value.groups || []).includes(Number(c.dataset.group)); });
    this.fire();
  };

  /* Call fn at most once per `ms`, with the latest arguments (live counts while typing). */
  function debounce(fn, ms) {
    let timer = null;
    return function () { const args = arguments; clearTimeout(timer); timer = setTimeout(() => fn.apply(null, args), ms); };
  }

  window.WalleTarget = { TargetEditor: TargetEditor, debounce: debounce };
})();
