"""What a fetch would do, before it does anything: per file an action and the bytes still to fetch.

Files already verified in place need no network; everything else is resolved (concurrently) so pinned
checksums are compared with the hub's before a byte is downloaded, and the disk is checked for room. A CivitAI
file without a dest is resolved first, to learn where it goes (or keeps the dest its download already has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import DiskSpaceError, SourceError
from .files import control_path, file_size, free_bytes, part_path, resumable_bytes
from .manifest import CivitaiSource, ModelSpec, confine, is_pending, pending_dest
from .sources import Resolved, resolve_all
from .state import DownloadState, Store


@dataclass
class PlanItem:
    """One selected file and what will happen to it."""

    spec: ModelSpec
    action: str  # "present", "adopt", "resume", "download", "error"
    size: int | None
    have: int = 0  # bytes already on disk (partial download)
    resolved: Resolved | None = None
    error: SourceError | None = None

    @property
    def need(self) -> int:
        """Bytes still to fetch (unknown sizes count as 0)."""
        if self.action in ("present", "adopt", "error") or self.size is None:
            return 0
        return max(self.size - self.have, 0)


@dataclass
class Plan:
    items: list[PlanItem]
    free: int
    models_dir: Path

    @property
    def need(self) -> int:
        return sum(i.need for i in self.items)

    @property
    def errors(self) -> list[PlanItem]:
        return [i for i in self.items if i.action == "error"]

    def check_disk(self) -> None:
        """Refuse before starting when what is left to fetch does not fit."""
        if self.need > self.free:
            raise DiskSpaceError(str(self.models_dir), self.need, self.free)


def _done_in_place(store: Store, spec: ModelSpec, dest: Path) -> bool:
    """A done row is trusted only if the file is still there with the right size."""
    row = store.get(spec.id)
    if row is None or row.state != DownloadState.DONE.value or row.dest != spec.dest:
        return False
    if spec.sha256 and row.sha256 and spec.sha256 != row.sha256:
        return False  # the manifest now asks for other bytes
    size = file_size(dest)
    return size is not None and (row.size is None or size == row.size)


def _named(specs: Sequence[ModelSpec], settings: Settings, store: Store) -> tuple[list[ModelSpec], dict[str, Resolved | SourceError]]:
    """Every spec with a dest: a CivitAI spec without one keeps the dest its download has, else is resolved to
    learn it (its type's folder / CivitAI's file name), else gets the pending placeholder and the error. Returns
    the specs and what was resolved on the way, by id."""
    out: list[ModelSpec] = []
    unnamed: list[ModelSpec] = []
    for spec in specs:
        row = store.get(spec.id) if spec.dest is None else None
        if row is not None and row.source == spec.source and not is_pending(row.dest):
            spec = spec.model_copy(update={"dest": row.dest})
        elif spec.dest is None:
            unnamed.append(spec)
        out.append(spec)
    found: dict[str, Resolved | SourceError] = {}
    named: dict[str, str] = {}
    for spec, result in zip(unnamed, resolve_all(unnamed, settings)):
        found[spec.id] = result
        src = spec.parsed_source
        assert isinstance(src, CivitaiSource)
        named[spec.id] = result.dest if isinstance(result, Resolved) and result.dest else pending_dest(src.ref)
    return [s.model_copy(update={"dest": named[s.id]}) if s.id in named else s for s in out], found


def build_plan(specs: Sequence[ModelSpec], settings: Settings, store: Store) -> Plan:
    """Resolve what needs resolving and decide each file's action; changes nothing on disk or in the DB."""
    items: list[PlanItem] = []
    to_resolve: list[PlanItem] = []
    specs, found = _named(specs, settings, store)
    for spec in specs:
        assert spec.dest is not None
        dest = confine(settings.models_dir, spec.dest)
        if _done_in_place(store, spec, dest):
            items.append(PlanItem(spec, "present", file_size(dest)))
            continue
        part = part_path(dest)
        if dest.exists():
            action, have = "adopt", 0
        elif part.exists():
            # Without a control file aria2 can only trust the part's length, and only a full part is checked
            # by hash; a shorter one still saves the bytes that verify.
            action, have = "resume", resumable_bytes(part)
            if not control_path(part).exists() and spec.size and have != spec.size:
                have = 0
        else:
            action, have = "download", 0
        item = PlanItem(spec, action, spec.size, have)
        items.append(item)
        to_resolve.append(item)
    ask = [i for i in to_resolve if i.spec.id not in found]
    results = dict(found)
    results.update((i.spec.id, r) for i, r in zip(ask, resolve_all([i.spec for i in ask], settings)))
    for item in to_resolve:
        result = results[item.spec.id]
        if isinstance(result, SourceError) and result.retryable and item.action == "adopt" and item.spec.sha256:
            continue  # hub unreachable, but the file in place can still be checked against the pinned sha256
        if isinstance(result, SourceError):
            item.action, item.error = "error", result
        else:
            item.resolved, item.size = result, result.size
    return Plan(items=items, free=free_bytes(settings.models_dir), models_dir=settings.models_dir)
