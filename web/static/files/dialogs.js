/* The in-page dialog (confirmations and names), and what the rows' buttons and "New folder" do with it:
 * rename or move, delete, new folder; previews open from here too. */
import { call, currentPath, entryOf, errorText, join, root, urls } from "./here.js";
import { refresh } from "./listing.js";
import { openPreview } from "./previews.js";

var field = UI.field, setText = UI.setText, setHidden = UI.setHidden;
var dialog = document.getElementById("fm-dialog");
var dialogForm = document.getElementById("fm-dialog-form");
var dialogState = null;

/* ask({title, message, label, value, select, ok, danger, action}) -> Promise of the value (true without an
 * input) or null if cancelled. `action(value)` may return a Promise of an error text: the dialog then stays
 * open and shows it, so a refused name can be corrected in place. */
export function ask(opts) {
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
// Escape (or anything else that closes it) cancels. The close event comes later, as a task of its own: when the
// dialog was opened again meanwhile (Cancel, then another question at once), it belongs to the earlier question,
// which is already finished, and must not close the new one.
dialog.addEventListener("close", function () {
  if (dialogState && !dialog.open) dialogState.finish(null);
});

// --- the rows' buttons ---------------------------------------------------------------------------------
root.addEventListener("click", function (ev) {
  var button = ev.target.closest("tr.fm-row button[data-act]");
  if (!button) return;
  var e = entryOf(button.closest(".fm-row").dataset.path);
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
      : e.path + (e.size !== null && e.size !== undefined ? " (" + UI.humanBytes(e.size) + ")" : "") +
        " will be deleted. This cannot be undone.",
    ok: "Delete",
    danger: true,
    action: function () {
      return call("POST", urls.apiDelete, { path: e.path, recursive: folder }).then(function (res) {
        if (!res.ok) return errorText(res);
        UI.flash("Deleted " + e.path + ".", "info");
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
        UI.flash("Renamed " + e.path + " \u2192 " + res.body.to + ".", "info");
        refresh();
      });
    },
  });
}

document.getElementById("mkdir").addEventListener("click", function () {
  var path = currentPath();
  ask({
    title: "New folder",
    message: "In " + (path || "the workspace") + ".",
    label: "Name",
    value: "",
    ok: "Create",
    action: function (name) {
      return call("POST", urls.apiMkdir, { path: join(path, name) }).then(function (res) {
        if (!res.ok) return errorText(res);
        refresh();
      });
    },
  });
});
