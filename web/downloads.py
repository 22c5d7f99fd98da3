"""The downloads page and its JSON API: every manifest model by preset, live progress, and the buttons."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

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
from downloader.manifest import ModelSpec
from downloader.service import Conflict, DownloadService, NotFound

from . import service

bp = Blueprint("downloads", __name__)
VERBS = ("pause", "resume", "cancel", "retry")
SNAPSHOT_TTL = 0.5  # seconds an /api/downloads answer is reused (see SnapshotCache)
ADD_KEYS = {"source", "dest", "sha256", "size", "id", "revision", "required"}


def row_json(data: dict[str, Any], presets: list[str]) -> dict[str, Any]:
    """A download as the API shows it: the row (a `store.rows()` dict) plus progress, ETA and its presets."""
    size = data["size"] or 0
    done = size if data["state"] == "done" else data["bytes_done"]
    data["progress"] = round(done / size, 4) if size else None
    data["eta_s"] = round((size - done) / data["speed"]) if data["speed"] and size else None
    data["presets"] = presets
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
    downloads = [row_json(r, presets_of.get(r["id"], [])) for r in rows]
    # Manifest models never asked for yet show as "available" so a person can start them.
    for model in svc.catalog.models.values():
        if model.id not in known:
            downloads.append(
                {
                    "id": model.id,
                    "source": model.source,
                    "dest": model.dest,
                    "size": model.size,
                    "state": "available",
                    "required": model.required,
                    "presets": presets_of.get(model.id, []),
                    "progress": None,
                    "bytes_done": 0,
                    "speed": 0,
                    "eta_s": None,
                    "error": None,
                    "verified": False,
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
                "done": sum(1 for s in states if s == "done"),
                "state": _preset_state(states),
            }
        )
    return {"downloads": downloads, "presets": presets, "summary": summary, "folders": list(MODEL_FOLDERS)}


def _preset_state(states: list[str]) -> str:
    if states and all(s == "done" for s in states):
        return "done"
    for s in ("failed", "downloading", "verifying", "queued", "paused"):
        if s in states:
            return s
    return "available"


def _error(status: int, message: str) -> tuple[Any, int]:
    return jsonify(error=message), status


def _done(message: str, payload: dict[str, Any], status: int = 202) -> Any:
    """JSON for scripts; for a plain form post (no JavaScript), a flash message and back to the page."""
    _cache().clear()
    if request.is_json or not request.form:
        return jsonify(payload), status
    flash(message, "info")
    return redirect(url_for("downloads.page"))


def _fail(status: int, message: str) -> Any:
    if request.is_json or not request.form:
        return _error(status, message)
    flash(message, "error")
    return redirect(url_for("downloads.page"))


@bp.get("/")
def index() -> Any:
    return redirect(url_for("downloads.page"))


@bp.get("/downloads")
def page() -> str:
    """Rendered on the server (works without JavaScript); downloads.js keeps it live."""
    return render_template("downloads.html", data=snapshot(service()))


class SnapshotCache:
    """The serialized `GET /api/downloads` answer, reused for SNAPSHOT_TTL seconds: the page polls every second
    from every open tab, and building the answer for hundreds of rows costs ~20 ms of CPU. Changes made through
    the web UI clear it at once; progress is at most SNAPSHOT_TTL old."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0.0
        self._body: bytes | None = None

    def get(self, build: Callable[[], bytes]) -> bytes:
        with self._lock:
            if self._body is None or time.monotonic() - self._at > SNAPSHOT_TTL:
                self._body, self._at = build(), time.monotonic()
            return self._body

    def clear(self) -> None:
        with self._lock:
            self._body = None


def _cache() -> SnapshotCache:
    return current_app.extensions.setdefault("snapshot_cache", SnapshotCache())  # type: ignore[no-any-return]


@bp.get("/api/downloads")
def list_downloads() -> Any:
    body = _cache().get(lambda: json.dumps(snapshot(service()), separators=(",", ":")).encode())
    return Response(body, mimetype="application/json")


def _slug(dest: str) -> str:
    name = dest.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:100] or "download"


@bp.post("/api/downloads")
def add_download() -> Any:
    """Add an ad-hoc download: {source, dest, sha256?, size?, id?}; `dest` may also be folder + filename."""
    body: dict[str, Any] = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if not isinstance(body, dict):
        return _fail(400, "send a JSON object with source and dest")
    if "folder" in body and "dest" not in body:
        body["dest"] = f"{body.pop('folder')}/{body.pop('filename', '') or body.get('source', '').rsplit('/', 1)[-1]}"
    body.pop("folder", None)
    body.pop("filename", None)
    body.pop("csrf_token", None)
    unknown = set(body) - ADD_KEYS
    if unknown:
        return _fail(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    body = {k: v for k, v in body.items() if v not in ("", None)}
    if "size" in body and isinstance(body["size"], str) and body["size"].isdigit():
        body["size"] = int(body["size"])
    body.setdefault("id", _slug(str(body.get("dest", ""))))
    try:
        spec = ModelSpec.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        return _fail(400, f"{field}: {err['msg'].removeprefix('Value error, ')}")
    svc = service()
    try:
        svc.add(spec)
    except ValueError as e:
        return _fail(400, f"dest: {e}")
    except Conflict as e:
        return _fail(409, str(e))
    except DiskSpaceError as e:
        return _fail(507, str(e))
    except SourceError as e:
        return _fail(422, str(e))
    return _done(f"queued {spec.id}", row_json(svc.get(spec.id).as_dict(), []), 201)


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
    if verb not in ("pause", "resume", "retry"):
        return _fail(404, f"unknown action {verb!r} for all (pause, resume or retry)")
    count = service().bulk(verb)
    return _done(f"{verb}: {count} download(s)", {"action": verb, "count": count})


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
