"""How the state database's SQLite connections are set up: the journal mode by filesystem, and waits for locks.

Several processes share one state database: the service, the CLI, the entrypoint, and on a RunPod network volume
the processes of other pods too. Measured on a real MooseFS mounted twice (two pods, one volume): `flock` works
across the mounts; WAL does not work (its index lives in shared memory that only one host sees: mount B kept
reading 1 row after five committed inserts on mount A). So WAL on a local disk (readers never wait for the
writer), the rollback journal (`DELETE`) where other machines share the folder.

The rollback journal alone is not enough there: MooseFS invalidates another mount's cached pages of a file held
open asynchronously, so under load a connection kept open read pages older than the last commit it had just waited
for (measured: 5-11 stale reads in 1000 under CPU load; SQLite then lost other pods' commits and once broke an
index). A fresh open() is coherent (0 stale in 1000). So on a shared filesystem each transaction takes a lock
file's `flock` first (global across mounts), then opens the database afresh, and closes it before letting go:
one transaction at a time across the fleet, each reading what the last one wrote.

A lock held by another process is waited for twice: SQLite's busy timeout, then a retry of the statement or the
COMMIT (SQLite returns "database is locked" at once where waiting could deadlock, and after its timeout), so that
this message never reaches a person unless the database stays locked for minutes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from downloader.fsinfo import filesystem_of

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 30.0  # SQLite's own wait for a lock, in each attempt
LOCKED_RETRY_SECONDS = 180.0  # how long attempts go on before "database is locked" is let through
_announced: set[Path] = set()  # folders whose journal mode this process has logged
T = TypeVar("T")


def journal_mode_for(folder: Path) -> str:
    """"WAL" for a folder on a local disk; "DELETE" (the rollback journal) on a FUSE or network filesystem, and
    when the filesystem cannot be told (the rollback journal is right everywhere, WAL only on a local disk)."""
    try:
        kind = filesystem_of(folder)
    except OSError as e:
        log.warning("cannot tell which filesystem %s is on (%s): using SQLite's rollback journal", folder, e)
        return "DELETE"
    mode = "DELETE" if kind.shared else "WAL"
    if folder not in _announced:
        _announced.add(folder)
        log.log(logging.INFO if kind.shared else logging.DEBUG,
                "state database in %s on %s: SQLite journal_mode=%s", folder, kind.name, mode)
    return mode


def apply_pragmas(dbapi_conn: sqlite3.Connection, journal_mode: str) -> None:
    """Per-connection settings. On the rollback journal every COMMIT is synced (FULL): a pod that vanishes
    mid-commit leaves a journal the next opener rolls back from; WAL is consistent after a crash with NORMAL."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    cur.execute(f"PRAGMA journal_mode={journal_mode}")
    cur.execute("PRAGMA synchronous=NORMAL" if journal_mode == "WAL" else "PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def is_locked(error: BaseException) -> bool:
    """Whether `error` is SQLite's "database is locked" (SQLITE_BUSY) or "database table is locked"."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "is locked" in str(error)


def retry_locked(attempt: Callable[[], T], what: str) -> T:
    """Run `attempt` again while it fails with a lock another process holds, for up to LOCKED_RETRY_SECONDS.
    Safe for a single statement (a failed one changes nothing) and for COMMIT (the transaction stays open)."""
    deadline = time.monotonic() + LOCKED_RETRY_SECONDS
    delay, warned = 0.02, False
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as e:
            if not is_locked(e) or time.monotonic() + delay > deadline:
                raise
            if not warned:
                warned = True
                log.warning("the state database is locked by another process (%s); waiting for it", what[:60])
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


class RetryingCursor(sqlite3.Cursor):
    """A cursor whose statements wait out other processes' locks (see `retry_locked`)."""

    def execute(self, sql: str, parameters: Any = (), /) -> RetryingCursor:  # type: ignore[override]
        return retry_locked(lambda: sqlite3.Cursor.execute(self, sql, parameters), sql)  # type: ignore[return-value]

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> RetryingCursor:  # type: ignore[override]
        rows = list(seq_of_parameters)  # an iterator could not be replayed
        return retry_locked(lambda: sqlite3.Cursor.executemany(self, sql, rows), sql)  # type: ignore[return-value]


class RetryingConnection(sqlite3.Connection):
    """The DB-API connection the engine uses: retrying cursors, and a COMMIT that waits out readers' locks."""

    on_close: Callable[[], None] | None = None  # what to let go once closed (the volume lock)

    def close(self) -> None:
        try:
            super().close()
        finally:
            release, self.on_close = self.on_close, None
            if release is not None:
                release()

    def cursor(self, factory: Any = RetryingCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def commit(self) -> None:
        retry_locked(lambda: sqlite3.Connection.commit(self), "COMMIT")


class VolumeLock:
    """The flock that makes transactions on a shared filesystem one at a time, across pods and in this process.
    Re-entrant in a thread (a session that opens another inside it, as claims do, must not wait for itself)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.RLock()  # this process's threads, one at a time
        self._depth = 0
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock, waiting (bounded by LOCKED_RETRY_SECONDS) for other processes and threads."""
        if not self._local.acquire(timeout=LOCKED_RETRY_SECONDS):
            raise sqlite3.OperationalError(f"database is locked: {self.path} held in this process")
        try:
            if self._depth == 0:
                self._fd = self._flock()
            self._depth += 1
        except BaseException:
            self._local.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        self._local.release()

    def _flock(self) -> int:
        fd = _open_or_create(self.path)
        try:
            retry_locked(lambda: _flock_now(fd, self.path), "the state database's lock file")
            return fd
        except BaseException:
            os.close(fd)
            raise


def _open_or_create(path: Path) -> int:
    """open(O_CREAT) of a file another mount may be creating at the same moment: through FUSE, MooseFS then
    answers EEXIST (the create lost the race), and opening the file that now exists is what was meant."""
    for _ in range(10):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


def _flock_now(fd: int, path: Path) -> None:
    deadline, delay = time.monotonic() + BUSY_TIMEOUT_SECONDS, 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"database is locked: another process holds {path.name}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def shared_connector(db_path: Path) -> Callable[[], sqlite3.Connection]:
    """Connections for a database on a shared filesystem: each opened afresh under the volume lock, which its
    close() releases (the engine's pool must not keep them: NullPool)."""
    lock = VolumeLock(db_path.with_name(db_path.name + "-lock"))

    def connect() -> sqlite3.Connection:
        lock.acquire()
        try:
            conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False,
                                   factory=RetryingConnection)
        except BaseException:
            lock.release()
            raise
        conn.on_close = lock.release
        return conn

    return connect
