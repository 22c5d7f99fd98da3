"""Installation status (what the pod is doing: aria2, downloads, JupyterLab, ComfyUI, ...) and /healthz."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request

from downloader.config import SECRET_STATE_FILES
from downloader.errors import human_bytes
from downloader.state import Component, DownloadState

from . import service

S = DownloadState
bp = Blueprint("status", __name__)
COMPONENT_STATES = ("pending", "running", "done", "failed", "skipped")
SETTLED = ("done", "skipped", "failed")  # a component in one of these counts as complete in the overall percentage
FINISHED = ("done", "skipped")  # its log starts collapsed on the page
# The order people expect to read them in; components reported under other names follow.
KNOWN = ("aria2", "model downloads", "jupyterlab", "comfyui", "sageattention", "custom nodes")
LOG_LINES = 40


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def readable_log(path: str) -> Path | None:
    """The log a component may show: a file in the logs folder or a `*.log` file, inside the workspace or the state
    folder, after symlinks are resolved; never anything else (the state folder holds the UI password, the session
    key and the Jupyter token next to aria2's log)."""
    settings = service().settings
    real = Path(path).resolve()
    inside = (settings.workspace.resolve(), settings.state_dir.resolve())
    if not any(real == root or root in real.parents for root in inside):
        return None
    if real.name in SECRET_STATE_FILES:
        return None
    return real if real.suffix == ".log" or settings.logs_dir.resolve() in real.parents else None


def _log_tail(path: str | None) -> list[str]:
    """The last lines of a component's log (only what `readable_log` allows)."""
    if not path:
        return []
    real = readable_log(path)
    if real is None:
        return [f"(log {path} is not a log file in the workspace: not shown)"]
    try:
        with open(real, "rb") as fh:
            fh.seek(max(0, real.stat().st_size - 64 * 1024))
            return [line.decode(errors="replace") for line in deque(fh.read().splitlines(), LOG_LINES)]
    except OSError:
        return []


def _component(c: Component) -> dict[str, Any]:
    return {
        "name": c.name,
        "state": c.state,
        "message": c.message,
        "started_at": _iso(c.started_at),
        "ended_at": _iso(c.ended_at),
        "log": _log_tail(c.log_path),
        "progress": None,
    }


def _downloads_component() -> dict[str, Any]:
    svc = service()
    summary = svc.summary()
    counts = summary["counts"]
    total = sum(counts.values())
    progress = summary["bytes_done"] / summary["bytes_total"] if summary["bytes_total"] else None
    if total == 0:
        state, message = "pending", "nothing queued"
    elif counts[S.FAILED.value]:
        state = "failed"
        message = f"{counts[S.FAILED.value]} of {total} file(s) failed"
    elif counts[S.DONE.value] == total:
        state, message = "done", f"{total} file(s) verified in place"
    elif sum(counts[s.value] for s in (S.QUEUED, S.DOWNLOADING, S.VERIFYING)):
        state = "running"
        message = (
            f"{counts[S.DONE.value]} of {total} file(s) done, {human_bytes(summary['bytes_done'])} of "
            f"{human_bytes(summary['bytes_total'])}"
        )
    else:
        state, message = "pending", f"{counts[S.PAUSED.value]} paused"
    events = svc.store.events(limit=LOG_LINES)
    log = [f"{e.at:%H:%M:%S} {e.download_id or ''} {e.message}" for e in reversed(events)]
    return {"name": "model downloads", "state": state, "message": message, "started_at": None,
            "ended_at": None, "log": log, "progress": progress}


def _aria2_component() -> dict[str, Any]:
    svc = service()
    summary = svc.summary()
    state = {"running": "running", "failed": "failed"}.get(summary["manager"], "pending")
    message = summary["note"] or ("aria2c daemon running" if state == "running" else "starting")
    return {"name": "aria2", "state": state, "message": message, "started_at": None, "ended_at": None,
            "log": _log_tail(str(svc.daemon_log)), "progress": None}


def status_json() -> dict[str, Any]:
    """Every component with state, message, times and log tail, plus an overall percentage."""
    svc = service()
    reported = {c.name: _component(c) for c in svc.store.components()}
    comps = {"aria2": _aria2_component(), "model downloads": _downloads_component(), **reported}
    ordered = [comps[n] for n in KNOWN if n in comps] + [c for n, c in comps.items() if n not in KNOWN]
    weights = []
    for c in ordered:
        if c["state"] in SETTLED:
            weights.append(1.0)
        elif c["progress"] is not None:
            weights.append(float(c["progress"]))
        else:
            weights.append(0.0)
    overall = round(100 * sum(weights) / len(weights), 1) if weights else 0.0
    return {"components": ordered, "overall_percent": overall}


@bp.get("/installation-status")
def page() -> str:
    """Rendered on the server (works without JavaScript); status.js keeps /installation-status/live swapped in."""
    return render_template("status.html", data=status_json(), finished=FINISHED)


@bp.get("/installation-status/live")
def live() -> str:
    """The part of the page that changes (the overall percentage, the components): the page polls it."""
    return render_template("_status_live.html", data=status_json(), finished=FINISHED)


@bp.get("/api/installation-status")
def api() -> Any:
    return jsonify(status_json())


@bp.post("/api/installation-status/<name>")
def report(name: str) -> Any:
    """For the entrypoint (or any script): {state, message?, log_path?}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("state") not in COMPONENT_STATES:
        return jsonify(error=f"send JSON with state one of {', '.join(COMPONENT_STATES)}"), 400
    if len(name) > 64 or not name.strip():
        return jsonify(error="component name must be 1-64 characters"), 400
    log_path = body.get("log_path")
    if log_path is not None and (not isinstance(log_path, str) or readable_log(log_path) is None):
        return jsonify(error="log_path must be a log file: a *.log file or one in $WORKSPACE/logs, inside the "
                             "workspace or the state folder"), 400
    service().store.set_component(name, body["state"], body.get("message"), log_path)
    return jsonify(ok=True)


@bp.get("/healthz")
def healthz() -> Any:
    """Open (no login): for Docker HEALTHCHECK and orchestrators; 503 with the reason while the download engine
    cannot run; comfyui_ready follows downloader.readiness."""
    svc = service()
    summary = svc.summary()
    ok, reason = svc.health()
    body = jsonify(
        status="ok" if ok else "unavailable",
        reason=reason,
        pod=summary["pod"],
        version=current_app.config.get("VERSION"),
        downloads=summary["counts"],
        comfyui_ready=summary["comfyui_ready"],
        required_done=summary["required_done"],
        manager=summary["manager"],
    )
    # 503 while the engine cannot run (Docker's HEALTHCHECK and orchestrators see it); the body says why.
    return body, 200 if ok else 503
