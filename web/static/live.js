/* Pages the server renders once and keeps live by swapping in fragments it renders again (htmx + this file).
 *
 * Live.swap(el, html, select): makes `el` match the fragment by changing only what differs (Idiomorph: elements
 * are matched by id), so a button under the mouse or with the focus stays the same element and a swap every
 * second never eats a click. Elements marked data-morph="keep" belong to the page's script (a connection note,
 * dialogs, the upload list): left as they are. htmx requests use the same rules through Idiomorph's htmx
 * extension (hx-ext="morph", hx-swap="morph:outerHTML").
 *
 * Live.poll({...}): GETs a fragment on a timer and hands it to render(); backs off and says so when the server
 * cannot be reached. Also here: what every page's htmx requests share (see the end of the file).
 * Needs UI (common.js) and htmx, both loaded before this file.
 */
var Live = (function () {
  "use strict";

  // --- morphing (Idiomorph, vendored: web/static/vendor/idiomorph*.js) ---------------------------------------
  // What htmx puts on an element for the time of a request (hx-disabled-elt) stays until htmx takes it off.
  var DURING_REQUEST = { disabled: true, "data-disabled-by-htmx": true };
  Idiomorph.defaults.callbacks.beforeNodeMorphed = function (from) {
    return !(from.nodeType === 1 && from.getAttribute("data-morph") === "keep");
  };
  Idiomorph.defaults.callbacks.beforeAttributeUpdated = function (name, el, how) {
    return !(how === "remove" && DURING_REQUEST[name] && el.hasAttribute("data-disabled-by-htmx"));
  };

  /* swap(el, html, select): morph el's children into the fragment `html`; with `select`, `html` is a whole page
   * and el becomes its element matching `select` (and the page's title is taken too). New htmx attributes are
   * processed. */
  function swap(el, html, select) {
    if (select) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var node = doc.querySelector(select);
      if (!node) return;
      Idiomorph.morph(el, node, { morphStyle: "outerHTML" });
      if (doc.title) document.title = doc.title;
    } else {
      Idiomorph.morph(el, html, { morphStyle: "innerHTML" });
    }
    htmx.process(el);
  }

  // --- polling -----------------------------------------------------------------------------------------
  /* poll({url, interval, maxBackoff, note, render, skip}): GET url (a string, or a function of none) every
   * `interval` ms, not while the tab is hidden, and hand the fragment to render(html, url). When the server
   * cannot be reached the wait doubles up to maxBackoff and `note` (a hidden element, optional) says so; an
   * ended session puts a "Log in again" link there instead. skip() (optional): true skips a timed poll.
   * Returns poll(): poll now (a call while a request is on its way polls again once it is back). */
  function poll(opts) {
    var note = opts.note;
    var inflight = false;
    var again = false;
    var failures = 0;
    var timer = null;

    function schedule(delay) {
      clearTimeout(timer);
      timer = document.hidden ? null : setTimeout(tick, delay);
    }
    function tick() {
      if (opts.skip && opts.skip()) schedule(opts.interval);
      else now();
    }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) clearTimeout(timer);
      else now();
    });
    function backoff() {
      return Math.min(opts.interval * Math.pow(2, failures), opts.maxBackoff);
    }
    function showNote(text, link) {
      if (!note) return;
      note.textContent = text;
      if (link) note.appendChild(link);
      UI.setHidden(note, false);
    }
    function sessionEnded() {
      var a = document.createElement("a");
      a.href = "/login?next=" + encodeURIComponent(location.pathname);
      a.textContent = "Log in again";
      showNote("Your session ended. ", a);
      failures = Math.max(failures, 3);
    }

    function now() {
      clearTimeout(timer);
      if (inflight) {
        again = true;
        return;
      }
      inflight = true;
      var url = typeof opts.url === "function" ? opts.url() : opts.url;
      // redirect "manual": an ended session answers with a redirect to the login page, never followed here
      fetch(url, { headers: { "HX-Request": "true" }, cache: "no-store", credentials: "same-origin", redirect: "manual" })
        .then(function (r) {
          if (r.status === 401 || r.type === "opaqueredirect") {
            sessionEnded();
            throw null;
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          opts.render(html, url);
          failures = 0;
          UI.setHidden(note, true);
        })
        .catch(function (e) {
          if (e === null) return; // the session ended, already said
          failures++;
          showNote("Connection lost \u2013 retrying in " + Math.round(backoff() / 1000) + " s (showing the last known state).");
        })
        .then(function () {
          inflight = false;
          if (again) {
            again = false;
            now();
            return;
          }
          schedule(failures ? backoff() : opts.interval);
        });
    }

    schedule(opts.interval);
    return now;
  }

  // --- what every page's htmx requests share -----------------------------------------------------------
  // The server's words for the page (HX-Trigger: {"flash": {message, category}}).
  document.addEventListener("flash", function (ev) {
    var d = ev.detail || {};
    if (d.message) UI.flash(d.message, d.category);
  });

  function endedSession(xhr) {
    return Boolean(xhr && xhr.responseURL) && new URL(xhr.responseURL).pathname === "/login";
  }
  // An ended session is redirected to the login page: never swap that into the page.
  document.addEventListener("htmx:beforeSwap", function (ev) {
    if (endedSession(ev.detail.xhr)) ev.detail.shouldSwap = false;
  });
  // Refused requests are said in words (the JSON API's error, or the server's flash event); unreachable too.
  document.addEventListener("htmx:sendError", function () {
    UI.flash(UI.unreachable("the connection failed"), "error");
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    var xhr = ev.detail.xhr;
    if (!xhr || xhr.status === 0) return; // unreachable (above) or aborted
    if (endedSession(xhr)) {
      UI.flash("Your session ended: reload the page and log in again.", "error");
    } else if (xhr.status >= 400 && !xhr.getResponseHeader("HX-Trigger")) {
      var body = {};
      try {
        body = JSON.parse(xhr.responseText) || {};
      } catch (e) {
        body = {};
      }
      UI.flash(UI.errorText({ status: xhr.status, body: body }), "error");
    }
  });

  return { swap: swap, poll: poll };
})();
