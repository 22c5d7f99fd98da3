"""The download loop: queued -> downloading <-> paused -> verifying -> done | failed.

One Manager per pod owns its aria2c daemon; pods sharing a workspace fetch each file once, the pod that claims
it when it starts it (downloader/claims.py); an flock keeps one Manager per pod (or per workspace, see locks.py). Each tick it polls the
active downloads, feeds their completed prefix to a hasher, verifies and places finished files, retries
with backoff what failed for a passing reason, and starts queued files up to the concurrency limit.
The loop is the one writer of download states: other threads (the web UI, a CLI talking to the service) put
commands on its queue (`call`) and wait for the answer; in-process use (`fetch`, `Manager.run` in the calling
thread) runs them at once, the calling thread being the loop. Resolving sources runs in a worker pool, and a
failed tick is for the caller to recover from (`recover`): the service restarts the loop with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from . import recheck
from .aria2 import Aria2Daemon
from .claims import Claims
from .commands import CommandQueue, NotFound
from .config import Settings
from .download_errors import DownloadErrors
from .errors import DiskSpaceError, SourceError, human_bytes
from .files import (
    control_path,
    file_size,
    free_bytes,
    part_path,
    remove_partial,
    resumable_bytes,
)
from .hosts import HostGate, host_of
from .intake import apply_plan, name_pending
from .jobs import Job, retry_or_fail
from .locks import WorkspaceLock
from .manifest import confine
from .placing import REHASH, Retry, finish
from .plan import Plan
from .resolver import ResolverPool
from .sources import Resolved, check_size_pin
from .state import (
    TERMINAL_STATES,
    Download,
    DownloadState,
    IllegalTransition,
    Store,
    utcnow,
)
from .verify import HashTask, PrefixHasher, completed_prefix

log = logging.getLogger(__name__)
S = DownloadState
T = TypeVar("T")


class Manager(DownloadErrors):
    """Drives downloads for one workspace; `start()`, then `run()` or `tick()`, then `close()`."""

    def __init__(self, settings: Settings, store: Store, daemon: Aria2Daemon | None = None) -> None:
        self.s = settings
        self.store = store
        self.daemon = daemon or Aria2Daemon(settings)
        self.lock = WorkspaceLock(settings.state_dir)
        self.claims = Claims(store, settings.pod_id, settings.claim_lease)  # the files this pod works on
        self.jobs: dict[str, Job] = {}
        self.resolved: dict[str, Resolved] = {}
        self.refreshed: dict[str, int] = {}
        self.no_range: set[str] = set()  # downloads whose server ignores Range: one connection, never resumed
        self.hosts = HostGate()  # hosts that answered 429: not asked again before their Retry-After
        self.selection: set[str] | None = None  # None: everything queued in the DB
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by commands, finished hashes and resolutions, stop: the loop runs at once
        self.commands = CommandQueue(self._wake)
        self.resolver = ResolverPool(settings, on_done=self._wake.set)
        self.rechecks: deque[str] = deque()  # done files waiting to be hashed again (`verify`), in order
        self.ticks = 0  # ticks completed: a service tells a working loop from a failing one by it
        # The thread that is the loop: set by `bind_loop` (a service) or while `run` runs. None: no loop runs,
        # so the calling thread may act at once (in-process use).
        self._loop_thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Take ownership of the workspace, start aria2c, and requeue what a crash left mid-way."""
        if not self.lock.held:
            self.lock.acquire()
        self._requeue_interrupted("interrupted: resuming")  # first: nothing stays "downloading" if aria2c fails
        if not self.daemon.alive:
            try:
                self.daemon.stop(graceful=False)  # reap a dead one
                self.daemon.start()
            except Exception:
                self.lock.release()
                raise
            self.lock.record(aria2_pid=self.daemon.pid)

    def recover(self) -> None:
        """After a failed tick: let go of the work in flight, start aria2c again if it died (Aria2Error if it
        cannot), and requeue every row left downloading or verifying: each resumes from its control file."""
        alive = self.daemon.alive
        for job in list(self.jobs.values()):
            job.stop()
            if alive and job.gid is not None and job.task is None:
                with suppress(Exception):  # aria2 may be the thing that failed
                    self.daemon.remove(job.gid)
        self.jobs.clear()
        self.resolver.forget()
        self.rechecks.clear()
        if not alive:
            log.warning("aria2c is not running: starting it again")
        self.start()

    def _requeue_interrupted(self, message: str) -> None:
        """Rows downloading or verifying that no job works on and no live pod claims go back to queued (those a
        dead pod left with an event naming it); another live pod's files are never touched."""
        self.claims.requeue_abandoned(self._working())
        self.claims.requeue_unclaimed(self._working(), message)

    def _working(self) -> set[str]:
        """The files this pod works on: jobs, resolutions in flight, rechecks waiting."""
        return set(self.jobs) | set(self.rechecks) | {i for i in self.claims.mine if i in self.resolver}

    def _let_go(self, download_id: str) -> None:
        """Stop working on a file that is no longer this pod's (see Claims.keep), writing nothing of it."""
        job = self.jobs.pop(download_id, None)
        if job is not None:
            job.stop()
            if job.gid is not None and job.task is None:
                with suppress(Exception):  # its control file stays for whoever resumes it
                    self.daemon.remove(job.gid)
        with suppress(ValueError):
            self.rechecks.remove(download_id)

    def close(self) -> None:
        """Stop cleanly: aria2 writes its control files, interrupted rows go back to queued."""
        active = any(job.kind == "download" and job.task is None for job in self.jobs.values())
        for job in list(self.jobs.values()):
            job.stop()
            with suppress(IllegalTransition, KeyError):
                self.store.transition(job.id, S.QUEUED, "interrupted: will resume on next start", speed=0)
        self.jobs.clear()
        self.resolver.close()
        self.rechecks.clear()
        self.claims.release_all()  # other pods may take them at once, without waiting for the lease
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

    # --- the one writer: calls run by the loop ---------------------------------------------------------------
    def bind_loop(self, thread: threading.Thread) -> None:
        """Make `thread` the loop for good (a service): other threads' calls are queued even while it restarts."""
        self._loop_thread = thread

    def in_loop(self) -> bool:
        """Whether the calling thread may write states now: it is the loop, or no loop runs (in-process use)."""
        loop = self._loop_thread
        return loop is None or loop is threading.current_thread()

    def call(self, fn: Callable[[], T], timeout: float | None = None, why: Callable[[], str] | None = None) -> T:
        """Run `fn` as the loop and return its answer (or raise its exception): at once in the loop's thread,
        else queued for the loop, waiting at most `timeout` s (Settings.command_timeout); EngineUnavailable
        saying `why()` when no answer comes in time (the call is then never run)."""
        if self.in_loop():
            return fn()
        wait = self.s.command_timeout if timeout is None else timeout
        return self.commands.put(fn).wait(wait, why or (lambda: "the loop is busy"))

    # --- what to fetch ------------------------------------------------------------------------------
    def submit(self, plan: Plan) -> list[str]:
        """Record every planned file in the DB and queue what needs work; returns the ids. The plan (resolving is
        slow) is built by the caller; the loop applies it. Conflict when a dest belongs to another download."""
        return self.call(lambda: self.apply(plan))

    def apply(self, plan: Plan) -> list[str]:
        """`submit`, in the loop's thread."""
        for item in plan.items:
            if item.action == "error" and item.error is not None and not item.error.retryable:
                self._drop_job(item.spec.id)  # refused now: whatever runs for it stops
        ids = apply_plan(self.store, plan)
        for item in plan.items:
            download_id = item.spec.id
            if item.resolved is not None:
                self.resolved[download_id] = item.resolved
            row, error = self.store.get(download_id), item.error
            idle = download_id not in self.jobs and download_id not in self.resolver
            if error is not None and error.rate_limited and idle and row is not None and row.state == S.QUEUED.value:
                self._rate_limited(download_id, row.source, error.retry_after)
        return ids

    def verify(self, ids: Sequence[str] | None = None) -> list[str]:
        """Hash done files again in place (all of them when `ids` is None), one at a time; returns the ids being
        verified. A good file stays done, a bad or missing one is moved aside and marked failed."""
        return self.call(lambda: self._begin_verify(ids))

    def _begin_verify(self, ids: Sequence[str] | None) -> list[str]:
        started = self.claims.around_recheck(ids, lambda: recheck.begin(self.store, ids))
        self.rechecks.extend(i for i in started if i not in self.rechecks)
        return started

    # --- commands -----------------------------------------------------------------------------------
    def pause(self, download_id: str) -> None:
        """Queue a pause for the loop (fire and forget; `act` through `call` gives an answer)."""
        self.commands.put(lambda: self.act("pause", download_id))

    def resume(self, download_id: str) -> None:
        self.commands.put(lambda: self.act("resume", download_id))

    def retry(self, download_id: str) -> None:
        self.commands.put(lambda: self.act("retry", download_id))

    def cancel(self, download_id: str) -> None:
        self.commands.put(lambda: self.act("cancel", download_id))

    def act(self, verb: str, download_id: str) -> None:
        """pause / resume / retry / cancel one download, in the loop's thread; NotFound for an unknown id. A verb
        that does not apply to the download's state changes nothing."""
        row = self.store.get(download_id)
        if row is None:
            raise NotFound(f"no download with id {download_id!r}")
        state = S(row.state)
        if verb == "pause" and state not in TERMINAL_STATES and state != S.PAUSED:
            self._drop_job(download_id)
            self.store.transition(download_id, S.PAUSED, "paused", expect=state, speed=0)
        elif verb == "resume" and state == S.PAUSED:
            self.store.transition(download_id, S.QUEUED, "resumed", expect=state, next_attempt_at=None)
        elif verb == "cancel" and state != S.DONE:
            self._drop_job(download_id)
            remove_partial(part_path(confine(self.s.models_dir, row.dest)))
            self.store.transition(
                download_id, S.FAILED, "cancelled", expect=state, error="cancelled by user", speed=0, bytes_done=0
            )
        elif verb == "retry" and state == S.FAILED:
            self.store.transition(
                download_id, S.QUEUED, "retry", expect=state, attempts=0, error=None, next_attempt_at=None
            )

    def act_all(self, verb: str) -> int:
        """pause / resume / retry every download it applies to, in the loop's thread; returns how many."""
        wanted = {"pause": (S.QUEUED, S.DOWNLOADING, S.VERIFYING), "resume": (S.PAUSED,), "retry": (S.FAILED,)}[verb]
        rows = [r for r in self.store.downloads() if S(r.state) in wanted]
        for r in rows:
            self.act(verb, r.id)
        return len(rows)

    # --- the loop -------------------------------------------------------------------------------------
    def run(
        self,
        ids: Iterable[str] | None = None,
        on_tick: Callable[[list[Download]], None] | None = None,
        until_done: bool = True,
    ) -> list[Download]:
        """Work until every selected row is done, failed or paused (or `request_stop()`); returns the rows."""
        self.selection = set(ids) if ids is not None else None
        if self._loop_thread is None:  # in-process: this thread is the loop while it runs
            self._loop_thread = threading.current_thread()
            try:
                return self._run(on_tick, until_done)
            finally:
                self._loop_thread = None
        return self._run(on_tick, until_done)

    def _run(self, on_tick: Callable[[list[Download]], None] | None, until_done: bool) -> list[Download]:
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
        """One pass: commands, progress of running jobs, resolutions that came in, then start what may start."""
        self.commands.run_pending()
        self.daemon.check_alive()
        for download_id in self.claims.keep(self._working(), set(self.jobs)):
            self._let_go(download_id)
        for job in list(self.jobs.values()):
            if job.kind == "download" and job.task is None:
                self._poll_download(job)
            else:
                self._poll_hash(job)
        self._collect_resolutions()
        self._start_queued()
        self.ticks += 1

    # --- starting -------------------------------------------------------------------------------------
    def _start_queued(self) -> None:
        now = utcnow()
        running = sum(1 for j in self.jobs.values() if j.kind == "download") + len(self.resolver)
        hashing = sum(1 for j in self.jobs.values() if j.kind != "download")
        if hashing == 0 and self._start_recheck():
            hashing += 1
        ids = sorted(self.selection) if self.selection is not None else None
        others = self.claims.others()  # files other pods work on
        for row in self.store.downloads(ids, state=S.QUEUED):
            if row.id in self.jobs or row.id in self.resolver or row.id in others:
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                continue
            try:
                dest = confine(self.s.models_dir, row.dest)
            except ValueError as e:
                self.store.transition(row.id, S.FAILED, str(e), level="error", error=str(e))
                continue
            part = part_path(dest)
            # A finished part (its control file gone) is hashed and placed; only with a sha256: without one, a part
            # whose control file was lost may hold holes nothing would find (it starts over, _start_download).
            finished = bool(row.sha256) and part.exists() and not control_path(part).exists() and file_size(part) == row.size
            if dest.is_file() or finished:
                if hashing >= 1 or not self.claims.claim_queued(row.id):  # one hash at a time: disk-bound
                    continue
                self._start_hash(row, dest, part, "existing" if dest.is_file() else "part")
                hashing += 1
            elif (running < self.s.max_concurrent and not self.hosts.held(host_of(row.source, self.s))
                  and self.claims.claim_queued(row.id)):
                running += self._start_download(row, dest, part)

    def _start_recheck(self) -> bool:
        """Start hashing the next file `verify` asked for; True if a hash started."""
        while self.rechecks:
            row = self.store.get(self.rechecks.popleft())
            if row is None or row.state != S.VERIFYING.value or row.id in self.jobs:
                continue  # paused or cancelled while it waited
            dest = recheck.before_hash(self.store, self.s.models_dir, row)
            if dest is None:
                continue  # settled without a hash
            job = Job(row.id, dest, dest, "recheck", row.size, row.sha256)
            job.task = HashTask(dest, on_done=self._wake.set)
            self.jobs[row.id] = job
            return True
        return False

    def _start_hash(self, row: Download, dest: Path, part: Path, kind: str) -> None:
        target = dest if kind == "existing" else part
        job = Job(row.id, dest, part, kind, row.size, row.sha256)
        job.task = HashTask(target, on_done=self._wake.set)
        self.jobs[row.id] = job
        what = "verifying the file found in place" if kind == "existing" else "verifying the finished download"
        self.store.transition(row.id, S.VERIFYING, what, bytes_done=0, speed=0)

    def _start_download(self, row: Download, dest: Path, part: Path) -> bool:
        """Start aria2 on a queued row, or its resolution first; True if either started (a slot is taken)."""
        res = self.resolved.get(row.id)
        if res is None:
            self.resolver.start(row)  # off the loop: a slow hub must not freeze progress and commands
            return True
        size, sha256 = res.size or row.size, res.sha256 or row.sha256
        if not sha256 and part.exists() and not control_path(part).exists():
            remove_partial(part)
            self.store.log(
                row.id,
                f"{part.name} lost its control file ({control_path(part).name}) and no sha256 is known to check it: "
                "it may hold holes, so the download starts over",
                "warning",
            )
        have = resumable_bytes(part) if part.exists() else 0
        need = max((size or 0) - have, 0)
        free = free_bytes(dest.parent)
        if need > free:
            err = DiskSpaceError(str(dest.parent), need, free)
            self.store.transition(row.id, S.FAILED, str(err), level="error", error=str(err))
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        split = row.id not in self.no_range
        gid = self.daemon.add(res.url, dest.parent, part.name, res.headers, size, split=split)
        job = Job(row.id, dest, part, "download", size, sha256, gid=gid, split=split)
        job.hasher = PrefixHasher(part)
        self.jobs[row.id] = job
        resumed = f" (resuming at {human_bytes(have)})" if have else ""
        self.store.transition(row.id, S.DOWNLOADING, f"downloading{resumed} on pod {self.s.pod_id}", error=None, bytes_done=have)
        return True

    def _collect_resolutions(self) -> None:
        """Write what the resolutions that finished found; a failed one is retried with backoff."""
        for download_id, result in self.resolver.finished():
            row = self.store.get(download_id)
            if row is None or row.state != S.QUEUED.value:
                continue  # paused, cancelled or removed meanwhile: the answer is no longer wanted
            if isinstance(result, SourceError):
                if result.rate_limited:  # not a failed attempt: wait what the server said
                    self._rate_limited(download_id, row.source, result.retry_after)
                else:
                    self._retry_or_fail(download_id, str(result), retryable=result.retryable)
                continue
            conflict = name_pending(self.store, download_id, result.dest)
            if conflict is not None:
                self._retry_or_fail(download_id, str(conflict), retryable=False)
                continue
            pinned = row.size if row.size_origin == "manifest" else None  # the manifest's size: kept, checked
            if pinned is not None:
                try:
                    check_size_pin(pinned, result.size, "the hub" if row.source.startswith("hf://") else "the server")
                except SourceError as e:
                    self._retry_or_fail(download_id, str(e), retryable=False)
                    continue
                result = replace(result, size=pinned)
            self.resolved[download_id] = result
            # What the source says now is what the file is checked against.
            self.store.update(download_id, size=result.size, sha256=result.sha256, sha256_origin=result.sha256_origin)

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
                # The size it must have stays; aria2's total only fills in a size nobody knew.
                self.store.update(job.id, bytes_done=st.completed, speed=st.speed, size=job.size or st.total)
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

    def _poll_hash(self, job: Job) -> None:
        task = job.task
        assert task is not None
        if not task.finished:
            self.store.update(job.id, bytes_done=task.progress)
            return
        if job.kind == "recheck":
            self.jobs.pop(job.id, None)
            assert job.sha256 is not None
            recheck.verdict(self.store, job.id, job.dest, job.sha256, task.digest, task.error)
            return
        if task.error is not None:
            self._drop_job(job.id)
            self._retry_or_fail(job.id, f"verification failed: {task.error}")
            return
        outcome = finish(self.store, job, task)
        if outcome == REHASH:
            job.task = HashTask(task.path, on_done=self._wake.set)
            return
        self.jobs.pop(job.id, None)
        if isinstance(outcome, Retry):
            self._retry_or_fail(job.id, outcome.message)

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
        retry_or_fail(self.store, self.s, download_id, message, retryable)
        self.resolved.pop(download_id, None)  # resolve afresh: the failure may be a stale URL
