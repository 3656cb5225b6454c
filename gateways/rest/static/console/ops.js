// The operator view (/console/ops): GET /internal/v1/ops with the admin key, redrawn every few seconds.
// Plain script, no dependency. Test hooks (kept stable): body[data-state=loading|live|error],
// body[data-error-code] while in error, body[data-refreshes] (completed refreshes), [data-role=error],
// #gateways tr[data-gateway][data-kind][data-connections][data-channels], #core-streams, #writers
// tr[data-exchange][data-leader], #deps [data-dep][data-healthy], #top-keys tr[data-key-id][data-used].
(function () {
  "use strict";

  var KEY_STORAGE = "perseus.apiKey";
  var DATA_PATH = "/internal/v1/ops";
  var body = document.body;
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 2000;
  var timer = null;
  var refreshes = 0;
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  function $(selector) {
    return document.querySelector(selector);
  }

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      window.sessionStorage.setItem(KEY_STORAGE, key);
    } catch (e) {
      /* storage refused (private mode): the key lives in this page only */
    }
  }

  var currentKey = storedKey();

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "—" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    var row = document.createElement("tr");
    row.className = "ops-empty";
    var td = cell(row, text);
    td.colSpan = columns;
    tbody.appendChild(row);
  }

  function replaceRows(table, rows, columns, emptyText) {
    var tbody = table.tBodies[0];
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    if (!rows.length) emptyRow(tbody, columns, emptyText);
    rows.forEach(function (row) {
      tbody.appendChild(row);
    });
  }

  function ago(ms) {
    if (ms < 1000) return "now";
    return decimal.format(ms / 1000) + " s ago";
  }

  function renderGateways(data) {
    var rows = data.gateways.map(function (g) {
      var row = document.createElement("tr");
      row.setAttribute("data-gateway", g.id);
      row.setAttribute("data-kind", g.kind);
      row.setAttribute("data-connections", String(g.connections));
      row.setAttribute("data-channels", String(g.channels));
      row.setAttribute("data-skipped", String(g.skipped_events));
      row.setAttribute("data-slow-closes", String(g.slow_closes));
      cell(row, g.id);
      cell(row, g.kind === "ws" ? "WebSocket" : "REST");
      cell(row, integer.format(g.connections), "num");
      cell(row, g.kind === "ws" ? integer.format(g.channels) : null, "num");
      cell(row, g.kind === "ws" ? integer.format(g.skipped_events) : null, "num");
      cell(row, g.kind === "ws" ? integer.format(g.slow_closes) : null, "num");
      cell(row, g.kind === "rest" ? integer.format(g.requests) : null, "num");
      cell(row, ago(g.age_ms));
      return row;
    });
    var empty = data.gateways_readable ? "No gateway has reported in the last seconds" : "Redis did not answer";
    replaceRows($("#gateways"), rows, 8, empty);
  }

  function fact(list, label, value, attribute, raw) {
    var dt = document.createElement("dt");
    dt.textContent = label;
    var dd = document.createElement("dd");
    dd.textContent = value;
    list.appendChild(dt);
    list.appendChild(dd);
    if (attribute) list.setAttribute(attribute, String(raw));
  }

  function renderCore(core) {
    var list = $("#core-streams");
    while (list.firstChild) list.removeChild(list.firstChild);
    list.setAttribute("data-reachable", String(core.reachable));
    if (!core.reachable) {
      fact(list, "Core", "not answering: " + core.error);
      return;
    }
    fact(list, "Mode", core.mode);
    fact(list, "Version", core.version);
    fact(list, "Uptime", integer.format(core.uptime_seconds) + " s");
    fact(list, "Stream sessions", integer.format(core.streams.sessions), "data-sessions", core.streams.sessions);
    fact(list, "Stream channels", integer.format(core.streams.channels), "data-channels", core.streams.channels);
    var ingest = core.ingest;
    fact(
      list,
      "Ingest rate",
      decimal.format(ingest.ticks_per_second) + " ticks/s",
      "data-ticks-per-second",
      ingest.ticks_per_second
    );
    fact(list, "Ticks stored", integer.format(ingest.ticks_total), "data-ticks-total", ingest.ticks_total);
    fact(list, "Ingest lag", decimal.format(ingest.lag_ms) + " ms", "data-lag-ms", ingest.lag_ms);
    fact(list, "Last stored", ingest.last_stored_at || "none yet");
    fact(list, "Price updates waiting", integer.format(ingest.pending_price_updates));
    var components = $("#components");
    while (components.firstChild) components.removeChild(components.firstChild);
    core.components.forEach(function (c) {
      var item = document.createElement("li");
      item.setAttribute("data-component", c.name);
      item.setAttribute("data-up", String(c.up));
      item.textContent = c.name + (c.up ? " up" : " degraded") + (c.restarts ? " (" + c.restarts + " restarts)" : "");
      components.appendChild(item);
    });
  }

  function renderWriters(data) {
    var venues = {};
    (data.core.venues || []).forEach(function (v) {
      venues[v.exchange] = v.state;
    });
    var rows = data.writers.map(function (w) {
      var row = document.createElement("tr");
      row.setAttribute("data-exchange", w.exchange);
      row.setAttribute("data-leader", w.leader || "");
      cell(row, w.exchange);
      cell(row, w.leader || "no leader");
      cell(row, integer.format(w.term), "num");
      cell(row, venues[w.exchange] || null);
      return row;
    });
    replaceRows($("#writers"), rows, 4, data.core.reachable ? "No exchange" : "Core not answering");
  }

  function renderDeps(data) {
    data.dependencies.forEach(function (d) {
      var item = $('#deps [data-dep="' + d.name + '"]');
      if (!item) return;
      item.setAttribute("data-healthy", String(d.healthy));
      var span = item.querySelector("span");
      span.textContent = d.healthy
        ? "healthy" + (d.latency_ms !== null ? " (" + decimal.format(d.latency_ms) + " ms)" : "")
        : "unhealthy";
    });
  }

  function renderKeys(data) {
    var rows = data.top_keys.map(function (k) {
      var row = document.createElement("tr");
      row.setAttribute("data-key-id", String(k.key_id));
      row.setAttribute("data-used", String(k.used));
      cell(row, k.key_id, "num");
      cell(row, k.name || null);
      cell(row, k.tier);
      cell(row, integer.format(k.used), "num");
      cell(row, integer.format(k.limit), "num");
      cell(row, decimal.format(k.share * 100) + " %", "num");
      return row;
    });
    replaceRows($("#top-keys"), rows, 6, "No limited key has spent units this minute");
  }

  function showError(code, message) {
    body.setAttribute("data-state", "error");
    body.setAttribute("data-error-code", String(code));
    var element = $("[data-role=error]");
    element.textContent = message;
    element.hidden = false;
  }

  function clearError() {
    body.removeAttribute("data-error-code");
    var element = $("[data-role=error]");
    element.textContent = "";
    element.hidden = true;
  }

  function counted() {
    refreshes += 1;
    body.setAttribute("data-refreshes", String(refreshes));
  }

  function askForKey() {
    $("#key-form").hidden = false;
    $("#key-input").focus();
  }

  function schedule() {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(refresh, refreshMs);
  }

  function refresh() {
    timer = null;
    var key = currentKey;
    if (!key) {
      askForKey();
      return;
    }
    fetch(DATA_PATH, { headers: { "X-API-Key": key, Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        return response
          .json()
          .catch(function () {
            return null;
          })
          .then(function (payload) {
            return { status: response.status, payload: payload };
          });
      })
      .then(function (result) {
        if (key !== currentKey) return; // a new key was entered meanwhile: its own refresh is on its way
        counted();
        if (result.status === 200 && result.payload && result.payload.data) {
          var data = result.payload.data;
          renderGateways(data);
          renderCore(data.core);
          renderWriters(data);
          renderDeps(data);
          renderKeys(data);
          clearError();
          $("[data-role=updated]").textContent = "updated " + data.generated_at;
          body.setAttribute("data-state", "live");
          schedule();
          return;
        }
        var error = result.payload && result.payload.error;
        var message = error && error.message ? error.message : "HTTP " + result.status;
        if (result.status === 401 || result.status === 403) {
          var why = result.status === 403 ? "This key is not an admin key (403): " : "The key was refused (401): ";
          showError(result.status, why + message);
          askForKey(); // polling stops: the same key will not be let in
          return;
        }
        showError(result.status, "The operator data could not be read: " + message + ". Retrying.");
        schedule();
      })
      .catch(function (exc) {
        if (key !== currentKey) return;
        counted();
        showError("network", "The gateway did not answer (" + exc + "). Retrying.");
        schedule();
      });
  }

  $("#key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var value = $("#key-input").value.trim();
    if (!value) return;
    currentKey = value;
    storeKey(value);
    $("#key-input").value = "";
    $("#key-form").hidden = true;
    body.setAttribute("data-state", "loading");
    clearError();
    refresh();
  });

  refresh();
})();
