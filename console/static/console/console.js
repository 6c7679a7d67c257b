/* Walle console: shared helpers (CSRF fetch, app switcher, confirm buttons). No framework. */
(function () {
  "use strict";

  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.split("=")[1]) : "";
  }

  /* fetch() with the session's CSRF token; resolves to {ok, status, data}, never throws. */
  async function api(method, url, body, isForm) {
    const headers = { "X-CSRFToken": cookie("csrftoken"), Accept: "application/json" };
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      if (isForm) init.body = body;
      else { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    }
    let response;
    try { response = await fetch(url, init); }
    catch (err) { return { ok: false, status: 0, data: { detail: "The server did not answer (" + err.message + "). Check your connection and retry." } }; }
    let data = null;
    const text = await response.text();
    try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { detail: text.slice(0, 300) }; }
    return { ok: response.ok, status: response.status, data: data };
  }

  /* Turn a DRF error body into readable lines. */
  function errorLines(data) {
    if (!data) return ["Unknown error."];
    if (typeof data === "string") return [data];
    if (Array.isArray(data)) return data.map(String);
    const lines = [];
    for (const [key, value] of Object.entries(data)) {
      const text = Array.isArray(value) ? value.join(" ") : typeof value === "object" ? JSON.stringify(value) : String(value);
      lines.push(key === "detail" || key === "non_field_errors" || key === "errors" ? text : key + ": " + text);
    }
    return lines.length ? lines : ["Unknown error."];
  }

  function explainStatus(res, what) {
    if (res.status === 404 || res.status === 405) return what + " is not available on this server yet (HTTP " + res.status + ").";
    if (res.status === 403) return "You are not allowed to do this: " + errorLines(res.data).join(" ");
    if (res.status === 0) return errorLines(res.data).join(" ");
    return errorLines(res.data).join(" ");
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  // App switcher: keep the section (tasks, fleet…) when changing app.
  const switcher = document.querySelector("[data-app-switcher] select");
  if (switcher) {
    switcher.addEventListener("change", () => {
      if (!switcher.value) return;
      const section = switcher.dataset.section;
      const sections = ["tasks", "releases", "fleet", "groups", "alerts", "audit", "settings"];
      const path = "/apps/" + encodeURIComponent(switcher.value) + "/" + (sections.includes(section) ? section + "/" : "");
      window.location.assign(path);
    });
  }

  // Buttons that need a confirmation before their form submits.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
    // Secrets shown once select themselves on click (no inline handlers: the CSP forbids them).
    const secret = event.target.closest("[data-select-all]");
    if (secret) secret.select();
  });

  window.Walle = { api: api, errorLines: errorLines, explainStatus: explainStatus, el: el, cookie: cookie };
})();
