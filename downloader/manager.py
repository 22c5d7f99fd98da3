"""The download loop: queued -> downloading <-> paused -> verifying -> done | failed.

One Manager per workspace (an flock in the state folder) owns the aria2c daemon. Each tick it polls the
active downloads, feeds their completed prefix to a hasher, verifies and places finished files, retries
with backoff what failed for a passing reason, and starts queued files up to the concurrency limit.
Commands from other threads (the web UI) go through a queue so only the loop touches aria2 and the jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .aria2 import (
    ERR_AUTH,
    ERR_DISK_FULL,
    ERR_HTTP_BAD,
    ERR_IO,
    ERR_NOT_FOUND,
    Aria2Daemon,
    Aria2Status,
)
from .config import Settings
from .errors import DiskSpaceError, SourceError, human_bytes
from .files import (
    control_path,
    file_size,
    free_bytes,
    part_path,
    place,
    quarantine,
    remove_partial,
)
from .locks import WorkspaceLock
from .manifest import ModelSpec, confine
from .plan import Plan
from .sources import Resolved, resolve_all
from .state import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Download,
    DownloadState,
    Store,
    utcnow,
)
from .verify import HashTask, PrefixHasher, completed_prefix

log = logging.getLogger(__name__)
S = DownloadState
MAX_RERESOLVE = 5  # fresh signed URLs per file per run before a 403 counts as a failed attempt


@dataclass
class Job:
    """A file the loop is working on right now."""

    id: str
    dest: Path
    part: Path
    kind: str  # "download" (aria2), "existing" (hash a file found at dest) or "part" (hash a finished part)
    size: int | None
    sha256: str | None
    gid: str | None = None
    hasher: PrefixHasher | None = None
    task: HashTask | None = None
    last_bytes: int = -1
    last_change: float = field(default_factory=time.monotonic)
    reresolves: int = 0

    def stop(self) -> None:
        if self.hasher is not None:
            self.hasher.cancel()
        if self.task is not None:
            self.task.cancel()


class Manager:
    """Drives downloads for one workspace; `start()`, then `run()` or `tick()`, then `close()`."""

    def __init__(self, settings: Settings, store: Store, daemon: Aria2Daemon | None = None) -> None:
        self.s = settings
        self.store = store
        self.daemon = daemon or Aria2Daemon(settings)
        self.lock = WorkspaceLock(settings.state_dir)
        self.jobs: dict[str, Job] = {}
        self.resolved: dict[str, Resolved] = {}
        self.selection: set[str] | None = None  # None: everything queued in the DB
        self._commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by commands, finished hashes and stop: the loop runs at once

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Take ownership of the workspace, start aria2c, and requeue what a crash left mid-way."""
        self.lock.acquire()
        try:
            self.daemon.start()
        except Exception:
            self.lock.release()
            raise
        self.lock.record(aria2_pid=self.daemon.pid)
        for row in self.store.downloads():
            if DownloadState(row.state) in ACTIVE_STATES:
                self.store.transition(row.id, S.QUEUED, "interrupted: resuming", speed=0)

    def close(self) -> None:
        """Stop cleanly: aria2 writes its control files, interrupted rows go back to queued."""
        active = any(job.kind == "download" and job.task is None for job in self.jobs.values())
        for job in list(self.jobs.values()):
            job.stop()
            self.store.transition(job.id, S.QUEUED, "interrupted: will resume on next start", speed=0)
        self.jobs.clear()
        # Paused and finished downloads were already removed from aria2 (control files written then).
        self.daemon.stop(graceful=active)
        self.lock.release()

    def __enter__(self) -> Manager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_stop(self) -> None:
        """Make `run()` return at the next tick (signal handlers, the web service)."""
        self._stop.set()
        self._wake.set()

    # --- what to fetch ------------------------------------------------------------------------------
    def submit(self, plan: Plan) -> list[str]:
        """Record every planned file in the DB and queue what needs work; returns the ids."""
        for item in plan.items:
            spec, res = item.spec, item.resolved
            fields = dict(
                source=spec.source,
                revision=spec.revision,
                dest=spec.dest,
                size=item.size,
                sha256=(res.sha256 if res else None) or spec.sha256,
                sha256_origin=(res.sha256_origin if res else None) or ("manifest" if spec.sha256 else None),
                required=spec.required,
                manifest=spec.manifest or None,
            )
            row = self.store.upsert(spec.id, **fields)
            state = S(row.state)
            if res is not None:
                self.resolved[spec.id] = res
            if item.action == "present":
                if state != S.DONE:
                    self.store.transition(spec.id, S.VERIFYING, "found in place")
                    self.store.transition(spec.id, S.DONE, "in place", bytes_done=item.size or 0)
            elif item.action == "error" and item.error is not None and item.error.retryable:
                # e.g. the hub is briefly unreachable: the loop resolves again with backoff
                if state not in (S.QUEUED, S.DOWNLOADING, S.VERIFYING):
                    self.store.transition(spec.id, S.QUEUED, f"queued: {item.error}", attempts=0)
                self.store.update(spec.id, error=str(item.error), next_attempt_at=None)
            elif item.action == "error":
                assert item.error is not None
                if state in (S.DONE, S.VERIFYING, S.DOWNLOADING):
                    self.store.transition(spec.id, S.QUEUED, "requeued")
                self.store.transition(spec.id, S.FAILED, str(item.error), level="error", error=str(item.error))
            elif state not in (S.QUEUED, S.DOWNLOADING, S.VERIFYING):
                self.store.transition(
                    spec.id, S.QUEUED, f"queued ({item.action})", error=None, attempts=0, next_attempt_at=None
                )
            else:
                self.store.update(spec.id, error=None, attempts=0, next_attempt_at=None)
        return [i.spec.id for i in plan.items]

    # --- commands (thread-safe) -----------------------------------------------------------------------
    def pause(self, download_id: str) -> None:
        self._command("pause", download_id)

    def resume(self, download_id: str) -> None:
        self._command("resume", download_id)

    def retry(self, download_id: str) -> None:
        self._command("retry", download_id)

    def cancel(self, download_id: str) -> None:
        self._command("cancel", download_id)

    def _command(self, verb: str, download_id: str) -> None:
        self._commands.put((verb, download_id))
        self._wake.set()

    def _handle_commands(self) -> None:
        while True:
            try:
                verb, download_id = self._commands.get_nowait()
            except queue.Empty:
                return
            row = self.store.get(download_id)
            if row is None:
                continue
            state = S(row.state)
            if verb == "pause" and state not in TERMINAL_STATES and state != S.PAUSED:
                self._drop_job(download_id)
                self.store.transition(download_id, S.PAUSED, "paused", speed=0)
            elif verb == "resume" and state == S.PAUSED:
                self.store.transition(download_id, S.QUEUED, "resumed", next_attempt_at=None)
            elif verb == "cancel" and state != S.DONE:
                self._drop_job(download_id)
                remove_partial(part_path(confine(self.s.models_dir, row.dest)))
                self.store.transition(download_id, S.FAILED, "cancelled", error="cancelled by user", speed=0, bytes_done=0)
            elif verb == "retry" and state == S.FAILED:
                self.store.transition(download_id, S.QUEUED, "retry", attempts=0, error=None, next_attempt_at=None)

    # --- the loop -------------------------------------------------------------------------------------
    def run(
        self,
        ids: Iterable[str] | None = None,
        on_tick: Callable[[list[Download]], None] | None = None,
        until_done: bool = True,
    ) -> list[Download]:
        """Work until every selected row is done, failed or paused (or `request_stop()`); returns the rows."""
        self.selection = set(ids) if ids is not None else None
        while not self._stop.is_set():
            self.tick()
            if on_tick is not None or until_done:  # a service runs forever and needs no per-tick listing
                rows = self.store.downloads(sorted(self.selection) if self.selection is not None else None)
                if on_tick is not None:
                    on_tick(rows)
                if until_done and not self.jobs and all(S(r.state) in (*TERMINAL_STATES, S.PAUSED) for r in rows):
                    return rows
            self._wake.wait(self.s.poll_interval)
            self._wake.clear()
        return self.store.downloads(sorted(self.selection) if self.selection is not None else None)

    def tick(self) -> None:
        """One pass: commands, progress of running jobs, then start what may start."""
        self._handle_commands()
        self.daemon.check_alive()
        for job in list(self.jobs.values()):
            if job.kind == "download" and job.task is None:
                self._poll_download(job)
            else:
                self._poll_hash(job)
        self._start_queued()

    # --- starting -------------------------------------------------------------------------------------
    def _start_queued(self) -> None:
        now = utcnow()
        running = sum(1 for j in self.jobs.values() if j.kind == "download")
        hashing = sum(1 for j in self.jobs.values() if j.kind != "download")
        ids = sorted(self.selection) if self.selection is not None else None
        for row in self.store.downloads(ids, state=S.QUEUED):
            if row.id in self.jobs:
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                continue
            try:
                dest = confine(self.s.models_dir, row.dest)
            except ValueError as e:
                self.store.transition(row.id, S.FAILED, str(e), level="error", error=str(e))
                continue
            part = part_path(dest)
            if dest.exists() or (part.exists() and not control_path(part).exists() and file_size(part) == row.size):
                if hashing >= 1:  # one full-file hash at a time: they are disk-bound
                    continue
                self._start_hash(row, dest, part, "existing" if dest.exists() else "part")
                hashing += 1
            elif running < self.s.max_concurrent:
                if self._start_download(row, dest, part):
                    running += 1

    def _start_hash(self, row: Download, dest: Path, part: Path, kind: str) -> None:
        target = dest if kind == "existing" else part
        job = Job(row.id, dest, part, kind, row.size, row.sha256)
        job.task = HashTask(target, on_done=self._wake.set)
        self.jobs[row.id] = job
        what = "verifying the file found in place" if kind == "existing" else "verifying the finished download"
        self.store.transition(row.id, S.VERIFYING, what, bytes_done=0, speed=0)

    def _start_download(self, row: Download, dest: Path, part: Path) -> bool:
        res = self.resolved.get(row.id)
        if res is None:
            res = self._resolve(row)
            if res is None:
                return False
        size, sha256 = res.size or row.size, res.sha256 or row.sha256
        have = file_size(part) or 0
        need = max((size or 0) - have, 0)
        free = free_bytes(dest.parent)
        if need > free:
            err = DiskSpaceError(str(dest.parent), need, free)
            self.store.transition(row.id, S.FAILED, str(err), level="error", error=str(err))
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        gid = self.daemon.add(res.url, dest.parent, part.name, res.headers, size)
        job = Job(row.id, dest, part, "download", size, sha256, gid=gid)
        job.hasher = PrefixHasher(part)
        self.jobs[row.id] = job
        resumed = f" (resuming at {human_bytes(have)})" if have else ""
        self.store.transition(row.id, S.DOWNLOADING, f"downloading{resumed}", error=None, bytes_done=have)
        return True

    def _resolve(self, row: Download) -> Resolved | None:
        pinned = row.sha256 if row.sha256_origin == "manifest" else None
        spec = ModelSpec(id=row.id, source=row.source, dest=row.dest, revision=row.revision, sha256=pinned)
        result = resolve_all([spec], self.s)[0]
        if isinstance(result, SourceError):
            self._retry_or_fail(row.id, str(result), retryable=result.retryable)
            return None
        self.resolved[row.id] = result
        # What the source says now is what the file is checked against.
        self.store.update(row.id, size=result.size, sha256=result.sha256, sha256_origin=result.sha256_origin)
        return result

    # --- running --------------------------------------------------------------------------------------
    def _poll_download(self, job: Job) -> None:
        assert job.gid is not None and job.hasher is not None
        st = self.daemon.status(job.gid)
        if st is None:
            self._drop_job(job.id)
            self._retry_or_fail(job.id, "aria2 lost track of the download")
            return
        if st.status in ("active", "waiting", "paused"):
            if st.total:
                job.hasher.advance(completed_prefix(st.bitfield, st.piece_length, st.total))
            now = time.monotonic()
            if st.completed != job.last_bytes:
                job.last_bytes, job.last_change = st.completed, now
                self.store.update(job.id, bytes_done=st.completed, speed=st.speed, size=st.total or job.size)
            elif now - job.last_change > self.s.stall_seconds:
                self._drop_job(job.id)
                self._retry_or_fail(job.id, f"stalled: no data for {self.s.stall_seconds:.0f} s")
        elif st.status == "complete":
            self.daemon.remove(job.gid)
            size = file_size(job.part) or 0
            job.task = HashTask(job.part, job.hasher, size, on_done=self._wake.set)
            self.store.transition(job.id, S.VERIFYING, "downloaded: verifying", bytes_done=size, speed=0)
        elif st.status == "error":
            self._on_aria2_error(job, st)
        else:  # removed by someone else
            self._drop_job(job.id)
            self._retry_or_fail(job.id, "download was removed from aria2")

    def _on_aria2_error(self, job: Job, st: Aria2Status) -> None:
        message = (st.error_message or "").strip()
        code = st.error_code or "?"
        gid = job.gid
        row = self.store.get(job.id)
        assert row is not None and gid is not None
        self.daemon.remove(gid)
        disk_full = code == ERR_DISK_FULL or "No space left" in message or (code == ERR_IO and "space" in message)
        if disk_full:
            self._drop_job(job.id)
            have = file_size(job.part) or 0
            msg = (
                f"disk full: {human_bytes(free_bytes(job.dest.parent))} free in {job.dest.parent}; "
                f"the {human_bytes(have)} already downloaded are kept: free some space and retry"
            )
            self.store.transition(job.id, S.FAILED, msg, level="error", error=msg, speed=0)
            return
        is_hub = row.source.startswith("hf://")
        if is_hub and code == ERR_HTTP_BAD and job.reresolves < MAX_RERESOLVE:
            # Most likely the signed CDN URL expired (403): ask the hub again, same dir/out, control file kept.
            job.reresolves += 1
            self.store.log(job.id, f"signed URL rejected ({message}): re-resolving and resuming", "warning")
            res = self.resolved.get(job.id)
            if res is not None:
                job.gid = self.daemon.add(res.url, job.dest.parent, job.part.name, res.headers, job.size)
                return
        self._drop_job(job.id)
        retryable = code not in (ERR_NOT_FOUND, ERR_AUTH)
        hint = " (set HF_TOKEN or CIVITAI_TOKEN?)" if code == ERR_AUTH else ""
        self._retry_or_fail(job.id, f"aria2 error {code}: {message}{hint}", retryable=retryable)

    def _poll_hash(self, job: Job) -> None:
        task = job.task
        assert task is not None
        if not task.finished:
            self.store.update(job.id, bytes_done=task.progress)
            return
        if task.error is not None:
            self._drop_job(job.id)
            self._retry_or_fail(job.id, f"verification failed: {task.error}")
            return
        size = file_size(task.path)
        digest = task.digest
        problem = None
        if job.size is not None and size != job.size:
            problem = f"size mismatch: expected {job.size} bytes, got {size}"
        elif job.sha256 and digest != job.sha256:
            if not task.full_pass:
                # The prefix hash read while aria2 wrote; before calling it corrupt, read it all once more.
                self.store.log(job.id, "checksum differs: re-reading the whole file to be sure", "warning")
                job.task = HashTask(task.path, on_done=self._wake.set)
                return
            problem = f"checksum mismatch: expected {job.sha256}, got {digest}"
        self.jobs.pop(job.id, None)
        if problem is None:
            if job.kind != "existing":
                place(job.part, job.dest)
            verified = bool(job.sha256)
            how = "sha256 verified" if verified else "size checked only: no sha256 known (unverified)"
            self.store.transition(
                job.id, S.DONE, f"done: {how}", bytes_done=size or 0, verified=verified, error=None, speed=0
            )
        elif job.kind == "existing":
            moved = quarantine(job.dest)
            self.store.log(job.id, f"file in place is not the expected one ({problem}); moved to {moved.name}", "warning")
            self.store.transition(job.id, S.QUEUED, "queued: downloading a good copy")
        else:
            remove_partial(job.part)
            self.store.update(job.id, bytes_done=0)  # those bytes are gone: progress must not say otherwise
            self._retry_or_fail(job.id, problem)

    # --- failure handling --------------------------------------------------------------------------------
    def _drop_job(self, download_id: str) -> None:
        """Forget a job: stop its aria2 download (keeping files for resume) and its hashing."""
        job = self.jobs.pop(download_id, None)
        if job is None:
            return
        job.stop()
        if job.gid is not None and job.task is None:
            last = self.daemon.status(job.gid)
            self.daemon.remove(job.gid)
            if last is not None:  # what is on disk now, for the UI and the next resume
                self.store.update(download_id, bytes_done=last.completed)

    def _retry_or_fail(self, download_id: str, message: str, retryable: bool = True) -> None:
        """Queue again with exponential backoff, or mark failed once the attempts are used up."""
        row = self.store.get(download_id)
        if row is None:
            return
        if row.state == S.DONE.value:
            return
        attempts = row.attempts + 1
        if not retryable or attempts >= self.s.max_attempts:
            final = message if not retryable else f"{message} (gave up after {attempts} attempts)"
            self.store.transition(download_id, S.FAILED, final, level="error", error=final, attempts=attempts)
            return
        delay = min(60.0, self.s.retry_base_seconds * 2 ** (attempts - 1))
        self.store.transition(
            download_id,
            S.QUEUED,
            f"{message}: retrying in {delay:.0f} s (attempt {attempts + 1} of {self.s.max_attempts})",
            level="warning",
            error=message,
            attempts=attempts,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            speed=0,
        )
        self.resolved.pop(download_id, None)  # resolve afresh: the failure may be a stale URL
