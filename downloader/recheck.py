"""Verify through the loop: files already in place are hashed again, one at a time (disk-bound), with the outcomes
of `reverify` (the in-process `downloader verify`): a good file stays done, a bad or missing one is moved aside
and marked failed with the reason in words. Meanwhile the row shows `verifying` with its progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .commands import NotFound
from .files import file_size, quarantine
from .manifest import confine
from .state import Download, DownloadState, Store
from .structure import needs_structure_check, safetensors_problem

S = DownloadState


def begin(store: Store, ids: Sequence[str] | None) -> list[str]:
    """Mark the done rows among `ids` (all done rows when None) verifying; returns their ids, oldest first.
    An unknown id raises NotFound before any row changes."""
    if ids is not None:
        known = {r.id for r in store.downloads(list(ids))}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise NotFound(f"no download with id {unknown[0]!r}")
    rows = store.downloads(list(ids) if ids is not None else None, state=S.DONE)
    for row in rows:
        store.transition(row.id, S.VERIFYING, "verifying again", expect=S.DONE, bytes_done=0, speed=0)
    return [r.id for r in rows]


def _fail(store: Store, row: Download, message: str) -> None:
    store.transition(row.id, S.FAILED, message, level="error", expect=S.VERIFYING, error=message, verified=False)


def before_hash(store: Store, models_dir: Path, row: Download) -> Path | None:
    """Settle what needs no hash (a missing file, a wrong size, no sha256 known); else the path to hash."""
    try:
        dest = confine(models_dir, row.dest)
    except ValueError as e:
        _fail(store, row, str(e))
        return None
    size = file_size(dest)
    if size is None:
        _fail(store, row, f"{dest} is missing")
    elif row.size is not None and size != row.size:
        _fail(store, row, f"size mismatch: expected {row.size} bytes, got {size}; moved to {quarantine(dest).name}")
    elif not row.sha256:
        _unverified_again(store, row, dest, size)
    else:
        return dest
    return None


def _unverified_again(store: Store, row: Download, dest: Path, size: int) -> None:
    """No sha256 to hash against: check what can be checked (a .safetensors file's structure), in the words a
    download uses."""
    if needs_structure_check(dest.name):
        problem = safetensors_problem(dest)
        if problem is not None:
            _fail(store, row, f"{problem}; moved to {quarantine(dest).name}")
            return
        what = "size and safetensors header checked again" if row.size is not None else "safetensors header checked again"
    else:
        what = "size checked again"
    known = "no sha256 known" if row.size is not None else "no sha256 or size known"
    store.transition(row.id, S.DONE, f"{what} ({known}): unverified", expect=S.VERIFYING, bytes_done=size)


def verdict(store: Store, row_id: str, dest: Path, expected: str, digest: str | None, error: BaseException | None) -> None:
    """Record the outcome of a finished hash of `dest`."""
    row = store.get(row_id)
    if row is None or row.state != S.VERIFYING.value:
        return  # paused or cancelled meanwhile: that command already said what happens to it
    if error is not None:
        _fail(store, row, f"cannot read {dest.name} to verify it: {error}")
    elif digest == expected:
        store.transition(
            row_id, S.DONE, "sha256 verified again", expect=S.VERIFYING, bytes_done=file_size(dest) or 0, verified=True
        )
    else:
        moved = quarantine(dest)  # ComfyUI must not keep loading it
        _fail(store, row, f"checksum mismatch: expected {expected}, got {digest}; moved to {moved.name}")
