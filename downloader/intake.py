"""Recording a plan in the database, run by the manager loop (the one writer): rows created or updated, and each
file queued, marked in place or failed as its plan item says.

A destination belongs to one download: a plan item whose dest another download holds is refused (Conflict)
before anything of the plan is written; the database's unique index on `downloads.dest` backs this up against
another process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from .commands import Conflict
from .config import Settings
from .manifest import (
    CivitaiSource,
    ModelSpec,
    default_id,
    endpoints_of,
    is_pending,
    pending_dest,
)
from .plan import Plan, PlanItem
from .state import DownloadState, Store

S = DownloadState


def added_spec(fields: Mapping[str, Any], settings: Settings) -> ModelSpec:
    """The spec of an added download (`POST /api/downloads`, `downloader add`): a pasted link in its canonical form,
    and, unless one is given, an id from the file name (`civitai-<version>` while CivitAI has not named the file).
    Raises pydantic's ValidationError."""
    given = fields.get("id")
    spec = ModelSpec.model_validate({**fields, "id": given or "download"}, context={"endpoints": endpoints_of(settings)})
    if given:
        return spec
    src = spec.parsed_source
    name = spec.dest if spec.dest is not None else pending_dest(src.ref) if isinstance(src, CivitaiSource) else ""
    return spec.model_copy(update={"id": default_id(name)})


def add_refused(store: Store, catalog_ids: Collection[str], spec: ModelSpec) -> Conflict | None:
    """The rule for an added download (`POST /api/downloads`, `downloader add`): an id that a manifest model or
    another download has, or a destination another download has, is refused; adding the same thing again is not
    (a CivitAI source without a dest is the same thing as its download of that source)."""
    existing = store.get(spec.id)
    same = existing is not None and existing.source == spec.source and spec.dest in (None, existing.dest)
    if (spec.id in catalog_ids or existing is not None) and not same:
        return Conflict(f"id {spec.id!r} is already used by another download")
    return dest_taken(store, spec.id, spec.dest) if spec.dest is not None else None


def dest_taken(store: Store, download_id: str, dest: str) -> Conflict | None:
    """The Conflict to answer when `dest` is already the destination of another download, else None."""
    holder = store.holder_of(dest)
    if holder is None or holder.id == download_id:
        return None
    return Conflict(f"dest {dest!r} is already the destination of download {holder.id!r}")


def apply_plan(store: Store, plan: Plan) -> list[str]:
    """Record every planned file and queue what needs work; returns the ids. Raises Conflict (nothing written)
    when a destination belongs to another download."""
    for item in plan.items:
        taken = dest_taken(store, item.spec.id, item.spec.dest)
        if taken is not None:
            raise taken
    for item in plan.items:
        _apply_item(store, item)
    return [i.spec.id for i in plan.items]


def _apply_item(store: Store, item: PlanItem) -> None:
    spec, res = item.spec, item.resolved
    fields = {
        "source": spec.source,
        "revision": spec.revision,
        "dest": spec.dest,
        "size": item.size,
        "sha256": (res.sha256 if res else None) or spec.sha256,
        "sha256_origin": (res.sha256_origin if res else None) or ("manifest" if spec.sha256 else None),
        "size_origin": "manifest" if spec.size else None,
        "required": spec.required,
        "manifest": spec.manifest or None,
    }
    try:
        row = store.upsert(spec.id, **fields)
    except IntegrityError:  # another process took the dest between the check and the write
        raise dest_taken(store, spec.id, spec.dest) or Conflict(f"dest {spec.dest!r} is already taken") from None
    state = S(row.state)
    if item.action == "present":
        if state != S.DONE:
            store.transition(spec.id, S.VERIFYING, "found in place")
            store.transition(spec.id, S.DONE, "in place", bytes_done=item.size or 0)
    elif item.action == "error" and item.error is not None and item.error.retryable:
        # e.g. the hub is briefly unreachable: the loop resolves again with backoff
        if state not in (S.QUEUED, S.DOWNLOADING, S.VERIFYING):
            store.transition(spec.id, S.QUEUED, f"queued: {item.error}", attempts=0)
        store.update(spec.id, error=str(item.error), next_attempt_at=None)
    elif item.action == "error":
        assert item.error is not None
        if state in (S.DONE, S.VERIFYING, S.DOWNLOADING):
            store.transition(spec.id, S.QUEUED, "requeued")
        store.transition(spec.id, S.FAILED, str(item.error), level="error", error=str(item.error))
    elif state not in (S.QUEUED, S.DOWNLOADING, S.VERIFYING):
        store.transition(spec.id, S.QUEUED, f"queued ({item.action})", error=None, attempts=0, next_attempt_at=None)
    else:
        store.update(spec.id, error=None, attempts=0, next_attempt_at=None)


def name_pending(store: Store, download_id: str, dest: str | None) -> Conflict | None:
    """Give a CivitAI download still at its placeholder the dest its resolution found; the Conflict when another
    download holds that dest (nothing written then). A download with a real dest is left as it is."""
    row = store.get(download_id)
    if row is None or dest is None or not is_pending(row.dest):
        return None
    taken = dest_taken(store, download_id, dest)
    if taken is not None:
        return taken
    try:
        store.update(download_id, dest=dest)
    except IntegrityError:  # another process took it between the check and the write
        return dest_taken(store, download_id, dest) or Conflict(f"dest {dest!r} is already taken")
    store.log(download_id, f"CivitAI names the file: {dest}")
    return None
