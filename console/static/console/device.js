/* Device page: pin the device to a task version, or unpin it (REST /api/v1/pins/). */
(function () {
  "use strict";
  const box = document.getElementById("pins");
  if (!box) return;
  const result = document.getElementById("pin-result");
  const device = box.dataset.device;
  function fail(res, what) { result.className = "msg msg-error"; result.textContent = Walle.explainStatus(res, what); result.hidden = false; }
  const form = document.getElementById("pin-form");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { device: device, version: Number(document.getElementById("pin-version").value), reason: document.getElementById("pin-reason").value };
    const res = await Walle.api("POST", "/api/v1/pins/", body);
    if (res.ok) window.location.reload(); else fail(res, "Pinning");
  });
  box.querySelectorAll("[data-unpin]").forEach((b) => b.addEventListener("click", async () => {
    if (!window.confirm("Unpin " + b.dataset.unpin + "? The device follows the releases again.")) return;
    const url = "/api/v1/pins/remove/?device=" + encodeURIComponent(device) + "&task=" + encodeURIComponent(b.dataset.unpin);
    const res = await Walle.api("DELETE", url);
    if (res.ok) window.location.reload(); else fail(res, "Unpinning");
  }));
})();
