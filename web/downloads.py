"""The downloads page and its JSON API: every manifest model by preset, live progress, and the buttons.

Three kinds of client, one set of routes: scripts get JSON; a browser without JavaScript posts plain forms and
gets a flash message and the page again; the page's own JavaScript (htmx, `live.is_htmx()`) gets JSON for its
buttons, the "add a download" card as a fragment, and polls `GET /downloads/live` for the part that changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from pydantic import ValidationError

from downloader.comfy import MODEL_FOLDERS
from downloader.errors import DiskSpaceError, SourceError
from downloader.intake import added_spec
from downloader.manifest import ModelSpec, canonical_source, endpoints_of, is_pending
from downloader.service import Conflict, DownloadService, EngineUnavailable, NotFound
from downloader.state import (
    ACTIONS,
    AVAILABLE,
    STATE_LABELS,
    DownloadState,
    IllegalTransition,
    bytes_done,
)

from . import service
from .live import is_htmx, with_flash

S = DownloadState
bp = Blueprint("downloads", __name__)
VERBS = ("pause", "resume", "cancel", "retry")
BULK_VERBS = {"pause": "Paused", "resume": "Resumed", "retry": "Retrying"}  # verb -> what the page says it did
SNAPSHOT_TTL = 0.5  # seconds an /api/downloads answer is reused (see SnapshotCache)
ADD_KEYS = {"source", "dest", "sha256", "size", "id", "revision", "required"}
# The words the pages show for each state, "available" (never stored) included.
LABELS = {state.value: label for state, label in STATE_LABELS.items()} | {AVAILABLE: AVAILABLE}
# A preset's state: the first of these any of its models is in (all done: done; none started: available).
PRESET_STATE_ORDER = (S.FAILED, S.DOWNLOADING, S.VERIFYING, S.QUEUED, S.PAUSED)


def row_json(data: dict[str, Any], presets: list[str], pod: str | None = None) -> dict[str, Any]:
    """A download as the API shows it: the row (a `store.rows()` dict) plus progress, ETA, its presets and the pod
    fetching it (its live claim; None when no pod works on it)."""
    size = data["size"] or 0
    done = bytes_done(data["state"], size, data["bytes_done"])
    data["progress"] = round(done / size, 4) if size else None
    data["eta_s"] = round((size - done) / data["speed"]) if data["speed"] and size else None
    data["presets"] = presets
    data["pod"] = pod
    if is_pending(data["dest"]):
        data["dest"] = None  # CivitAI names the file once the source is resolved
    data.pop("next_attempt_at", None)
    return data


def snapshot(svc: DownloadService) -> dict[str, Any]:
    """Everything the page needs in one answer (the page polls it)."""
    rows = svc.store.rows()
    summary = svc.summary(rows)
    presets_of: dict[str, list[str]] = {}
    for name, preset in svc.catalog.presets.items():
        for model_id in preset.models:
            presets_of.setdefault(model_id, []).append(name)
    known = {r["id"] for r in rows}
    holders = svc.holders()
    downloads = [row_json(r, presets_of.get(r["id"], []), holders.get(r["id"])) for r in rows]
    # Manifest models never asked for yet show as "available" so a person can start them.
    for model in svc.catalog.models.values():
        if model.id not in known:
            downloads.append(
                {
                    "id": model.id,
                    "source": model.source,
                    "dest": model.dest,
                    "size": model.size,
                    "state": AVAILABLE,
                    "required": model.required,
                    "presets": presets_of.get(model.id, []),
                    "progress": None,
                    "bytes_done": 0,
                    "speed": 0,
                    "eta_s": None,
                    "error": None,
                    "verified": False,
                    "pod": None,
                }
            )
    presets = []
    by_id = {d["id"]: d for d in downloads}
    for p in svc.presets():
        states = [by_id[m]["state"] for m in p.models if m in by_id]
        presets.append(
            {
                "name": p.name,
                "description": p.description,
                "models": p.models,
                "size": p.size,
                "done": sum(1 for s in states if s == S.DONE),
                "state": _preset_state(states),
            }
        )
    return {"downloads": downloads, "presets": presets, "summary": summary, "folders": list(MODEL_FOLDERS)}


def _preset_state(states: list[str]) -> str:
    if states and all(s == S.DONE for s in states):
        return S.DONE.value
    for s in PRESET_STATE_ORDER:
        if s.value in states:
            return s.value
    return AVAILABLE


def _totals(summary: dict[str, Any]) -> dict[str, Any]:
    """The totals card's words: a headline with its tone, and whether ComfyUI has what it needs."""
    counts = summary["counts"]
    total = sum(counts.values())
    active = sum(counts[s.value] for s in (S.QUEUED, S.DOWNLOADING, S.VERIFYING))
    failed, done = counts[S.FAILED.value], counts[S.DONE.value]
    if total == 0:
        headline = "Nothing started yet"
    elif done == total:
        headline = "All done"
    elif active:
        headline = "Downloading"
    elif failed:
        headline = f"{failed} failed"
    else:
        headline = "Paused"
    tone = "ok" if total and done == total else ("err" if failed and not active else "")
    return {"total": total, "headline": headline, "tone": tone, "ready": bool(summary["required_done"] and total)}


