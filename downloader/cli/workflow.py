"""`downloader workflow FILE.json [--fetch]`: the models a ComfyUI workflow needs and whether each is here; with
--fetch, download what is missing and can be fetched: through the service when one runs (like `add`), else in
this process (like `fetch`).

Exit codes: 0 every needed file is present (after --fetch: verified in place); 1 some file is not (with --fetch,
one `FAILED folder/name: reason` line for each that failed or cannot be fetched); 2 the file is not a workflow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..errors import human_bytes
from ..manifest import Catalog
from ..state import Store
from ..workflow_status import PRESENT, check_workflow, to_fetch
from ..workflows import MAX_WORKFLOW_BYTES, WorkflowError, load_workflow, wanted_files
from .app import (
    BadInput,
    console,
    err_console,
    load,
    main,
    service_failed,
    service_of,
    settings_of,
)
from .client import ServiceClient, ServiceError
from .fetching import ServiceAppeared, _fetch_here
from .follow import Snapshot, fetch_settled, follow, following
from .progress import FetchProgress

STATE_STYLE = {"present": "green", "downloading": "cyan", "failed": "red", "missing": "yellow"}


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fetch", "fetch_missing", is_flag=True, help="Download what is missing and can be fetched.")
@click.pass_context
def workflow(ctx: click.Context, file: Path, fetch_missing: bool) -> None:
    """The models a ComfyUI workflow (UI or API format) needs, and whether each is here.

    Each file's state (present, downloading, failed, missing), size and source: the workflow's URL (only the hub,
    CivitAI and DOWNLOADER_ALLOWED_HOSTS are fetched), else a manifest model of that name, else unknown. Exits 0
    when every file is present, 1 when one is not, 2 when FILE is not a workflow. With --fetch it downloads what
    is missing and exits 0 once every file is verified in place.

    Example: downloader workflow ~/Downloads/wan22_t2v.json --fetch
    """
    data, doc = _read(file)
    client = service_of(ctx)
    if client is not None:
        models = _through(client, doc, fetch_missing)
    else:
        try:
            models = _here(ctx, data, fetch_missing)
        except ServiceAppeared as e:
            err_console.print(f"the downloader service (pid {e.client.info.pid}) owns the workspace now: asking it")
            models = _through(e.client, doc, fetch_missing)
    _report(models, fetch_missing, file)


def _read(file: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its parsed JSON; BadInput (exit 2) for a file that is not a workflow."""
    try:
        size = file.stat().st_size
        if size > MAX_WORKFLOW_BYTES:
            raise WorkflowError(f"the workflow is {human_bytes(size)}; the limit is {human_bytes(MAX_WORKFLOW_BYTES)}")
        data = file.read_bytes()
        doc = load_workflow(data)
        wanted_files(doc)  # the shape checked here, before anything is asked
    except WorkflowError as e:
        raise BadInput(f"{file}: {e}") from None
    except OSError as e:
        raise BadInput(f"{file}: cannot be read: {e.strerror}") from None
    return data, doc


def _here(ctx: click.Context, data: bytes, fetch_missing: bool) -> list[dict[str, Any]]:
    """No service runs: the table from the state DB and the disk; with --fetch, a Manager in this process."""
    settings = settings_of(ctx)
    catalog: Catalog = load(settings, ())
    with Store(settings.db_path) as store:
        statuses = check_workflow(data, settings, store, catalog)
    specs = to_fetch(statuses, include_on_the_way=True) if fetch_missing else []  # no service: nothing else would
    if specs:
        _fetch_here(settings, specs, wait=True)
        with Store(settings.db_path) as store:
            statuses = check_workflow(data, settings, store, catalog)
    return [s.as_json() for s in statuses]


def _through(client: ServiceClient, doc: dict[str, Any], fetch_missing: bool) -> list[dict[str, Any]]:
    """Ask the service; with --fetch, have it queue what is missing and follow those downloads to the end."""
    try:
        if fetch_missing:
            with following() as stop:
                before = Snapshot.take(client)
                ids = client.post("/api/workflows/fetch", doc).get("ids", [])
                if ids:
                    progress = FetchProgress(console)
                    try:
                        follow(client, ids, fetch_settled(before), stop, on_tick=progress.update)
                    finally:
                        progress.close()
                if stop.is_set():
                    return []  # leaving the block, following() says so and exits 128 + the signal
        models: list[dict[str, Any]] = client.post("/api/workflows", doc).get("models", [])
        return models
    except ServiceError as e:
        raise service_failed(e) from None


def _shown(text: object) -> str:
    """Text from a workflow, for the terminal: control characters replaced, rich markup escaped."""
    return escape("".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in str(text)))


def _why(m: dict[str, Any]) -> str:
    """Why a file is not in place after --fetch: its source and why it cannot be fetched, or its download's error."""
    hint = m.get("cannot_fetch")
    if hint:
        return m["source"] if hint == m["source"] else f"{m['source']} ({hint})"
    return m.get("detail") or m["state"]


def _report(models: Sequence[dict[str, Any]], fetched: bool, file: Path) -> None:
    table = Table(title=_shown(file.name))
    for col in ("folder", "name", "state", "size", "source"):
        table.add_column(col)
    for m in models:
        note = m.get("cannot_fetch") or (m.get("detail") if m["state"] in ("failed", "missing") else None)
        source = _shown(m["source"]) + (f"\n[dim]{_shown(note)}[/]" if note and note != m["source"] else "")
        style = STATE_STYLE.get(m["state"], "")
        table.add_row(_shown(m["folder"]), _shown(m["name"]), f"[{style}]{m['state']}[/]",
                      human_bytes(m["size"]) if m.get("size") else "?", source)
    console.print(table)
    left = [m for m in models if m["state"] != PRESENT]
    if not models:
        console.print("the workflow needs no model files")
    elif not left:
        console.print(f"all {len(models)} model file(s) present")
        return
    else:
        console.print(f"{len(models) - len(left)} of {len(models)} model file(s) present")
    if not left:
        return
    if not fetched:
        fetchable = sum(1 for m in left if not m.get("cannot_fetch"))
        if fetchable:
            console.print(f"`downloader workflow {_shown(file)} --fetch` downloads the {fetchable} that can be fetched")
        sys.exit(1)
    for m in left:
        err_console.print(f"FAILED {_shown(m['folder'])}/{_shown(m['name'])}: {_shown(_why(m))}")
    sys.exit(1)
