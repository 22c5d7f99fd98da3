"""The file manager's uploads, in chunks, because waitress spools each request body to a temporary file first:
  POST   /api/files/upload               {path, size, overwrite?, key?} -> open (or resume) under a temporary name
  PUT    /api/files/upload/<id>?offset=N raw bytes                      -> write one chunk at `offset`
  POST   /api/files/upload/<id>/commit   {overwrite?}                   -> check the size, rename into place
  DELETE /api/files/upload/<id>                                         -> give up, delete the temporary file
The temporary file is `.<name>.upload-<id>` next to the target (a dot file with a suffix no loader knows), so a cut
upload never leaves a half file under the real name; opening the same upload again resumes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected

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
    refuse_busy,
    rename_noreplace,
    under,
)
from .safepath import Resolved

CHUNK_SIZE = 32 << 20  # what the page sends per PUT (app.config FILES_UPLOAD_CHUNK overrides)
IO_BUFFER = 1 << 20  # bytes read from the request and written at a time
STALE_UPLOAD_SECONDS = 24 * 3600  # temporary upload files older than this are swept when another upload opens
TEMP_RE = re.compile(r"^\..+\.upload-[0-9a-f]{16}$")


@dataclass
class Upload:
    """An open upload: its temporary file next to the target, and the lock one request at a time holds."""

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


def forget_uploads_under(path: str) -> None:
    with _registry_lock:
        uploads = _uploads_unlocked()
        for key in [k for k, u in uploads.items() if under(str(u.temp), path) or under(str(u.target), path)]:
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
    no_writes_into_state(res)
    if TEMP_RE.match(res.name):
        raise ApiError(400, f"{res.name!r} is a name reserved for uploads in progress")
    refuse_busy(res, "replace")
    if exists(res.path):
        if res.path.is_dir() and not res.path.is_symlink():
            raise ApiError(409, f"{res.rel!r} is a folder")
        if not overwrite:
            raise ApiError(409, f"{res.rel!r} already exists (send overwrite: true to replace it)", exists=True)


@os_errors
def api_upload_open() -> Any:
    """{path, size, overwrite?, key?}: open an upload (or resume the same one: same path, size and key)."""
    body = json_body()
    res = confine(body.get("path"))
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(400, "size must be the file's size in bytes (a whole number)")
    key = body.get("key", "")
    if not isinstance(key, str) or len(key) > 200:
        raise ApiError(400, "key must be a short string (e.g. the file's modification time)")
    overwrite = flag(body, "overwrite")
    _check_target(res, overwrite)
    folder = parent_dir(res)
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


@os_errors
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


@os_errors
def api_upload_commit(upload_id: str) -> Any:
    """{overwrite?}: once every byte is there, move the file to its name (atomically; never a half file).
    `overwrite` defaults to what the upload was opened with."""
    up = _upload(upload_id)
    body = request.get_json(silent=True) if request.is_json else None
    body = body if isinstance(body, dict) else {}
    overwrite = flag(body, "overwrite") if "overwrite" in body else up.overwrite
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
                rename_noreplace(up.temp, up.target)
            except FileExistsError:
                raise ApiError(
                    409, f"{up.rel!r} already exists (send overwrite: true to replace it)", exists=True
                ) from None
        fsync_dir(up.target.parent)
        with _registry_lock:
            _uploads_unlocked().pop(upload_id, None)
    return jsonify(path=up.rel, size=up.size), 201


@os_errors
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
