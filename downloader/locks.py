"""Who downloads into a workspace: flocks on files in the state folder, and where a running service listens.

Where the workspace's filesystem shares locks and renames between processes (a local disk, MooseFS: see
`check_sharing`), each pod's service holds only a lock of its own pod (`owner-<pod>.lock`: one service, one aria2c
per pod) and the pods share the files through claims (downloader/claims.py). Elsewhere, and for in-process
commands (`downloader fetch` with no service), one owner per workspace: `owner.lock`.
The kernel drops a lock when its owner dies, even by kill -9, so a stale lock cannot block a restart.
A lock file also records the owner's pid (and aria2's) for whoever finds it taken. A running service also says,
in `service-<pod>.json`, how local clients (the CLI) reach it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from .config import SERVICE_FILE, pod_file_part, service_file
from .errors import WorkspaceBusy

log = logging.getLogger(__name__)
WORKSPACE_LOCK = "owner.lock"


class WorkspaceLock:
    """Exclusive, non-blocking ownership of a state folder (or, with `pod`, of one pod's part of it)."""

    def __init__(self, state_dir: Path, pod: str | None = None, best_effort: bool = False) -> None:
        self.path = state_dir / (WORKSPACE_LOCK if pod is None else f"owner-{pod_file_part(pod)}.lock")
        self.pod = pod
        # On a filesystem without flock (see check_sharing) the lock cannot be had: with best_effort the owner
        # goes on without it (the service has said it runs single-pod), instead of failing forever.
        self.best_effort = best_effort
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
            where = "this workspace" if self.pod is None else f"this workspace for pod {self.pod}"
            raise WorkspaceBusy(f"another downloader (pid {owner.get('pid', '?')}) is already downloading into {where}") from None
        except OSError as e:
            if not self.best_effort:
                os.close(fd)
                raise
            log.warning("cannot lock %s (%s): going on without the lock", self.path, os.strerror(e.errno or errno.EIO))
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
            if self.pod is not None:
                # A pod's lock file is its own (pod ids are made at each start unless RunPod names the pod):
                # removed, so the state folder does not collect one per start. The workspace's stays.
                self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
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


# --- can several pods share this workspace? --------------------------------------------------------------


@dataclass(frozen=True)
class Sharing:
    """Whether the state folder's filesystem gives what pods sharing it need: locks between processes (flock)
    and atomic rename (a temp file os.replace'd over another). `reason` says what is missing, for people."""

    ok: bool
    reason: str | None = None


def check_sharing(state_dir: Path) -> Sharing:
    """Try both on a scratch file in `state_dir`. RunPod's "global" network volumes lack both: a pod there runs
    alone (the workspace lock) instead of sharing the files through claims. A lock that works on one machine
    only cannot be told from here; MooseFS (RunPod's regional network volumes) shares them."""
    state_dir.mkdir(parents=True, exist_ok=True)
    probe = state_dir / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    temp = probe.with_name(probe.name + ".new")
    missing: list[str] = []
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"old")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as e:
                missing.append(f"locks between processes (flock: {os.strerror(e.errno or errno.EIO)})")
        finally:
            os.close(fd)
        try:
            temp.write_bytes(b"new")
            os.replace(temp, probe)
            if probe.read_bytes() != b"new":
                missing.append("atomic rename (the replaced file kept its old content)")
        except OSError as e:
            missing.append(f"atomic rename ({os.strerror(e.errno or errno.EIO)})")
    except OSError as e:
        missing.append(f"a writable state folder ({e})")
    finally:
        for leftover in (probe, temp):
            try:
                leftover.unlink()
            except OSError:
                pass
    if missing:
        return Sharing(False, f"the filesystem of {state_dir} lacks {' and '.join(missing)}")
    return Sharing(True)


# --- where a running service can be reached -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    """What `downloader serve` records for local clients: its pid, where it listens, a per-start token that its
    web auth accepts like the password (`Authorization: Bearer`), and which pod it is (several pods' services
    may share one state folder; a client finds its own by asking the port on loopback)."""

    pid: int
    host: str  # an address a local client connects to (loopback when the service listens everywhere)
    port: int
    token: str
    pod: str = ""


def write_service_info(state_dir: Path, info: ServiceInfo) -> Path:
    """Write the pod's record atomically, readable only by its owner (0600 from creation: the token never sits in
    a file others can read, not even for a moment)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / service_file(info.pod)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(info), fh)
    os.replace(temp, path)
    return path


def remove_service_info(state_dir: Path, pod: str, pid: int) -> None:
    """Remove the pod's record on a clean stop, if it is still ours (a newer service may have replaced it)."""
    path = state_dir / service_file(pod)
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


def _read_record(path: Path) -> ServiceInfo | None:
    """One record, None when gone or unreadable JSON; PermissionError (another user's service) propagates."""
    try:
        data = json.loads(path.read_text())
        return ServiceInfo(int(data["pid"]), str(data["host"]), int(data["port"]), str(data["token"]),
                           str(data.get("pod") or ""))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def read_service_infos(state_dir: Path, pod: str | None = None) -> list[ServiceInfo]:
    """The records of services whose pid exists on this machine (every pod's, or only `pod`'s), newest first.
    A pid of another pod may exist here too: whether a record is this machine's is the client's to check (its
    port answers on loopback with the same pod). PermissionError (another user's service) propagates."""
    names = [service_file(pod)] if pod is not None else [SERVICE_FILE, *(p.name for p in state_dir.glob("service-*.json"))]
    paths = [state_dir / n for n in names]
    found: list[tuple[float, ServiceInfo]] = []
    for path in paths:
        info = _read_record(path)
        if info is not None and pid_alive(info.pid):
            try:
                found.append((path.stat().st_mtime, info))
            except OSError:
                continue
    return [info for _, info in sorted(found, key=lambda f: -f[0])]
