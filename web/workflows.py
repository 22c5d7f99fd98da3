"""ComfyUI workflows: the models one needs, whether each is here, and one call that fetches what is missing.

JSON API (for scripts and `downloader workflow`):
- `POST /api/workflows` (body: the workflow's JSON) -> {"models": [{name, folder, state, source, size, id, ...}]}
- `POST /api/workflows/fetch` (same body) -> 202 {"ids": [...], "not_fetched": [{name, folder, reason}]}
- `GET /api/workflows/saved`: the workflows ComfyUI saved ($WORKSPACE/ComfyUI/user/default/workflows/*.json),
  each with how many of its models are missing; `GET /api/workflows/saved/<name>` its models, `POST .../fetch`.
The downloads page's "Workflow models" card (templates/_workflows.html, static/workflows.js) gets the same as
server-rendered fragments under /workflows/... (and works as plain forms without JavaScript).

A workflow is untrusted: its size is checked before its body is read, its shape, names and URLs by the engine
(downloader/workflows.py, workflow_sources.py); a saved one is read only from inside its folder, never through a
symbolic link that leads out of it (web/safepath.py), never a FIFO or a device.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from downloader.errors import DiskSpaceError, human_bytes
from downloader.service import Conflict
from downloader.workflow_status import DOWNLOADING, FAILED, MISSING, PRESENT, FileStatus
from downloader.workflows import MAX_WORKFLOW_BYTES, WorkflowError

from . import safepath, service
from .live import is_htmx, with_flash

bp = Blueprint("workflows", __name__)
SAVED_FOLDER = ("ComfyUI", "user", "default", "workflows")  # where ComfyUI keeps the workflows people save
MAX_SAVED = 200  # workflows listed at most (each is read and checked on every listing)
FORM_OVERHEAD = 64 * 1024  # a form post's boundaries, headers and CSRF field around the file


class Refused(Exception):
    """A request that cannot be answered, with the HTTP status and the reason in words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _too_big(size: int | None = None) -> Refused:
    said = f"is {human_bytes(size)}" if size is not None else "is larger than that"
    return Refused(413, f"the workflow {said}; the limit is {human_bytes(MAX_WORKFLOW_BYTES)}")


def _body() -> bytes:
    """The workflow a request carries: its body, or the `workflow` file of a form. Its size is checked before
    it is read (Flask itself sets no limit: the file manager takes multi-GB uploads)."""
    length = request.content_length
    if request.mimetype == "multipart/form-data":
        if length is not None and length > MAX_WORKFLOW_BYTES + FORM_OVERHEAD:
            raise _too_big(length)
        upload = request.files.get("workflow")
        if upload is None or not upload.filename:
            raise Refused(400, "pick a workflow file (.json) first")
        data = upload.stream.read(MAX_WORKFLOW_BYTES + 1)
    else:
        if length is not None and length > MAX_WORKFLOW_BYTES:
            raise _too_big(length)
        data = request.stream.read(MAX_WORKFLOW_BYTES + 1)
    if len(data) > MAX_WORKFLOW_BYTES:
        raise _too_big()
    if not data.strip():
        raise Refused(400, "no workflow: send the workflow's JSON as the body")
    return data


# --- saved workflows ----------------------------------------------------------------------------------------------
@dataclass
class Saved:
    """A workflow ComfyUI saved, and how many of its models are not here (or why it cannot be read)."""

    name: str
    models: int = 0
    missing: int = 0  # not present: missing, failed or downloading
    downloading: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "models": self.models, "missing": self.missing,
                "downloading": self.downloading, "error": self.error}


def saved_folder() -> Path:
    return service().settings.workspace.joinpath(*SAVED_FOLDER)


