"""What the manager loop works on right now (a Job per file), and what becomes of a job that failed: queued
again with exponential backoff, or failed once its attempts are used up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .config import Settings
from .state import DownloadState, Store, utcnow
from .verify import HashTask, PrefixHasher

S = DownloadState


@dataclass
class Job:
    """A file the loop is working on right now."""

    id: str
    dest: Path
    part: Path
    kind: str  # "download" (aria2), "existing" (hash a file found at dest), "part" (hash a finished part),
    # or "recheck" (hash a done file again: `verify`)
    size: int | None
    sha256: str | None
    gid: str | None = None
    hasher: PrefixHasher | None = None
    task: HashTask | None = None
    last_bytes: int = -1
    last_change: float = field(default_factory=time.monotonic)
    reresolves: int = 0  # times a 403 was answered by asking the hub for a fresh signed URL
    bytes_at_reresolve: int = 0  # bytes done then: a 403 with no byte since means no access, not expiry
    split: bool = True  # False: one connection, no Range (the server ignores it)

    def stop(self) -> None:
        if self.hasher is not None:
            self.hasher.cancel()
        if self.task is not None:
            self.task.cancel()


def retry_or_fail(store: Store, settings: Settings, download_id: str, message: str, retryable: bool = True) -> None:
    """Queue a download again after a delay that doubles per attempt (capped at 60 s), or mark it failed when
    the failure is not passing or the attempts are used up; a download already done is left alone."""
    row = store.get(download_id)
    if row is None or row.state == S.DONE.value:
        return
    attempts = row.attempts + 1
    if not retryable or attempts >= settings.max_attempts:
        final = message if not retryable else f"{message} (gave up after {attempts} attempts)"
        store.transition(download_id, S.FAILED, final, level="error", error=final, attempts=attempts)
        return
    delay = min(60.0, settings.retry_base_seconds * 2 ** (attempts - 1))
    store.transition(
        download_id,
        S.QUEUED,
        f"{message}: retrying in {delay:.0f} s (attempt {attempts + 1} of {settings.max_attempts})",
        level="warning",
        error=message,
        attempts=attempts,
        next_attempt_at=utcnow() + timedelta(seconds=delay),
        speed=0,
    )
