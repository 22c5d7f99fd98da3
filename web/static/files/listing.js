/* The listing: the server renders it (folders, breadcrumbs, sorting and the disk included); htmx opens folders
 * and orders (hx-boost), and this keeps it current: polled every 5 s while the tab is visible and no dialog is
 * open, refreshed at once after a change, and brought back on the browser's back and forward buttons.
 * Folder sizes, which the server only adds up on request, are written into the rows after every swap. */
import { call, currentPath, errorText, join, q, root, urls } from "./here.js";

var POLL_MS = 5000;

function here() {
  return location.pathname + location.search;
}

// refresh(): the listing again, now.
export var refresh = Live.poll({
  url: here,
  interval: POLL_MS,
  maxBackoff: POLL_MS,
  skip: function () {
    return Boolean(document.querySelector("dialog[open]"));
  },
  render: function (html, url) {
    if (url !== here()) return; // a folder opened meanwhile: this answer is about the one before
    Live.swap(root, html, "#files");
    showSizes();
  },
});
document.addEventListener("htmx:afterSwap", showSizes);

// Back and forward: htmx keeps no copies of pages (historyCacheSize 0); ask for the listing of the address.
document.body.addEventListener("htmx:historyCacheMiss", function (ev) {
  ev.preventDefault();
  refresh();
});

document.getElementById("refresh").addEventListener("click", function () {
  refresh();
});

// --- folder sizes --------------------------------------------------------------------------------------
var sizes = { path: null, of: Object.create(null) }; // of: folder path -> {size, complete}

function sizeText(s) {
  return (s.complete ? "" : "\u2265 ") + (s.size === 0 ? "0 B" : UI.humanBytes(s.size));
}
function showSizes() {
  if (sizes.path !== currentPath()) return;
  root.querySelectorAll('tr.fm-row[data-type="dir"]').forEach(function (tr) {
    var s = sizes.of[tr.dataset.path];
    if (s) UI.setText(tr.querySelector(".fm-size"), sizeText(s));
  });
}

var sizesButton = document.getElementById("sizes");
sizesButton.addEventListener("click", function () {
  var path = currentPath();
  sizesButton.disabled = true;
  sizesButton.classList.add("working");
  call("GET", q(urls.apiSizes, { path: path }))
    .then(function (res) {
      if (!res.ok) {
        UI.flash(errorText(res), "error");
        return;
      }
      if (path !== currentPath()) return;
      sizes = { path: path, of: Object.create(null) };
      Object.keys(res.body.sizes).forEach(function (name) {
        sizes.of[join(path, name)] = res.body.sizes[name];
      });
      showSizes();
      if (!res.body.complete) UI.flash("Some folders are too big to add up in time: their sizes are at least what is shown.", "info");
    })
    .catch(function (e) {
      UI.flash(UI.unreachable(e), "error");
    })
    .then(function () {
      sizesButton.disabled = false;
      sizesButton.classList.remove("working");
    });
});