def read_saved(name: str) -> bytes:
    """A saved workflow's bytes, read only from inside the folder (PathError 400/403/404 otherwise, WorkflowError
    when it is too big)."""
    safepath.check_name(name)
    if not name.lower().endswith(".json"):
        raise safepath.PathError(f"{name!r} is not a .json file")
    folder = saved_folder()
    try:
        real = safepath.resolve(folder, name).real
    except safepath.PathError as e:
        if e.status == 403:  # safepath says "the workspace": here the root is the workflows folder
            raise safepath.PathError(f"{name!r} is a symbolic link that leads outside {folder}", 403) from None
        raise
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not hang the request
    except FileNotFoundError:
        raise safepath.PathError(f"no saved workflow {name!r}", 404) from None
    except OSError as e:
        raise safepath.PathError(f"{name!r} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise safepath.PathError(f"{name!r} is not a regular file")
        if info.st_size > MAX_WORKFLOW_BYTES:
            raise WorkflowError(f"the workflow is {human_bytes(info.st_size)}; the limit is "
                                f"{human_bytes(MAX_WORKFLOW_BYTES)}")
        return fh.read(MAX_WORKFLOW_BYTES + 1)


def saved_workflows() -> tuple[list[Saved], str | None]:
    """Every saved workflow (by name, at most MAX_SAVED), each with its counts or why it cannot be read; and a
    note when the folder itself cannot be listed."""
    folder = saved_folder()
    try:
        if safepath.relative(service().settings.workspace, os.path.realpath(folder)) is None:
            return [], f"{folder} leads outside the workspace: not listed"
        names = sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(".json"))
    except FileNotFoundError:
        return [], f"no workflows saved yet ({folder} does not exist)"
    except OSError as e:
        return [], f"{folder} cannot be listed: {e.strerror}"
    out = []
    for name in names[:MAX_SAVED]:
        item = Saved(name)
        try:
            statuses = service().workflow(read_saved(name))
        except (safepath.PathError, WorkflowError) as e:
            item.error = str(e)
        else:
            item.models = len(statuses)
            item.missing = sum(1 for s in statuses if s.state != PRESENT)
            item.downloading = sum(1 for s in statuses if s.state == DOWNLOADING)
        out.append(item)
    note = f"showing the first {MAX_SAVED} of {len(names)}" if len(names) > MAX_SAVED else None
    return out, note


# --- what the answers hold ----------------------------------------------------------------------------------------
def _statuses(data: bytes) -> list[FileStatus]:
    try:
        return service().workflow(data)  # type: ignore[no-any-return]
    except WorkflowError as e:
        raise Refused(400, str(e)) from None


