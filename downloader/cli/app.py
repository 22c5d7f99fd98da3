"""The `downloader` command group and what its commands share: settings, selection, output, the service client.

Library errors become one clear line and a non-zero exit here, at the edge, and nowhere else.
Exit codes: 0 success, 1 something failed (the lines say what), 2 bad input (usage, manifest, preset).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import DEFAULT_PRESETS, Settings, parse_presets
from ..errors import ConfigError, ManifestError, human_bytes
from ..manifest import Catalog, ModelSpec, endpoints_of, load_catalog
from ..plan import Plan
from ..state import DownloadState, bytes_done
from .client import ServiceClient, ServiceError, ServiceUnreadable, find_service
from .progress import RowLike

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
BAD_INPUT_STATUSES = (400, 404)  # the service refused what was asked (unknown preset or id, a bad field)


class BadInput(click.ClickException):
    """Usage, manifest or preset problems: exit code 2."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Overrides MODELS_DIR.")
@click.option("--connections", "-x", type=click.IntRange(1, 16), help="Connections per file (ARIA2_CONNECTIONS).")
@click.version_option(package_name="pod-downloader")
@click.pass_context
def main(ctx: click.Context, models_dir: Path | None, connections: int | None) -> None:
    """Resumable, sha256-verified model downloads for GPU pods.

    Configuration comes from the environment (WORKSPACE, MODELS_DIR, DOWNLOADER_STATE, HF_TOKEN, HF_ENDPOINT, ...):
    see the README. When `downloader serve` runs for the workspace, the other commands ask it (it owns the
    downloads); otherwise they work in this process.
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


def settings_of(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def service_of(ctx: click.Context) -> ServiceClient | None:
    """This pod's running service for the workspace (None: none runs, or its record is stale)."""
    settings = settings_of(ctx)
    try:
        return find_service(settings.state_dir, settings.runpod_pod_id)
    except ServiceUnreadable as e:
        raise click.ClickException(str(e)) from None


def service_failed(e: ServiceError) -> click.ClickException:
    """A service's refusal as the CLI's exit: 2 for bad input (unknown preset or id, a bad field), else 1."""
    return BadInput(str(e)) if e.status in BAD_INPUT_STATUSES else click.ClickException(str(e))


def load(settings: Settings, manifests: Sequence[str]) -> Catalog:
    """The catalog of the given manifest files (or the configured folders), with bad input as exit 2."""
    paths = [Path(m) for m in manifests] if manifests else list(settings.manifest_dirs)
    missing = [str(p) for p in paths[: len(manifests)] if not p.exists()]
    if missing:
        raise BadInput(f"manifest not found (no such file or folder): {', '.join(missing)}")
    try:
        return load_catalog(paths, settings.models_dir, endpoints_of(settings))
    except ManifestError as e:
        raise BadInput(str(e)) from None


def default_presets(settings: Settings) -> list[str]:
    """What `fetch` takes when nothing is named: $MODEL_PRESETS, else the shipped default."""
    return list(settings.model_presets if settings.model_presets is not None else parse_presets(DEFAULT_PRESETS))


def select(ctx: click.Context, manifests: Sequence[str], presets: Sequence[str], only: Sequence[str]) -> list[ModelSpec]:
    settings = settings_of(ctx)
    catalog = load(settings, manifests)
    if not presets and not only and not manifests:
        presets = default_presets(settings)
        if not presets:
            return []
    try:
        return catalog.select(presets, only)
    except ManifestError as e:
        raise BadInput(str(e)) from None


def print_plan(plan: Plan) -> None:
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


def report_fetch(rows: Sequence[RowLike], refused: Sequence[tuple[str, str]] = ()) -> None:
    """The end of a fetch: how many files are verified in place; exit 1 with one `FAILED id: reason` per other
    file (`refused`: files the service would not even queue)."""
    failed = [r for r in rows if r.state != DownloadState.DONE]
    done_bytes = sum(bytes_done(r.state, r.size, r.bytes_done) for r in rows if r.state == DownloadState.DONE)
    total = len(rows) + len(refused)
    console.print(f"{len(rows) - len(failed)} of {total} file(s) verified in place ({human_bytes(done_bytes)})")
    if failed or refused:
        for download_id, reason in refused:
            err_console.print(f"FAILED {download_id}: {reason}")
        for row in failed:
            err_console.print(f"FAILED {row.id}: {row.error or row.state}")
        sys.exit(1)


def show_rows(rows: Sequence[RowLike], pods: Mapping[str, str] | None = None) -> None:
    """The `status` table; `pods`: download id -> the pod fetching it (pods sharing the workspace)."""
    pods = pods or {}
    table = Table()
    for col in ("id", "state", "progress", "size", "pod", "error"):
        table.add_column(col)
    for r in rows:
        pct = f"{100 * bytes_done(r.state, r.size, r.bytes_done) / r.size:.1f}%" if r.size else "?"
        if r.state == DownloadState.DONE:
            pct = "100%" + ("" if r.verified else " (unverified)")
        table.add_row(r.id, r.state, pct, human_bytes(r.size) if r.size else "?", pods.get(r.id, ""), r.error or "")
    console.print(table)
