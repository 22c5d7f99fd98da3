"""The file manager's changes: new folder, rename or move, delete; each checked against the rules first."""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

from flask import jsonify

from downloader.files import fsync_dir

from .files_rules import (
    ApiError,
    confine,
    exists,
    flag,
    json_body,
    no_writes_into_state,
    os_errors,
    parent_dir,
    protected,
    refuse_busy,
    rename_noreplace,
    under,
)
from .files_upload import forget_uploads_under


@os_errors
def api_mkdir() -> Any:
    """{path}: a new folder (its parent must exist)."""
    res = confine(json_body().get("path"))
    if res.is_root or exists(res.path):
        raise ApiError(409, f"{res.rel or '(the workspace)'!r} already exists")
    no_writes_into_state(res)
    parent_dir(res)
    os.mkdir(res.path)
    return jsonify(path=res.rel), 201


@os_errors
def api_rename() -> Any:
    """{from, to, overwrite?}: rename or move a file or folder; `to` is the new path (relative to the workspace)."""
    body = json_body()
    if "from" not in body or "to" not in body:
        raise ApiError(400, "send from and to (paths relative to the workspace)")
    src, dst = confine(body["from"]), confine(body["to"])
    overwrite = flag(body, "overwrite")
    why = protected(src)
    if why:
        raise ApiError(403, why)
    if dst.is_root:
        raise ApiError(409, "the workspace root already exists: give the new path including the name")
    no_writes_into_state(dst)
    if not exists(src.path):
        raise ApiError(404, f"{src.rel!r} does not exist")
    if src.path == dst.path:
        raise ApiError(400, f"{src.rel!r} is already there")
    if src.path.is_dir() and not src.path.is_symlink() and under(str(dst.path), str(src.path)):
        raise ApiError(400, f"cannot move the folder {src.rel!r} into itself ({dst.rel!r})")
    refuse_busy(src, "move")
    refuse_busy(dst, "replace")
    parent_dir(dst)
    if exists(dst.path):
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
            rename_noreplace(src.path, dst.path)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise ApiError(409, f"cannot move {src.rel!r} to another filesystem ({dst.rel!r})") from None
        if e.errno == errno.EEXIST:
            raise ApiError(409, f"{dst.rel!r} already exists (send overwrite: true to replace it)", exists=True) from None
        raise
    fsync_dir(dst.path.parent)
    return jsonify(**{"from": src.rel, "to": dst.rel})



@os_errors
def api_delete() -> Any:
    """{path, recursive?}: delete a file, a symbolic link (never its target) or a folder (recursive: non-empty)."""
    body = json_body()
    res = confine(body.get("path"))
    recursive = flag(body, "recursive")
    why = protected(res)
    if why:
        raise ApiError(403, why)
    if not exists(res.path):
        raise ApiError(404, f"{res.rel!r} does not exist")
    refuse_busy(res, "delete")
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
    forget_uploads_under(str(res.path))
    return jsonify(path=res.rel, deleted=kind)

