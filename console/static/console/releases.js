/* Release list: rows update live when their releases change (app-level console socket). */
(function () {
  "use strict";
  const table = document.getElementById("releases");
  if (!table || !("WebSocket" in window)) return;
  const banner = document.getElementById("releases-new");

  async function refresh(id) {
    const row = table.querySelector('tr[data-release="' + id + '"]');
    if (!row) { if (banner) banner.hidden = false; return; }
    const res = await Walle.api("GET", "/api/v1/releases/" + id + "/");
    if (!res.ok) return;
    const r = res.data, c = r.counts || {};
    const cell = (name) => row.querySelector('[data-cell="' + name + '"]');
    const set = (name, value) => { if (cell(name)) cell(name).textContent = value; };
    const badge = cell("state") && cell("state").querySelector(".badge");
    if (badge) { badge.className = "badge state-" + r.state; badge.textContent = r.state.replace("_", " "); }
    set("stage", r.current_stage + 1);
    set("succeeded", c.succeeded || 0);
    set("failed", (c.failed || 0) + (c.timed_out || 0));
    set("rolled_back", c.rolled_back || 0);
    set("total", c.total || 0);
    if (cell("bar")) cell("bar").querySelector(".ok").style.width = (c.total ? (100 * (c.succeeded || 0)) / c.total : 0) + "%";
  }

  let retry = 0;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + table.dataset.live);
    socket.onopen = () => { retry = 0; };
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "releases.changed") msg.releases.forEach(refresh);
    };
    socket.onclose = (event) => {
      if (event.code === 4403) return;
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, Math.min(30000, 1000 * 2 ** retry));
    };
  }
  connect();
})();
