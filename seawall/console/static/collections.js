// Seawall console, Collections page: every read is a call to the public RAG
// API (/v1/collections...) with the session's CSRF token, as any client makes
// it. Text goes in with textContent only (no HTML from the API is parsed).
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var status = document.getElementById("api-status");
  var current = null, lastId = 0;

  function api(method, url, body) {
    var opts = {method: method, credentials: "same-origin", headers: {"x-csrf-token": csrf}};
    if (body !== undefined) {
      opts.headers["content-type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error ? j.error.message : "HTTP " + r.status);
        return j;
      });
    });
  }
  function cell(row, text, tag) {
    var c = document.createElement(tag || "td");
    if (tag === "th") c.scope = "row";
    c.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(c);
    return c;
  }
  function fail(err) { status.textContent = "Failed: " + err.message; }
  function path(name) { return "/v1/collections/" + encodeURIComponent(name); }

  function loadCollections() {
    api("GET", "/v1/collections").then(function (res) {
      var body = document.querySelector("#collections tbody");
      body.textContent = "";
      if (!res.data.length) {
        cell(body.insertRow(), "No collections yet.").colSpan = 4;
        return;
      }
      res.data.forEach(function (c) {
        var row = body.insertRow();
        row.dataset.collection = c.name;
        cell(row, c.name, "th"); cell(row, c.documents); cell(row, c.chunks);
        var btn = document.createElement("button");
        btn.type = "button"; btn.className = "secondary"; btn.textContent = "Open";
        btn.setAttribute("aria-label", "Open collection " + c.name);
        btn.addEventListener("click", function () { open(c.name); });
        cell(row, "").appendChild(btn);
      });
    }).catch(fail);
  }

  function open(name) {
    current = name; lastId = 0;
    document.getElementById("collection").hidden = false;
    document.getElementById("c-name").textContent = name;
    document.querySelector("#c-documents tbody").textContent = "";
    document.getElementById("c-results").hidden = true;
    moreDocuments();
    document.getElementById("c-query").focus();
  }

  function moreDocuments() {
    var url = path(current) + "/documents?limit=50" + (lastId ? "&after=" + lastId : "");
    api("GET", url).then(function (res) {
      var body = document.querySelector("#c-documents tbody");
      res.data.forEach(function (d) {
        var row = body.insertRow();
        cell(row, d.id, "th"); cell(row, d.source); cell(row, d.title); cell(row, d.chunks);
      });
      lastId = res.last_id || lastId;
      document.getElementById("c-more").hidden = !res.has_more;
    }).catch(fail);
  }

  document.getElementById("c-more").addEventListener("click", moreDocuments);
  document.getElementById("c-search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var topK = parseInt(document.getElementById("c-topk").value, 10) || 5;
    var query = document.getElementById("c-query").value;
    status.textContent = "Searching…";
    api("POST", path(current) + "/search", {query: query, top_k: topK}).then(function (res) {
      var table = document.getElementById("c-results");
      var body = table.querySelector("tbody");
      body.textContent = "";
      res.data.forEach(function (h) {
        var row = body.insertRow();
        row.className = "hit";
        cell(row, h.rank, "th");
        var parts = Object.keys(h.scores).map(function (k) { return k + " " + h.scores[k]; });
        cell(row, h.score + (parts.length ? " (" + parts.join(", ") + ")" : "")).className = "score";
        cell(row, h.source);
        cell(row, h.text).className = "chunk-text";
      });
      if (!res.data.length) cell(body.insertRow(), "Nothing found.").colSpan = 4;
      table.hidden = false;
      status.textContent = res.data.length + " results in " +
        Object.keys(res.timings_ms).map(function (k) { return k + " " + res.timings_ms[k] + " ms"; }).join(", ");
    }).catch(fail);
  });
  loadCollections();
})();
