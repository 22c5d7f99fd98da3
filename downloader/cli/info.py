"""`status`, `verify`, `presets` and `serve`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click

from ..claims import live_holders
from ..errors import DownloaderError, ManifestError, human_bytes
from ..reverify import CheckResult, reverify
from ..state import Store
from .app import (
    BadInput,
    console,
    err_console,
    load,
    main,
    manifest_args,
    preset_opt,
    service_failed,
    service_of,
    settings_of,
    show_rows,
)
from .client import ServiceClient, ServiceError
from .follow import Snapshot, follow, following, verify_settled
from .progress import Row


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """What the state database knows about every download (the service's view when it runs), with the pod
    fetching each file when pods share the workspace.

    Example: downloader status --json | jq '.[] | select(.state=="failed")'
    """
    client = service_of(ctx)
    if client is not None:
        data = [d for d in Snapshot.take(client).by_id.values() if d["state"] != "available"]
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            show_rows([Row.from_api(d) for d in data], {d["id"]: d["pod"] for d in data if d.get("pod")})
        return
    with Store(settings_of(ctx).db_path) as store:
        rows = store.downloads()
        pods = live_holders(store)  # other pods' services may be fetching some of them
    if as_json:
        click.echo(json.dumps([{**r.as_dict(), "pod": pods.get(r.id)} for r in rows], indent=2))
    else:
        show_rows(rows, pods)


def _show(check: CheckResult) -> None:
    colour = {"ok": "green", "unverified": "yellow"}.get(check.result, "red")
    console.print(f"[{colour}]{check.result}[/] {check.id}: {check.message}")


@main.command()
@click.option("--only", "only", multiple=True, help="Model id to verify (repeatable); default every done file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, only: tuple[str, ...], as_json: bool) -> None:
    """Re-hash the files in place; a bad one is moved aside and marked failed.

    When the service runs, it re-hashes them (its rows show `verifying`, then the verdict).

    Example: downloader verify --only wan21-vae
    """
    client = service_of(ctx)
    if client is not None:
        results = _verify_through(client, only, on_result=None if as_json else _show)
    else:
        with Store(settings_of(ctx).db_path) as store:
            results = reverify(settings_of(ctx), store, only, on_result=None if as_json else _show)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    if any(r.result not in ("ok", "unverified") for r in results):
        sys.exit(1)


def _verdict(row: Row) -> CheckResult:
    if row.state != "done":
        return CheckResult(row.id, row.dest, "failed", row.error or row.state)
    if row.verified:
        return CheckResult(row.id, row.dest, "ok", "sha256 ok")
    return CheckResult(row.id, row.dest, "unverified", "size checked, no sha256 known")


def _verify_through(
    client: ServiceClient, only: tuple[str, ...], on_result: Callable[[CheckResult], None] | None
) -> list[CheckResult]:
    """Ask the service to re-hash (`POST /api/verify`) and wait for its verdicts."""
    with following() as stop:
        before = Snapshot.take(client)
        try:
            ids = client.post("/api/verify", {"ids": list(only)})["ids"]
        except ServiceError as e:
            raise service_failed(e) from None
        rows = follow(client, ids, verify_settled(before), stop)
        if stop.is_set():
            return []
    results = [_verdict(r) for r in rows]
    if on_result is not None:
        for check in results:
            on_result(check)
    return results


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), show_default="$DOWNLOADER_PORT, else 8765",
              help="Port (DOWNLOADER_PORT).")
@preset_opt
@click.pass_context
def serve(ctx: click.Context, host: str, port: int | None, presets: tuple[str, ...]) -> None:
    """Run the web UI and the download manager until stopped (SIGTERM/Ctrl-C).

    Queues --preset (default: $MODEL_PRESETS, or none) at start; downloads left unfinished by an earlier
    run continue by themselves. The other commands become its clients while it runs.

    Example: downloader serve --preset wan22-t2v-14b-fp8
    """
    from web.serve import run_service

    settings = settings_of(ctx)
    running = service_of(ctx)
    if running is not None:
        raise click.ClickException(
            f"a downloader service (pid {running.info.pid}) already serves this workspace at {running.where}"
        )
    if not presets:
        presets = settings.model_presets or ()
    try:
        code = run_service(settings, host, port or settings.downloader_port, presets, console=err_console)
    except ManifestError as e:
        raise BadInput(str(e)) from None
    except DownloaderError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@main.command()
@manifest_args
@click.pass_context
def presets(ctx: click.Context, manifests: tuple[str, ...]) -> None:
    """List the presets of the loaded manifests with their total size.

    Example: downloader presets
    """
    settings = settings_of(ctx)
    catalog = load(settings, manifests)
    if not catalog.presets:
        where = ", ".join(manifests) or ", ".join(str(d) for d in settings.manifest_dirs)
        raise click.ClickException(
            f"no presets: no manifest defines one in {where} (set DOWNLOADER_MANIFESTS to the shipped manifests "
            "folder, or add a manifest to $WORKSPACE/manifests)"
        )
    for name, preset in catalog.presets.items():
        size = sum(catalog.models[m].size or 0 for m in preset.models)
        console.print(f"[bold]{name}[/] ({human_bytes(size)}): {preset.description or ''}")
        for model_id in preset.models:
            console.print(f"  - {model_id}")
