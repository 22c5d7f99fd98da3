"""Installation status (what the pod is doing: aria2, downloads, JupyterLab, ComfyUI, ...) and /healthz.

Pods that share a workspace share its state database, and each reports its components under its pod id
(downloader/components.py): the page shows this pod's in full, and every other pod's at a glance (the state of
each of its components), so a team sees the fleet from any pod.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request

from downloader.components import ANY_POD, SETTLED, Component, log_location, log_ref
from downloader.config import SECRET_STATE_FILES
from downloader.errors import human_bytes
from downloader.state import DownloadState

from . import service

S = DownloadState
bp = Blueprint("status", __name__)
COMPONENT_STATES = ("pending", "running", "done", "failed", "skipped")
FINISHED = ("done", "skipped")  # its log starts collapsed on the page
# The order people expect to read them in; components reported under other names follow.
KNOWN = ("aria2", "model downloads", "jupyterlab", "comfyui", "sageattention", "custom nodes")
LOG_LINES = 40
OTHER_PODS_SHOWN = 20  # the pods that reported last; a volume used for months may have seen many more


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def readable_log(path: str) -> Path | None:
    """The log a component may show: a file in the logs folder or a `*.log` file, inside the workspace or the state
    folder, after symlinks are resolved; never anything else (the state folder holds the UI password, the session
    key and the Jupyter token next to aria2's log). A relative path is this pod's workspace's (as components are
    stored: downloader/components.py)."""
    settings = service().settings
    real = log_location(path, settings.workspace).resolve()
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


def _in_order(names: list[str]) -> list[str]:
    """The known components in the order people expect, then the others by name."""
    return [n for n in KNOWN if n in names] + sorted(n for n in names if n not in KNOWN)


def _other_pods(rows: list[Component], here: str) -> dict[str, Any]:
    """The other pods that reported components, the latest first: pod id, when it last reported, and the state of
    each component (their messages and logs are on their own pages)."""
    pods: dict[str, dict[str, Component]] = {}
    for c in rows:
        if c.pod not in (here, ANY_POD):
            pods.setdefault(c.pod, {})[c.name] = c
    last: dict[str, datetime] = {pod: max(c.updated_at for c in comps.values()) for pod, comps in pods.items()}
    latest = sorted(pods, key=lambda pod: (last[pod], pod), reverse=True)
    shown = [
        {"pod": pod, "last_report": _iso(last[pod]),
         "components": [{"name": n, "state": pods[pod][n].state} for n in _in_order(list(pods[pod]))]}
        for pod in latest[:OTHER_PODS_SHOWN]
    ]
    return {"pods": shown, "not_shown": len(latest) - len(shown)}


def status_json() -> dict[str, Any]:
    """This pod's components with state, message, times and log tail, and an overall percentage; the other pods
    sharing the workspace with the state of each of their components."""
    svc = service()
    here = svc.settings.pod_id
    rows = svc.store.components()
    # Reported without a pod (a script, an earlier version): shown here unless this pod reported that name itself.
    own = {c.name: c for c in rows if c.pod == ANY_POD}
    own.update({c.name: c for c in rows if c.pod == here})
    comps = {"aria2": _aria2_component(), "model downloads": _downloads_component(),
             **{name: _component(c) for name, c in own.items()}}
    ordered = [comps[n] for n in _in_order(list(comps))]
    weights = []
    for c in ordered:
        if c["state"] in SETTLED:  # complete, for the overall percentage
            weights.append(1.0)
        elif c["progress"] is not None:
            weights.append(float(c["progress"]))
        else:
            weights.append(0.0)
    overall = round(100 * sum(weights) / len(weights), 1) if weights else 0.0
    others = _other_pods(rows, here)
    return {"pod": here, "components": ordered, "overall_percent": overall, "other_pods": others["pods"],
            "other_pods_not_shown": others["not_shown"]}


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
    """For the entrypoint (or any script): {state, message?, log_path?}, recorded as this pod's component."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("state") not in COMPONENT_STATES:
        return jsonify(error=f"send JSON with state one of {', '.join(COMPONENT_STATES)}"), 400
    if len(name) > 64 or not name.strip():
        return jsonify(error="component name must be 1-64 characters"), 400
    log_path = body.get("log_path")
    if log_path is not None and (not isinstance(log_path, str) or readable_log(log_path) is None):
        return jsonify(error="log_path must be a log file: a *.log file or one in $WORKSPACE/logs, inside the "
                             "workspace or the state folder"), 400
    settings = service().settings
    service().store.set_component(name, body["state"], body.get("message"),
                                  log_ref(log_path, settings.workspace) if log_path is not None else None,
                                  pod=settings.pod_id)
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
