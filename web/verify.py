"""`POST /api/verify`: re-hash files in place through the service's download loop (what `downloader verify` asks
a running service for). The rows show `verifying`, then `done`, or `failed` with the reason (a bad file is moved
aside so ComfyUI never loads it)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from downloader.service import EngineUnavailable, NotFound

from . import service

bp = Blueprint("verify", __name__)


@bp.post("/api/verify")
def verify() -> Any:
    """Body `{"ids": [...]}` (empty or absent: every done file); answers 202 `{"ids": [...]}`, the downloads that
    will be re-hashed (poll `GET /api/downloads` for their verdicts)."""
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        return jsonify(error='send a JSON object: {"ids": ["model-id", ...]} (empty for every done file)'), 400
    ids = body.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        return jsonify(error="ids: a list of download ids"), 400
    unknown = set(body) - {"ids"}
    if unknown:
        return jsonify(error=f"unknown field(s): {', '.join(sorted(unknown))}"), 400
    try:
        queued = service().verify(ids or None)  # None: every done file
    except NotFound as e:
        return jsonify(error=str(e.args[0])), 404
    except EngineUnavailable as e:
        return jsonify(error=str(e)), 503
    return jsonify(ids=queued), 202
