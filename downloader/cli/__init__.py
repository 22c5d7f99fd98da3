"""`downloader` command line: fetch, plan, status, verify, presets.

Library errors become one clear line and a non-zero exit here, at the edge, and nowhere else.
Exit codes: 0 success, 1 something failed (the lines say what), 2 bad input (usage, manifest, preset).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import DEFAULT_PRESETS, Settings, parse_presets
from ..errors import (
    ConfigError,
    DownloaderError,
    ManifestError,
    WorkspaceBusy,
    human_bytes,
)
from ..fetch import run_plan, start_manager
from ..manifest import Catalog, ModelSpec, load_catalog
from ..plan import Plan, build_plan
from ..reverify import CheckResult, reverify
from ..signals import stop_on_signals
from ..state import Download, DownloadState, Store, bytes_done
from .progress import FetchProgress

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class BadInput(click.ClickException):
    """Usage, manifest or preset problems: exit code 2."""

    exit_code = 2


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def _catalog(settings: Settings, manifests: Sequence[str]) -> Catalog:
    paths = [Path(m) for m in manifests] if manifests else list(settings.manifest_dirs)
    missing = [str(p) for p in paths[: len(manifests)] if not p.exists()]
    if missing:
        raise BadInput(f"manifest not found (no such file or folder): {', '.join(missing)}")
    try:
        return load_catalog(paths, settings.models_dir)
    except ManifestError as e:
        raise BadInput(str(e)) from None


def _select(ctx: click.Context, manifests: Sequence[str], presets: Sequence[str], only: Sequence[str]) -> list[ModelSpec]:
    settings = _settings(ctx)
    catalog = _catalog(settings, manifests)
    if not presets and not only and not manifests:
        presets = settings.model_presets if settings.model_presets is not None else parse_presets(DEFAULT_PRESETS)
        if not presets:
            return []
    try:
        return catalog.select(presets, only)
    except ManifestError as e:
        raise BadInput(str(e)) from None


def _print_plan(plan: Plan) -> None:
    table = Table(title="plan", show_lines=False)
    for col in ("model", "action", "size", "to fetch", "sha256 from"):
        table.add_column(col)
    for item in plan.items:
        origin = item.resolved.sha256_origin if item.resolved else ("manifest" if item.spec.sha256 else "")
        table.add_row(
            item.spec.id,
            item.action if item.action != "error" else f"[red]error[/]: {item.error}",
            human_bytes(item.size) if item.size else "?",
            human_bytes(item.need),
            origin or "[yellow]none: unverified[/]",
        )
    console.print(table)
    console.print(f"to fetch: {human_bytes(plan.need)}; free in {plan.models_dir}: {human_bytes(plan.free)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Overrides MODELS_DIR.")
@click.option("--connections", "-x", type=click.IntRange(1, 16), help="Connections per file (ARIA2_CONNECTIONS).")
@click.version_option(package_name="pod-downloader")
@click.pass_context
def main(ctx: click.Context, models_dir: Path | None, connections: int | None) -> None:
    """Resumable, sha256-verified model downloads for GPU pods.

    Configuration comes from the environment (WORKSPACE, MODELS_DIR, DOWNLOADER_STATE, HF_TOKEN, HF_ENDPOINT, ...):
    see the README.
    """
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        raise BadInput(str(e)) from None
    if models_dir is not None:
        settings = settings.with_(models_dir=models_dir.absolute())
    if connections is not None:
        settings = settings.with_(connections=connections)
    ctx.obj = {"settings": settings}


manifest_args = click.argument("manifests", nargs=-1, type=click.Path(dir_okay=True))
preset_opt = click.option("--preset", "-p", "presets", multiple=True, help="Preset to fetch (repeatable).")
only_opt = click.option("--only", "only", multiple=True, help="Single model id to fetch (repeatable).")


@main.command()
@manifest_args
@preset_opt
@only_opt
@click.pass_context
def plan(ctx: click.Context, manifests: tuple[str, ...], presets: tuple[str, ...], only: tuple[str, ...]) -> None:
    """Dry run: what would download, how many bytes, and whether it fits.

    Example: downloader plan --preset wan22-t2v-14b-fp8
    """
    settings = _settings(ctx)
    specs = _select(ctx, manifests, presets, only)
    with Store(settings.db_path) as store:
        the_plan = build_plan(specs, settings, store)
    _print_plan(the_plan)
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

    With no preset, fetches $MODEL_PRESETS (default wan22-t2v-14b-fp8).

    Example: downloader fetch --preset wan22-t2v-14b-fp8 --preset wan22-t2v-4step-loras
    """
    settings = _settings(ctx)
    specs = _select(ctx, manifests, presets, only)
    if not specs:
        console.print("nothing selected")
        return
    with Store(settings.db_path) as store:
        the_plan = build_plan(specs, settings, store)
        for item in the_plan.errors:
            verdict = "[yellow]will retry[/]" if item.error and item.error.retryable else "[red]refusing[/]"
            err_console.print(f"{verdict} {item.spec.id}: {item.error}")
        try:
            the_plan.check_disk()
        except DownloaderError as e:
            raise click.ClickException(str(e)) from None
        rows = _run_manager(settings, store, the_plan, wait)
    failed = [r for r in rows if r.state != DownloadState.DONE]
    done_bytes = sum(bytes_done(r.state, r.size, r.bytes_done) for r in rows if r.state == DownloadState.DONE)
    console.print(f"{len(rows) - len(failed)} of {len(rows)} file(s) verified in place ({human_bytes(done_bytes)})")
    if failed:
        for row in failed:
            err_console.print(f"FAILED {row.id}: {row.error or row.state}")
        sys.exit(1)