def _fetch(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Queue what is missing and fetchable: the ids, and the files that cannot be fetched with why."""
    try:
        ids = service().fetch_workflow(data)
    except WorkflowError as e:
        raise Refused(400, str(e)) from None
    except DiskSpaceError as e:
        raise Refused(507, str(e)) from None
    except Conflict as e:
        raise Refused(409, str(e)) from None
    left = [s for s in service().workflow(data) if s.state in (MISSING, FAILED) and s.cannot_fetch]
    return ids, [{"name": s.name, "folder": s.folder, "reason": s.cannot_fetch or ""} for s in left]


def _table(statuses: list[FileStatus], title: str, saved: str | None = None) -> dict[str, Any]:
    """What _workflow_table.html renders: the rows, the counts and the one button's number."""
    return {
        "rows": statuses,
        "title": title,
        "saved": saved,
        "present": sum(1 for s in statuses if s.state == PRESENT),
        "downloading": sum(1 for s in statuses if s.state == DOWNLOADING),
        "fetchable": sum(1 for s in statuses if s.fetchable and s.state != DOWNLOADING),
        "stuck": sum(1 for s in statuses if s.state in (MISSING, FAILED) and not s.fetchable),
        "scripted": is_htmx(),  # a picked file can be sent again only by the card's script
    }


def _queued_words(ids: list[str], not_fetched: list[dict[str, str]]) -> str:
    said = f"Fetching {len(ids)} file{'' if len(ids) == 1 else 's'}." if ids else "Nothing to fetch."
    if not_fetched:
        said += f" {len(not_fetched)} cannot be fetched (see the table)."
    return said


def _page(wf: dict[str, Any] | None = None, error: str | None = None, status: int = 200) -> tuple[str, int]:
    """The plain page (no JavaScript): the card with the table asked for, and the saved workflows listed."""
    saved, note = saved_workflows()
    return render_template("workflows.html", wf=wf, wf_error=error, saved=saved, saved_note=note), status


def _error_fragment(e: Refused) -> tuple[str, int]:
    return render_template("_workflow_table.html", wf=None, wf_error=str(e)), e.status


@bp.app_context_processor
def _limits() -> dict[str, Any]:
    """The card tells its script the size limit, so a file too big is refused before it is sent."""
    return {"wf_max_bytes": MAX_WORKFLOW_BYTES}


# --- JSON API -----------------------------------------------------------------------------------------------------
@bp.errorhandler(Refused)
def _refused(e: Refused) -> Any:
    return jsonify(error=str(e)), e.status


@bp.errorhandler(safepath.PathError)
def _bad_path(e: safepath.PathError) -> Any:
    return jsonify(error=str(e)), e.status


@bp.post("/api/workflows")
def check() -> Any:
    """The models a workflow needs and their state here."""
    return jsonify(models=[s.as_json() for s in _statuses(_body())])


@bp.post("/api/workflows/fetch")
def fetch() -> Any:
    """Queue what the workflow needs that is missing and can be fetched -> 202 with the ids."""
    ids, not_fetched = _fetch(_body())
    return jsonify(ids=ids, not_fetched=not_fetched), 202


@bp.get("/api/workflows/saved")
def list_saved() -> Any:
    saved, note = saved_workflows()
    return jsonify(folder=str(saved_folder()), workflows=[s.as_json() for s in saved], note=note)


@bp.get("/api/workflows/saved/<path:name>")
def check_saved(name: str) -> Any:
    """One saved workflow's models (`name` a file name in the folder: a path is refused, 400)."""
    return jsonify(models=[s.as_json() for s in _statuses(_read_saved(name))])


@bp.post("/api/workflows/saved/<path:name>/fetch")
def fetch_saved(name: str) -> Any:
    ids, not_fetched = _fetch(_read_saved(name))
    return jsonify(ids=ids, not_fetched=not_fetched), 202


def _read_saved(name: str) -> bytes:
    try:
        return read_saved(name)
    except WorkflowError as e:
        raise Refused(413, str(e)) from None


# --- the page's card: fragments for its script, whole pages for plain forms ---------------------------------------
@bp.post("/workflows/check")
def check_page() -> Any:
    """A dropped or picked workflow -> its table (a fragment for the card's script, the page for a plain form)."""
    try:
        statuses = _statuses(_body())
    except Refused as e:
        return _error_fragment(e) if is_htmx() else _page(error=str(e), status=e.status)
    upload = request.files.get("workflow")
    name = upload.filename if upload is not None else unquote(request.headers.get("X-Filename", ""))
    wf = _table(statuses, (name or "the workflow")[:200])
    return render_template("_workflow_table.html", wf=wf) if is_htmx() else _page(wf)


def _fetched(ids: list[str], not_fetched: list[dict[str, str]], back: str) -> Any:
    """The answer to the card's "Fetch N missing": JSON with words to flash for its script; for a plain form, a
    flash and the way back."""
    said = _queued_words(ids, not_fetched)
    if is_htmx():
        response = jsonify(ids=ids, not_fetched=not_fetched)
        response.status_code = 202
        return with_flash(response, said)
    flash(said, "info")
    return redirect(back)


@bp.post("/workflows/fetch")
def fetch_page() -> Any:
    """"Fetch N missing" of a dropped or picked workflow (the card's script posts its JSON, a plain form the file)."""
    try:
        ids, not_fetched = _fetch(_body())
    except Refused as e:
        return (jsonify(error=str(e)), e.status) if is_htmx() else _page(error=str(e), status=e.status)
    return _fetched(ids, not_fetched, url_for("downloads.page"))


@bp.get("/workflows/saved")
def saved_page() -> Any:
    """The saved workflows with their missing counts (the card's script swaps the list in; a plain page else)."""
    if not is_htmx():
        return _page()
    saved, note = saved_workflows()
    return render_template("_workflows_saved.html", saved=saved, saved_note=note)


@bp.get("/workflows/saved/<path:name>")
def saved_table(name: str) -> Any:
    """One saved workflow's table."""
    try:
        wf = _table(_statuses(_read_saved(name)), name, saved=name)
    except safepath.PathError as e:
        error = Refused(e.status, str(e))
        return _error_fragment(error) if is_htmx() else _page(error=str(error), status=error.status)
    except Refused as e:
        return _error_fragment(e) if is_htmx() else _page(error=str(e), status=e.status)
    return render_template("_workflow_table.html", wf=wf) if is_htmx() else _page(wf)


@bp.post("/workflows/saved/<path:name>/fetch")
def fetch_saved_page(name: str) -> Any:
    """"Fetch N missing" of a saved workflow."""
    try:
        ids, not_fetched = _fetch(_read_saved(name))
    except (Refused, safepath.PathError) as e:
        if is_htmx():
            return jsonify(error=str(e)), e.status
        flash(str(e), "error")
        return redirect(url_for("workflows.saved_page"))
    return _fetched(ids, not_fetched, url_for("workflows.saved_table", name=name))
