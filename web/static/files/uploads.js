/* Uploads: each file is opened with POST /api/files/upload, sent as PUT chunks of the size the server asks for
 * (the service's WSGI server buffers each request body, so a chunk, never the whole file, is in flight), then
 * committed. A cut connection or a restarted service is picked up where the server says the file stands; an
 * existing file is replaced only after asking. Files come from the picker or are dropped anywhere on the page. */
import { call, currentPath, errorText, join, rootName, urls } from "./here.js";
import { ask } from "./dialogs.js";
import { refresh } from "./listing.js";

var RETRIES = 6; // attempts per chunk before an upload is marked failed
var humanBytes = UI.humanBytes, humanSpeed = UI.humanSpeed;
var setText = UI.setText, setHidden = UI.setHidden, setProgress = UI.setProgress, field = UI.field;

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
  var folder = currentPath();
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
      if (item.folder === currentPath()) refresh();
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
  setText(field(drop, "where"), (currentPath() || rootName()) + "/");
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
  if (folders) UI.flash("Folders cannot be dropped: create the folder here, open it, then drop its files.", "error");
  if (files.length) enqueue(files);
});
