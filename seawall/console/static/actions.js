// Console forms that are calls to the gateway's admin API (no inline script: CSP).
// <form data-api-form="/admin/..." data-confirm="... {field} ..." data-then="reload|secret">
// posts its named fields as JSON (number inputs as numbers, checkboxes as booleans,
// empty fields left out) with the session's CSRF token, after a confirmation.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  function fields(form) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      if (el.type === "checkbox") { if (el.checked) out[el.name] = true; return; }
      var v = el.value.trim();
      if (v === "") return;
      out[el.name] = (el.type === "number" || el.dataset.type === "number") ? Number(v) : v;
    });
    return out;
  }

  function question(form, body) {
    var q = form.getAttribute("data-confirm");
    if (!q) return null;
    return q.replace(/\{(\w+)\}/g, function (_, name) {
      if (name === "current") {  // the label's version now, from data-current (JSON)
        var now = JSON.parse(form.getAttribute("data-current") || "{}")[body.label];
        return now ? "v" + now : "no version yet";
      }
      return body[name] === undefined ? "" : String(body[name]);
    });
  }

  function showSecret(form, body) {
    var panel = document.getElementById(form.getAttribute("data-secret-panel"));
    if (!panel) return;
    panel.querySelector("[data-field=name]").textContent = body.name;
    panel.querySelector("[data-field=id]").textContent = body.id;
    panel.querySelector("[data-field=grace]").textContent =
      body.previous_secret_valid_until ? new Date(body.previous_secret_valid_until * 1000).toISOString()
        .replace("T", " ").slice(0, 19) : "now";
    var secret = panel.querySelector("input");
    secret.value = body.secret;
    panel.hidden = false;
    secret.focus();
    secret.select();
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form[data-api-form]");
    if (!form) return;
    ev.preventDefault();
    var body = fields(form);
    var q = question(form, body);
    if (q && !window.confirm(q)) return;
    var status = document.getElementById("api-status");
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    fetch(form.getAttribute("data-api-form"), {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (b) { return {ok: r.ok, body: b}; });
    }).then(function (res) {
      if (!res.ok) throw new Error(res.body.error ? res.body.error.message : "failed");
      var then = form.getAttribute("data-then");
      if (then === "secret") { showSecret(form, res.body); form.reset(); }
      else if (then === "reload") { window.location.reload(); return; }
      if (button) button.disabled = false;
      if (status) status.textContent = "Done.";
    }).catch(function (err) {
      if (button) button.disabled = false;
      if (status) status.textContent = "Failed: " + err.message;
    });
  });
})();
