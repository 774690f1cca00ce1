// The playground: streams an answer from POST /v1/chat/completions (the public
// API, as any client calls it) and rates it with POST /v1/feedback.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var $ = function (id) { return document.getElementById(id); };
  var form = $("play"), card = $("p-answer-card"), answer = $("p-answer");
  var skeleton = $("p-skeleton"), errorBox = $("p-error"), facts = $("p-facts");
  var rate = $("p-rate"), rated = $("p-rated");
  var controller = null, requestId = null;

  function api(path, body, signal) {
    return fetch(path, {
      method: "POST", credentials: "same-origin", signal: signal,
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: JSON.stringify(body)
    });
  }

  function show(id, text) { $(id).textContent = text; }

  function fail(message) {
    skeleton.hidden = true;
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function details(id) {
    // Cost and exact usage come from the stored trace record (written within a second).
    var tries = 0;
    function look() {
      fetch("/admin/traces/" + encodeURIComponent(id), {
        credentials: "same-origin", headers: {"x-csrf-token": csrf}
      }).then(function (r) { return r.ok ? r.json() : null; }).then(function (t) {
        if (!t) { if (++tries < 8) setTimeout(look, 400); return; }
        show("p-tokens", t.prompt_tokens + " in / " + t.completion_tokens + " out, $" +
             t.cost_usd.toFixed(6));
      }).catch(function () {});
    }
    look();
  }

  function cite(citations) {
    // The sources retrieval gave the model (on the stream's first chunk).
    var list = $("p-citations");
    list.textContent = "";
    citations.forEach(function (c) {
      var li = document.createElement("li");
      // The heading path starts at the document's title; the title alone otherwise.
      var where = (c.heading_path || []).length ? c.heading_path.join(" > ") : (c.title || "");
      li.textContent = "[" + c.index + "] " + (where ? where + " " : "") + "(" + c.source +
        (c.page != null ? ", page " + c.page : "") + ") ";
      var score = document.createElement("span");
      score.className = "score";
      score.textContent = "score " + Number(c.score).toFixed(3);
      li.appendChild(score);
      list.appendChild(li);
    });
    $("p-sources").hidden = citations.length === 0;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (controller) controller.abort();
    controller = new AbortController();
    var data = new FormData(form);
    var messages = [];
    var history = (data.get("history") || "").trim();
    if (history) {
      try { messages = JSON.parse(history); } catch (e) { messages = null; }
      if (!Array.isArray(messages)) {
        card.hidden = false;
        fail("Earlier messages must be a JSON list of {role, content}.");
        return;
      }
    }
    messages.push({role: "user", content: data.get("message")});
    var body = {
      model: data.get("route") || data.get("model"), stream: true,
      stream_options: {include_usage: true}, messages: messages
    };
    var prompt = (data.get("prompt") || "").trim(), version = (data.get("version") || "").trim();
    if (prompt) {
      body.prompt = {name: prompt};
      if (/^[0-9]+$/.test(version)) body.prompt.version = parseInt(version, 10);
      else if (version) body.prompt.label = version;
    }
    var collection = (data.get("collection") || "").trim();
    if (collection) body.rag = {collection: collection};
    // The skeleton at once, before any byte comes back.
    card.hidden = false;
    card.setAttribute("aria-busy", "true");
    answer.textContent = "";
    skeleton.hidden = false;
    errorBox.hidden = true;
    facts.hidden = true;
    rate.hidden = true;
    rated.textContent = "";
    $("p-sources").hidden = true;
    $("p-citations").textContent = "";
    $("p-stop").disabled = false;
    var started = performance.now(), firstToken = null, text = "";
    api("/v1/chat/completions", body, controller.signal).then(function (r) {
      requestId = r.headers.get("x-request-id");
      show("p-cache", r.headers.get("x-seawall-cache") || "–");
      show("p-deployment", r.headers.get("x-seawall-deployment") || "–");
      var route = r.headers.get("x-seawall-route");
      show("p-route", route ? route + " → " + r.headers.get("x-seawall-route-tier") +
           " (" + (r.headers.get("x-seawall-route-reason") || "") + ")" : "–");
      show("p-pv", r.headers.get("x-seawall-prompt-version") || "–");
      if (!r.ok) {
        return r.json().then(function (e) { fail(e.error ? e.error.message : "HTTP " + r.status); });
      }
      var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function pump() {
        return reader.read().then(function (part) {
          if (part.done) return;
          buffer += decoder.decode(part.value, {stream: true});
          var events = buffer.split("\n\n");
          buffer = events.pop();
          events.forEach(function (ev) {
            ev.split("\n").forEach(function (line) {
              if (line.indexOf("data: ") !== 0) return;
              var payload = line.slice(6);
              if (payload === "[DONE]") return;
              var chunk = JSON.parse(payload);
              if (chunk.error) { fail(chunk.error.message); return; }
              if (chunk.citations) cite(chunk.citations);
              var choice = chunk.choices && chunk.choices[0];
              var delta = choice && choice.delta && choice.delta.content;
              if (delta) {
                if (firstToken === null) {
                  firstToken = performance.now() - started;
                  skeleton.hidden = true;
                }
                text += delta;
                answer.textContent = text;
              }
              if (chunk.usage) {
                show("p-tokens", chunk.usage.prompt_tokens + " in / " +
                     chunk.usage.completion_tokens + " out");
              }
            });
          });
          return pump();
        });
      }
      return pump();
    }).catch(function (err) {
      if (err.name !== "AbortError") fail("The request failed: " + err.message);
    }).finally(function () {
      skeleton.hidden = true;
      card.setAttribute("aria-busy", "false");
      $("p-stop").disabled = true;
      show("p-latency", Math.round(performance.now() - started) + " ms");
      show("p-ttft", firstToken === null ? "–" : Math.round(firstToken) + " ms");
      if (requestId) {
        var link = $("p-trace");
        link.textContent = requestId;
        link.href = "/ui/traces/" + encodeURIComponent(requestId);
        rate.hidden = false;
        details(requestId);
      }
      facts.hidden = false;
    });
  });

  $("p-stop").addEventListener("click", function () { if (controller) controller.abort(); });

  function feedback(score) {
    if (!requestId) return;
    rated.textContent = "Sending…";
    api("/v1/feedback", {request_id: requestId, score: score}).then(function (r) {
      return r.json().then(function (b) {
        rated.textContent = r.ok ? "Thanks: feedback stored." :
          "Not stored: " + (b.error ? b.error.message : r.status);
      });
    }).catch(function (err) { rated.textContent = "Not stored: " + err.message; });
  }
  ["p-up", "p-down"].forEach(function (id) {
    $(id).addEventListener("click", function () { feedback(parseFloat($(id).dataset.score)); });
  });
})();
