"""The file manager: browse, upload, download, organise the workspace ($WORKSPACE) from the web UI.

Every path the API receives is relative to the workspace root and goes through `safepath.resolve()` first.
Errors are JSON `{"error": "..."}` with a 4xx status, like the rest of the API.

Uploads are chunked, because waitress spools each request body to a temporary file before the app sees it:
  POST   /api/files/upload               {path, size, overwrite?, key?} -> open (or resume) under a temporary name
  PUT    /api/files/upload/<id>?offset=N raw bytes                      -> write one chunk at `offset`
  POST   /api/files/upload/<id>/commit   {overwrite?}                   -> check the size, rename into place
  DELETE /api/files/upload/<id>                                         -> give up, delete the temporary file
The temporary file is `.<name>.upload-<id>` next to the target (a dot file with a suffix no loader knows), so a cut
upload never leaves a half file under the real name; opening the same upload again resumes it.
"""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request, send_file
from werkzeug.exceptions import ClientDisconnected

from downloader.config import SECRET_STATE_FILES
from downloader.files import fsync_dir

from . import service
from .safepath import PathError, Resolved, resolve

bp = Blueprint("files", __name__)

CHUNK_SIZE = 32 << 20  # what the page sends per PUT (app.config FILES_UPLOAD_CHUNK overrides)
IO_BUFFER = 1 << 20  # bytes read from the request and written at a time
TEXT_TAIL = 64 << 10  # default bytes of a text preview (the end of the file: logs)
TEXT_TAIL_MAX = 1 << 20
SIZES_SECONDS = 10.0  # time budget of one folder-size walk (app.config FILES_SIZES_SECONDS overrides)
LIST_MAX = 10_000  # entries shown of one folder
STALE_UPLOAD_SECONDS = 24 * 3600  # temporary upload files older than this are swept when another upload opens
TEMP_RE = re.compile(r"^\..+\.upload-[0-9a-f]{16}$")
SORTS = ("name", "size", "mtime")

IMAGE = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".bmp"}
VIDEO = {".mp4", ".webm", ".m4v", ".mov", ".ogv"}
AUDIO = {".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".opus"}
TEXT = {
    ".txt", ".log", ".json", ".yaml", ".yml", ".md", ".py", ".sh", ".csv", ".ini", ".toml", ".cfg", ".conf",
    ".env", ".js", ".css", ".html", ".xml", ".ipynb", ".out", ".err",
}
# Served inline (previews) only as these types; anything else that is asked for inline comes as a download, so a
# file on the volume (an .html, an .svg) can never run script in the UI's origin.
INLINE_TYPES = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "video/mp4", "video/webm", "video/quicktime", "video/ogg", "video/x-m4v",
    "audio/mpeg", "audio/wav", "audio/x-wav", "audio/ogg", "audio/flac", "audio/mp4", "audio/x-m4a", "audio/opus",
}
RAW_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


class ApiError(Exception):
    """Answered as {"error": message, **extra} with `status`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@bp.errorhandler(PathError)
def _path_error(e: PathError) -> Any:
    return jsonify(error=str(e)), e.status


@bp.errorhandler(ApiError)
def _api_error(e: ApiError) -> Any:
    return jsonify(error=str(e), **e.extra), e.status


def _os_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """An OSError in a view becomes a JSON error (permission: 403, missing: 404, full: 507, else 409)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except OSError as e:
            status = {
                errno.EACCES: 403, errno.EPERM: 403, errno.EROFS: 403, errno.ENOENT: 404,
                errno.ENOSPC: 507, errno.EDQUOT: 507,
            }.get(e.errno or 0, 409)
            name = os.path.basename(e.filename) if isinstance(e.filename, str) else ""
            return jsonify(error=f"{name + ': ' if name else ''}{e.strerror or e}"), status

    return wrapper


# --- the rules -----------------------------------------------------------------------------------------------
def root() -> Path:
    return service().settings.workspace


def confine(rel: object) -> Resolved:
    """Every route's one way from an API path to the filesystem."""
    if rel is None:
        raise PathError("give a path (relative to the workspace)")
    return resolve(root(), rel)


