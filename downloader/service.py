"""The long-running downloader: a Manager working in a background thread, and the calls a UI makes on it.

`downloader serve` and the web app share one `DownloadService`. Several pods may run one each on a workspace they
share (one network volume): each file is then downloaded by one pod, the one that claims it when it starts it
(downloader/claims.py), and every pod shows every file. That needs locks between processes and atomic renames
from the filesystem (`locks.check_sharing`); where they are missing, the service says so and runs as the only pod
(the workspace lock), as it does while another process owns the workspace (a CLI `fetch`): it keeps answering
and takes over the downloads as soon as that process lets go.

The manager loop is the one writer of download states: every call that changes something resolves what it needs
in the calling thread, then hands the change to the loop and waits (at most `Settings.command_timeout`) for its
answer; no answer in time, or no engine running, is `EngineUnavailable` saying why. The loop cannot die silently:
an exception is logged with its traceback and the loop restarts after 1, 2, 4 ... s (at most
LOOP_BACKOFF_MAX), requeueing what was interrupted and starting aria2c again if it died; `health()` says meanwhile
what is wrong.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from .claims import live_holders
from .commands import Conflict, EngineUnavailable, NotFound
from .components import SHARING
from .config import Settings
from .errors import Aria2Error, ManifestError, WorkspaceBusy
from .files import control_path, part_path
from .intake import add_refused, dest_taken
from .locks import WorkspaceLock, check_sharing
from .manager import Manager
from .manifest import Catalog, ModelSpec, confine, endpoints_of, load_catalog
from .plan import Plan, build_plan
from .readiness import Missing, missing, preset_requirements
from .state import TERMINAL_STATES, Download, DownloadState, Store, bytes_done
from .workflow_status import DOWNLOADING, check_workflow, to_fetch

log = logging.getLogger(__name__)
FAILING_WAIT = 5.0  # seconds a request waits for a failing engine (see _call)
S = DownloadState
T = TypeVar("T")
LOOP_BACKOFF_MAX = 30.0  # seconds between restarts of a loop that keeps failing, at most
__all__ = ["Conflict", "DownloadService", "EngineUnavailable", "Health", "NotFound", "PresetView"]


class Health(NamedTuple):
    """Whether the engine works (`ok`), and if not, why in words: `ok, reason = service.health()`."""

    ok: bool
    reason: str | None


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
        self.catalog = catalog if catalog is not None else load_catalog(settings.manifest_dirs, settings.models_dir, endpoints_of(settings))
        # What ComfyUI waits for besides the rows marked required; the catalog is fixed, so worked out once.
        self.preset_required = preset_requirements(self.catalog, settings.model_presets or ())
        self.manager = Manager(settings, self.store)
        self.shared, self.sharing_note = self._sharing()
        # One lock of this pod's (one service and one aria2c per pod) when pods share the workspace; the
        # workspace's own otherwise.
        self.manager.lock = (WorkspaceLock(settings.state_dir, pod=settings.pod_id) if self.shared
                             else WorkspaceLock(settings.state_dir, best_effort=True))
        self.owner_note: str | None = None  # why we are not downloading (another owner), for the UI
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._submit_lock = threading.Lock()
        # What is wrong, and the loop's tick count when it was said: a tick completed since means it recovered.
        self._problem: str = "starting"
        self._problem_at = 0
        self._failing = False  # the problem is a failure (not starting, not waiting for another owner)

    def _sharing(self) -> tuple[bool, str]:
        """Whether this pod shares the workspace with others, and the line that says so (log and status page)."""
        pod = self.settings.pod_id
        check = check_sharing(self.settings.state_dir)
        if check.ok:
            note = f"pod {pod}: sharing the workspace with any other pods on it (each file is downloaded by one pod)"
            log.info("%s", note)
            state = "done"
        else:
            note = f"pod {pod}: single-pod: {check.reason}; this pod downloads alone, other pods wait for it"
            log.warning("%s", note)
            state = "skipped"
        self.store.set_component(SHARING, state, note, pod=pod)  # this pod's row: other pods list it, never overwrite it
        return check.ok, note

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the manager thread (it waits for the workspace lock if someone else holds it)."""
        self._thread = threading.Thread(target=self._run, name="manager", daemon=True)
        self.manager.bind_loop(self._thread)  # from now on only that thread writes download states
        self._thread.start()

    def _run(self) -> None:
        started, delay = False, 1.0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                if started:
                    self.manager.recover()
                else:
                    self.manager.start()
                    started, self.owner_note = True, None
                self.manager.run(None, until_done=False)
            except WorkspaceBusy as e:
                self.owner_note = f"{e}; downloads resume here when it finishes"
                self._report(f"waiting: {self.owner_note}", failing=False)
                self._stopping.wait(2)
            except Exception as e:  # whatever it is, it is logged and the loop comes back
                if time.monotonic() - began > LOOP_BACKOFF_MAX:
                    delay = 1.0  # it had been working for a while: this is a new problem, not the same one again
                reason = f"aria2c not running: {e}" if isinstance(e, Aria2Error) else f"the loop failed: {type(e).__name__}: {e}"
                self._report(reason, failing=True)
                log.exception("download engine: %s; restarting in %.0f s", reason, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, LOOP_BACKOFF_MAX)
        if started:
            try:
                self.manager.close()
            except Exception:  # stopping anyway; say what went wrong
                log.exception("download engine: closing failed")

    def _report(self, problem: str, failing: bool) -> None:
        self._problem, self._problem_at, self._failing = problem, self.manager.ticks, failing

    def health(self) -> Health:
        """Ok once the loop completes ticks; else the reason: starting, waiting for another owner, "aria2c not
        running: ..." (missing, crashing, restarting), "the loop failed: ...", or stopped. For /healthz."""
        if self._stopping.is_set():
            return Health(False, "stopped")
        if self._thread is None:
            return Health(False, "not started")
        if not self._thread.is_alive():
            return Health(False, f"the engine thread ended: {self._problem}")
        if self.manager.ticks > self._problem_at:
            return Health(True, None)
        return Health(False, self._problem)

    @property
    def fatal(self) -> str | None:
        """What keeps the engine from working right now, when it is a failure (not starting or waiting)."""
        ok, reason = self.health()
        return None if ok or not self._failing else reason

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the manager (downloads resume on the next start) and wait for it."""
        self._stopping.set()
        self.manager.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.close()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the manager loop and return its answer; EngineUnavailable when the engine cannot answer."""
        if self._thread is None or not self._thread.is_alive() or self._stopping.is_set():
            raise EngineUnavailable(f"the download engine is not running ({self.health().reason})")
        # While the engine is failing (aria2c missing or crashing), a click waits a few seconds for a restart to
        # come through, not the whole time-out: the answer then says why at once.
        wait = min(self.settings.command_timeout, FAILING_WAIT) if self.fatal else self.settings.command_timeout
        return self.manager.call(fn, wait, lambda: self.health().reason or "the loop is busy")

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
        health = self.health()
        return {
            "counts": counts,
            "bytes_total": total,
            "bytes_done": done,
            "speed": speed,
            "comfyui_ready": ready,
            "required_done": ready,  # the older name of comfyui_ready, kept for scripts that read it
            "manager": "running" if health.ok else ("failed" if self._failing else "waiting"),
            "note": health.reason,
            "pod": self.settings.pod_id,
            "shared": self.shared,
        }

    def holders(self) -> dict[str, str]:
        """download id -> the pod fetching it now (its live claim): every pod shows every pod's work."""
        return live_holders(self.store)

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
        """Queue an ad-hoc download (not in a manifest); refuses ids and dests that are taken (Conflict). A CivitAI
        source without a dest is named by resolving it (its type's folder, CivitAI's file name)."""
        if spec.dest is not None:
            confine(self.settings.models_dir, spec.dest)  # ValueError for a dest outside the models dir
        self._check_add(spec)  # early, before resolving; the loop checks again where it writes
        plan = self._plan([spec])
        named = plan.items[0].spec  # with its dest, when resolving named it
        return self._call(lambda: self._apply_add(named, plan))[0]

    def _check_add(self, spec: ModelSpec) -> None:
        refused = add_refused(self.store, self.catalog.models, spec)
        if refused is not None:
            raise refused

    def _apply_add(self, spec: ModelSpec, plan: Plan) -> list[str]:
        self._check_add(spec)  # in the loop: of two adds of one dest at once, the second finds the first's row
        return self.manager.apply(plan)

    def _submit(self, specs: Sequence[ModelSpec]) -> list[str]:
        plan = self._plan(specs)
        return self._call(lambda: self.manager.apply(plan))

    def _plan(self, specs: Sequence[ModelSpec]) -> Plan:
        """Resolve and plan in the calling thread (slow: it talks to the hub); raise what refuses it outright."""
        with self._submit_lock:  # two clicks on one preset must not plan it twice at once
            plan = build_plan(specs, self.settings, self.store)
        plan.check_disk()
        refused = [i.error for i in plan.errors if i.error is not None and not i.error.retryable]
        if len(specs) == 1 and refused:
            # One file asked for and refused (404, pinned sha256 disagrees, ...): say so to the caller.
            raise refused[0]
        return plan

    def pause(self, download_id: str) -> None:
        self.get(download_id)
        self._call(lambda: self.manager.act("pause", download_id))

    def resume(self, download_id: str) -> None:
        self.get(download_id)
        self._call(lambda: self.manager.act("resume", download_id))

    def retry(self, download_id: str) -> None:
        self.get(download_id)
        self._call(lambda: self.manager.act("retry", download_id))

    def cancel(self, download_id: str) -> None:
        """Stop a download and delete its partial file; a placed file is left alone."""
        self.get(download_id)
        self._call(lambda: self.manager.act("cancel", download_id))

    def bulk(self, verb: str) -> int:
        """pause / resume / retry every download it applies to; returns how many."""
        if verb not in ("pause", "resume", "retry"):
            raise ValueError(f"unknown action {verb!r} for all (pause, resume or retry)")
        return self._call(lambda: self.manager.act_all(verb))

    def verify(self, ids: Sequence[str] | None = None) -> list[str]:
        """Hash the done files among `ids` (every done file when None) again in place, one at a time, through the
        loop; returns the ids being verified (their rows show `verifying` meanwhile). A good file stays done
        ("sha256 verified again"); a bad or missing one is moved aside and marked failed with the reason."""
        return self._call(lambda: self.manager.verify(ids))

    def wait_settled(self, ids: Sequence[str], timeout: float) -> bool:
        """Block until the given downloads are done or failed (tests, scripts); False on time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.store.downloads(list(ids))
            if rows and all(S(r.state) in TERMINAL_STATES for r in rows):
                return True
            time.sleep(0.1)
        return False

    # --- ComfyUI workflows: the models one needs, and fetching what is missing (downloader/workflow_status.py) ----
    def workflow(self, data: bytes | str) -> list[Any]:
        """Each model file a workflow (its JSON, UI or API format) needs: state here (present, downloading, failed,
        missing), size, download id, where it comes from, and what fetching it would queue (`FileStatus`).
        Raises WorkflowError (a ValueError) for a workflow that cannot be read."""
        return check_workflow(data, self.settings, self.store, self.catalog)

    def fetch_workflow(self, data: bytes | str) -> list[str]:
        """Queue what a workflow needs that is missing or failed and can be fetched (never an unknown, not allowed
        or invalid source: `workflow()` says why for each); returns the ids of the downloads that bring its
        missing files, those queued now and those already on their way. DiskSpaceError when they do not fit."""
        statuses = self.workflow(data)
        on_the_way = [s.download_id for s in statuses if s.state == DOWNLOADING and s.download_id]
        specs = to_fetch(statuses)
        ids: list[str] = []
        if specs:
            with self._submit_lock:
                plan = build_plan(specs, self.settings, self.store)
            plan.check_disk()
            # Not `_plan`: a source refused outright (404, a pinned sha256 the hub disagrees with) becomes a failed
            # download with the reason, for one file as for many, so the workflow's table says why.
            ids = self._call(lambda: self._apply_workflow(plan))
        return ids + [i for i in on_the_way if i not in ids]

    def _apply_workflow(self, plan: Plan) -> list[str]:
        """In the loop: queue the plan, leaving out a file whose dest another download took since it was planned
        (the others still go)."""
        items = [i for i in plan.items if i.spec.dest is None or dest_taken(self.store, i.spec.id, i.spec.dest) is None]
        return self.manager.apply(Plan(items, plan.free, plan.models_dir)) if items else []
