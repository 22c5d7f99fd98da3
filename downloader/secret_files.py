"""Secrets generated once and kept in the state folder (the UI password, the session key, the Jupyter token).

Several processes may create one at the same moment: the pods of a fleet starting together on one network volume,
each with its service and its entrypoint. Exactly one value must win, every process must use that one, and none
may ever read a half-written file: an empty password would let anyone in. So the file is written whole under a
temporary name, then hard-linked to its name, which fails (EEXIST) when another process was first; the loser
reads the winner's file instead of overwriting it. A filesystem without hard links gets an exclusive create and one
small write; a reader waits while the file is empty (not written yet) or not visible yet through its mount.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from .errors import DownloaderError

WAIT_SECONDS = 30.0  # how long a reader waits for another process to finish writing the file
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}  # link(2) not offered here


def read_or_create(path: Path, make: Callable[[], str], *, wait: float | None = None,
                   pause: Callable[[], None] = lambda: time.sleep(0.02)) -> tuple[str, bool]:
    """The secret kept in `path`, or `make()`'s value written there (owner-only) when there is none; and whether
    this call created it. Another process creating it at the same moment wins or loses whole: the loser returns
    the winner's value, waiting for it up to `wait` seconds (WAIT_SECONDS); `pause` is called while it waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = _read(path)
    if value:
        return value, False
    if value is None:  # no file: try to create it
        mine = make().strip()
        if not mine or "\n" in mine:
            raise ValueError("a secret must be one non-empty line")
        if _create(path, mine):
            return mine, True
    return _wait_for(path, WAIT_SECONDS if wait is None else wait, pause), False


def _read(path: Path) -> str | None:
    """The file's value; "" while it is empty (created, not written yet); None when there is no file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _create(path: Path, value: str) -> bool:
    """Put `value` in `path` unless another process did first (False then)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # whole on the disk before any other process can find it under its name
        try:
            os.link(temp, path)  # atomic, and never replaces a file another process made
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
    finally:
        temp.unlink(missing_ok=True)
    return _create_in_place(path, value)


def _create_in_place(path: Path, value: str) -> bool:
    """Without hard links: an exclusive create, then one small write that readers wait for (the file is empty until
    then). FUSE mounts may answer EEXIST for a file another mount is creating: that process won."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _wait_for(path: Path, wait: float, pause: Callable[[], None]) -> str:
    """Another process is creating `path`: its value once the file is there and written, within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        value = _read(path)
        if value:
            return value
        if time.monotonic() > deadline:
            state = "still empty" if value == "" else "gone"
            raise DownloaderError(
                f"{path} is {state} after {wait:.0f} s: another process began creating it and did not finish; "
                "delete it and start again"
            )
        pause()
