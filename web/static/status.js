/* Installation status page: polls GET /api/installation-status every 2 s and updates the cards in place.
 * Log tails stay where the reader left them (collapsed or open, scrolled or following the end).
 * Shared helpers: UI (common.js). */
(function () {
  "use strict";

  var root = document.getElementById("status");
  if (!root) return;

  var POLL_MS = 2000;
  var MAX_BACKOFF_MS = 30000;
  var apiUrl = root.dataset.api;
  var list = document.getElementById("components");
  var template = document.getElementById("component-template");
  var connNote = document.getElementById("conn-note");

  var setText = UI.setText, setHidden = UI.setHidden, setData = UI.setData, setProgress = UI.setProgress;
  var field = UI.field, cssEscape = UI.cssEscape;

  // "2025-11-22T06:22:01.123Z" -> "2025-11-22 06:22:01 UTC" (the same text the server renders)
  function fmtTime(iso) {
    if (!iso) return "\u2013";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    return UI.utcStamp(d, true) + " UTC";
  }
  function setTime(dd, iso) {
    var current = dd.querySelector("time");
    if ((current ? current.getAttribute("datetime") : null) === (iso || null)) return;
    dd.textContent = "";
    if (iso) {
      var t = document.createElement("time");
      t.setAttribute("datetime", iso);
      t.textContent = fmtTime(iso);
      dd.appendChild(t);
    } else {
      dd.textContent = "\u2013";
    }
  }

  function cardFor(name) {
    return list.querySelector('.comp[data-component="' + cssEscape(name) + '"]');
  }

  function newCard(name) {
    var el = template.content.cloneNode(true).querySelector(".comp");
    el.dataset.component = name;
    el.dataset.testid = "component-" + name.replace(/ /g, "-");
    setText(el.querySelector(".comp-name"), name);
    return el;
  }

  // A log is a tail: show its end when it opens, and keep following the end while the reader is there.
  function scrollToEnd(details) {
    var pre = details.querySelector("pre");
    if (pre) pre.scrollTop = pre.scrollHeight;
  }
  list.querySelectorAll("details.comp-log[open]").forEach(scrollToEnd);

  // Readers' choices win: once someone opens or closes a log, polling leaves it alone.
  list.addEventListener(
    "toggle",
    function (ev) {
      var details = ev.target;
      if (!details.matches || !details.matches("details.comp-log")) return;
      if (!details.dataset.auto) details.dataset.touched = "1";
      delete details.dataset.auto;
      if (details.open) scrollToEnd(details);
    },
    true
  );

  function updateCard(el, c) {
    var stateChanged = el.dataset.state !== c.state;
    setData(el, "state", c.state);
    var badge = field(el, "state");
    setData(badge, "state", c.state);
    setText(badge, c.state);
    setText(field(el, "message"), c.message || "");

    var hasProgress = c.progress !== null && c.progress !== undefined;
    setHidden(el.querySelector(".comp-progress"), !hasProgress);
    if (hasProgress) {
      var pct = Math.round(c.progress * 1000) / 10;
      setProgress(el.querySelector("progress"), pct);
      setText(field(el, "pct"), pct.toFixed(1) + "%");
    }
    setTime(field(el, "started_at"), c.started_at);
    setTime(field(el, "ended_at"), c.ended_at);

    var details = el.querySelector("details.comp-log");
    var log = c.log || [];
    setHidden(details, log.length === 0);
    setText(field(el, "log-count"), String(log.length));
    var pre = details.querySelector("pre");
    var text = log.join("\n");
    if (pre.textContent !== text) {
      var atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
      pre.textContent = text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    if (stateChanged && !details.dataset.touched) {
      var open = c.state !== "done" && c.state !== "skipped";
      if (details.open !== open) {
        details.dataset.auto = "1";
        details.open = open;
      }
    }
  }

  function render(data) {
    var seen = Object.create(null);
    (data.components || []).forEach(function (c, i) {
      seen[c.name] = true;
      var el = cardFor(c.name);
      if (!el) {
        el = newCard(c.name);
        el.dataset.state = "";
        updateCard(el, c);
      } else {
        updateCard(el, c);
      }
      // keep the server's order without moving cards that are already in place
      var at = list.children[i];
      if (at !== el) list.insertBefore(el, at || null);
    });
    Array.prototype.slice.call(list.querySelectorAll(".comp")).forEach(function (el) {
      if (!seen[el.dataset.component]) el.remove();
    });
    var pct = Number(data.overall_percent || 0);
    setProgress(document.getElementById("overall-progress"), pct);
    setText(field(root, "overall-text"), pct.toFixed(1) + "% complete");
    var n = (data.components || []).length;
    setText(field(root, "summary"), n + " component" + (n === 1 ? "" : "s"));
  }

  // --- polling, as on the downloads page ---------------------------------------------------------------
  UI.poll({ url: apiUrl, interval: POLL_MS, maxBackoff: MAX_BACKOFF_MS, note: connNote, render: render });
})();
