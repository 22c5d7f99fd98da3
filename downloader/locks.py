"""One owner of downloads per workspace: an flock on a file in the state folder.

The kernel drops the lock when the owner dies, even by kill -9, so a stale lock cannot block a restart.
The file also records the owner's pid (and later its port) for whoever finds it taken.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .errors import WorkspaceBusy


class WorkspaceLock:
    """Exclusive, non-blocking ownership of a state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "owner.lock"
        self._fd: int | None = None

    def acquire(self, **info: Any) -> None:
        """Take the lock or raise WorkspaceBusy naming the current owner."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = self.owner()
            raise WorkspaceBusy(
                f"another downloader (pid {owner.get('pid', '?')}) is already downloading into this workspace"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), **info}).encode(), 0)
        self._fd = fd

    def record(self, **info: Any) -> None:
        """Add facts about the owner (aria2's pid, the web port) for others to read."""
        assert self._fd is not None, "record() needs the lock"
        data = {**self.owner(), **info}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(data).encode(), 0)

    def owner(self) -> dict[str, Any]:
        """What the current owner wrote (empty if unreadable)."""
        try:
            return dict(json.loads(self.path.read_text() or "{}"))
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
