"""`plan`, `fetch` and `add`: in this process when no service runs; through the service's API when one does."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from pydantic import ValidationError

from ..config import Settings
from ..errors import DownloaderError, ManifestError, WorkspaceBusy
from ..fetch import run_plan, start_manager
from ..intake import add_refused, added_spec
from ..locks import WorkspaceLock
from ..manifest import ModelSpec
from ..plan import Plan, build_plan
from ..signals import stop_on_signals
from ..state import Download, Store
from .app import (
    BadInput,
    console,
    default_presets,
    err_console,
    load,
    main,
    manifest_args,
    only_opt,
    preset_opt,
    print_plan,
    report_fetch,
    select,
    service_failed,
    service_of,
    settings_of,
)
from .client import ServiceClient, ServiceError, find_service, segment
from .follow import Snapshot, fetch_settled, follow, following
from .progress import FetchProgress


class ServiceAppeared(Exception):
    """A service started for the workspace while this fetch waited for the lock: ask it instead."""

    def __init__(self, client: ServiceClient) -> None:
        super().__init__("a service took the workspace")
        self.client = client


@main.command()
@manifest_args
@preset_opt
@only_opt
@click.pass_context
def plan(ctx: click.Context, manifests: tuple[str, ...], presets: tuple[str, ...], only: tuple[str, ...]) -> None:
    """Dry run: what would download, how many bytes, and whether it fits.

    Only reads the state database, so it runs here even while the service owns the workspace.

    Example: downloader plan --preset wan22-t2v-14b-fp8
    """
    settings = settings_of(ctx)
    specs = select(ctx, manifests, presets, only)
    with Store(settings.db_path) as store:
        the_plan = build_plan(specs, settings, store)
    print_plan(the_plan)
    if the_plan.errors:
        raise click.ClickException(f"{len(the_plan.errors)} file(s) cannot be fetched (see above)")
    try:
        the_plan.check_disk()
    except DownloaderError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@manifest_args
@preset_opt
@only_opt
@click.option("--wait/--no-wait", default=True, help="If another downloader owns the workspace, wait for it.")
@click.pass_context
def fetch(
    ctx: click.Context, manifests: tuple[str, ...], presets: tuple[str, ...], only: tuple[str, ...], wait: bool
) -> None:
    """Download, verify and place the selected files; exit 0 only when all are verified in place.

    With no preset, fetches $MODEL_PRESETS (default wan22-t2v-14b-fp8). When the service runs, it does the
    downloading and this command follows it (Ctrl-C stops following, not the downloads).

    Example: downloader fetch --preset wan22-t2v-14b-fp8 --preset wan22-t2v-4step-loras
    """
    client = service_of(ctx)
    if client is None:
        specs = select(ctx, manifests, presets, only)
        if not specs:
            console.print("nothing selected")
            return
        try:
            report_fetch(_fetch_here(settings_of(ctx), specs, wait))
            return
        except ServiceAppeared as e:
            err_console.print(f"the downloader service (pid {e.client.info.pid}) owns the workspace now: asking it")
            client = e.client
    _fetch_through(ctx, client, manifests, presets, only)


def _fetch_here(settings: Settings, specs: Sequence[ModelSpec], wait: bool) -> list[Download]:
    """Plan, check the disk and run a Manager in this process until the files settle."""
    with Store(settings.db_path) as store:
        the_plan = build_plan(specs, settings, store)
        for item in the_plan.errors:
            verdict = "[yellow]will retry[/]" if item.error and item.error.retryable else "[red]refusing[/]"
            err_console.print(f"{verdict} {item.spec.id}: {item.error}")
        try:
            the_plan.check_disk()
        except DownloaderError as e:
            raise click.ClickException(str(e)) from None
        return _run_manager(settings, store, the_plan, wait)


def _service_owning(settings: Settings) -> ServiceClient | None:
    """This pod's running service, if it downloads: it holds the workspace lock, or its pod's lock when pods
    share the workspace (a service itself waiting for another `fetch` could not take our files before that one
    ends either)."""
    client = find_service(settings.state_dir, settings.runpod_pod_id)
    if client is None:
        return None
    locks = (WorkspaceLock(settings.state_dir), WorkspaceLock(settings.state_dir, pod=client.info.pod))
    return client if any(lock.owner().get("pid") == client.info.pid for lock in locks) else None


def _on_wait(settings: Settings, message: str) -> None:
    """While waiting for the lock: a service never makes us wait (we ask it); another `fetch` does."""
    client = _service_owning(settings)
    if client is not None:
        raise ServiceAppeared(client)
    err_console.print(f"{message}: waiting...")


def _run_manager(settings: Settings, store: Store, the_plan: Plan, wait: bool) -> list[Download]:
    try:
        manager = start_manager(settings, store, wait, on_wait=lambda msg: _on_wait(settings, msg))
    except WorkspaceBusy as e:
        client = _service_owning(settings)
        if client is not None:
            raise ServiceAppeared(client) from None
        raise click.ClickException(f"{e}; run again later, or without --no-wait to wait for it") from None
    except DownloaderError as e:
        raise click.ClickException(str(e)) from None
    progress = FetchProgress(console)
    with stop_on_signals(manager.request_stop) as received:
        try:
            rows = run_plan(the_plan, manager, on_tick=progress.update)
        except DownloaderError as e:
            raise click.ClickException(str(e)) from None
        finally:
            progress.close()
            manager.close()
    if received:
        err_console.print("interrupted: progress is saved; run the same command again to resume")
        sys.exit(128 + received[0])
    return rows


def _fetch_through(
    ctx: click.Context, client: ServiceClient, manifests: Sequence[str], presets: Sequence[str], only: Sequence[str]
) -> None:
    """Ask the service to queue the selection, then follow it to the end with the same output and exit codes."""
    specs = select(ctx, manifests, presets, only) if manifests else None
    if specs is None and not presets and not only:
        presets = default_presets(settings_of(ctx))
    if specs == [] or (specs is None and not presets and not only):
        console.print("nothing selected")
        return
    with following() as stop:
        before = Snapshot.take(client)
        ids: list[str] = []
        refused: list[tuple[str, str]] = []  # one file the service would not queue (404 at the CDN, ...)
        requests = _requests(before, specs, presets, only)
        for download_id, path, body in requests:
            if stop.is_set():
                return
            try:
                answer = client.post(path, body)
            except ServiceError as e:
                if e.status == 422 and download_id is not None:
                    refused.append((download_id, str(e)))
                    continue
                raise service_failed(e) from None
            ids += [i for i in answer.get("ids", [answer.get("id")]) if i and i not in ids]
        progress = FetchProgress(console)
        try:
            rows = follow(client, ids, fetch_settled(before), stop, on_tick=progress.update)
        finally:
            progress.close()
        if stop.is_set():
            return
    report_fetch(rows, refused)


def _requests(
    before: Snapshot, specs: list[ModelSpec] | None, presets: Sequence[str], only: Sequence[str]
) -> list[tuple[str | None, str, dict[str, object] | None]]:
    """(the one id it is about or None, API path, JSON body) for each call that queues part of the selection."""
    if specs is None:
        return [(None, f"/api/presets/{segment(p)}/start", None) for p in presets] + [
            (m, f"/api/models/{segment(m)}/start", None) for m in only
        ]
    out: list[tuple[str | None, str, dict[str, object] | None]] = []
    for spec in specs:  # models of a manifest given on the command line: the service may not know them
        known = before.by_id.get(spec.id)
        if known is not None and known["state"] == "available" and (known["source"], known["dest"]) == (spec.source, spec.dest):
            out.append((spec.id, f"/api/models/{segment(spec.id)}/start", None))  # one of the service's manifests
        else:
            out.append((spec.id, "/api/downloads", spec_body(spec)))
    return out


def spec_body(spec: ModelSpec) -> dict[str, object]:
    """A ModelSpec as `POST /api/downloads` takes it."""
    fields = ("id", "source", "dest", "revision", "size", "sha256", "required")
    return {k: v for k in fields if (v := getattr(spec, k)) is not None}


# --- add --------------------------------------------------------------------------------------------------
@main.command()
@click.argument("source")
@click.option("--dest", help="FOLDER/NAME under the models folder, e.g. loras/my-lora.safetensors (optional for CivitAI: "
              "its type names the folder, CivitAI the file).")
@click.option("--sha256", help="Expected sha256 (64 hex digits); else the hub's, else size-checked only.")
@click.option("--size", type=click.IntRange(min=1), help="Expected size in bytes.")
@click.option("--id", "download_id", help="Id for the download (default: from the file name).")
@click.pass_context
def add(ctx: click.Context, source: str, dest: str | None, sha256: str | None, size: int | None, download_id: str | None) -> None:
    """Add a download that is in no manifest: a Hugging Face or CivitAI link, hf://owner/repo/path, civitai:<version>
    or a URL, into a models folder.

    When the service runs it queues it (`downloader status` follows it); otherwise it is fetched here, like
    `fetch --only`.

    Example: downloader add hf://owner/repo/my-lora.safetensors --dest loras/my-lora.safetensors

    Example: downloader add "https://civitai.com/models/4201?modelVersionId=130072" (to its type's folder)
    """
    body = {k: v for k, v in (("source", source), ("dest", dest), ("id", download_id), ("sha256", sha256), ("size", size))
            if v is not None}
    try:
        spec = added_spec(body, settings_of(ctx))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "input"
        raise BadInput(f"{field}: {err['msg'].removeprefix('Value error, ')}") from None
    client = service_of(ctx)
    if client is not None:
        try:
            row = client.post("/api/downloads", spec_body(spec))
        except ServiceError as e:
            if e.status == 422:
                err_console.print(f"FAILED {spec.id}: {e}")
                sys.exit(1)
            raise service_failed(e) from None
        where = row["dest"] or "the folder of its type (CivitAI names it)"
        console.print(f"queued {row['id']} -> {where} in the service; `downloader status` shows it")
        return
    settings = settings_of(ctx)
    _check_free(settings, spec)
    report_fetch(_fetch_here(settings, [spec], wait=True))


def _check_free(settings: Settings, spec: ModelSpec) -> None:
    """The service's rule for additions (`intake.add_refused`), applied here."""
    try:
        catalog_ids: set[str] = set(load(settings, ()).models)
    except (BadInput, ManifestError):
        catalog_ids = set()  # a broken manifest folder is `fetch`'s to report, not a reason to refuse this
    with Store(settings.db_path) as store:
        refused = add_refused(store, catalog_ids, spec)
    if refused is not None:
        raise click.ClickException(str(refused))
