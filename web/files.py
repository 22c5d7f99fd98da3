"""The file manager: browse, upload, download, organise the workspace ($WORKSPACE) from the web UI.

This module has the blueprint with every URL of the file manager, the page and folder listings. The views live
in modules named after their job: files_read (download, previews), files_change (new folder, rename, delete),
files_upload (chunked uploads); the rules they share (paths confined to the workspace, what is protected or being
downloaded, errors as JSON) are in files_rules.

The page is rendered on the server (browsing and downloads work without JavaScript). With JavaScript, folders
and sorting open through htmx, which asks for the same page and morphs its #files part in (web/static/live.js).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request, url_for

from . import files_change, files_read, files_upload
from .files_rules import ApiError, busy_map, confine, os_errors, root, state_dir, under
from .files_upload import CHUNK_SIZE, STALE_UPLOAD_SECONDS, TEMP_RE
from .live import is_htmx, with_flash
from .safepath import PathError

# STALE_UPLOAD_SECONDS: files_upload's, also named here, where scripts and tests have always found it.
__all__ = ["STALE_UPLOAD_SECONDS", "bp", "listing", "page_url"]

bp = Blueprint("files", __name__)

SIZES_SECONDS = 10.0  # time budget of one folder-size walk (app.config FILES_SIZES_SECONDS overrides)
LIST_MAX = 10_000  # entries shown of one folder
SORTS = ("name", "size", "mtime")

IMAGE = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".bmp"}
VIDEO = {".mp4", ".webm", ".m4v", ".mov", ".ogv"}
AUDIO = {".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".opus"}
TEXT = {
    ".txt", ".log", ".json", ".yaml", ".yml", ".md", ".py", ".sh", ".csv", ".ini", ".toml", ".cfg", ".conf",
    ".env", ".js", ".css", ".html", ".xml", ".ipynb", ".out", ".err",
}


@bp.errorhandler(PathError)
def _path_error(e: PathError) -> Any:
    return jsonify(error=str(e)), e.status


@bp.errorhandler(ApiError)
def _api_error(e: ApiError) -> Any:
    return jsonify(error=str(e), **e.extra), e.status


def kind_of(name: str) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    for kind, exts in (("image", IMAGE), ("video", VIDEO), ("audio", AUDIO), ("text", TEXT)):
        if ext in exts:
            return kind
    return None



# --- listing --------------------------------------------------------------------------------------------------
def _entry(rel: str, folder: Path, e: os.DirEntry[str], busy_paths: dict[str, str], state: str) -> dict[str, Any]:
    path = f"{rel}/{e.name}" if rel else e.name
    own = str(folder / e.name)
    link = e.is_symlink()
    info: dict[str, Any] = {
        "name": e.name, "path": path, "type": "other", "size": None, "mtime": None, "link": link,
        "in_progress": None, "protected": False, "upload": bool(TEMP_RE.match(e.name)), "kind": None, "error": None,
    }
    try:
        if link:
            try:
                target = confine(path).real
            except PathError as err:
                info.update(type="blocked", error=str(err))
                return info
            try:
                st = os.stat(target)
            except OSError:
                info.update(type="broken", error="broken symbolic link")
                return info
        else:
            st = e.stat(follow_symlinks=False)
    except OSError as err:
        info["error"] = err.strerror
        return info
    if stat.S_ISDIR(st.st_mode):
        info["type"] = "dir"
    elif stat.S_ISREG(st.st_mode):
        info.update(type="file", size=st.st_size, kind=kind_of(e.name))
    info["mtime"] = st.st_mtime
    for p, download_id in busy_paths.items():
        if under(p, own):
            info["in_progress"] = download_id
            break
    if not link and (under(own, state) or under(state, own)):
        info["protected"] = True
    return info


def _sort(entries: list[dict[str, Any]], sort: str, desc: bool) -> list[dict[str, Any]]:
    def key(d: dict[str, Any]) -> tuple[Any, ...]:
        if sort == "size":
            return (d["size"] if d["size"] is not None else -1, d["name"].casefold())
        if sort == "mtime":
            return (d["mtime"] or 0, d["name"].casefold())
        return (d["name"].casefold(), d["name"])

    dirs = sorted((d for d in entries if d["type"] == "dir"), key=key, reverse=desc)
    rest = sorted((d for d in entries if d["type"] != "dir"), key=key, reverse=desc)
    return dirs + rest


def _disk(path: Path) -> dict[str, int]:
    usage = shutil.disk_usage(path)
    return {"total": usage.total, "used": usage.used, "free": usage.free}


def listing(rel: object, sort: str = "name", order: str = "asc") -> dict[str, Any]:
    """One folder: its entries (folders first), breadcrumbs and the disk's space."""
    if sort not in SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(SORTS)}")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc")
    res = confine(rel)
    if not res.real.exists():
        raise ApiError(404, f"{res.rel or '(the workspace)'!r} does not exist")
    if not res.real.is_dir():
        raise ApiError(400, f"{res.rel!r} is a file, not a folder", type="file")
    busy_paths, state = busy_map(), state_dir()
    entries, truncated = [], False
    with os.scandir(res.real) as it:
        for e in it:
            if len(entries) >= LIST_MAX:
                truncated = True
                break
            entries.append(_entry(res.rel, res.real, e, busy_paths, state))
    crumbs = [{"name": root().name or "/", "path": ""}]
    if res.rel:
        parts = res.rel.split("/")
        crumbs += [{"name": p, "path": "/".join(parts[: i + 1])} for i, p in enumerate(parts)]
    return {
        "path": res.rel,
        "parent": res.rel.rsplit("/", 1)[0] if "/" in res.rel else ("" if res.rel else None),
        "breadcrumbs": crumbs,
        "entries": _sort(entries, sort, order == "desc"),
        "sort": sort,
        "order": order,
        "truncated": truncated,
        "disk": _disk(res.real),
        "chunk_size": current_app.config.get("FILES_UPLOAD_CHUNK", CHUNK_SIZE),
    }



