/* Downloads page: keeps the server-rendered page live.
 *
 * Everything on the page is rendered by the server (templates/_downloads_live.html): this polls
 * GET /downloads/live every second (not while the tab is hidden; backing off when the server is unreachable)
 * and morphs it in (live.js). The buttons and the "add a download" form are htmx posts of the page's own forms
 * (they work as plain forms without JavaScript). What is left here: a clicked row stays unclickable until its
 * state changes, and the file name's placeholder follows the source URL. Shared helpers: UI, Live.
 */
(function () {
  "use strict";

  var root = document.getElementById("downloads");
  if (!root) return;

  var POLL_MS = 1000;
  var MAX_BACKOFF_MS = 15000;
  var PENDING_MS = 6000; // how long a clicked row waits for its state to change before it is clickable again

  var live = document.getElementById("dl-live");
  var pending = Object.create(null); // download id -> {state, since}: rows clicked and not changed since

  function rowsFor(id) {
    return root.querySelectorAll('.dl[data-id="' + UI.cssEscape(id) + '"]');
  }

  // A clicked row stays "pending" (buttons inert) until its state moves or PENDING_MS passes; the server's
  // render knows nothing of it, so it is put back after every swap.
  function markPending() {
    Object.keys(pending).forEach(function (id) {
      var p = pending[id];
      var rows = rowsFor(id);
      if (!rows.length || rows[0].dataset.state !== p.state || Date.now() - p.since > PENDING_MS) {
        delete pending[id];
        return;
      }
      rows.forEach(function (row) {
        row.classList.add("pending");
        row.querySelectorAll(".dl-actions button").forEach(function (b) {
          b.disabled = true;
        });
      });
    });
  }

  var poll = Live.poll({
    url: live.dataset.poll,
    interval: POLL_MS,
    maxBackoff: MAX_BACKOFF_MS,
    note: document.getElementById("conn-note"),
    render: function (html) {
      Live.swap(live, html);
      markPending();
    },
  });

  root.addEventListener("htmx:beforeRequest", function (ev) {
    var row = ev.target.closest && ev.target.closest(".dl");
    if (row) {
      pending[row.dataset.id] = { state: row.dataset.state, since: Date.now() };
      markPending();
    }
  });
  root.addEventListener("htmx:afterRequest", function (ev) {
    var row = ev.target.closest && ev.target.closest(".dl");
    var xhr = ev.detail.xhr;
    if (row && (!xhr || xhr.status === 0 || xhr.status >= 400)) {
      delete pending[row.dataset.id];
      rowsFor(row.dataset.id).forEach(function (r) {
        r.classList.remove("pending");
        r.querySelectorAll(".dl-actions button").forEach(function (b) {
          b.disabled = false;
        });
      });
    }
    poll(); // show what the click changed at once
  });

  // --- the file name's placeholder: the last part of the source URL --------------------------------------
  function lastSegment(source) {
    var s = (source || "").trim().split(/[?#]/)[0];
    var seg = s.slice(s.lastIndexOf("/") + 1);
    try {
      return decodeURIComponent(seg);
    } catch (e) {
      return seg;
    }
  }
  function followSource() {
    var source = document.getElementById("add-source");
    var filename = document.getElementById("add-filename");
    if (source && filename) filename.placeholder = lastSegment(source.value) || "last part of the URL";
  }
  root.addEventListener("input", function (ev) {
    if (ev.target.id === "add-source") followSource();
  });
  root.addEventListener("htmx:afterSwap", followSource); // the card comes back with what was typed
})();
