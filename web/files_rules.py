"""The file manager's rules, shared by its views: every path confined to the workspace, what must not be changed
(the root, the downloader's state folder, files a download is writing), and errors as JSON.

Every path the API receives is relative to the workspace root and goes through `confine()` (`safepath.resolve()`)
first. Errors are JSON `{"error": "..."}` with a 4xx status, like the rest of the API: raise `ApiError`, or let an
OSError out of a view wrapped in `os_errors`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from flask import jsonify, request

from . import service
from .safepath import PathError, Resolved, resolve


class ApiError(Exception):
    """Answered as {"error": message, **extra} with `status`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra



def os_errors(view: Callable[..., Any]) -> Callable[..., Any]:
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



def root() -> Path:
    return service().settings.workspace


def confine(rel: object) -> Resolved:
    """Every route's one way from an API path to the filesystem."""
    if rel is None:
        raise PathError("give a path (relative to the workspace)")
    return resolve(root(), rel)


def state_dir() -> str:
    return os.path.realpath(service().settings.state_dir)


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def protected(res: Resolved) -> str | None:
    """Why `res` must not be deleted or moved (the root, the downloader's state folder, what holds or is in it)."""
    if res.is_root:
        return "the workspace root itself cannot be deleted or moved"
    path, state = str(res.path), state_dir()
    if under(path, state):
        return f"{res.rel!r} is the downloader's state folder or inside it: it cannot be changed from here"
    if under(state, path):
        return f"{res.rel!r} holds the downloader's state folder: it cannot be deleted or moved"
    return None


def no_writes_into_state(res: Resolved) -> None:
    if under(str(res.path), state_dir()):
        raise ApiError(403, f"{res.rel!r} is inside the downloader's state folder: nothing can be written there")


def busy_map() -> dict[str, str]:
    """Files the downloader is writing (real path -> download id)."""
    return {os.path.realpath(p): i for p, i in service().in_progress().items()}


def busy(res: Resolved, busy_paths: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(path, download id) of an in-progress download file at `res` or under it, if any."""
    busy_paths = busy_map() if busy_paths is None else busy_paths
    path = str(res.path)
    for p, download_id in busy_paths.items():
        if under(p, path):
            return p, download_id
    return None


def refuse_busy(res: Resolved, verb: str) -> None:
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


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object (Content-Type: application/json)")
    return body


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def exists(path: Path) -> bool:
    return os.path.lexists(path)


def parent_dir(res: Resolved) -> Path:
    parent = res.path.parent
    if not parent.is_dir():
        where = res.rel.rsplit("/", 1)[0] if "/" in res.rel else "(the workspace)"
        raise ApiError(404, f"folder {where!r} does not exist")
    return parent



def rename_noreplace(src: Path, dst: Path) -> None:
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