def _run_manager(settings: Settings, store: Store, the_plan: Plan, wait: bool) -> list[Download]:
    try:
        manager = start_manager(settings, store, wait, on_wait=lambda msg: err_console.print(f"{msg}: waiting..."))
    except WorkspaceBusy as e:
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """What the state database knows about every download.

    Example: downloader status --json | jq '.[] | select(.state=="failed")'
    """
    settings = _settings(ctx)
    with Store(settings.db_path) as store:
        rows = store.downloads()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = Table()
    for col in ("id", "state", "progress", "size", "error"):
        table.add_column(col)
    for r in rows:
        pct = f"{100 * bytes_done(r.state, r.size, r.bytes_done) / r.size:.1f}%" if r.size else "?"
        if r.state == DownloadState.DONE:
            pct = "100%" + ("" if r.verified else " (unverified)")
        table.add_row(r.id, r.state, pct, human_bytes(r.size) if r.size else "?", r.error or "")
    console.print(table)


@main.command()
@click.option("--only", "only", multiple=True, help="Model id to verify (repeatable); default every done file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, only: tuple[str, ...], as_json: bool) -> None:
    """Re-hash the files in place; a bad one is moved aside and marked failed.

    Example: downloader verify --only wan21-vae
    """
    settings = _settings(ctx)

    def show(check: CheckResult) -> None:
        if not as_json:
            colour = {"ok": "green", "unverified": "yellow"}.get(check.result, "red")
            console.print(f"[{colour}]{check.result}[/] {check.id}: {check.message}")

    with Store(settings.db_path) as store:
        results = reverify(settings, store, only, on_result=show)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    if any(r.bad for r in results):
        sys.exit(1)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), show_default="$DOWNLOADER_PORT, else 8765",
              help="Port (DOWNLOADER_PORT).")
@preset_opt
@click.pass_context
def serve(ctx: click.Context, host: str, port: int | None, presets: tuple[str, ...]) -> None:
    """Run the web UI and the download manager until stopped (SIGTERM/Ctrl-C).

    Queues --preset (default: $MODEL_PRESETS, or none) at start; downloads left unfinished by an earlier
    run continue by themselves.

    Example: downloader serve --preset wan22-t2v-14b-fp8
    """
    from web.serve import run_service

    settings = _settings(ctx)
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
    settings = _settings(ctx)
    catalog = _catalog(settings, manifests)
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


if __name__ == "__main__":
    main()