def _state_dir() -> str:
    return os.path.realpath(service().settings.state_dir)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def protected(res: Resolved) -> str | None:
    """Why `res` must not be deleted or moved (the root, the downloader's state folder, what holds or is in it)."""
    if res.is_root:
        return "the workspace root itself cannot be deleted or moved"
    path, state = str(res.path), _state_dir()
    if _under(path, state):
        return f"{res.rel!r} is the downloader's state folder or inside it: it cannot be changed from here"
    if _under(state, path):
        return f"{res.rel!r} holds the downloader's state folder: it cannot be deleted or moved"
    return None


def _no_writes_into_state(res: Resolved) -> None:
    if _under(str(res.path), _state_dir()):
        raise ApiError(403, f"{res.rel!r} is inside the downloader's state folder: nothing can be written there")


def busy_map() -> dict[str, str]:
    """Files the downloader is writing (real path -> download id)."""
    return {os.path.realpath(p): i for p, i in service().in_progress().items()}


def busy(res: Resolved, busy_paths: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(path, download id) of an in-progress download file at `res` or under it, if any."""
    busy_paths = busy_map() if busy_paths is None else busy_paths
    path = str(res.path)
    for p, download_id in busy_paths.items():
        if _under(p, path):
            return p, download_id
    return None


def _refuse_busy(res: Resolved, verb: str) -> None:
    hit = busy(res)
    if hit:
        p, download_id = hit
        where = "" if p == str(res.path) else f" ({os.path.basename(p)} inside it)"
        raise ApiError(
            409,
            f"cannot {verb} {res.rel!r}: download {download_id!r} is still writing it{where} (or will resume it); "
            "cancel that download on the Downloads page first",
            download_id=download_id,
        )


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object (Content-Type: application/json)")
    return body


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _parent_dir(res: Resolved) -> Path:
    parent = res.path.parent
    if not parent.is_dir():
        where = res.rel.rsplit("/", 1)[0] if "/" in res.rel else "(the workspace)"
        raise ApiError(404, f"folder {where!r} does not exist")
    return parent


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
        if _under(p, own):
            info["in_progress"] = download_id
            break
    if not link and (_under(own, state) or _under(state, own)):
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
    busy_paths, state = busy_map(), _state_dir()
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
    return render_template("files.html", data=data, error=error, utc_iso=_utc_iso, utc_short=_utc_short), status


def _utc_iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _utc_short(t: float) -> str:
    """The text the page shows (files.js writes the same)."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


@bp.get("/api/files/list")
@_os_errors
def api_list() -> Any:
    args = request.args
    return jsonify(listing(args.get("path", ""), args.get("sort", "name"), args.get("order", "asc")))


@bp.get("/api/files/sizes")
@_os_errors
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


# --- reading --------------------------------------------------------------------------------------------------
def _a_file(rel: object) -> Resolved:
    res = confine(rel)
    if not res.real.exists():
        raise ApiError(404, f"{res.rel or '(the workspace)'!r} does not exist")
    if res.real.is_dir():
        raise ApiError(400, f"{res.rel or '(the workspace)'!r} is a folder: pick a file")
    if not res.real.is_file():
        raise ApiError(400, f"{res.rel!r} is not a regular file")
    if res.real.name in SECRET_STATE_FILES and _under(str(res.real), _state_dir()):
        raise ApiError(403, f"{res.rel!r} holds a secret (a password, token or key): it is not served")
    return res


@bp.get("/api/files/download")
@_os_errors
def api_download() -> Any:
    """The file as an attachment; HTTP Range (resume) and conditional requests are answered."""
    res = _a_file(request.args.get("path"))
    response = send_file(res.real, as_attachment=True, download_name=res.name, conditional=True, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/api/files/raw")
@_os_errors
def api_raw() -> Any:
    """The file inline, for previews (images, video with seeking, audio); other types come as a download."""
    res = _a_file(request.args.get("path"))
    mime = mimetypes.guess_type(res.name)[0] or "application/octet-stream"
    inline = mime in INLINE_TYPES
    response = send_file(
        res.real,
        mimetype=mime if inline else "application/octet-stream",
        as_attachment=not inline,
        download_name=res.name,
        conditional=True,
        max_age=0,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = RAW_CSP
    return response


@bp.get("/api/files/text")
@_os_errors
def api_text() -> Any:
    """The end of a file as text (logs): the last `bytes` bytes, from the first full line, decoded leniently."""
    res = _a_file(request.args.get("path"))
    raw = request.args.get("bytes", str(TEXT_TAIL))
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "bytes must be a positive whole number")
    want = min(int(raw), TEXT_TAIL_MAX)
    with open(res.real, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        start = max(0, size - want)
        fh.seek(start)
        data = fh.read(want)
    if start > 0:
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data, start = data[cut + 1 :], start + cut + 1
    return jsonify(
        path=res.rel,
        size=size,
        start=start,
        truncated=start > 0,
        binary=b"\x00" in data,
        text=data.decode("utf-8", "replace"),
    )


# --- changing -------------------------------------------------------------------------------------------------
@bp.post("/api/files/mkdir")
@_os_errors
def api_mkdir() -> Any:
    """{path}: a new folder (its parent must exist)."""
    res = confine(_body().get("path"))
    if res.is_root or _exists(res.path):
        raise ApiError(409, f"{res.rel or '(the workspace)'!r} already exists")
    _no_writes_into_state(res)
    _parent_dir(res)
    os.mkdir(res.path)
    return jsonify(path=res.rel), 201


@bp.post("/api/files/rename")
@_os_errors
def api_rename() -> Any:
    """{from, to, overwrite?}: rename or move a file or folder; `to` is the new path (relative to the workspace)."""
    body = _body()
    if "from" not in body or "to" not in body:
        raise ApiError(400, "send from and to (paths relative to the workspace)")
    src, dst = confine(body["from"]), confine(body["to"])
    overwrite = _flag(body, "overwrite")
    why = protected(src)
    if why:
        raise ApiError(403, why)
    if dst.is_root:
        raise ApiError(409, "the workspace root already exists: give the new path including the name")
    _no_writes_into_state(dst)
    if not _exists(src.path):
        raise ApiError(404, f"{src.rel!r} does not exist")
    if src.path == dst.path:
        raise ApiError(400, f"{src.rel!r} is already there")
    if src.path.is_dir() and not src.path.is_symlink() and _under(str(dst.path), str(src.path)):
        raise ApiError(400, f"cannot move the folder {src.rel!r} into itself ({dst.rel!r})")
    _refuse_busy(src, "move")
    _refuse_busy(dst, "replace")
    _parent_dir(dst)
    if _exists(dst.path):
        if dst.path.is_dir() and not dst.path.is_symlink():
            raise ApiError(409, f"{dst.rel!r} is an existing folder: give the new path including the name")
        if not overwrite:
            raise ApiError(409, f"{dst.rel!r} already exists (send overwrite: true to replace it)", exists=True)
        if src.path.is_dir() and not src.path.is_symlink():
            raise ApiError(409, f"cannot replace the file {dst.rel!r} with a folder")
    try:
        if overwrite:
            os.replace(src.path, dst.path)
        else:
            _rename_noreplace(src.path, dst.path)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise ApiError(409, f"cannot move {src.rel!r} to another filesystem ({dst.rel!r})") from None
        if e.errno == errno.EEXIST:
            raise ApiError(409, f"{dst.rel!r} already exists (send overwrite: true to replace it)", exists=True) from None
        raise
    fsync_dir(dst.path.parent)
    return jsonify(**{"from": src.rel, "to": dst.rel})


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename without ever replacing: a hard link fails atomically if `dst` exists; folders use a checked rename."""
    if not src.is_dir() or src.is_symlink():
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise
            # No hard links here (some filesystems, folders): check, then rename.
        else:
            os.unlink(src)
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    os.rename(src, dst)


@bp.post("/api/files/delete")
@_os_errors
def api_delete() -> Any:
    """{path, recursive?}: delete a file, a symbolic link (never its target) or a folder (recursive: non-empty)."""
    body = _body()
    res = confine(body.get("path"))
    recursive = _flag(body, "recursive")
    why = protected(res)
    if why:
        raise ApiError(403, why)
    if not _exists(res.path):
        raise ApiError(404, f"{res.rel!r} does not exist")
    _refuse_busy(res, "delete")
    if res.path.is_symlink() or not res.path.is_dir():
        kind = "link" if res.path.is_symlink() else "file"
        os.unlink(res.path)
    else:
        kind = "folder"
        if recursive:
            shutil.rmtree(res.path)
        else:
            try:
                os.rmdir(res.path)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ApiError(409, f"the folder {res.rel!r} is not empty (send recursive: true)") from None
                raise
    _forget_uploads_under(str(res.path))
    return jsonify(path=res.rel, deleted=kind)


# --- uploads --------------------------------------------------------------------------------------------------
@dataclass
class Upload:
    id: str
    rel: str
    target: Path
    temp: Path
    size: int
    overwrite: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.time)

    def offset(self) -> int:
        try:
            return self.temp.stat().st_size
        except FileNotFoundError:
            return -1

    def as_json(self) -> dict[str, Any]:
        offset = self.offset()
        return {
            "id": self.id,
            "path": self.rel,
            "temp": self.temp.name,
            "size": self.size,
            "offset": max(offset, 0),
            "chunk_size": current_app.config.get("FILES_UPLOAD_CHUNK", CHUNK_SIZE),
        }


_registry_lock = threading.Lock()


def _upload(upload_id: str) -> Upload:
    with _registry_lock:
        up = _uploads_unlocked().get(upload_id)
    if up is None:
        raise ApiError(404, f"no open upload {upload_id!r} (finished, cancelled, or the service restarted): open it again")
    up.touched = time.time()
    return up


def _uploads_unlocked() -> dict[str, Upload]:
    """The app's open uploads (id -> Upload); call with _registry_lock held."""
    return current_app.extensions.setdefault("files.uploads", {})  # type: ignore[no-any-return]


def _forget_uploads_under(path: str) -> None:
    with _registry_lock:
        uploads = _uploads_unlocked()
        for key in [k for k, u in uploads.items() if _under(str(u.temp), path) or _under(str(u.target), path)]:
            uploads.pop(key, None)


def temp_name(name: str, upload_id: str) -> str:
    """`.<name>.upload-<id>`: hidden, and no model loader knows the suffix; shortened to fit NAME_MAX."""
    short = name
    while len(f".{short}.upload-{upload_id}".encode("utf-8", "surrogateescape")) > 255:
        short = short[:-1]
    return f".{short}.upload-{upload_id}"


def _sweep(folder: Path, keep: set[Path]) -> None:
    """Delete temporary upload files abandoned long ago in `folder`."""
    now = time.time()
    try:
        with os.scandir(folder) as it:
            for e in it:
                if (
                    TEMP_RE.match(e.name)
                    and Path(e.path) not in keep
                    and e.is_file(follow_symlinks=False)
                    and now - e.stat(follow_symlinks=False).st_mtime > STALE_UPLOAD_SECONDS
                ):
                    os.unlink(e.path)
    except OSError:
        pass


def _check_target(res: Resolved, overwrite: bool) -> None:
    if res.is_root:
        raise ApiError(400, "give the path of the file to create, including its name")
    _no_writes_into_state(res)
    if TEMP_RE.match(res.name):
        raise ApiError(400, f"{res.name!r} is a name reserved for uploads in progress")
    _refuse_busy(res, "replace")
    if _exists(res.path):
        if res.path.is_dir() and not res.path.is_symlink():
            raise ApiError(409, f"{res.rel!r} is a folder")
        if not overwrite:
            raise ApiError(409, f"{res.rel!r} already exists (send overwrite: true to replace it)", exists=True)


@bp.post("/api/files/upload")
@_os_errors
def api_upload_open() -> Any:
    """{path, size, overwrite?, key?}: open an upload (or resume the same one: same path, size and key)."""
    body = _body()
    res = confine(body.get("path"))
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(400, "size must be the file's size in bytes (a whole number)")
    key = body.get("key", "")
    if not isinstance(key, str) or len(key) > 200:
        raise ApiError(400, "key must be a short string (e.g. the file's modification time)")
    overwrite = _flag(body, "overwrite")
    _check_target(res, overwrite)
    folder = _parent_dir(res)
    upload_id = hashlib.sha256(f"{res.rel}\0{size}\0{key}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
    temp = folder / temp_name(res.name, upload_id)
    with _registry_lock:
        uploads = _uploads_unlocked()
        up = uploads.get(upload_id)
        if up is None or up.temp != temp:
            up = uploads[upload_id] = Upload(upload_id, res.rel, res.path, temp, size)
        up.overwrite = overwrite
        keep = {u.temp for u in uploads.values()}
    with _holding(up):
        have = up.offset()
        if have > size:  # not the same file after all: start again
            os.truncate(temp, 0)
            have = 0
        if size - max(have, 0) > shutil.disk_usage(folder).free:
            raise ApiError(507, f"not enough free space for {res.rel!r}", needed=size - max(have, 0))
        if have < 0:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.close(fd)
        _sweep(folder, keep)
    return jsonify(up.as_json()), (200 if have > 0 else 201)


@contextmanager
def _holding(up: Upload) -> Iterator[None]:
    """One request at a time per upload (a retried chunk must not interleave with the one it retries)."""
    if not up.lock.acquire(blocking=False):
        raise ApiError(409, f"upload {up.id} is busy (another request is writing it)")
    try:
        yield
    finally:
        up.lock.release()


def _received(up: Upload) -> int:
    """Bytes of the upload on disk; 410 if its temporary file is gone."""
    have = up.offset()
    if have < 0:
        raise ApiError(410, f"the temporary file of {up.rel!r} is gone: start the upload again")
    return have


@bp.put("/api/files/upload/<upload_id>")
@_os_errors
def api_upload_chunk(upload_id: str) -> Any:
    """Raw bytes written at ?offset=N (N: the bytes already there, or less to rewrite a chunk whose answer was lost)."""
    up = _upload(upload_id)
    raw = request.args.get("offset", "")
    if not raw.isdigit():
        raise ApiError(400, "offset must be a whole number")
    offset = int(raw)
    length = request.content_length
    if length is None:
        raise ApiError(411, "send the chunk with a Content-Length")
    if offset + length > up.size:
        raise ApiError(413, f"offset {offset} + {length} bytes goes past the declared size {up.size}")
    with _holding(up):
        have = _received(up)
        if offset > have:
            raise ApiError(409, f"offset {offset} is past the {have} bytes received so far", offset=have)
        fd = os.open(up.temp, os.O_WRONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb", buffering=0) as fh:
            if offset < have:
                fh.truncate(offset)
            fh.seek(offset)
            written = _copy_body(fh, length)
        done = offset + written
        if written < length:
            raise ApiError(400, f"the chunk was cut short ({written} of {length} bytes)", offset=done)
    return jsonify(id=up.id, offset=done, size=up.size, complete=done == up.size)


def _copy_body(fh: Any, length: int) -> int:
    """Copy the request body to `fh` through one bounded buffer; returns the bytes written."""
    stream = request.stream
    buf = bytearray(min(IO_BUFFER, max(length, 1)))
    view = memoryview(buf)
    written = 0
    while written < length:
        want = min(len(buf), length - written)
        try:
            n = stream.readinto(view[:want])  # type: ignore[attr-defined]
        except ClientDisconnected:
            break
        if not n:
            break
        mv = view[:n]
        while mv:
            mv = mv[fh.write(mv) :]
        written += n
    return written


@bp.post("/api/files/upload/<upload_id>/commit")
@_os_errors
def api_upload_commit(upload_id: str) -> Any:
    """{overwrite?}: once every byte is there, move the file to its name (atomically; never a half file).
    `overwrite` defaults to what the upload was opened with."""
    up = _upload(upload_id)
    body = request.get_json(silent=True) if request.is_json else None
    body = body if isinstance(body, dict) else {}
    overwrite = _flag(body, "overwrite") if "overwrite" in body else up.overwrite
    with _holding(up):
        have = _received(up)
        if have != up.size:
            raise ApiError(409, f"{up.rel!r} is incomplete: {have} of {up.size} bytes received", offset=have)
        res = confine(up.rel)  # again: the folders may have changed since the upload opened
        if res.path != up.target:
            raise ApiError(409, f"{up.rel!r} now resolves elsewhere: start the upload again")
        _check_target(res, overwrite)
        fd = os.open(up.temp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(up.temp, up.target)
        else:
            try:
                _rename_noreplace(up.temp, up.target)
            except FileExistsError:
                raise ApiError(
                    409, f"{up.rel!r} already exists (send overwrite: true to replace it)", exists=True
                ) from None
        fsync_dir(up.target.parent)
        with _registry_lock:
            _uploads_unlocked().pop(upload_id, None)
    return jsonify(path=up.rel, size=up.size), 201


@bp.delete("/api/files/upload/<upload_id>")
@_os_errors
def api_upload_cancel(upload_id: str) -> Any:
    """Give up an upload: its temporary file is deleted."""
    up = _upload(upload_id)
    if not up.lock.acquire(timeout=10):
        raise ApiError(409, f"upload {upload_id} is busy (another request is writing it)")
    try:
        up.temp.unlink(missing_ok=True)
        with _registry_lock:
            _uploads_unlocked().pop(upload_id, None)
    finally:
        up.lock.release()
    return jsonify(id=upload_id, path=up.rel, cancelled=True)