def page_url(path: str = "", sort: str = "name", order: str = "asc") -> str:
    """The page's address for a folder in an order, with the defaults left out (what the address bar shows)."""
    given = {"path": (path, ""), "sort": (sort, "name"), "order": (order, "asc")}
    return url_for("files.page", **{k: v for k, (v, default) in given.items() if v != default})


@bp.get("/files")
def page() -> Any:
    """Rendered on the server (browse and download work without JavaScript); files.js does the rest."""
    args = request.args
    try:
        data = listing(args.get("path", ""), args.get("sort", "name"), args.get("order", "asc"))
        error, status = None, 200
    except (PathError, ApiError) as e:
        data, error, status = None, str(e), e.status
    except OSError as e:
        data, error, status = None, f"cannot read the folder: {e.strerror}", 500
    html = render_template(
        "files.html", data=data, error=error, utc_iso=_utc_iso, utc_short=_utc_short, page_url=page_url
    )
    response = current_app.make_response((html, status))
    if error and is_htmx():  # the page's own request (a folder opened): it stays where it is and says why
        with_flash(response, error, "error")
    return response


def _utc_iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _utc_short(t: float) -> str:
    """The text the page shows for a time."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


@os_errors
def api_list() -> Any:
    args = request.args
    return jsonify(listing(args.get("path", ""), args.get("sort", "name"), args.get("order", "asc")))


@os_errors
def api_sizes() -> Any:
    """Sizes of the folders in a folder: walked without following symbolic links, within a time budget."""
    res = confine(request.args.get("path", ""))
    if not res.real.is_dir():
        raise ApiError(404 if not res.real.exists() else 400, f"{res.rel or '(the workspace)'!r} is not a folder")
    budget = float(current_app.config.get("FILES_SIZES_SECONDS", SIZES_SECONDS))
    started = time.monotonic()
    deadline = started + budget
    sizes: dict[str, dict[str, Any]] = {}
    total, complete = 0, True
    with os.scandir(res.real) as it:
        children = list(it)
    for e in children:
        try:
            if e.is_dir(follow_symlinks=False):
                size, files, done = _walk_size(e.path, deadline)
                sizes[e.name] = {"size": size, "files": files, "complete": done}
                complete &= done
                total += size
            elif not e.is_symlink():
                total += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return jsonify(
        path=res.rel, sizes=sizes, total=total, complete=complete, elapsed=round(time.monotonic() - started, 3)
    )


def _walk_size(top: str, deadline: float) -> tuple[int, int, bool]:
    """Bytes and files under `top` (no symlink followed); stops at `deadline` (complete=False)."""
    size = files = 0
    stack = [top]
    while stack:
        if time.monotonic() > deadline:
            return size, files, False
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            size += e.stat(follow_symlinks=False).st_size
                            files += 1
                    except OSError:
                        continue
        except OSError:
            continue
    return size, files, True



# Every URL of the file manager's API, and the view that answers it.
ROUTES = (
    ("GET", "/api/files/list", api_list),
    ("GET", "/api/files/sizes", api_sizes),
    ("GET", "/api/files/download", files_read.api_download),
    ("GET", "/api/files/raw", files_read.api_raw),
    ("GET", "/api/files/text", files_read.api_text),
    ("POST", "/api/files/mkdir", files_change.api_mkdir),
    ("POST", "/api/files/rename", files_change.api_rename),
    ("POST", "/api/files/delete", files_change.api_delete),
    ("POST", "/api/files/upload", files_upload.api_upload_open),
    ("PUT", "/api/files/upload/<upload_id>", files_upload.api_upload_chunk),
    ("POST", "/api/files/upload/<upload_id>/commit", files_upload.api_upload_commit),
    ("DELETE", "/api/files/upload/<upload_id>", files_upload.api_upload_cancel),
)
for _method, _rule, _view in ROUTES:
    bp.add_url_rule(_rule, view_func=_view, methods=[_method])
