// Seawall console: the small behaviours every page shares (no inline script: CSP).
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  // Range pickers and other selects that apply at once.
  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });

  // Actions are calls to the gateway's own HTTP API, with the session's CSRF token.
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("[data-api]");
    if (!btn) return;
    var question = btn.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var status = document.getElementById("api-status");
    btn.disabled = true;
    fetch(btn.getAttribute("data-api"), {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: btn.getAttribute("data-body") || "{}"
    }).then(function (r) {
      return r.json().then(function (body) { return {ok: r.ok, body: body}; });
    }).then(function (res) {
      if (!res.ok) throw new Error(res.body.error ? res.body.error.message : "failed");
      if (btn.getAttribute("data-then") === "reload") { window.location.reload(); return; }
      var row = btn.closest("tr");
      if (row) row.remove();
      if (status) status.textContent = "Done.";
    }).catch(function (err) {
      btn.disabled = false;
      if (status) status.textContent = "Failed: " + err.message;
    });
  });

  // The overview's chart (uPlot), drawn again after each refresh of the panel.
  function drawChart() {
    var el = document.getElementById("chart");
    if (!el || !window.uPlot || el.dataset.drawn) return;
    var s = JSON.parse(el.dataset.series);
    el.dataset.drawn = "1";
    var width = Math.max(280, el.clientWidth || 600);
    new window.uPlot({
      width: width, height: 200,
      series: [{}, {label: "requests", stroke: "#1f6feb", width: 2},
               {label: "errors", stroke: "#cf222e", width: 2}],
      axes: [{}, {}]
    }, [s.hour, s.requests, s.errors], el);
  }
  window.addEventListener("load", drawChart);
  document.body.addEventListener("htmx:afterSwap", drawChart);
})();
