/* Files page: browse the workspace in place, upload (chunked, resumable), preview, rename/move, delete.
 *
 * The server renders the first listing (browsing and downloading work without JavaScript); this script takes
 * over: folders open without a page load (history keeps the back button working), the listing refreshes every
 * 5 s while the tab is visible, and every change goes through the JSON API with the X-CSRFToken header.
 *
 * Uploads: each file is opened with POST /api/files/upload, sent as PUT chunks of the size the server asks for
 * (the service's WSGI server buffers each request body, so a chunk, never the whole file, is in flight), then
 * committed. A cut connection or a restarted service is picked up where the server says the file stands.
 * Server strings only ever go through textContent. Shared helpers: UI (common.js).
 */
(function () {
  "use strict";

  var root = document.getElementById("files");
  if (!root) return;
  root.classList.add("js");

  var POLL_MS = 5000;
  var RETRIES = 6; // attempts per chunk before an upload is marked failed
  var urls = root.dataset;
  var body = document.getElementById("fm-body");
  var table = document.getElementById("fm-table");
  var crumbs = document.getElementById("crumbs");
  var disk = document.getElementById("disk");
  var emptyNote = document.getElementById("fm-empty");
  var errorNote = document.getElementById("fm-error");
  var truncatedNote = document.getElementById("fm-truncated");
  var rowTemplate = document.getElementById("fm-row-template");
  var dataEl = document.getElementById("fm-data");

  var state = {
    data: dataEl ? JSON.parse(dataEl.textContent) : null,
    path: "",
    sort: "name",
    order: "asc",
    sizes: Object.create(null), // folder path -> {size, complete}
  };
  if (state.data) {
    state.path = state.data.path;
    state.sort = state.data.sort;
    state.order = state.data.order;
  } else {
    var params = new URLSearchParams(location.search);
    state.path = params.get("path") || "";
  }

  var humanBytes = UI.humanBytes, humanSpeed = UI.humanSpeed, flash = UI.flash;
  var setText = UI.setText, setHidden = UI.setHidden, setProgress = UI.setProgress, field = UI.field;

  // seconds since the epoch -> "2025-11-22 06:22" (UTC: the text the server renders)
  function fmtTime(t) {
    if (!t) return "";
    return UI.utcStamp(new Date(t * 1000), false);
  }
  function isoTime(t) {
    return t ? new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "";
  }
  function rootName() {
    return state.data && state.data.breadcrumbs.length ? state.data.breadcrumbs[0].name : "workspace";
  }
  function join(folder, name) {
    return folder ? folder + "/" + name : name;
  }
  function baseName(path) {
    return path.slice(path.lastIndexOf("/") + 1);
  }
  // url?key=value&...: values percent-encoded once, "/" kept readable (as the server's own links have it)
  function q(url, params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      if (params[k] !== undefined && params[k] !== null) {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(String(params[k])).replace(/%2F/g, "/"));
      }
    });
    return url + "?" + parts.join("&");
  }
  function pageUrl(path, sort, order) {
    var params = {};
    if (path) params.path = path;
    if (sort && sort !== "name") params.sort = sort;
    if (order && order !== "asc") params.order = order;
    return Object.keys(params).length ? q(urls.page, params) : urls.page;
  }

  // --- talking to the API ----------------------------------------------------------------------------
  var call = UI.request; // (method, url, payload) -> Promise of {ok, status, body}

  function errorText(res) {
    if (res.status === 401) return "Your session ended: reload the page and log in again.";
    return UI.errorText(res);
  }

  // --- rendering -------------------------------------------------------------------------------------
  function renderCrumbs(data) {
    crumbs.textContent = "";
    data.breadcrumbs.forEach(function (c, i) {
      if (i > 0) {
        var sep = document.createElement("span");
        sep.className = "crumb-sep";
        sep.setAttribute("aria-hidden", "true");
        sep.textContent = "/";
        crumbs.appendChild(sep);
      }
      var el;
      if (i === data.breadcrumbs.length - 1) {
        el = document.createElement("span");
        el.className = "crumb current";
        el.setAttribute("aria-current", "page");
      } else {
        el = document.createElement("a");
        el.className = "crumb";
        el.href = pageUrl(c.path, state.sort, state.order);
        el.dataset.path = c.path;
      }
      el.textContent = c.name;
      crumbs.appendChild(el);
    });
  }

  function renderDisk(d) {
    if (!disk || !d) return;
    setText(field(disk, "used"), humanBytes(d.used));
    setText(field(disk, "free"), humanBytes(d.free));
    setText(field(disk, "total"), humanBytes(d.total));
    var bar = field(disk, "bar");
    setProgress(bar, d.total ? Math.round((1000 * d.used) / d.total) / 10 : 0);
    bar.classList.toggle("bar-full", d.total > 0 && d.free / d.total < 0.05);
    setHidden(disk, false);
  }

  function renderHead() {
    var thead = table.tHead;
    if (!thead.rows.length) {
      // The server rendered an error page without a table head: build it once.
      thead.innerHTML =
        '<tr><th class="fm-name" scope="col" data-sort-col="name"><a data-sort="name" data-testid="sort-name">Name<span class="arrow" aria-hidden="true"></span></a></th>' +
        '<th class="fm-size" scope="col" data-sort-col="size"><a data-sort="size" data-testid="sort-size">Size<span class="arrow" aria-hidden="true"></span></a></th>' +
        '<th class="fm-mtime" scope="col" data-sort-col="mtime"><a data-sort="mtime" data-testid="sort-mtime">Modified (UTC)<span class="arrow" aria-hidden="true"></span></a></th>' +
        '<th class="fm-actions" scope="col"><span class="visually-hidden">Actions</span></th></tr>';
    }
    thead.querySelectorAll("th[data-sort-col]").forEach(function (th) {
      var key = th.dataset.sortCol;
      var active = key === state.sort;
      if (active) th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      var a = th.querySelector("a");
      a.href = pageUrl(state.path, key, active && state.order === "asc" ? "desc" : "asc");
      setText(th.querySelector(".arrow"), active ? (state.order === "asc" ? "\u25b2" : "\u25bc") : "");
    });
  }

  var rowsByPath = Object.create(null);

  function newRow() {
    return rowTemplate.content.querySelector(".fm-row").cloneNode(true);
  }

  function iconOf(e) {
    if (e.type === "dir") return "folder";
    if (e.type === "blocked" || e.type === "broken") return "link-off";
    return e.kind || "file";
  }

  function sizeText(e) {
    if (e.type === "file") return e.size === 0 ? "0 B" : humanBytes(e.size);
    if (e.type === "dir") {
      var s = state.sizes[e.path];
      if (s) return (s.complete ? "" : "\u2265 ") + (s.size === 0 ? "0 B" : humanBytes(s.size));
    }
    return "";
  }

  function updateRow(tr, e) {
    tr.dataset.path = e.path;
    tr.dataset.type = e.type;
    tr.dataset.name = e.name;
    var icon = iconOf(e);
    var svg = tr.querySelector(".fm-icon");
    if (svg.dataset.icon !== icon) {
      svg.dataset.icon = icon;
      svg.querySelector("use").setAttribute("href", "#i-" + icon);
    }
    var link = tr.querySelector(".fm-link");
    var href = null;
    if (e.type === "dir") href = pageUrl(e.path, state.sort, state.order);
    else if (e.type === "file") href = q(urls.apiDownload, { path: e.path });
    if (link.tagName !== "A") {
      var a = document.createElement("a");
      a.className = "fm-link";
      a.dataset.testid = "entry-name";
      link.replaceWith(a);
      link = a;
    }
    if (href) {
      if (link.getAttribute("href") !== href) link.setAttribute("href", href);
      link.removeAttribute("aria-disabled");
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    }
    setText(link, e.name);
    link.title = e.error || (e.type === "dir" ? "" : e.name);

    setHidden(tr.querySelector('[data-tag="link"]'), !e.link);
    var blocked = tr.querySelector('[data-tag="blocked"]');
    setHidden(blocked, e.type !== "blocked" && e.type !== "broken");
    setText(blocked, e.type === "blocked" ? "outside the workspace" : "broken link");
    blocked.title = e.error || "";
    var busy = tr.querySelector('[data-tag="in-progress"]');
    setHidden(busy, !e.in_progress);
    setText(busy.querySelector(".fm-dl-id"), e.in_progress ? " " + e.in_progress : "");
    setHidden(tr.querySelector('[data-tag="upload"]'), !e.upload);
    setHidden(tr.querySelector('[data-tag="protected"]'), !e.protected);

    setText(tr.querySelector(".fm-size"), sizeText(e));
    var cell = tr.querySelector(".fm-mtime");
    var time = cell.querySelector("time");
    if (e.mtime) {
      if (!time) {
        time = document.createElement("time");
        cell.appendChild(time);
      }
      time.setAttribute("datetime", isoTime(e.mtime));
      setText(time, fmtTime(e.mtime));
    } else if (time) {
      time.remove();
    }

    setHidden(tr.querySelector('[data-act="preview"]'), !(e.type === "file" && e.kind));
    var dl = tr.querySelector('[data-act="download"]');
    setHidden(dl, e.type !== "file");
    if (e.type === "file") dl.setAttribute("href", q(urls.apiDownload, { path: e.path }));
    var locked = Boolean(e.protected || e.in_progress || e.type === "blocked");
    setHidden(tr.querySelector('[data-act="rename"]'), locked || e.upload);
    setHidden(tr.querySelector('[data-act="delete"]'), locked);
    tr.querySelectorAll("[data-act]").forEach(function (b) {
      b.setAttribute("aria-label", (b.textContent || "").trim() + " " + e.name);
    });
  }

  function upRow(parent) {
    var tr = body.querySelector(".fm-up");
    if (parent === null || parent === undefined) {
      if (tr) tr.remove();
      return null;
    }
    if (!tr) {
      tr = document.createElement("tr");
      tr.className = "fm-row fm-up";
      tr.dataset.type = "up";
      tr.innerHTML =
        '<td class="fm-name" colspan="4"><div class="fm-cell"><svg class="fm-icon" data-icon="folder" aria-hidden="true"><use href="#i-folder"></use></svg><a class="fm-link" data-testid="up">..</a></div></td>';
    }
    tr.dataset.path = parent;
    tr.querySelector("a").href = pageUrl(parent, state.sort, state.order);
    return tr;
  }

  function renderRows(entries, parent) {
    var seen = Object.create(null);
    var ordered = [];
    var up = upRow(parent);
    if (up) ordered.push(up);
    // Rows of the server's first render: adopt them.
    if (!Object.keys(rowsByPath).length) {
      body.querySelectorAll(".fm-row:not(.fm-up)").forEach(function (tr) {
        rowsByPath[tr.dataset.path] = tr;
      });
    }
    entries.forEach(function (e) {
      var tr = rowsByPath[e.path] || newRow();
      rowsByPath[e.path] = tr;
      seen[e.path] = e;
      updateRow(tr, e);
      ordered.push(tr);
    });
    Object.keys(rowsByPath).forEach(function (p) {
      if (!seen[p]) {
        rowsByPath[p].remove();
        delete rowsByPath[p];
      }
    });
    // Put rows in order, moving only those out of place (keeps hover and focus where they are).
    ordered.forEach(function (tr, i) {
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
    while (body.children.length > ordered.length) body.lastElementChild.remove();
  }

  function render(data) {
    var moved = data.path !== state.path;
    state.data = data;
    state.path = data.path;
    state.sort = data.sort;
    state.order = data.order;
    if (moved) state.sizes = Object.create(null);
    setHidden(errorNote, true);
    setHidden(table, false);
    renderCrumbs(data);
    renderDisk(data.disk);
    renderHead();
    renderRows(data.entries, data.parent);
    setHidden(emptyNote, data.entries.length > 0);
    setHidden(truncatedNote, !data.truncated);
    document.title = (data.path ? baseName(data.path) : "Files") + " \u00b7 Pod downloader";
  }

  function showError(message) {
    setText(errorNote, message);
    setHidden(errorNote, false);
  }

  // --- loading ---------------------------------------------------------------------------------------
  var loading = 0; // generation: answers to older requests are dropped
  var inflight = false;

  function load(path, opts) {
    opts = opts || {};
    var sort = opts.sort || state.sort;
    var order = opts.order || state.order;
    var gen = ++loading;
    inflight = true;
    return call("GET", q(urls.apiList, { path: path, sort: sort, order: order }))
      .then(function (res) {
        if (gen !== loading) return;
        if (!res.ok) {
          if (opts.quiet) return;
          if (res.status === 401) {
            showError(errorText(res));
            return;
          }
          flash(errorText(res), "error");
          if (opts.history === "pop") showError(errorText(res));
          return;
        }
        var moved = res.body.path !== state.path;
        render(res.body);
        if (opts.history === "push" && (moved || opts.sort || opts.order)) {
          history.pushState({ path: res.body.path }, "", pageUrl(res.body.path, state.sort, state.order));
        } else if (opts.history === "replace") {
          history.replaceState({ path: res.body.path }, "", pageUrl(res.body.path, state.sort, state.order));
        }
      })
      .catch(function (e) {
        if (gen !== loading || opts.quiet) return;
        flash(UI.unreachable(e), "error");
      })
      .then(function () {
        if (gen === loading) inflight = false;
      });
  }

  function refresh() {
    return load(state.path, { quiet: true });
  }

  // --- polling (in-progress downloads, other people's changes) ---------------------------------------
  var ticker = UI.loop(tick);
  function schedule() {
    ticker.schedule(POLL_MS);
  }
  function tick() {
    var busy = inflight || dialog.open || preview.open;
    (busy ? Promise.resolve() : refresh()).then(schedule);
  }

  // --- navigation ------------------------------------------------------------------------------------
  root.addEventListener("click", function (ev) {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    var sortLink = ev.target.closest("a[data-sort]");
    if (sortLink) {
      ev.preventDefault();
      var key = sortLink.dataset.sort;
      var order = key === state.sort && state.order === "asc" ? "desc" : "asc";
      load(state.path, { sort: key, order: order, history: "push" });
      return;
    }
    var crumb = ev.target.closest("a.crumb");
    if (crumb) {
      ev.preventDefault();
      load(crumb.dataset.path || "", { history: "push" });
      return;
    }
    var link = ev.target.closest(".fm-link");
    if (link) {
      var tr = link.closest(".fm-row");
      if (tr && (tr.dataset.type === "dir" || tr.dataset.type === "up")) {
        ev.preventDefault();
        load(tr.dataset.path, { history: "push" });
      } else if (!link.getAttribute("href")) {
        ev.preventDefault();
      }
    }
  });

  window.addEventListener("popstate", function () {
    var params = new URLSearchParams(location.search);
    load(params.get("path") || "", {
      sort: params.get("sort") || "name",
      order: params.get("order") || "asc",
      history: "pop",
    });
  });

  // --- the in-page dialog (confirmations and names) --------------------------------------------------
  var dialog = document.getElementById("fm-dialog");
  var dialogForm = document.getElementById("fm-dialog-form");
  var dialogState = null;

  /* ask({title, message, label, value, select, ok, danger, action}) -> Promise of the value (true without an
   * input) or null if cancelled. `action(value)` may return a Promise of an error text: the dialog then stays
   * open and shows it, so a refused name can be corrected in place. */
  function ask(opts) {
    if (dialogState) dialogState.finish(null);
    return new Promise(function (resolve) {
      var input = field(dialog, "input");
      var ok = field(dialog, "ok");
      var err = field(dialog, "error");
      setText(field(dialog, "title"), opts.title || "");
      setText(field(dialog, "message"), opts.message || "");
      setHidden(field(dialog, "message"), !opts.message);
      setHidden(field(dialog, "label-wrap"), opts.value === undefined);
      setText(field(dialog, "label"), opts.label || "");
      input.value = opts.value === undefined ? "" : opts.value;
      setHidden(err, true);
      ok.textContent = opts.ok || "OK";
      ok.disabled = false;
      ok.className = "btn " + (opts.danger ? "btn-danger-solid" : "btn-primary");
      dialogState = {
        opts: opts,
        finish: function (value) {
          if (dialogState && dialogState.opts === opts) dialogState = null;
          if (dialog.open) dialog.close();
          resolve(value);
        },
      };
      dialog.showModal();
      if (opts.value !== undefined) {
        input.focus();
        if (opts.select) input.setSelectionRange(opts.select[0], opts.select[1]);
        else input.select();
      } else {
        field(dialog, opts.danger ? "cancel" : "ok").focus();
      }
    });
  }

  dialogForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var st = dialogState;
    if (!st) return;
    var input = field(dialog, "input");
    var value = st.opts.value === undefined ? true : input.value.trim();
    if (st.opts.value !== undefined && !value) {
      input.focus();
      return;
    }
    if (!st.opts.action) {
      st.finish(value);
      return;
    }
    var ok = field(dialog, "ok");
    var err = field(dialog, "error");
    ok.disabled = true;
    Promise.resolve(st.opts.action(value))
      .catch(function (e) {
        return UI.unreachable(e);
      })
      .then(function (problem) {
        ok.disabled = false;
        if (dialogState !== st) return;
        if (problem) {
          setText(err, problem);
          setHidden(err, false);
          if (st.opts.value !== undefined) input.focus();
        } else {
          st.finish(value);
        }
      });
  });
  field(dialog, "cancel").addEventListener("click", function () {
    if (dialogState) dialogState.finish(null);
  });
  dialog.addEventListener("close", function () {
    if (dialogState) dialogState.finish(null);
  });

  // --- actions on rows -------------------------------------------------------------------------------
  function entryOf(tr) {
    var entries = state.data ? state.data.entries : [];
    for (var i = 0; i < entries.length; i++) if (entries[i].path === tr.dataset.path) return entries[i];
    return { path: tr.dataset.path, name: baseName(tr.dataset.path), type: tr.dataset.type };
  }

  body.addEventListener("click", function (ev) {
    var button = ev.target.closest("button[data-act]");
    if (!button) return;
    var e = entryOf(button.closest(".fm-row"));
    var act = button.dataset.act;
    if (act === "delete") confirmDelete(e);
    else if (act === "rename") renameEntry(e);
    else if (act === "preview") openPreview(e);
  });

  function confirmDelete(e) {
    var folder = e.type === "dir";
    ask({
      title: "Delete " + (folder ? "folder " : "") + e.name + "?",
      message: folder
        ? "The folder " + e.path + " and everything in it will be deleted. This cannot be undone."
        : e.path + (e.size !== null && e.size !== undefined ? " (" + humanBytes(e.size) + ")" : "") +
          " will be deleted. This cannot be undone.",
      ok: "Delete",
      danger: true,
      action: function () {
        return call("POST", urls.apiDelete, { path: e.path, recursive: folder }).then(function (res) {
          if (!res.ok) return errorText(res);
          flash("Deleted " + e.path + ".", "info");
          refresh();
        });
      },
    });
  }

  function renameEntry(e) {
    var start = e.path.length - e.name.length;
    var dot = e.type === "dir" ? -1 : e.name.lastIndexOf(".");
    ask({
      title: "Rename or move " + e.name,
      message: "Change the name, or the folders in front of it to move it (paths start at the workspace).",
      label: "New path",
      value: e.path,
      select: [start, dot > 0 ? start + dot : e.path.length],
      ok: "Rename",
      action: function (to) {
        to = to.replace(/^\/+/, "");
        if (to === e.path) return null;
        return call("POST", urls.apiRename, { from: e.path, to: to }).then(function (res) {
          if (!res.ok) return errorText(res);
          flash("Renamed " + e.path + " \u2192 " + res.body.to + ".", "info");
          refresh();
        });
      },
    });
  }

  document.getElementById("mkdir").addEventListener("click", function () {
    ask({
      title: "New folder",
      message: "In " + (state.path || "the workspace") + ".",
      label: "Name",
      value: "",
      ok: "Create",
      action: function (name) {
        return call("POST", urls.apiMkdir, { path: join(state.path, name) }).then(function (res) {
          if (!res.ok) return errorText(res);
          refresh();
        });
      },
    });
  });

  document.getElementById("refresh").addEventListener("click", function () {
    load(state.path, {});
  });

  var sizesButton = document.getElementById("sizes");
  sizesButton.addEventListener("click", function () {
    var path = state.path;
    sizesButton.disabled = true;
    sizesButton.classList.add("working");
    call("GET", q(urls.apiSizes, { path: path }))
      .then(function (res) {
        if (!res.ok) {
          flash(errorText(res), "error");
          return;
        }
        if (path !== state.path) return;
        Object.keys(res.body.sizes).forEach(function (name) {
          state.sizes[join(path, name)] = res.body.sizes[name];
        });
        if (state.data) renderRows(state.data.entries, state.data.parent);
        if (!res.body.complete) flash("Some folders are too big to add up in time: their sizes are at least what is shown.", "info");
      })
      .catch(function (e) {
        flash(UI.unreachable(e), "error");
      })
      .then(function () {
        sizesButton.disabled = false;
        sizesButton.classList.remove("working");
      });
  });

  // --- previews --------------------------------------------------------------------------------------
  var preview = document.getElementById("fm-preview");
  var previewBody = field(preview, "body");
  var previewReload = field(preview, "reload");
  var previewEntry = null;

  function closePreview() {
    previewBody.textContent = ""; // stops a playing video
    previewEntry = null;
    if (preview.open) preview.close();
  }
  field(preview, "close").addEventListener("click", closePreview);
  preview.addEventListener("close", function () {
    previewBody.textContent = "";
    previewEntry = null;
  });
  preview.addEventListener("click", function (ev) {
    if (ev.target === preview) closePreview(); // a click on the backdrop
  });
  previewReload.addEventListener("click", function () {
    if (previewEntry) loadText(previewEntry);
  });

  function loadText(e) {
    var meta = field(preview, "meta");
    setText(meta, "loading\u2026");
    return call("GET", q(urls.apiText, { path: e.path })).then(function (res) {
      if (previewEntry !== e) return;
      previewBody.textContent = "";
      if (!res.ok) {
        setText(meta, "");
        var p = document.createElement("p");
        p.className = "note note-error";
        p.textContent = errorText(res);
        previewBody.appendChild(p);
        return;
      }
      var b = res.body;
      setText(
        meta,
        (b.truncated ? "last " + humanBytes(b.size - b.start) + " of " : "") + humanBytes(b.size) + (b.binary ? " \u00b7 binary data" : "")
      );
      var pre = document.createElement("pre");
      pre.className = "log fm-text";
      pre.dataset.testid = "preview-text";
      pre.textContent = b.text;
      previewBody.appendChild(pre);
      pre.scrollTop = pre.scrollHeight; // a log: the end is what matters
    });
  }

  function openPreview(e) {
    previewEntry = e;
    setText(field(preview, "title"), e.name);
    setText(field(preview, "meta"), e.size !== null && e.size !== undefined ? humanBytes(e.size) : "");
    field(preview, "download").setAttribute("href", q(urls.apiDownload, { path: e.path }));
    setHidden(previewReload, e.kind !== "text");
    previewBody.textContent = "";
    var src = q(urls.apiRaw, { path: e.path });
    var el;
    if (e.kind === "image") {
      el = document.createElement("img");
      el.alt = e.name;
      el.src = src;
    } else if (e.kind === "video") {
      el = document.createElement("video");
      el.controls = true;
      el.preload = "metadata";
      el.src = src;
    } else if (e.kind === "audio") {
      el = document.createElement("audio");
      el.controls = true;
      el.preload = "metadata";
      el.src = src;
    }
    if (el) {
      el.className = "fm-media";
      el.dataset.testid = "preview-media";
      previewBody.appendChild(el);
    } else {
      loadText(e);
    }
    preview.showModal();
  }

  // --- uploads ---------------------------------------------------------------------------------------
  var uploadsBox = document.getElementById("uploads");
  var uploadList = document.getElementById("upload-list");
  var uploadTemplate = document.getElementById("fm-upload-template");
  var queue = [];
  var pumping = false;

  function setUploadState(item, st, message) {
    item.state = st;
    item.el.dataset.state = st;
    var badge = field(item.el, "state");
    badge.dataset.state = { uploading: "downloading", committing: "verifying", done: "done", failed: "failed", cancelled: "available", skipped: "available" }[st] || "queued";
    setText(badge, st);
    if (message !== undefined) setText(field(item.el, "message"), message);
    if (st !== "uploading") setText(field(item.el, "speed"), "");
    setHidden(field(item.el, "cancel"), !(st === "queued" || st === "uploading"));
  }

  function showProgress(item, sent) {
    var size = item.file.size;
    var bar = field(item.el, "bar");
    var pct = size ? Math.floor((1000 * sent) / size) / 10 : 100;
    setProgress(bar, pct);
    setText(field(item.el, "bytes"), humanBytes(sent) + " / " + humanBytes(size));
    var elapsed = (Date.now() - item.started) / 1000;
    var rate = elapsed > 0.5 ? (sent - item.startOffset) / elapsed : 0;
    setText(field(item.el, "speed"), item.state === "uploading" && rate > 0 ? humanSpeed(rate) : "");
  }

  function enqueue(files) {
    var folder = state.path;
    Array.prototype.forEach.call(files, function (file) {
      var el = uploadTemplate.content.querySelector(".fm-upload").cloneNode(true);
      var item = { file: file, folder: folder, path: join(folder, file.name), el: el, state: "queued", overwrite: false, xhr: null };
      setText(field(el, "name"), file.name);
      setText(field(el, "dest"), "\u2192 " + (folder || rootName()) + "/");
      el.dataset.name = file.name;
      field(el, "cancel").addEventListener("click", function () {
        cancelUpload(item);
      });
      setUploadState(item, "queued", "");
      showProgress(item, 0);
      uploadList.appendChild(el);
      queue.push(item);
    });
    setHidden(uploadsBox, false);
    pump();
  }

  function cancelUpload(item) {
    item.cancelled = true;
    if (item.xhr) item.xhr.abort();
    if (item.state === "queued") setUploadState(item, "cancelled", "");
  }

  document.getElementById("uploads-clear").addEventListener("click", function () {
    queue = queue.filter(function (item) {
      var finished = ["done", "failed", "cancelled", "skipped"].indexOf(item.state) !== -1;
      if (finished) item.el.remove();
      return !finished;
    });
    setHidden(uploadsBox, queue.length === 0);
  });

  function pump() {
    if (pumping) return;
    var item = null;
    for (var i = 0; i < queue.length; i++) {
      if (queue[i].state === "queued" && !queue[i].cancelled) {
        item = queue[i];
        break;
      }
    }
    if (!item) return;
    pumping = true;
    uploadOne(item)
      .catch(function (e) {
        setUploadState(item, "failed", e && e.message ? e.message : String(e));
      })
      .then(function () {
        pumping = false;
        if (item.folder === state.path) refresh();
        pump();
      });
  }

  function sleep(ms) {
    return new Promise(function (r) {
      setTimeout(r, ms);
    });
  }

  function openUpload(item) {
    var f = item.file;
    return call("POST", urls.apiUpload, { path: item.path, size: f.size, key: String(f.lastModified || ""), overwrite: item.overwrite });
  }

  // Open (or resume); asks before replacing an existing file. Resolves to the upload, or null if skipped.
  function start(item) {
    return openUpload(item).then(function (res) {
      if (res.ok) return res.body;
      if (res.status === 409 && res.body.exists && !item.overwrite) {
        return ask({
          title: "Replace " + item.file.name + "?",
          message: item.path + " already exists. Replace it with the file being uploaded?",
          ok: "Replace",
          danger: true,
        }).then(function (yes) {
          if (!yes) return null;
          item.overwrite = true;
          return start(item);
        });
      }
      throw new Error(errorText(res));
    });
  }

  function putChunk(item, up, offset, blob) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      item.xhr = xhr;
      xhr.open("PUT", urls.apiUpload + "/" + encodeURIComponent(up.id) + "?offset=" + offset);
      xhr.setRequestHeader("X-CSRFToken", UI.csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = function (ev) {
        showProgress(item, offset + ev.loaded);
      };
      function done(status) {
        item.xhr = null;
        var data = {};
        try {
          data = JSON.parse(xhr.responseText || "{}") || {};
        } catch (e) {
          data = {};
        }
        resolve({ ok: status >= 200 && status < 300, status: status, body: data });
      }
      xhr.onload = function () {
        done(xhr.status);
      };
      xhr.onerror = function () {
        done(0);
      };
      xhr.onabort = function () {
        done(-1);
      };
      xhr.send(blob);
    });
  }

  function uploadOne(item) {
    var f = item.file;
    setUploadState(item, "uploading", "");
    item.started = Date.now();
    item.startOffset = 0;
    return start(item).then(function (up) {
      if (!up) {
        setUploadState(item, "skipped", "kept the existing file");
        return;
      }
      var offset = up.offset;
      var chunk = up.chunk_size || 32 * 1024 * 1024;
      var failures = 0;
      item.startOffset = offset;
      item.started = Date.now();
      if (offset > 0) setText(field(item.el, "message"), "resumed at " + humanBytes(offset));
      showProgress(item, offset);

      function step() {
        if (item.cancelled) {
          return call("DELETE", urls.apiUpload + "/" + encodeURIComponent(up.id)).then(function () {
            setUploadState(item, "cancelled", "");
          });
        }
        if (offset >= f.size) return commit();
        var end = Math.min(f.size, offset + chunk);
        return putChunk(item, up, offset, f.slice(offset, end)).then(function (res) {
          if (res.ok) {
            offset = res.body.offset;
            failures = 0;
            showProgress(item, offset);
            return step();
          }
          if (res.status === -1 || item.cancelled) {
            item.cancelled = true;
            return step();
          }
          if (res.status === 409 && typeof res.body.offset === "number") {
            offset = res.body.offset; // the server says where the file stands
            return step();
          }
          if (res.status === 401 || res.status === 400 || res.status === 403 || res.status === 413 || res.status === 507) {
            throw new Error(errorText(res));
          }
          // Lost connection, restarted service (404: upload unknown), temporary file gone (410), 5xx: reopen.
          failures++;
          if (failures > RETRIES) throw new Error(res.status ? errorText(res) : "the connection keeps failing");
          setText(field(item.el, "message"), "retrying (" + failures + "/" + RETRIES + ")\u2026");
          return sleep(Math.min(1000 * Math.pow(2, failures - 1), 15000))
            .then(function () {
              return openUpload(item);
            })
            .then(function (again) {
              if (again.ok) {
                up = again.body;
                offset = up.offset;
                setText(field(item.el, "message"), "");
              }
              return step();
            });
        });
      }

      function commit() {
        setUploadState(item, "committing", "");
        return call("POST", urls.apiUpload + "/" + encodeURIComponent(up.id) + "/commit", { overwrite: item.overwrite }).then(function (res) {
          if (res.ok) {
            showProgress(item, f.size);
            setUploadState(item, "done", "");
            setText(field(item.el, "speed"), "");
            return;
          }
          if (res.status === 409 && typeof res.body.offset === "number") {
            offset = res.body.offset;
            setUploadState(item, "uploading", "");
            return step();
          }
          throw new Error(errorText(res));
        });
      }

      return step();
    });
  }

  var uploadInput = document.getElementById("upload-input");
  uploadInput.addEventListener("change", function () {
    if (uploadInput.files && uploadInput.files.length) enqueue(uploadInput.files);
    uploadInput.value = "";
  });

  window.addEventListener("beforeunload", function (ev) {
    var active = queue.some(function (item) {
      return item.state === "uploading" || item.state === "queued" || item.state === "committing";
    });
    if (active) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });

  // --- drag and drop ---------------------------------------------------------------------------------
  var drop = document.getElementById("fm-drop");
  var dragDepth = 0;
  function hasFiles(ev) {
    var types = ev.dataTransfer && ev.dataTransfer.types;
    return Boolean(types) && Array.prototype.indexOf.call(types, "Files") !== -1;
  }
  document.addEventListener("dragenter", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth++;
    setText(field(drop, "where"), (state.path || rootName()) + "/");
    setHidden(drop, false);
  });
  document.addEventListener("dragover", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", function (ev) {
    if (!hasFiles(ev)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) setHidden(drop, true);
  });
  document.addEventListener("drop", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    setHidden(drop, true);
    var dt = ev.dataTransfer;
    var files = [];
    var folders = 0;
    for (var i = 0; i < dt.files.length; i++) {
      var item = dt.items && dt.items[i];
      var entry = item && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry && entry.isDirectory) folders++;
      else files.push(dt.files[i]);
    }
    if (folders) flash("Folders cannot be dropped: create the folder here, open it, then drop its files.", "error");
    if (files.length) enqueue(files);
  });

  // --- start -----------------------------------------------------------------------------------------
  if (state.data) {
    render(state.data);
    history.replaceState({ path: state.path }, "", location.href);
  }
  schedule();
})();