def _view(data: dict[str, Any]) -> dict[str, Any]:
    """What the templates render a snapshot with: the snapshot and the state vocabulary of downloader/state.py."""
    by_id = {d["id"]: d for d in data["downloads"]}
    startable = {p["name"] for p in data["presets"] if any(by_id.get(m, {}).get("state") == AVAILABLE for m in p["models"])}
    return {
        "data": data,
        "by_id": by_id,
        "others": [d for d in data["downloads"] if not d["presets"]],
        "startable": startable,
        "totals": _totals(data["summary"]),
        "labels": LABELS,
        "actions": ACTIONS,
        "S": S,
        "AVAILABLE": AVAILABLE,
        "bytes_done": bytes_done,
    }


def _error(status: int, message: str) -> tuple[Any, int]:
    return jsonify(error=message), status


def _done(message: str, payload: dict[str, Any], status: int = 202, said: str | None = None) -> Any:
    """JSON for scripts and for the page's buttons (`said`: what the page flashes); for a plain form post
    (no JavaScript), a flash message and back to the page."""
    _cache().clear()
    if is_htmx():
        response = jsonify(payload)
        response.status_code = status
        return with_flash(response, said) if said else response
    if request.is_json or not request.form:
        return jsonify(payload), status
    flash(message, "info")
    return redirect(url_for("downloads.page"))


def _fail(status: int, message: str) -> Any:
    """JSON {"error"} for scripts and the page's buttons (the page flashes it); a flash for a plain form post."""
    if is_htmx() or request.is_json or not request.form:
        return _error(status, message)
    flash(message, "error")
    return redirect(url_for("downloads.page"))


@bp.app_errorhandler(EngineUnavailable)
def _engine_unavailable(e: EngineUnavailable) -> Any:
    """Any route: the download loop could not take the request (starting, aria2c down, the loop failing)."""
    return _fail(503, str(e))


@bp.errorhandler(Conflict)
@bp.errorhandler(IllegalTransition)
def _conflict(e: Exception) -> Any:
    """A destination another download has, or a row another process moved at that very moment."""
    return _fail(409, str(e))


@bp.get("/")
def index() -> Any:
    return redirect(url_for("downloads.page"))


@bp.get("/downloads")
def page() -> str:
    """Rendered on the server (works without JavaScript); downloads.js keeps /downloads/live swapped in."""
    return render_template("downloads.html", add=_add_form(), **_view(snapshot(service())))


@bp.get("/downloads/live")
def live() -> str:
    """The part of the page that changes (totals, presets, rows): the page polls it every second."""
    return render_template("_downloads_live.html", **_view(_cache().data(lambda: snapshot(service()))))


