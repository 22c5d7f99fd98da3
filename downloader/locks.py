"""One owner of downloads per workspace: an flock on a file in the state folder.

The kernel drops the lock when the owner dies, even by kill -9, so a stale lock cannot block a restart.
The file also records the owner's pid (and aria2's) for whoever finds it taken. A running service also says, in
`service.json`, how local clients (the CLI) reach it.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from .config import SERVICE_FILE
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

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- where a running service can be reached -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    """What `downloader serve` records for local clients: its pid, where it listens, and a per-start token that
    its web auth accepts like the password (`Authorization: Bearer`)."""

    pid: int
    host: str  # an address a local client connects to (loopback when the service listens everywhere)
    port: int
    token: str


def write_service_info(state_dir: Path, info: ServiceInfo) -> Path:
    """Write the record atomically, readable only by its owner (0600 from creation: the token never sits in a
    file others can read, not even for a moment)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SERVICE_FILE
    temp = path.with_name(f".{SERVICE_FILE}.{os.getpid()}")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(info), fh)
    os.replace(temp, path)
    return path


def remove_service_info(state_dir: Path, pid: int) -> None:
    """Remove the record on a clean stop, if it is still ours (a newer service may have replaced it)."""
    path = state_dir / SERVICE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_service_info(state_dir: Path) -> ServiceInfo | None:
    """The record of a service whose process still exists, else None (no file, unreadable JSON, a dead pid).
    Whether its port answers is the client's to check. PermissionError (another user's service) propagates."""
    try:
        data = json.loads((state_dir / SERVICE_FILE).read_text())
        info = ServiceInfo(int(data["pid"]), str(data["host"]), int(data["port"]), str(data["token"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None
    return info if pid_alive(info.pid) else None
