/* Downloads page: keeps the server-rendered page live.
 *
 * Polls GET /api/downloads every second (not while the tab is hidden; backs off when the server is
 * unreachable), updates rows, sections and totals in place (text and attributes only, so buttons do not
 * move under the mouse), and turns the page's <form method=post> buttons into fetch() calls with the
 * X-CSRFToken header. Server strings only ever go through textContent. Shared helpers: UI (common.js).
 */
(function () {
  "use strict";

  var root = document.getElementById("downloads");
  if (!root) return;

  var POLL_MS = 1000;
  var MAX_BACKOFF_MS = 15000;
  var PENDING_MS = 6000; // how long a clicked row waits for its state to change before it is clickable again
  var STATES = ["downloading", "verifying", "queued", "paused", "failed", "done"];
  // Which buttons each state offers; downloads.html has the same table (ACTIONS).
  var ACTIONS = {
    start: ["available"],
    pause: ["queued", "downloading"],
    resume: ["paused"],
    retry: ["failed"],
    cancel: ["queued", "downloading", "verifying", "paused", "failed"],
  };

  var apiUrl = root.dataset.api;
  var connNote = document.getElementById("conn-note");
  var otherSection = document.getElementById("other");
  var rowTemplate = document.getElementById("row-template");

  var humanBytes = UI.humanBytes, humanSpeed = UI.humanSpeed, fmtEta = UI.fmtEta, flash = UI.flash;
  var setText = UI.setText, setHidden = UI.setHidden, setData = UI.setData, setProgress = UI.setProgress;
  var field = UI.field, cssEscape = UI.cssEscape;

  function fmtPct(p) {
    return (Math.floor(p * 1000) / 10).toFixed(1) + "%";
  }

  // --- rendering -------------------------------------------------------------------------------------
  function rowsFor(id) {
    return root.querySelectorAll('.dl[data-id="' + cssEscape(id) + '"]');
  }

  function newRow(d) {
    var frag = rowTemplate.content.cloneNode(true);
    var el = frag.querySelector(".dl");
    el.dataset.id = d.id;
    el.dataset.testid = "row-" + d.id;
    var enc = encodeURIComponent(d.id);
    el.querySelectorAll("form[data-action-form]").forEach(function (form) {
      var verb = form.dataset.actionForm;
      var url = verb === "start" ? root.dataset.rowUrlStart : root.dataset.rowUrlAct.replace("__VERB__", verb);
      form.setAttribute("action", url.replace("__ID__", enc));
      var button = form.querySelector("button");
      if (button) button.setAttribute("aria-label", button.textContent + " " + d.id);
    });
    return el;
  }

  function updateRow(el, d) {
    var state = d.state;
    var stateChanged = el.dataset.state !== state;
    setData(el, "state", state);

    // A clicked row stays "pending" (buttons inert) until its state moves or PENDING_MS passes.
    if (el.classList.contains("pending")) {
      if (stateChanged || Date.now() - Number(el.dataset.pendingSince || 0) > PENDING_MS) {
        el.classList.remove("pending");
        el.querySelectorAll(".dl-actions button").forEach(function (b) {
          b.disabled = false;
        });
      }
    }

    setText(el.querySelector(".id-text"), d.id);
    var idBox = el.querySelector(".dl-id");
    if (idBox && idBox.title !== (d.source || "")) idBox.title = d.source || "";
    var dest = el.querySelector(".dest-text");
    setText(dest, d.dest || "");
    if (dest && dest.title !== (d.dest || "")) dest.title = d.dest || "";
    setText(el.querySelector(".dl-size"), d.size ? humanBytes(d.size) : "?");

    var badge = el.querySelector(".badge.state");
    setData(badge, "state", state);
    setText(badge, state);
    setHidden(el.querySelector(".verified"), !(state === "done" && d.verified));
    setHidden(el.querySelector(".unverified"), !(state === "done" && !d.verified));

    var progress = d.progress;
    if (progress === null || progress === undefined) progress = state === "done" ? 1 : null;
    var bar = el.querySelector("progress");
    if (progress !== null) setProgress(bar, Math.floor(progress * 1000) / 10);
    else setProgress(bar, state === "downloading" ? null : 0);
    setText(el.querySelector(".pct"), progress !== null ? fmtPct(progress) : "");

    var doneBytes = state === "done" && d.size ? d.size : d.bytes_done || 0;
    var bytes = "";
    if (state !== "available") bytes = humanBytes(doneBytes) + (d.size ? " / " + humanBytes(d.size) : "");
    setText(el.querySelector(".bytes"), bytes);

    setText(el.querySelector(".speed"), state === "downloading" && d.speed ? humanSpeed(d.speed) : "");
    var eta = "";
    if (state === "downloading" && d.eta_s !== null && d.eta_s !== undefined) eta = "ETA " + fmtEta(d.eta_s);
    else if (state === "verifying") eta = "checking\u2026";
    setText(el.querySelector(".eta"), eta);

    var err = el.querySelector(".dl-error");
    if (d.error) {
      setText(err, (state === "failed" ? "" : "Retrying after: ") + d.error);
      err.classList.toggle("dl-warn", state !== "failed");
    }
    setHidden(err, !d.error);

    el.querySelectorAll("form[data-action-form]").forEach(function (form) {
      var allowed = ACTIONS[form.dataset.actionForm];
      setHidden(form, !(allowed && allowed.indexOf(state) !== -1));
    });
  }

  function renderRows(downloads) {
    var seen = Object.create(null);
    downloads.forEach(function (d) {
      seen[d.id] = true;
      var rows = rowsFor(d.id);
      if (rows.length === 0) {
        // New since the page was rendered: into its presets' sections if shown, else "Other downloads".
        var targets = [];
        (d.presets || []).forEach(function (name) {
          var sec = root.querySelector('.preset[data-preset="' + cssEscape(name) + '"] .rows');
          if (sec) targets.push(sec);
        });
        if (targets.length === 0 && otherSection) targets.push(otherSection.querySelector(".rows"));
        targets.forEach(function (container) {
          var el = newRow(d);
          updateRow(el, d);
          container.appendChild(el);
        });
      } else {
        rows.forEach(function (el) {
          updateRow(el, d);
        });
      }
    });
    root.querySelectorAll(".dl[data-id]").forEach(function (el) {
      if (!seen[el.dataset.id] && !el.closest("template")) el.remove();
    });
    if (otherSection) setHidden(otherSection, !otherSection.querySelector(".rows .dl"));
    var empty = document.getElementById("empty");
    if (empty) setHidden(empty, downloads.length > 0);
  }

  function renderPresets(presets, downloads) {
    var byId = Object.create(null);
    downloads.forEach(function (d) {
      byId[d.id] = d;
    });
    presets.forEach(function (p) {
      var sec = root.querySelector('.preset[data-preset="' + cssEscape(p.name) + '"]');
      if (!sec) return;
      var badge = field(sec, "state");
      setData(badge, "state", p.state);
      setText(badge, p.state);
      setText(field(sec, "done"), String(p.done));
      var canStart = p.models.some(function (m) {
        return byId[m] && byId[m].state === "available";
      });
      setHidden(sec.querySelector('form[data-action-form="start-preset"]'), !canStart);
    });
  }

  function renderTotals(s) {
    var box = document.getElementById("totals");
    var counts = s.counts || {};
    var total = 0;
    Object.keys(counts).forEach(function (k) {
      total += counts[k];
    });
    var active = (counts.queued || 0) + (counts.downloading || 0) + (counts.verifying || 0);
    var headline;
    if (total === 0) headline = "Nothing started yet";
    else if (counts.done === total) headline = "All done";
    else if (active) headline = "Downloading";
    else if (counts.failed) headline = counts.failed + " failed";
    else headline = "Paused";
    var head = field(box, "headline");
    setText(head, headline);
    setData(head, "tone", total && counts.done === total ? "ok" : counts.failed && !active ? "err" : "");
    setText(field(box, "files"), (counts.done || 0) + " of " + total + " files done");
    setText(field(box, "bytes"), humanBytes(s.bytes_done || 0) + " / " + humanBytes(s.bytes_total || 0));
    setText(field(box, "pct"), s.bytes_total ? "(" + fmtPct((s.bytes_done || 0) / s.bytes_total) + ")" : "");
    setText(field(box, "speed"), humanSpeed(s.speed || 0));
    var left = (s.bytes_total || 0) - (s.bytes_done || 0);
    setText(field(box, "eta"), s.speed && left > 0 ? "ETA " + fmtEta(left / s.speed) : "ETA \u2013");
    var ready = Boolean(s.required_done && total > 0);
    var readyBox = field(box, "ready");
    setData(readyBox, "ready", ready ? "yes" : "no");
    setText(readyBox.querySelector(".ready-text"), ready ? "ComfyUI ready" : "ComfyUI not ready");
    setProgress(
      document.getElementById("total-progress"),
      s.bytes_total ? Math.round((1000 * (s.bytes_done || 0)) / s.bytes_total) / 10 : 0
    );
    STATES.forEach(function (st) {
      var li = box.querySelector('[data-count="' + st + '"]');
      if (!li) return;
      setText(li.querySelector(".n"), String(counts[st] || 0));
      li.classList.toggle("zero", !counts[st]);
    });
    var note = field(box, "note");
    setText(note, s.note || "");
    setHidden(note, !s.note);
  }

  function render(data) {
    renderRows(data.downloads || []);
    renderPresets(data.presets || [], data.downloads || []);
    renderTotals(data.summary || {});
  }

  // --- polling ---------------------------------------------------------------------------------------
  var poll = UI.poll({ url: apiUrl, interval: POLL_MS, maxBackoff: MAX_BACKOFF_MS, note: connNote, render: render });

  // --- buttons ---------------------------------------------------------------------------------------
  var BULK_DONE = { "pause-all": "Paused", "resume-all": "Resumed", "retry-all": "Retrying" };

  root.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.id === "add-form") {
      ev.preventDefault();
      submitAdd(form);
      return;
    }
    var verb = form.dataset.actionForm;
    if (!verb) return;
    ev.preventDefault();
    var row = form.closest(".dl");
    if (verb === "cancel") {
      var id = row ? row.dataset.id : "";
      if (!window.confirm("Cancel " + id + " and delete what was downloaded of it?")) return;
    }
    var button = form.querySelector("button");
    var rows = row ? rowsFor(row.dataset.id) : [];
    if (row) {
      rows.forEach(function (r) {
        r.classList.add("pending");
        r.dataset.pendingSince = String(Date.now());
      });
    }
    if (button) button.disabled = true;
    UI.request("POST", form.action)
      .then(function (res) {
        if (!res.ok) {
          flash(UI.errorText(res), "error");
          rows.forEach(function (r) {
            r.classList.remove("pending");
          });
        } else if (BULK_DONE[verb]) {
          var n = res.body.count || 0;
          flash(BULK_DONE[verb] + " " + n + " download" + (n === 1 ? "" : "s") + ".", "info");
        }
      })
      .catch(function (e) {
        flash(UI.unreachable(e), "error");
        rows.forEach(function (r) {
          r.classList.remove("pending");
        });
      })
      .then(function () {
        if (button && !row) button.disabled = false;
        if (button && row && !row.classList.contains("pending")) button.disabled = false;
        poll();
      });
  });

  // --- add a download ----------------------------------------------------------------------------------
  var addError = document.getElementById("add-error");
  var addOk = document.getElementById("add-ok");
  var addSource = document.getElementById("add-source");
  var addFilename = document.getElementById("add-filename");

  function lastSegment(source) {
    var s = (source || "").trim().split(/[?#]/)[0];
    var seg = s.slice(s.lastIndexOf("/") + 1);
    try {
      return decodeURIComponent(seg);
    } catch (e) {
      return seg;
    }
  }
  if (addSource && addFilename) {
    addSource.addEventListener("input", function () {
      var seg = lastSegment(addSource.value);
      addFilename.placeholder = seg ? seg : "last part of the URL";
    });
  }

  function submitAdd(form) {
    var body = {};
    ["source", "folder", "filename", "sha256"].forEach(function (name) {
      var input = form.elements.namedItem(name);
      var v = input && input.value ? input.value.trim() : "";
      if (v) body[name] = v;
    });
    var button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    setHidden(addError, true);
    setHidden(addOk, true);
    UI.request("POST", form.action, body)
      .then(function (res) {
        if (res.ok) {
          setText(addOk, "Queued " + (res.body.id || "the download") + (res.body.dest ? " \u2192 " + res.body.dest : "") + ".");
          setHidden(addOk, false);
          ["source", "filename", "sha256"].forEach(function (name) {
            var input = form.elements.namedItem(name);
            if (input) input.value = "";
          });
          if (addFilename) addFilename.placeholder = "last part of the URL";
        } else {
          setText(addError, UI.errorText(res));
          setHidden(addError, false);
        }
      })
      .catch(function (e) {
        setText(addError, UI.unreachable(e));
        setHidden(addError, false);
      })
      .then(function () {
        if (button) button.disabled = false;
        poll();
      });
  }
})();
