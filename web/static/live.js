/* Pages the server renders once and keeps live by swapping in fragments it renders again (htmx + this file).
 *
 * Live.morph(el, node): makes `el` match `node` by changing only what differs: attributes, text, children added,
 * removed or moved (children are matched by id or data-key, else by position). A button under the mouse or with
 * the focus stays the same element, so a swap every second never eats a click. Elements marked
 * data-morph="keep" belong to the page's script (a connection note, dialogs, the upload list): left as they are.
 * It is also the htmx swap style "morph" (the target's children) and "morph:outerHTML" (the target itself),
 * for pages that declare hx-ext="morph".
 *
 * Live.poll({...}): GETs a fragment on a timer and hands it to render(); backs off and says so when the server
 * cannot be reached. Also here: what every page's htmx requests share (see the end of the file).
 * Needs UI (common.js) and htmx, both loaded before this file.
 */
var Live = (function () {
  "use strict";

  // --- morphing ----------------------------------------------------------------------------------------
  function keyOf(node) {
    return node.nodeType === 1 ? node.id || node.getAttribute("data-key") || null : null;
  }
  function alike(a, b) {
    return a.nodeType === b.nodeType && a.nodeName === b.nodeName;
  }

  // What htmx put on an element for the time of a request (hx-disabled-elt) stays until htmx takes it off.
  var DURING_REQUEST = { disabled: true, "data-disabled-by-htmx": true };

  function syncAttributes(from, to) {
    var busy = from.hasAttribute("data-disabled-by-htmx");
    for (var i = from.attributes.length - 1; i >= 0; i--) {
      var name = from.attributes[i].name;
      if (!to.hasAttribute(name) && !(busy && DURING_REQUEST[name])) from.removeAttribute(name);
    }
    for (var j = 0; j < to.attributes.length; j++) {
      var a = to.attributes[j];
      if (from.getAttribute(a.name) !== a.value) from.setAttribute(a.name, a.value);
    }
  }

  function morphNode(from, to) {
    if (from.nodeType !== 1) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    if (from.getAttribute("data-morph") === "keep") return;
    syncAttributes(from, to);
    if (from.nodeName !== "TEMPLATE") morphChildren(from, to);
  }

  // `to`'s children become `from`'s: matched ones are morphed (and moved into place), new ones moved over.
  function morphChildren(from, to) {
    var keyed = Object.create(null);
    for (var c = from.firstChild; c; c = c.nextSibling) {
      var k = keyOf(c);
      if (k) keyed[k] = c;
    }
    var pos = from.firstChild; // where the next child goes; everything before it is done
    var next;
    for (var n = to.firstChild; n; n = next) {
      next = n.nextSibling;
      var key = keyOf(n);
      var match = key ? keyed[key] : pos && !keyOf(pos) && alike(pos, n) ? pos : null;
      if (match && !alike(match, n)) match = null;
      if (!match) {
        from.insertBefore(n, pos);
        continue;
      }
      if (key) delete keyed[key];
      if (match === pos) pos = pos.nextSibling;
      else from.insertBefore(match, pos);
      morphNode(match, n);
    }
    while (pos) {
      var after = pos.nextSibling;
      from.removeChild(pos);
      pos = after;
    }
  }

  function parse(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  /* swap(el, html, select): morph el's children into the fragment `html`; with `select`, `html` is a whole page
   * and el becomes its element matching `select` (and the page's title is taken too). New htmx attributes are
   * processed. */
  function swap(el, html, select) {
    if (select) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var node = doc.querySelector(select);
      if (!node) return;
      morphNode(el, node);
      if (doc.title) document.title = doc.title;
    } else {
      morphChildren(el, parse(html));
    }
    htmx.process(el);
  }

  htmx.defineExtension("morph", {
    isInlineSwap: function (style) {
      return style === "morph" || style === "morph:outerHTML";
    },
    handleSwap: function (style, target, fragment) {
      if (style === "morph") morphChildren(target, fragment);
      else if (style === "morph:outerHTML" && fragment.firstElementChild) morphNode(target, fragment.firstElementChild);
      else return false;
      return [target];
    },
  });

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

  return { morph: morphNode, swap: swap, poll: poll };
})();
