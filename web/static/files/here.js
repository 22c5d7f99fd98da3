/* Where the files page is: the folder the server rendered (#fm-data, which each swap brings up to date), the
 * API's addresses (data-api-* on #files), and the small helpers the other modules share. */

export var root = document.getElementById("files");
export var urls = root ? root.dataset : {};
export var call = UI.request; // (method, url, payload) -> Promise of {ok, status, body}

var cache = { text: null, data: null };
// The listing the page shows (the /api/files/list answer the server rendered it from), or null on an error page.
export function listing() {
  var el = document.getElementById("fm-data");
  if (!el) return null;
  if (el.textContent !== cache.text) cache = { text: el.textContent, data: JSON.parse(el.textContent) };
  return cache.data;
}
export function currentPath() {
  var data = listing();
  return data ? data.path : new URLSearchParams(location.search).get("path") || "";
}
export function rootName() {
  var data = listing();
  return data && data.breadcrumbs.length ? data.breadcrumbs[0].name : "workspace";
}
// The entry of a row, as the listing has it (name, path, type, size, kind, ...).
export function entryOf(path) {
  var entries = (listing() || { entries: [] }).entries;
  for (var i = 0; i < entries.length; i++) if (entries[i].path === path) return entries[i];
  return { path: path, name: baseName(path), type: "other" };
}

export function join(folder, name) {
  return folder ? folder + "/" + name : name;
}
export function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}
// url?key=value&...: values percent-encoded once, "/" kept readable (as the server's own links have it)
export function q(url, params) {
  var parts = [];
  Object.keys(params).forEach(function (k) {
    if (params[k] !== undefined && params[k] !== null) {
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(String(params[k])).replace(/%2F/g, "/"));
    }
  });
  return url + "?" + parts.join("&");
}

export function errorText(res) {
  if (res.status === 401) return "Your session ended: reload the page and log in again.";
  return UI.errorText(res);
}