class SnapshotCache:
    """The snapshot (and its serialized `GET /api/downloads` answer), reused for SNAPSHOT_TTL seconds: the page
    polls every second from every open tab, and building it for hundreds of rows costs ~20 ms of CPU. Changes
    made through the web UI clear it at once; progress is at most SNAPSHOT_TTL old."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0.0
        self._data: dict[str, Any] | None = None
        self._body: bytes | None = None

    def _fresh(self, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The snapshot, rebuilt if it is older than SNAPSHOT_TTL (call with the lock held)."""
        if self._data is None or time.monotonic() - self._at > SNAPSHOT_TTL:
            self._data, self._body, self._at = build(), None, time.monotonic()
        return self._data

    def data(self, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            return self._fresh(build)

    def get(self, build: Callable[[], dict[str, Any]]) -> bytes:
        """The snapshot as compact JSON."""
        with self._lock:
            data = self._fresh(build)
            if self._body is None:
                self._body = json.dumps(data, separators=(",", ":")).encode()
            return self._body

    def clear(self) -> None:
        with self._lock:
            self._data = self._body = None


def _cache() -> SnapshotCache:
    return current_app.extensions.setdefault("snapshot_cache", SnapshotCache())  # type: ignore[no-any-return]


@bp.get("/api/downloads")
def list_downloads() -> Any:
    return Response(_cache().get(lambda: snapshot(service())), mimetype="application/json")


class Refused(Exception):
    """An addition refused, with the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _form_dest(folder: str, filename: str, source: str) -> str | None:
    """The add form's folder + file name as a dest: the name defaults to the source's last path part; a CivitAI
    source with the folder "automatic" and no name gets its folder and name from CivitAI (None)."""
    try:
        canonical, _ = canonical_source(source, endpoints_of(service().settings))
    except ValueError:
        canonical = source  # refused with the reason when the spec is validated
    if not folder:
        if canonical.startswith("civitai:") and not filename:
            return None
        raise Refused(400, "folder: pick the models folder the file goes to (automatic is for CivitAI sources)")
    if not filename and canonical.startswith("civitai:"):
        raise Refused(400, "filename: CivitAI names its files: give a file name, or pick the folder automatic")
    return f"{folder}/{filename or urlsplit(canonical).path.rsplit('/', 1)[-1]}"


def _add(body: Any) -> ModelSpec:
    """Validate and queue an addition (`dest`, or the form's folder + filename); raise Refused with the reason."""
    if not isinstance(body, dict):
        raise Refused(400, "send a JSON object with source and dest")
    if "folder" in body and "dest" not in body:
        body["dest"] = _form_dest(str(body.pop("folder")), str(body.pop("filename", "") or ""), str(body.get("source", "")))
    body.pop("folder", None)
    body.pop("filename", None)
    body.pop("csrf_token", None)
    unknown = set(body) - ADD_KEYS
    if unknown:
        raise Refused(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    body = {k: v for k, v in body.items() if v not in ("", None)}
    if "size" in body and isinstance(body["size"], str) and body["size"].isdigit():
        body["size"] = int(body["size"])
    try:
        spec = added_spec(body, service().settings)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise Refused(400, f"{field}: {err['msg'].removeprefix('Value error, ')}") from None
    try:
        service().add(spec)
    except ValueError as e:
        raise Refused(400, f"dest: {e}") from None
    except Conflict as e:
        raise Refused(409, str(e)) from None
    except DiskSpaceError as e:
        raise Refused(507, str(e)) from None
    except SourceError as e:
        raise Refused(422, str(e)) from None
    return spec


def _add_form(fields: dict[str, str] | None = None, error: str | None = None, ok: str | None = None) -> dict[str, Any]:
    """The "add a download" card's state: what is in its fields, and the answer to the last try in words."""
    return {"fields": fields or {}, "error": error, "ok": ok, "folders": MODEL_FOLDERS}


@bp.post("/api/downloads")
def add_download() -> Any:
    """Add an ad-hoc download: {source, dest, sha256?, size?, id?}; `dest` may also be folder + filename."""
    body: Any = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    try:
        spec = _add(body)
    except Refused as e:
        if is_htmx():  # the card again, with what was typed and the reason next to it
            return render_template("_downloads_add.html", add=_add_form(request.form.to_dict(), error=str(e)))
        return _fail(e.status, str(e))
    row = row_json(service().get(spec.id).as_dict(), [], service().holders().get(spec.id))
    if is_htmx():
        _cache().clear()
        said = f"Queued {row['id']} \u2192 {row['dest']}."
        return render_template("_downloads_add.html", add=_add_form({"folder": request.form.get("folder", "")}, ok=said))
    return _done(f"queued {spec.id}", row, 201)


@bp.post("/api/downloads/<download_id>/<verb>")
def act(download_id: str, verb: str) -> Any:
    """pause / resume / cancel / retry one download."""
    if verb not in VERBS:
        return _fail(404, f"unknown action {verb!r} (one of {', '.join(VERBS)})")
    svc = service()
    try:
        getattr(svc, verb)(download_id)
    except NotFound as e:
        return _fail(404, str(e.args[0]))
    return _done(f"{verb}: {download_id}", {"id": download_id, "action": verb})


@bp.post("/api/downloads/all/<verb>")
def act_all(verb: str) -> Any:
    """pause / resume / retry every download it applies to."""
    if verb not in BULK_VERBS:
        return _fail(404, f"unknown action {verb!r} for all (pause, resume or retry)")
    count = service().bulk(verb)
    said = f"{BULK_VERBS[verb]} {count} download{'' if count == 1 else 's'}."
    return _done(f"{verb}: {count} download(s)", {"action": verb, "count": count}, said=said)


@bp.get("/api/presets")
def list_presets() -> Any:
    return jsonify(presets=snapshot(service())["presets"])


@bp.post("/api/presets/<name>/start")
def start_preset(name: str) -> Any:
    svc = service()
    try:
        ids = svc.start_preset(name)
    except NotFound as e:
        return _fail(404, str(e.args[0]))
    except DiskSpaceError as e:
        return _fail(507, str(e))
    return _done(f"started preset {name}", {"preset": name, "ids": ids})


@bp.post("/api/models/<model_id>/start")
def start_model(model_id: str) -> Any:
    svc = service()
    try:
        ids = svc.start_models([model_id])
    except NotFound as e:
        return _fail(404, str(e.args[0]))
    except DiskSpaceError as e:
        return _fail(507, str(e))
    except SourceError as e:
        return _fail(422, str(e))
    return _done(f"started {model_id}", {"ids": ids})
