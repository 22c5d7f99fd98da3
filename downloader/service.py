"""The long-running downloader: a Manager working in a background thread, and the calls a UI makes on it.

`downloader serve` and the web app share one `DownloadService`. If another process owns the workspace (a CLI
`fetch`), the service keeps answering and takes over the downloads as soon as that process lets go.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import DownloaderError, ManifestError, WorkspaceBusy
from .files import control_path, part_path
from .manager import Manager
from .manifest import Catalog, ModelSpec, confine, load_catalog
from .plan import build_plan
from .readiness import Missing, missing, preset_requirements
from .state import TERMINAL_STATES, Download, DownloadState, Store, bytes_done

log = logging.getLogger(__name__)
S = DownloadState


class NotFound(DownloaderError, KeyError):
    """No such download or preset."""


class Conflict(DownloaderError):
    """The request contradicts what exists (an id or a dest already taken)."""


@dataclass
class PresetView:
    name: str
    description: str | None
    models: list[str]
    size: int


class DownloadService:
    """Owns the Store, the catalog and a Manager thread; every method is safe to call from request threads."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.db_path)
        self.catalog = catalog if catalog is not None else load_catalog(settings.manifest_dirs, settings.models_dir)
        # What ComfyUI waits for besides the rows marked required; the catalog is fixed, so worked out once.
        self.preset_required = preset_requirements(self.catalog, settings.model_presets or ())
        self.manager = Manager(settings, self.store)
        self.owner_note: str | None = None  # why we are not downloading (another owner), for the UI
        self.fatal: str | None = None  # the manager thread died with this error
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._submit_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the manager thread (it waits for the workspace lock if someone else holds it)."""
        self._thread = threading.Thread(target=self._run, name="manager", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.manager.start()
                break
            except WorkspaceBusy as e:
                self.owner_note = f"{e}; downloads resume here when it finishes"
                self._stopping.wait(2)
            except DownloaderError as e:
                self.fatal = str(e)
                log.error("downloader cannot start: %s", e)
                return
        else:
            return
        self.owner_note = None
        try:
            self.manager.run(None, until_done=False)
        except DownloaderError as e:
            self.fatal = str(e)
            log.error("download manager stopped: %s", e)
        finally:
            self.manager.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the manager (downloads resume on the next start) and wait for it."""
        self._stopping.set()
        self.manager.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.close()

    @property
    def daemon_log(self) -> Path:
        return self.manager.daemon.log_path

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.manager.lock.held

    # --- reading --------------------------------------------------------------------------------------
    def downloads(self) -> list[Download]:
        return self.store.downloads()

    def get(self, download_id: str) -> Download:
        row = self.store.get(download_id)
        if row is None:
            raise NotFound(f"no download with id {download_id!r}")
        return row

    def presets(self) -> list[PresetView]:
        return [
            PresetView(name, p.description, list(p.models), sum(self.catalog.models[m].size or 0 for m in p.models))
            for name, p in self.catalog.presets.items()
        ]

    def summary(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Counts and bytes over every row (as from `store.rows()`), and whether ComfyUI is ready (the rule of
        `readiness`): for totals and health checks."""
        rows = self.store.rows() if rows is None else rows
        counts = {s.value: 0 for s in S}
        for r in rows:
            counts[r["state"]] += 1
        total = sum(r["size"] or 0 for r in rows)
        done = sum(bytes_done(r["state"], r["size"], r["bytes_done"]) for r in rows)
        speed = sum(r["speed"] for r in rows if r["state"] == S.DOWNLOADING.value)
        ready = not self.missing(rows)
        return {
            "counts": counts,
            "bytes_total": total,
            "bytes_done": done,
            "speed": speed,
            "comfyui_ready": ready,
            "required_done": ready,  # the older name of comfyui_ready, kept for scripts that read it
            "manager": "running" if self.running else ("failed" if self.fatal else "waiting"),
            "note": self.fatal or self.owner_note,
        }

    def missing(self, rows: list[dict[str, Any]] | None = None) -> Missing:
        """What ComfyUI still waits for (see `readiness.missing`); empty when it is ready."""
        rows = self.store.rows() if rows is None else rows
        return missing(self.preset_required, rows, self.settings.models_dir)

    def in_progress(self) -> dict[Path, str]:
        """Files the downloader is writing or will resume (partials, control files, a file being verified),
        mapped to the download id: the file manager shows them as in progress and refuses to delete them."""
        out: dict[Path, str] = {}
        for row in self.store.downloads():
            if S(row.state) in (S.QUEUED, S.DOWNLOADING, S.PAUSED, S.VERIFYING):
                try:
                    dest = confine(self.settings.models_dir, row.dest)
                except ValueError:
                    continue
                part = part_path(dest)
                for path in (part, control_path(part)) + ((dest,) if row.state == S.VERIFYING.value else ()):
                    out[path] = row.id
        return out

    # --- acting ---------------------------------------------------------------------------------------
    def start_preset(self, name: str) -> list[str]:
        """Queue every model of a preset (resolving them first; errors are per file); returns the ids."""
        return self._start([name], ())

    def start_models(self, ids: Sequence[str]) -> list[str]:
        """Queue single manifest models."""
        return self._start((), ids)

    def _start(self, presets: Sequence[str], ids: Sequence[str]) -> list[str]:
        try:
            specs = self.catalog.select(presets, ids)
        except ManifestError as e:
            raise NotFound(str(e)) from None
        return self._submit(specs)

    def add(self, spec: ModelSpec) -> str:
        """Queue an ad-hoc download (not in a manifest); refuses ids and dests that are taken."""
        confine(self.settings.models_dir, spec.dest)  # ValueError for a dest outside the models dir
        existing = self.store.get(spec.id)
        same = existing is not None and (existing.source, existing.dest) == (spec.source, spec.dest)
        if (spec.id in self.catalog.models or existing is not None) and not same:
            raise Conflict(f"id {spec.id!r} is already used by another download")
        for row in self.store.downloads():
            if row.dest == spec.dest and row.id != spec.id:
                raise Conflict(f"dest {spec.dest!r} is already the destination of {row.id!r}")
        self._submit([spec])
        return spec.id

    def _submit(self, specs: Sequence[ModelSpec]) -> list[str]:
        with self._submit_lock:  # two clicks on one preset must not plan it twice at once
            plan = build_plan(specs, self.settings, self.store)
            plan.check_disk()
            refused = [i.error for i in plan.errors if i.error is not None and not i.error.retryable]
            if len(specs) == 1 and refused:
                # One file asked for and refused (404, pinned sha256 disagrees, ...): say so to the caller.
                raise refused[0]
            return self.manager.submit(plan)

    def pause(self, download_id: str) -> None:
        self.get(download_id)
        self.manager.pause(download_id)

    def resume(self, download_id: str) -> None:
        self.get(download_id)
        self.manager.resume(download_id)

    def retry(self, download_id: str) -> None:
        self.get(download_id)
        self.manager.retry(download_id)

    def cancel(self, download_id: str) -> None:
        """Stop a download and delete its partial file; a placed file is left alone."""
        self.get(download_id)
        self.manager.cancel(download_id)

    def bulk(self, verb: str) -> int:
        """pause / resume / retry every download it applies to; returns how many."""
        wanted = {"pause": (S.QUEUED, S.DOWNLOADING, S.VERIFYING), "resume": (S.PAUSED,), "retry": (S.FAILED,)}[verb]
        rows = [r for r in self.store.downloads() if S(r.state) in wanted]
        for r in rows:
            getattr(self.manager, verb)(r.id)
        return len(rows)

    def wait_settled(self, ids: Sequence[str], timeout: float) -> bool:
        """Block until the given downloads are done or failed (tests, scripts); False on time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.store.downloads(list(ids))
            if rows and all(S(r.state) in TERMINAL_STATES for r in rows):
                return True
            time.sleep(0.1)
        return False
