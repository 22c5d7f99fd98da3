"""A workflow's model files against what is here, and the downloads that would bring the ones that are not.

Each needed file (workflow_sources.NeededFile) gets one state:
- present: its download is done and the file is in place, or (no download holds it) the file is in place;
- downloading: its download is queued, downloading or verifying: on its way, nothing to do;
- failed: its download failed (the row's error says why; fetching again retries it);
- missing: anything else. A paused download is missing (someone stopped it; fetching resumes it), and so is a
  done one whose file is gone (ComfyUI would not find it).
"In place" means models_dir/<folder>/<name>, or the folder ComfyUI reads with it (unet and diffusion_models,
clip and text_encoders), or the dest of the manifest model the file comes from. A download's state wins over the
file for that download's own dest (a file being verified again is not present yet); the best state of all the
places counts.

What fetching a file queues: the manifest model at its dest or of its name (curated, pinned; a manifest model
must never find its dest taken by an ad-hoc download); else the download that already holds the dest when it is
the same file (same source and revision, or the same sha256), or when the workflow gives no usable URL (someone
added it by hand: that download is the file); else a new download of the workflow's source into <folder>/<name>
with the workflow's sha256. An unknown, not allowed or invalid source is never fetched, nor is a dest another
download holds for other bytes ever taken over: `FileStatus.cannot_fetch` says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import Settings
from .manifest import Catalog, ModelSpec, confine, default_id
from .state import DownloadState, Store
from .workflow_sources import (
    FROM_MANIFEST,
    FROM_URL,
    NOT_ALLOWED,
    UNKNOWN,
    NeededFile,
    needed_files,
)

PRESENT, DOWNLOADING, FAILED, MISSING = "present", "downloading", "failed", "missing"
STATES = (PRESENT, DOWNLOADING, FAILED, MISSING)  # best first: of several places, the best state counts
S = DownloadState
ON_ITS_WAY = frozenset({S.QUEUED.value, S.DOWNLOADING.value, S.VERIFYING.value})
# ComfyUI reads these folders together (its folder_paths maps each pair to one list).
SAME_FOLDER = {"unet": "diffusion_models", "diffusion_models": "unet", "clip": "text_encoders", "text_encoders": "clip"}
HF_DEFAULT_REVISION = "main"  # what an hf:// source without a revision resolves at


@dataclass(frozen=True)
class FileStatus:
    """One file a workflow needs: its state here, and what fetching it would queue (or why nothing)."""

    needed: NeededFile
    state: str  # PRESENT, DOWNLOADING, FAILED or MISSING
    size: int | None = None  # the download's, else the manifest's, else the file's in place
    download_id: str | None = None  # the download that holds it, when one does
    detail: str | None = None  # in words: the download's error, "paused", "done, but the file is gone"
    spec: ModelSpec | None = None  # what fetching it queues; None when present or not fetchable
    cannot_fetch: str | None = None  # why it cannot be fetched (not present and spec is None), besides `source`

    @property
    def name(self) -> str:
        return self.needed.name

    @property
    def folder(self) -> str:
        return self.needed.folder

    @property
    def source(self) -> str:
        """Where it comes from in words: the source, "manifest model X", "unknown", "not allowed: <url>"."""
        return self.needed.where

    @property
    def fetchable(self) -> bool:
        """Not present, and fetching would queue something for it."""
        return self.state != PRESENT and self.spec is not None

    def as_json(self) -> dict[str, Any]:
        """What `POST /api/workflows` shows of it (and the CLI reads, whichever side computed it)."""
        return {
            "name": self.name,
            "folder": self.folder,
            "state": self.state,
            "source": self.source,
            "size": self.size,
            "id": self.download_id,
            "detail": self.detail,
            "cannot_fetch": self.cannot_fetch if self.state in (MISSING, FAILED) else None,
        }


def manifest_names(catalog: Catalog) -> dict[str, str]:
    """File name -> the first manifest model with that name, as workflow_sources.classify takes it."""
    names: dict[str, str] = {}
    for model in catalog.models.values():
        if model.dest:  # a CivitAI model without a dest has no name until it is resolved
            names.setdefault(model.dest.rsplit("/", 1)[-1], model.id)
    return names


def check_workflow(data: bytes | str, settings: Settings, store: Store, catalog: Catalog) -> list[FileStatus]:
    """Each file a workflow (its JSON) needs, with its state here. Raises WorkflowError for one that cannot be
    read. Its URLs count only on the hub, CivitAI (through the configured endpoints) or an allowed host."""
    needed = needed_files(
        data,
        manifest_names=manifest_names(catalog),
        allowed=settings.allowed_hosts,
        hf_endpoint=settings.hf_endpoint,
        civitai_endpoint=settings.civitai_endpoint,
    )
    return workflow_status(needed, store, settings.models_dir, catalog)


def workflow_status(files: Iterable[NeededFile], store: Store, models_dir: Path, catalog: Catalog) -> list[FileStatus]:
    """The state of each needed file (one read of the downloads), and what fetching it would queue."""
    here = _Here(store.rows(), models_dir, catalog)
    return [here.status(f) for f in files]


def to_fetch(statuses: Sequence[FileStatus], include_on_the_way: bool = False) -> list[ModelSpec]:
    """The specs to queue for what is missing or failed (each once); with `include_on_the_way`, also for what is
    downloading (a CLI without a service: nothing else would finish those)."""
    wanted = {MISSING, FAILED} | ({DOWNLOADING} if include_on_the_way else set())
    specs: dict[str, ModelSpec] = {}
    for s in statuses:
        if s.spec is not None and s.state in wanted:
            specs.setdefault(s.spec.id, s.spec)
    return list(specs.values())


def _dests(f: NeededFile) -> list[str]:
    """The dests where ComfyUI would find it: <folder>/<name>, and the same name in the folder read with it."""
    if f.dest is None:
        return []
    other = SAME_FOLDER.get(f.folder)
    return [f.dest] + ([f"{other}/{f.name}"] if other else [])


def _revision(source: str, revision: str | None) -> str | None:
    return revision or (HF_DEFAULT_REVISION if source.startswith("hf://") else None)


class _Here:
    """The downloads (one read), the models folder and the catalog, looked up per needed file."""

    def __init__(self, rows: list[dict[str, Any]], models_dir: Path, catalog: Catalog) -> None:
        self.by_dest = {r["dest"]: r for r in rows}
        self.by_id = {r["id"]: r for r in rows}
        self.models_dir = models_dir
        self.catalog = catalog
        self.catalog_dests = {m.dest: m for m in catalog.models.values() if m.dest}
        self.new_ids: set[str] = set()  # ids given to new downloads in this call, so two never share one

    def in_place(self, dest: str) -> int | None:
        """The size of the file at `dest` when it is a regular file inside the models folder, else None."""
        try:
            path = confine(self.models_dir, dest)
            return path.stat().st_size if path.is_file() else None
        except (ValueError, OSError):
            return None

    def row_state(self, row: dict[str, Any]) -> tuple[str, str | None]:
        state = row["state"]
        if state == S.DONE.value:
            if self.in_place(row["dest"]) is not None:
                return PRESENT, None
            return MISSING, "its download is done, but the file is no longer there"
        if state in ON_ITS_WAY:
            return DOWNLOADING, row["error"] or state
        if state == S.FAILED.value:
            return FAILED, row["error"] or "failed"
        return MISSING, state  # paused

    def status(self, f: NeededFile) -> FileStatus:
        if f.dest is None:  # INVALID: it would leave the models folder; never looked for, never fetched
            return FileStatus(f, MISSING, cannot_fetch=f.where)
        dests = _dests(f)
        model = next((self.catalog_dests[d] for d in dests if d in self.catalog_dests), None)
        if model is None and f.kind == FROM_MANIFEST and f.model_id:
            model = self.catalog.models.get(f.model_id)
        places = dests + ([model.dest] if model is not None and model.dest and model.dest not in dests else [])
        found: list[tuple[str, str | None, dict[str, Any] | None, int | None]] = []  # (state, detail, row, size)
        for dest in places:
            row = self.by_dest.get(dest)
            if row is not None:
                found.append((*self.row_state(row), row, row["size"]))
            elif (size := self.in_place(dest)) is not None:
                found.append((PRESENT, None, None, size))
        if model is not None and (row := self.by_id.get(model.id)) is not None and row["dest"] not in places:
            found.append((*self.row_state(row), row, row["size"]))
        state, detail, row, size = min(found, key=lambda x: STATES.index(x[0]), default=(MISSING, None, None, None))
        size = size or (model.size if model is not None else None)
        spec, why = (None, None) if state == PRESENT else self.spec_for(f, model, dests)
        return FileStatus(f, state, size, row["id"] if row else None, detail, spec, why)

    def spec_for(self, f: NeededFile, model: ModelSpec | None, dests: list[str]) -> tuple[ModelSpec | None, str | None]:
        """What fetching `f` queues, or why nothing."""
        if model is not None:
            holder = self.by_dest.get(model.dest) if model.dest else None
            if holder is not None and holder["id"] != model.id:
                return None, f"{model.dest} is already the destination of download {holder['id']!r}"
            return model, None
        holder = next((self.by_dest[d] for d in dests if d in self.by_dest), None)
        if holder is not None:
            # A download someone set up for this name (the workflow gave no usable URL: "add it by URL"), or one of
            # the same file, is what brings it; another file at this name is never replaced.
            if f.kind in (UNKNOWN, NOT_ALLOWED) or _same_file(holder, f):
                return self.validated(_row_fields(holder, f.sha256 if f.kind == FROM_URL else None))
            return None, (f"{holder['dest']} is already the destination of download {holder['id']!r} "
                          f"({holder['source']}): another file")
        if f.kind == UNKNOWN:
            return None, "the workflow gives no URL for it and no manifest model has its name: add it by URL"
        if f.kind == NOT_ALLOWED:
            return None, "only the hub, CivitAI and the hosts in DOWNLOADER_ALLOWED_HOSTS are fetched"
        if f.kind != FROM_URL or f.source is None:
            return None, f.where
        return self.validated({"id": self.new_id(f.dest or ""), "source": f.source, "revision": f.revision,
                               "dest": f.dest, "sha256": f.sha256})

    @staticmethod
    def validated(fields: dict[str, Any]) -> tuple[ModelSpec | None, str | None]:
        try:
            return ModelSpec.model_validate(fields), None
        except ValidationError as e:
            err = e.errors()[0]
            return None, f"cannot be fetched: {err['msg'].removeprefix('Value error, ')}"

    def new_id(self, dest: str) -> str:
        """The id of a new download: the file's name made plain, with -2, -3 … when a model or download has it."""
        base = default_id(dest)
        candidate, n = base, 1
        while candidate in self.by_id or candidate in self.catalog.models or candidate in self.new_ids:
            n += 1
            candidate = f"{base}-{n}"
        self.new_ids.add(candidate)
        return candidate


def _row_fields(row: Mapping[str, Any], sha256: str | None) -> dict[str, Any]:
    """A download's own spec again (what re-queueing it asks for): its source, dest and what was pinned."""
    pinned = row["sha256"] if row["sha256_origin"] == "manifest" else None
    return {"id": row["id"], "source": row["source"], "revision": row["revision"], "dest": row["dest"],
            "sha256": sha256 or pinned, "size": row["size"] if row.get("size_origin") == "manifest" else None,
            "required": bool(row["required"])}


def _same_file(row: Mapping[str, Any], f: NeededFile) -> bool:
    """Whether the download holding a dest brings the bytes `f` asks for: the same source at the same revision,
    or the same sha256 (when both are known)."""
    same_source = f.source is not None and row["source"] == f.source
    if same_source and _revision(row["source"], row["revision"]) == _revision(row["source"], f.revision):
        return True
    return bool(f.sha256 and row["sha256"] and row["sha256"] == f.sha256)
