"""What the manager loop answers when aria2 reports an error for a download, in words a user acts on: a full
disk (the bytes kept), a server that ignores Range (start over, never append), a rate limit (wait what the
server said, not a failed attempt, no request to that host meanwhile), a gated or private hub repository
(fail at once with what to do), an expired CivitAI signed URL (ask CivitAI for a new one and resume), anything
else retried with backoff.

A mixin of `Manager`: these run in the loop's thread, the one writer of states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import faults
from . import hosts as rate_limits
from .aria2 import Aria2Daemon, Aria2Status
from .config import Settings
from .errors import human_bytes
from .files import file_size, free_bytes, remove_partial
from .hosts import HostGate, host_of, rate_limit_message, utc_in
from .jobs import Job
from .manifest import CivitaiSource, HfSource, parse_source
from .sources import Resolved, gated_message, private_message
from .state import DownloadState, Store

if TYPE_CHECKING:
    from collections.abc import Callable

S = DownloadState
MAX_RERESOLVE = 5  # fresh signed URLs per job for 403s with progress between them (expiries), at most


class DownloadErrors:
    """The manager's answers to aria2's errors (see the module docstring)."""

    s: Settings
    store: Store
    daemon: Aria2Daemon
    resolved: dict[str, Resolved]
    no_range: set[str]
    hosts: HostGate
    refreshed: dict[str, int]  # CivitAI downloads: bytes done when their last fresh signed URL was asked for
    _drop_job: Callable[[str], None]
    _retry_or_fail: Callable[..., None]

    def _on_aria2_error(self, job: Job, st: Aria2Status) -> None:
        failure = faults.classify(st.error_code, st.error_message)
        row = self.store.get(job.id)
        assert row is not None and job.gid is not None
        self.daemon.remove(job.gid)
        if failure.kind == faults.DISK_FULL:
            self._drop_job(job.id)
            have = file_size(job.part) or 0
            msg = (
                f"disk full: {human_bytes(free_bytes(job.dest.parent))} free in {job.dest.parent}; "
                f"the {human_bytes(have)} already downloaded are kept: free some space and retry"
            )
            self.store.transition(job.id, S.FAILED, msg, level="error", error=msg, speed=0)
        elif failure.kind == faults.NO_RESUME:
            self._start_over(job, failure)
        elif failure.kind == faults.RATE_LIMITED:
            self._drop_job(job.id)
            self._rate_limited(job.id, row.source, None)  # aria2 does not pass the Retry-After on
        elif isinstance(src := parse_source(row.source), HfSource) and failure.kind in (faults.FORBIDDEN, faults.UNAUTHORISED):
            self._hub_refused(job, st, failure, src.repo_id)
        elif isinstance(src, CivitaiSource) and failure.kind in (faults.FORBIDDEN, faults.UNAUTHORISED):
            self._signed_url_refused(job, st, failure)
        else:
            self._drop_job(job.id)
            hint = " (set HF_TOKEN or CIVITAI_TOKEN?)" if failure.kind == faults.UNAUTHORISED else ""
            self._retry_or_fail(job.id, failure.words() + hint, retryable=failure.retryable)

    def _hub_refused(self, job: Job, st: Aria2Status, failure: faults.Aria2Failure, repo_id: str) -> None:
        """A 401/403 for a hub file, from the hub or its CDN. A 403 after progress is most likely an expired signed
        URL: ask the hub again (same dir/out, control file kept). A 403 right after that fresh URL, with no byte
        between, or a 401, means no access: fail at once and say what to do."""
        fresh = job.reresolves > 0 and st.completed <= job.bytes_at_reresolve
        res = self.resolved.get(job.id)
        if failure.kind == faults.FORBIDDEN and not fresh and job.reresolves < MAX_RERESOLVE and res is not None:
            job.reresolves += 1
            job.bytes_at_reresolve = st.completed
            self.store.log(job.id, f"signed URL rejected ({failure.message}): re-resolving and resuming", "warning")
            job.gid = self.daemon.add(res.url, job.dest.parent, job.part.name, res.headers, job.size, split=job.split)
            return
        self._drop_job(job.id)
        msg = gated_message(repo_id, self.s) if failure.kind == faults.FORBIDDEN else private_message(repo_id)
        self._retry_or_fail(job.id, f"{msg} ({failure.words()})", retryable=False)

    def _signed_url_refused(self, job: Job, st: Aria2Status, failure: faults.Aria2Failure) -> None:
        """CivitAI's storage refused its signed URL: after progress it expired, so the file is queued again (not an
        attempt) and resolved afresh, resuming from the part and its control file. Refused again with no byte
        since that fresh URL: no access, fail at once."""
        self._drop_job(job.id)
        at = self.refreshed.get(job.id)
        if at is not None and st.completed <= at:
            msg = (f"CivitAI's storage refused a fresh signed URL ({failure.words()}): the file may be gone, or it "
                   "needs a CIVITAI_TOKEN with access to it")
            self._retry_or_fail(job.id, msg, retryable=False)
            return
        self.refreshed[job.id] = st.completed
        self.resolved.pop(job.id, None)
        msg = f"the signed URL expired ({failure.words()}): asking CivitAI for a new one and resuming"
        self.store.transition(job.id, S.QUEUED, msg, level="warning", speed=0)

    def _start_over(self, job: Job, failure: faults.Aria2Failure) -> None:
        """The server answered a resume with the whole file (it ignores Range): nothing is appended to the part.
        It is deleted and the file starts over on one connection; if that happens again, it counts as a failed
        attempt."""
        self._drop_job(job.id)
        remove_partial(job.part)
        self.store.update(job.id, bytes_done=0)
        first = job.id not in self.no_range
        self.no_range.add(job.id)
        msg = f"the server ignores Range requests, so {job.dest.name} cannot resume: starting it over from the first byte"
        if first:
            self.store.log(job.id, msg, "warning")
            self.store.transition(job.id, S.QUEUED, msg, level="warning", speed=0)
        else:
            self._retry_or_fail(job.id, f"{msg} ({failure.words()})")

    def _rate_limited(self, download_id: str, source: str, seconds: float | None) -> None:
        """A 429: hold the host for what its Retry-After said and queue the file again, saying so; not an attempt."""
        host = host_of(source, self.s)
        # The module's value read at each use (self.hosts is the gate; rate_limits the module holding it).
        wait = seconds if seconds is not None else rate_limits.UNKNOWN_RETRY_AFTER
        self.hosts.hold(host, wait)
        msg = rate_limit_message(rate_limits.who(host, self.s), wait)
        self.store.transition(
            download_id, S.QUEUED, msg, level="warning", error=msg, next_attempt_at=utc_in(wait), speed=0
        )

