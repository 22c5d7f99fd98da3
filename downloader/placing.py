"""What happens once a file's hash is done: the verdict (size, sha256, or, with no sha256 known, a structural
check), then the file placed under its final name, and the row told in words what the file was checked against.

A file that cannot be placed (the destination folder became read-only, a folder has the file's name) is a
failure with its reason, retried with the usual backoff; the downloaded bytes are kept for that retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from .files import file_size, place, quarantine, remove_partial
from .jobs import Job
from .state import DownloadState, Store
from .structure import needs_structure_check, safetensors_problem
from .verify import HashTask

S = DownloadState


@dataclass(frozen=True)
class Retry:
    """The file failed for a passing reason: queue it again with backoff (or fail it once attempts are used up)."""

    message: str


REHASH = "rehash"  # read the whole file once more before calling it corrupt
SETTLED = "settled"  # the row says what became of the file: nothing left to do


def checked_how(job: Job, structure_checked: bool) -> str:
    """What a done file was checked against, in words."""
    if job.sha256:
        return "sha256 verified"
    if structure_checked:
        what = "size and safetensors header checked" if job.size is not None else "safetensors header checked"
        known = "no sha256 known" if job.size is not None else "no sha256 or size known"
        return f"{what} ({known}): unverified"
    if job.size is not None:
        return "size checked only (no sha256 known): unverified"
    return "no sha256 or size known: unverified"


def finish(store: Store, job: Job, task: HashTask) -> str | Retry:
    """Judge a finished hash of `job`'s file and act on it: REHASH, SETTLED, or a Retry with the reason."""
    size = file_size(task.path)
    problem = None
    structure_checked = False
    if job.size is not None and size != job.size:
        problem = f"size mismatch: expected {job.size} bytes, got {size}"
    elif job.sha256 and task.digest != job.sha256:
        if not task.full_pass:
            # The prefix hash read while aria2 wrote; before calling it corrupt, read it all once more.
            store.log(job.id, "checksum differs: re-reading the whole file to be sure", "warning")
            return REHASH
        problem = f"checksum mismatch: expected {job.sha256}, got {task.digest}"
    elif not job.sha256 and needs_structure_check(job.dest.name):
        problem = safetensors_problem(task.path)
        structure_checked = True
    if problem is not None:
        return _reject(store, job, problem)
    if job.kind != "existing":
        try:
            place(job.part, job.dest)
        except OSError as e:
            reason = e.strerror or str(e)
            return Retry(f"cannot place the file at {job.dest}: {reason} (the downloaded file is kept as {job.part.name})")
    store.transition(
        job.id,
        S.DONE,
        f"done: {checked_how(job, structure_checked)}",
        bytes_done=size or 0,
        verified=bool(job.sha256),
        error=None,
        speed=0,
    )
    return SETTLED


def _reject(store: Store, job: Job, problem: str) -> str | Retry:
    """A file that is not the expected one: one found in place is moved aside and fetched again; a download's
    bytes are deleted and it is retried."""
    if job.kind == "existing":
        moved = quarantine(job.dest)
        store.log(job.id, f"file in place is not the expected one ({problem}); moved to {moved.name}", "warning")
        store.transition(job.id, S.QUEUED, "queued: downloading a good copy")
        return SETTLED
    remove_partial(job.part)
    store.update(job.id, bytes_done=0)  # those bytes are gone: progress must not say otherwise
    return Retry(problem)
