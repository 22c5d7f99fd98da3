/* Installation status page: polls GET /installation-status/live every 2 s and morphs it in (live.js); the
 * server renders everything (templates/_status_live.html).
 * Log tails stay where the reader left them: a log someone opened or closed stays so (the server opens the
 * logs of components still at work), and a log scrolled to its end keeps following the end.
 * Shared helpers: UI, Live. */
(function () {
  "use strict";

  var live = document.getElementById("status-live");
  if (!live) return;

  var POLL_MS = 2000;
  var MAX_BACKOFF_MS = 30000;
  var chosen = Object.create(null); // component name -> open (true/false), once a reader opened or closed its log

  function logOf(card) {
    return card.querySelector("details.comp-log");
  }
  // A log is a tail: show its end when it opens.
  function scrollToEnd(details) {
    var pre = details.querySelector("pre");
    if (pre) pre.scrollTop = pre.scrollHeight;
  }
  live.querySelectorAll("details.comp-log[open]").forEach(scrollToEnd);

  // A reader's click on a log's summary is their choice (the server's open/closed no longer applies to it).
  live.addEventListener("click", function (ev) {
    var summary = ev.target.closest("details.comp-log > summary");
    if (!summary) return;
    var details = summary.parentElement;
    chosen[details.closest(".comp").dataset.component] = !details.open; // the click is about to toggle it
  });
  live.addEventListener(
    "toggle",
    function (ev) {
      if (ev.target.open) scrollToEnd(ev.target);
    },
    true
  );

  function render(html) {
    var atEnd = Object.create(null);
    live.querySelectorAll(".comp").forEach(function (card) {
      var pre = card.querySelector("details.comp-log pre");
      atEnd[card.dataset.component] = Boolean(pre) && pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
    });
    Live.swap(live, html);
    live.querySelectorAll(".comp").forEach(function (card) {
      var name = card.dataset.component;
      var details = logOf(card);
      if (!details) return;
      if (name in chosen && details.open !== chosen[name]) details.open = chosen[name];
      if (atEnd[name]) scrollToEnd(details);
    });
  }

  Live.poll({
    url: live.dataset.poll,
    interval: POLL_MS,
    maxBackoff: MAX_BACKOFF_MS,
    note: document.getElementById("conn-note"),
    render: render,
  });
})();
