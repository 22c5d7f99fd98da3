/* What the page scripts (downloads.js, files.js, status.js, calculator.js, live.js) share: one global, UI.
 *
 * A plain script, no build and no modules: base.html loads it before each page's own scripts (all deferred, so
 * they run in that order). Sizes are written as the server's human_bytes writes them, DOM writes only touch what
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

  // --- small DOM helpers: write only what changed ----------------------------------------------------
  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }
  function setHidden(el, hidden) {
    if (el && el.hidden !== hidden) el.hidden = hidden;
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

  return {
    csrf: csrf,
    humanBytes: humanBytes,
    humanSpeed: humanSpeed,
    setText: setText,
    setHidden: setHidden,
    setProgress: setProgress,
    field: field,
    cssEscape: cssEscape,
    flash: flash,
    request: request,
    errorText: errorText,
    unreachable: unreachable,
  };
})();
