/* Downloads page: the "Workflow models" card (templates/_workflows.html).
 *
 * Drop a ComfyUI workflow on the card or pick one: its JSON is posted to /workflows/check and the server renders
 * the table (_workflow_table.html), morphed in below. "Fetch N missing" posts the same JSON to /workflows/fetch
 * (or, for a saved workflow, /workflows/saved/<name>/fetch); the server's words are flashed and the table is
 * asked for again every few seconds while a file is downloading. The saved workflows' list is fetched once the
 * page has loaded (reading each one takes a moment) and after every fetch. The card is outside the part of the
 * page the live poll swaps (#dl-live), so nothing here is overwritten by it. Without JavaScript the card's form
 * posts the file and the server answers with a page. Shared helpers: UI (common.js), Live (live.js).
 */
(function () {
  "use strict";

  var card = document.getElementById("workflows");
  if (!card) return;

  var REFRESH_MS = 2000; // while a file of the shown workflow downloads
  var maxBytes = Number(card.dataset.maxBytes) || 16 * 1024 * 1024;
  var result = document.getElementById("wf-result");
  var savedList = document.getElementById("wf-saved-list");
  var drop = document.getElementById("wf-drop");
  var input = document.getElementById("wf-file");
  var shown = null; // what the table shows: {text, name} (a dropped or picked file) or {saved, url}
  var timer = null;

  // The fetch button of the card's plain form: the table's own button does it here.
  card.querySelector('[data-testid="wf-fetch-form"]').hidden = true;

  function send(method, url, body, name) {
    var headers = { "HX-Request": "true", Accept: "text/html, application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = UI.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (name) headers["X-Filename"] = encodeURIComponent(name);
    var init = { method: method, headers: headers, body: body, credentials: "same-origin", cache: "no-store" };
    init.redirect = "manual"; // an ended session answers with a redirect to the login page: never followed here
    return fetch(url, init).then(function (r) {
      if (r.status === 401 || r.type === "opaqueredirect") {
        throw new Error("your session ended: reload the page and log in again");
      }
      return r;
    });
  }

  function failed(e) {
    UI.flash(e && e.message && e.message.indexOf("session ended") >= 0 ? "Workflow: " + e.message : UI.unreachable(e), "error");
  }

  function showError(text) {
    var p = document.createElement("p");
    p.className = "form-msg form-error";
    p.setAttribute("role", "alert");
    p.dataset.testid = "wf-error";
    p.textContent = text;
    result.replaceChildren(p);
  }

  // --- one workflow's table ----------------------------------------------------------------------------------
  function table() {
    clearTimeout(timer);
    if (!shown) return Promise.resolve();
    var asked = shown;
    var request = asked.saved ? send("GET", asked.url) : send("POST", card.dataset.check, asked.text, asked.name);
    return request
      .then(function (r) {
        return r.text();
      })
      .then(function (html) {
        if (asked !== shown) return; // another workflow was picked meanwhile
        Live.swap(result, html);
        if (result.querySelector('[data-busy="true"]')) timer = setTimeout(refreshWhenVisible, REFRESH_MS);
        else savedWorkflows(); // settled: the saved workflows' counts may have changed too
      })
      .catch(failed);
  }

  function refreshWhenVisible() {
    if (document.hidden) timer = setTimeout(refreshWhenVisible, REFRESH_MS);
    else table();
  }

  function pick(file) {
    if (!file) return;
    if (file.size > maxBytes) {
      shown = null;
      showError("the workflow is " + UI.humanBytes(file.size) + "; the limit is " + UI.humanBytes(maxBytes));
      return;
    }
    file
      .text()
      .then(function (text) {
        shown = { text: text, name: file.name };
        return table();
      })
      .catch(failed);
  }

  function fetchMissing(form) {
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    var request = shown && !shown.saved ? send("POST", card.dataset.fetch, shown.text) : send("POST", form.action);
    request
      .then(function (r) {
        return r
          .json()
          .catch(function () {
            return {};
          })
          .then(function (body) {
            var events = {};
            try {
              events = JSON.parse(r.headers.get("HX-Trigger") || "{}");
            } catch (e) {
              events = {};
            }
            if (events.flash) UI.flash(events.flash.message, events.flash.category);
            else if (!r.ok) UI.flash(UI.errorText({ status: r.status, body: body }), "error");
          });
      })
      .catch(failed)
      .then(function () {
        if (button) button.disabled = false;
        return table();
      });
  }

  // --- the saved workflows -----------------------------------------------------------------------------------
  function savedWorkflows() {
    return send("GET", card.dataset.saved)
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        Live.swap(savedList, html);
      })
      .catch(failed);
  }

  // --- events ------------------------------------------------------------------------------------------------
  input.addEventListener("change", function () {
    pick(input.files && input.files[0]);
  });
  document.getElementById("wf-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    pick(input.files && input.files[0]);
  });
  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (ev) {
      ev.preventDefault();
      drop.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    drop.addEventListener(type, function () {
      drop.classList.remove("dragging");
    });
  });
  drop.addEventListener("drop", function (ev) {
    ev.preventDefault();
    pick(ev.dataTransfer && ev.dataTransfer.files[0]);
  });
  card.addEventListener("submit", function (ev) {
    if (!ev.target.matches("[data-wf-fetch-form]")) return;
    ev.preventDefault();
    fetchMissing(ev.target);
  });
  card.addEventListener("click", function (ev) {
    var link = ev.target.closest && ev.target.closest("[data-wf-show]");
    if (!link) return;
    ev.preventDefault();
    shown = { saved: link.dataset.wfShow, url: link.href };
    table();
  });

  savedWorkflows();
})();
