/* Previews in a dialog: images, video and audio from /api/files/raw (which serves only those types inline),
 * anything else as the tail of the file, as text. */
import { call, errorText, q, urls } from "./here.js";

var field = UI.field, setText = UI.setText, humanBytes = UI.humanBytes;
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

// e: a listing entry (name, path, size, kind)
export function openPreview(e) {
  previewEntry = e;
  setText(field(preview, "title"), e.name);
  setText(field(preview, "meta"), e.size !== null && e.size !== undefined ? humanBytes(e.size) : "");
  field(preview, "download").setAttribute("href", q(urls.apiDownload, { path: e.path }));
  UI.setHidden(previewReload, e.kind !== "text");
  previewBody.textContent = "";
  var src = q(urls.apiRaw, { path: e.path });
  var el;
  if (e.kind === "image") {
    el = document.createElement("img");
    el.alt = e.name;
    el.src = src;
  } else if (e.kind === "video" || e.kind === "audio") {
    el = document.createElement(e.kind);
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
