/* New version upload: drag-and-drop files, folders or one .zip; POST to the REST endpoint. */
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("files-input");
  const list = document.getElementById("filelist");
  const errorBox = document.getElementById("upload-error");
  const submit = document.getElementById("upload-submit");
  let picked = []; // [{path, file}]

  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function render() {
    list.replaceChildren(...picked.map((p, i) => {
      const remove = Walle.el("button", { type: "button", className: "small", "aria-label": "Remove " + p.path, text: "Remove" });
      remove.addEventListener("click", () => { picked.splice(i, 1); render(); });
      return Walle.el("li", {}, [Walle.el("code", { text: p.path }), Walle.el("span", { className: "muted small", text: size(p.file.size) }), remove]);
    }));
  }

  function add(entries) {
    for (const e of entries) {
      picked = picked.filter((p) => p.path !== e.path);
      picked.push(e);
    }
    picked.sort((a, b) => a.path.localeCompare(b.path));
    render();
  }

  // Folders dropped from a file manager: walk them so paths keep their folders.
  function walk(entry, prefix) {
    return new Promise((resolve) => {
      if (entry.isFile) entry.file((f) => resolve([{ path: prefix + f.name, file: f }]), () => resolve([]));
      else if (entry.isDirectory) {
        const reader = entry.createReader();
        const all = [];
        const next = () => reader.readEntries(async (batch) => {
          if (!batch.length) { resolve(all); return; }
          for (const child of batch) all.push(...(await walk(child, prefix + entry.name + "/")));
          next();
        }, () => resolve(all));
        next();
      } else resolve([]);
    });
  }

  input.addEventListener("change", () => add([...input.files].map((f) => ({ path: f.webkitRelativePath || f.name, file: f }))));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const items = [...(e.dataTransfer.items || [])];
    const entries = items.map((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) {
      const found = [];
      for (const entry of entries) found.push(...(await walk(entry, "")));
      // A dropped folder's own name is not part of the bundle paths.
      const roots = new Set(found.map((f) => f.path.split("/")[0]));
      const oneFolder = entries.length === 1 && entries[0].isDirectory && roots.size === 1;
      add(found.map((f) => ({ path: oneFolder ? f.path.split("/").slice(1).join("/") : f.path, file: f.file })));
    } else {
      add([...e.dataTransfer.files].map((f) => ({ path: f.name, file: f })));
    }
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });

  function clearErrors() {
    errorBox.hidden = true;
    form.querySelectorAll(".field-error[data-field]").forEach((p) => { p.hidden = true; p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    document.getElementById("other-errors").replaceChildren();
  }

  function showErrors(data) {
    const other = [];
    if (data && typeof data === "object" && !Array.isArray(data)) {
      for (const [field, value] of Object.entries(data)) {
        const text = Array.isArray(value) ? value.join(" ") : typeof value === "object" ? JSON.stringify(value) : String(value);
        const slot = form.querySelector('.field-error[data-field="' + field + '"]');
        if (slot) {
          slot.textContent = text; slot.hidden = false;
          const control = form.querySelector('[name="' + field + '"]');
          if (control) control.setAttribute("aria-invalid", "true");
        } else other.push(field === "non_field_errors" || field === "detail" ? text : field + ": " + text);
      }
    } else other.push(...Walle.errorLines(data));
    if (other.length) {
      document.getElementById("other-errors").replaceChildren(...other.map((t) => Walle.el("p", { className: "field-error", text: t })));
    }
    errorBox.textContent = "The version was not created. Fix what is marked below and upload again.";
    errorBox.hidden = false;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    if (!picked.length) { showErrors({ files: ["Add the task's files (or one .zip) first."] }); return; }
    const data = new FormData();
    const zip = picked.length === 1 && picked[0].path.toLowerCase().endsWith(".zip");
    if (zip) data.append("bundle", picked[0].file, picked[0].path);
    else {
      for (const p of picked) data.append("files", p.file, p.path.split("/").pop());
      data.append("paths", JSON.stringify(picked.map((p) => p.path)));
    }
    const config = form.elements.config.value.trim();
    if (config) data.append("config", config);
    if (form.elements.entry_point.value.trim()) data.append("entry_point", form.elements.entry_point.value.trim());
    data.append("notes", form.elements.notes.value);
    submit.disabled = true; submit.textContent = "Uploading…";
    const res = await Walle.api("POST", form.dataset.endpoint, data, true);
    submit.disabled = false; submit.textContent = "Upload version";
    if (res.ok) {
      window.location.assign(form.dataset.done + "?v=" + res.data.number);
    } else if (res.status === 400) showErrors(res.data);
    else { errorBox.textContent = Walle.explainStatus(res, "Uploading"); errorBox.hidden = false; }
  });
})();
