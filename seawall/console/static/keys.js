// Keys page: create a key through POST /admin/keys and show its secret once.
"use strict";
(function () {
  var form = document.getElementById("key-create");
  if (!form) return;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var err = document.getElementById("k-error");

  function list(text) {
    var items = text.split(",").map(function (s) { return s.trim(); })
      .filter(function (s) { return s; });
    return items.length ? items : null;
  }

  function body() {
    var f = form.elements, out = {name: f.name.value.trim(), role: f.role.value};
    if (f.tenant.value.trim()) out.tenant = f.tenant.value.trim();
    var scopes = Array.prototype.filter.call(form.querySelectorAll("input[name=scopes]"),
      function (c) { return c.checked; }).map(function (c) { return c.value; });
    if (scopes.length) out.scopes = scopes;
    var models = list(f.models.value);
    if (models) out.models = models;
    ["rpm", "tpm"].forEach(function (n) { if (f[n].value) out[n] = parseInt(f[n].value, 10); });
    if (f.budget_usd.value) {
      out.budget_usd = parseFloat(f.budget_usd.value);
      out.budget_period = f.budget_period.value;
    }
    if (f.expires.value.trim()) out.expires = f.expires.value.trim();
    return out;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    err.hidden = true;
    var button = document.getElementById("k-submit");
    button.disabled = true;
    fetch("/admin/keys", {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: JSON.stringify(body())
    }).then(function (r) {
      return r.json().then(function (b) { return {ok: r.ok, body: b}; });
    }).then(function (res) {
      if (!res.ok) throw new Error(res.body.error ? res.body.error.message : "failed");
      form.hidden = true;
      document.getElementById("k-created-name").textContent = res.body.name;
      document.getElementById("k-created-id").textContent = res.body.id;
      var secret = document.getElementById("k-secret");
      secret.value = res.body.secret;
      document.getElementById("k-created").hidden = false;
      secret.focus();
      secret.select();
    }).catch(function (e) {
      button.disabled = false;
      err.textContent = "Not created: " + e.message;
      err.hidden = false;
    });
  });
})();
