/* What the page scripts (downloads.js, files.js, status.js, calculator.js) share: one global, UI.
 *
 * A plain script, no build and no modules: base.html loads it before each page's own script (both deferred, so
 * they run in that order). Formatting matches the server (human_bytes; times in UTC), DOM writes only touch what
 * changed, and server strings only ever go through textContent.
 */
var UI = (function () {
  "use strict";

  // --- formatting (same units as the server's human_bytes) ------------------------------------------
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  function humanBytes(n) {
    if (n === null || n === undefined) return "?";
    n = Number(n);
    var u = 0;
    while (Math.abs(n) >= 1024 && u < UNITS.length - 1) {
      n /= 1024;
      u++;
    }
    return u === 0 ? Math.round(n) + " B" : n.toFixed(1) + " " + UNITS[u];
  }
  function humanSpeed(n) {
    return humanBytes(n) + "/s";
  }
  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }
  // seconds -> "h:mm:ss" ("" when unknown)
  function fmtEta(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 3600) + ":" + pad2(Math.floor((s % 3600) / 60)) + ":" + pad2(s % 60);
  }
  // a Date -> "2025-11-22 06:22" in UTC, or "2025-11-22 06:22:01" with seconds
  function utcStamp(d, seconds) {
    return (
      d.getUTCFullYear() + "-" + pad2(d.getUTCMonth() + 1) + "-" + pad2(d.getUTCDate()) + " " +
      pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes()) + (seconds ? ":" + pad2(d.getUTCSeconds()) : "")
    );
  }

  // --- small DOM helpers: write only what changed ----------------------------------------------------
  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }
  function setHidden(el, hidden) {
    if (el && el.hidden !== hidden) el.hidden = hidden;
  }
  function setData(el, key, value) {
    if (el && el.dataset[key] !== value) el.dataset[key] = value;
  }
  // a <progress>: a percentage (number or string), or null for indeterminate
  function setProgress(el, pct) {
    if (!el) return;
    if (pct === null) {
      if (el.hasAttribute("value")) el.removeAttribute("value");
    } else {
      var v = String(pct);
      if (el.getAttribute("value") !== v) el.setAttribute("value", v);
    }
  }
  function field(scope, name) {
    return scope.querySelector('[data-field="' + name + '"]');
  }
  function cssEscape(s) {
    return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, "\\$&");
  }

  // --- flash messages (into base.html's #flashes; errors stay until dismissed) -----------------------
  function flash(message, category) {
    var flashes = document.getElementById("flashes");
    if (!flashes) return;
    var div = document.createElement("div");
    div.className = "flash flash-" + (category === "error" ? "error" : "info");
    div.setAttribute("role", category === "error" ? "alert" : "status");
    var text = document.createElement("span");
    text.className = "flash-text";
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () {
      div.remove();
    });
    div.appendChild(text);
    div.appendChild(close);
    flashes.appendChild(div);
    while (flashes.children.length > 4) flashes.firstElementChild.remove();
    if (category !== "error") {
      setTimeout(function () {
        div.remove();
      }, 5000);
    }
  }

  // --- talking to the JSON API -----------------------------------------------------------------------
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  // -> Promise of {ok, status, body} (body {} when the answer is not JSON); rejects only when unreachable.
  // Anything but GET carries the X-CSRFToken header; a payload goes as JSON.
  function request(method, url, payload) {
    var headers = { Accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") headers["X-CSRFToken"] = csrf;
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(url, init).then(function (r) {
      return r
        .json()
        .catch(function () {
          return {};
        })
        .then(function (data) {
          return { ok: r.ok, status: r.status, body: data || {} };
        });
    });
  }

  // What to tell people about a refused request.
  function errorText(res) {
    if (res.body && res.body.error) return res.body.error;
    if (res.status === 400) return "The request was refused (HTTP 400): reload the page and try again.";
    return "HTTP " + res.status;
  }
  // ... and about a request that never got an answer.
  function unreachable(e) {
    return "Could not reach the server: " + (e && e.message ? e.message : e);
  }

  // --- timers that sleep while the tab is hidden -----------------------------------------------------
  // loop(run): run() is called when the scheduled delay is up, and at once when the tab shows again.
  function loop(run) {
    var timer = null;
    function cancel() {
      clearTimeout(timer);
      timer = null;
    }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) cancel();
      else run();
    });
    return {
      schedule: function (delay) {
        cancel();
        if (!document.hidden) timer = setTimeout(run, delay);
      },
      cancel: cancel,
    };
  }

  /* poll({url, interval, maxBackoff, note, render}): GET url every `interval` ms and hand the JSON to render().
   * When the server cannot be reached the wait doubles up to maxBackoff and `note` (a hidden element) says so;
   * a 401 puts a "Log in again" link there instead. Returns poll(): poll now (a call while a request is on its
   * way polls again once it is back). The first poll is after `interval`. */
  function poll(opts) {
    var note = opts.note;
    var inflight = false;
    var again = false;
    var failures = 0;
    var timer = loop(now);

    function backoff() {
      return Math.min(opts.interval * Math.pow(2, failures), opts.maxBackoff);
    }
    function showNote(text, link) {
      if (!note) return;
      if (link) {
        note.textContent = text;
        note.appendChild(link);
      } else {
        setText(note, text);
      }
      setHidden(note, false);
    }

    function now() {
      timer.cancel();
      if (inflight) {
        again = true;
        return;
      }
      inflight = true;
      fetch(opts.url, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) {
            var a = document.createElement("a");
            a.href = "/login?next=" + encodeURIComponent(location.pathname);
            a.textContent = "Log in again";
            showNote("Your session ended. ", a);
            failures = Math.max(failures, 3);
            throw null;
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          opts.render(data);
          failures = 0;
          setHidden(note, true);
        })
        .catch(function (e) {
          if (e === null) return; // 401, already shown
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
          timer.schedule(failures ? backoff() : opts.interval);
        });
    }

    timer.schedule(opts.interval);
    return now;
  }

  return {
    csrf: csrf,
    humanBytes: humanBytes,
    humanSpeed: humanSpeed,
    pad2: pad2,
    fmtEta: fmtEta,
    utcStamp: utcStamp,
    setText: setText,
    setHidden: setHidden,
    setData: setData,
    setProgress: setProgress,
    field: field,
    cssEscape: cssEscape,
    flash: flash,
    request: request,
    errorText: errorText,
    unreachable: unreachable,
    loop: loop,
    poll: poll,
  };
})();
