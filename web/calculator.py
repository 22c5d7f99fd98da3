"""Video calculator: plan a WAN generation (frames, size, latent, files, VRAM and time estimates).

`/video-calculator` is a plain GET form (the inputs are the query string, so the URL is shareable and the page
works without JavaScript). With JavaScript, htmx swaps in the results fragment (`/video-calculator/results`,
the same template) as the inputs change. `/api/video-calculator` answers JSON for scripts.
The formulas are in `downloader.calculator` (no Flask); this module adds the catalog, the files on disk and the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    get_template_attribute,
    jsonify,
    render_template,
    request,
    url_for,
)

from downloader.calculator.inputs import (
    PARAMS,
    InputError,
    Inputs,
    format_number,
    parse_params,
)
from downloader.calculator.models import GPUS, MODELS
from downloader.calculator.result import Result, calculate
from downloader.errors import human_bytes
from downloader.manifest import confine
from downloader.state import DownloadState

from . import service

bp = Blueprint("calculator", __name__)
IN_PROGRESS = frozenset(DownloadState) - {DownloadState.DONE}  # shown as the file's status while it lasts


def human_time(seconds: float, short: bool = False) -> str:
    """442 -> '7 min 22 s' ('7m 22s' short); 4000 -> '1 h 07 min' ('1h 07m')."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if short else f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m" if short else f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _on_disk(path: Path, size: int | None) -> bool:
    try:
        return path.is_file() and (size is None or path.stat().st_size == size)
    except OSError:
        return False


def files_view(result: Result) -> dict[str, Any]:
    """The files this choice needs, matched to the loaded manifests, with what is on disk and what to fetch."""
    svc = service()
    catalog, models_dir = svc.catalog, svc.settings.models_dir
    rows: list[dict[str, Any]] = []
    for need in result.files:
        spec = catalog.models.get(need.manifest_id or "")
        row: dict[str, Any] = {"role": need.role, "filename": need.filename, "optional": need.optional, "note": None}
        if spec is not None:
            stored = svc.store.get(spec.id)
            state = stored.state if stored is not None else None
            try:
                on_disk = state == DownloadState.DONE or (
                    spec.dest is not None and _on_disk(confine(models_dir, spec.dest), spec.size))
            except ValueError:
                on_disk = False
            status = "on disk" if on_disk else state if state in IN_PROGRESS else "missing"
            row.update(id=spec.id, dest=spec.dest, size=spec.size, in_manifest=True, status=status,
                       note=need.note, presets=catalog.presets_of(spec.id))
        else:
            dest = f"{need.folder}/{need.filename}" if need.filename else ""
            on_disk = bool(dest) and _on_disk(models_dir / dest, need.size)
            row.update(id=None, dest=dest, size=need.size, in_manifest=False, presets=[],
                       status="on disk" if on_disk else "not in the manifests", note=need.note)
        row["size_text"] = human_bytes(row["size"]) if row["size"] else "size unknown"
        rows.append(row)
    needed = {r["id"] for r in rows if r["id"]}
    missing = [r for r in rows if r["status"] != "on disk"]
    missing_ids = {r["id"] for r in missing if r["id"]}
    presets = [
        {"name": name, "description": p.description, "url": url_for("downloads.start_preset", name=name)}
        for name, p in catalog.presets.items()
        if set(p.models) <= needed and set(p.models) & missing_ids
    ]
    total = sum(r["size"] or 0 for r in rows)
    to_fetch = sum(r["size"] or 0 for r in missing)
    unknown = sum(1 for r in missing if not r["size"])
    return {
        "files": rows,
        "total_bytes": total,
        "total_text": human_bytes(total),
        "missing_bytes": to_fetch,
        "missing_text": human_bytes(to_fetch),
        "missing_count": len(missing),
        "unknown_sizes": unknown,
        "not_in_manifests": sum(1 for r in missing if not r["in_manifest"]),
        "all_on_disk": not missing,
        "presets": presets,
        "downloads_url": url_for("downloads.page"),
    }


def _texts(r: Result, files: dict[str, Any]) -> dict[str, str]:
    """Display sentences: the page's (and the API's `text`, for scripts)."""
    m, size = r.model, f"{r.effective_width}×{r.effective_height}"
    duration = f"{r.duration_s:.3f}".rstrip("0").rstrip(".") + " s"
    fps = f"{r.fps:g}"
    if r.requested_frames is not None and r.requested_frames != r.frames:
        length = (f"{r.requested_frames} frames asked: not 4n+1, so ComfyUI makes {r.latent_frames} latent frames "
                  f"→ {r.frames} frames ({duration})")
    elif r.frames_from in ("seconds", "audio"):
        src = r.requested_seconds if r.frames_from == "seconds" else r.inputs["audio"]
        what = "" if r.frames_from == "seconds" else " of audio"
        length = (f"{src:g} s{what} × {fps} fps → {r.frames} frames = 4·{(r.frames - 1) // 4}+1, "
                  f"exactly {duration}")
    else:
        length = f"{r.frames} frames = 4·{(r.frames - 1) // 4}+1 (the model's default), {duration} at {fps} fps"
    size_text = (f"{size}: multiples of {m['multiple']} ✓" if r.size_valid else
                 f"{r.width}×{r.height} is not a multiple of {m['multiple']}: figures use {size}")
    size_text += " · in the trained set ✓" if r.trained_size else " · outside the trained set"
    cfg = "CFG 1" if r.time.passes == 1 else f"CFG {m['cfg'] or '> 1'}"
    sampling = (f"{r.steps} steps × {r.time.passes} pass{'' if r.time.passes == 1 else 'es'} ({cfg})"
                + (", 4-step LoRAs" if r.lora else "") + f", {r.precision} weights")
    chunks = ""
    if r.chunks:
        c = r.chunks
        chunks = (f"{c.count} × {c.frames_per_chunk} frames = {c.total_frames} frames ({c.basis}); "
                  f"{c.tokens_per_chunk:,} tokens per chunk")
    n = len(r.problems)
    gpu_gb = f"{r.gpu['vram_gb']:g} GB"
    vram_sub = {"none": f"fits {gpu_gb}", "needed": f"over {gpu_gb}", "insufficient": "out of memory"}[r.vram.offload]
    if files["all_on_disk"]:
        files_summary = f"All {len(files['files'])} on disk ✓ · {files['total_text']} in all"
    else:
        files_summary = (f"{files['missing_count']} of {len(files['files'])} to fetch · {files['missing_text']}"
                         + (f" + {files['unknown_sizes']} of unknown size" if files["unknown_sizes"] else "")
                         + f" · {files['total_text']} in all")
    return {
        "title": f"{m['label']} · {size} · {r.gpu['label']}",
        "verdict": "Valid settings" if not n else f"{n} problem{'' if n == 1 else 's'}",
        "duration": duration,
        "fps": fps,
        "tokens": f"{r.tokens:,}",
        "vram": f"{r.vram.value:.1f} GB",
        "time": human_time(r.time.value),
        "time_short": human_time(r.time.value, short=True),
        "first_run": human_time(r.time.first_run_s),
        "frames_sub": "4n+1" + (f" (asked {r.requested_frames})" if r.requested_frames not in (None, r.frames) else ""),
        "duration_sub": f"at {fps} fps",
        "latent_sub": "(" + ", ".join(map(str, r.latent_shape)) + ")",
        "tokens_sub": f"{r.chunks.tokens_per_chunk:,} per chunk" if r.chunks and r.chunks.count > 1 else size,
        "vram_sub": vram_sub,
        "time_sub": f"{r.steps} steps" + (f", {r.chunks.count} chunks" if r.chunks and r.chunks.count > 1 else ""),
        "length": length,
        "size": size_text,
        "latent": (f"({', '.join(map(str, r.latent_shape))}) = (C, T, H/{m['vae_stride'][1]}, W/{m['vae_stride'][2]}), "
                   f"{r.tokens:,} tokens per step"),
        "sampling": sampling,
        "chunks": chunks,
        "gauge": (f"{r.vram.weights_gb:.1f} GB weights + {r.vram.activations_gb:.1f} GB activations, "
                  f"of {gpu_gb}"),
        "gauge_pct": f"{min(100.0, 100 * r.vram.value / r.gpu['vram_gb']):.1f}",
        "time_detail": (f"first run ≈ {human_time(r.time.first_run_s)} (loads the weights) · "
                        f"{r.time.evaluations} model evaluations × {r.time.per_evaluation_s:.2f} s"),
        "files_summary": files_summary,
        "estimates_on": f"on the {r.gpu['label']}",
    }


def present(result: Result, inputs: Inputs) -> dict[str, Any]:
    """The API's answer (and what the page renders): the result, the files, the shareable URL, display text."""
    data = result.as_dict()
    files = files_view(result)
    data["files"] = files
    data["share_url"] = url_for("calculator.page", _external=True) + "?" + result.query
    data["text"] = _texts(result, files)
    data["links"] = {
        "swap": inputs.updated({"width": result.height, "height": result.width}).query(),
        "nearest": [{"frames": f, "query": inputs.updated({"frames": f}).query(),
                     "label": f"{f} ({(f - 1) / result.fps:g} s)"} for f in result.nearest_frames],
        "sizes": [{"width": w, "height": h, "query": inputs.updated({"width": w, "height": h}).query()}
                  for w, h in result.model["sizes"]],
    }
    return data


def _present(inputs: Inputs) -> dict[str, Any]:
    return present(calculate(inputs, service().catalog), inputs)


@bp.get("/api/video-calculator")
def api() -> Any:
    """JSON for scripts: 400 with {error, param} for malformed input; 200 with valid true/false otherwise."""
    try:
        inputs = parse_params(request.args)
    except InputError as e:
        return jsonify(error=str(e), param=e.param), 400
    return jsonify(_present(inputs))


def _lenient(args: dict[str, str]) -> tuple[Inputs, list[InputError]]:
    """Parse, dropping each malformed parameter in turn: the page still shows the rest."""
    errors: list[InputError] = []
    while True:
        try:
            return parse_params(args), errors
        except InputError as e:
            errors.append(e)
            bad = e.param if e.param in args else next((k for k in args if k not in PARAMS), None)
            if bad is None:
                return Inputs(), errors
            args.pop(bad)


def _form(inputs: Inputs, data: dict[str, Any]) -> dict[str, Any]:
    """The form's fields for these inputs: what was given, else what the model's defaults work out to."""
    return {
        "model": inputs.model,
        "width": str(data["width"]),
        "height": str(data["height"]),
        "by": data["inputs"]["by"],
        "seconds": format_number(inputs.seconds if inputs.seconds is not None else round(data["duration_s"], 4)),
        "frames": str(inputs.frames if inputs.frames is not None else data["frames"]),
        "fps": format_number(inputs.fps) if inputs.fps is not None else "",
        "gpu": inputs.gpu,
        "precision": data["precision"],
        "steps": str(inputs.steps) if inputs.steps is not None else "",
        "lora": inputs.lora,
        "audio": format_number(inputs.audio) if inputs.audio is not None else "",
    }


@bp.get("/video-calculator")
def page() -> Any:
    """The form and its results, rendered on the server for the query (400 with the message if malformed)."""
    raw = {k: request.args.get(k, "") for k in request.args}
    inputs, errors = _lenient(dict(raw))
    data = _present(inputs)
    form = _form(inputs, data)
    if raw.get("by") in ("seconds", "frames"):
        form["by"] = raw["by"]
    for e in errors:  # show a malformed number as typed, so it can be corrected
        if e.param in ("width", "height", "seconds", "frames", "fps", "steps", "audio") and e.param in raw:
            form[e.param] = raw[e.param]
    # What calculator.js needs to set a model's defaults in the form before the results come back.
    defaults = {m.id: {"kind": m.kind, "fps": m.fps, "steps": m.steps, "default_precision": m.default_precision}
                for m in MODELS.values()}
    status = 400 if errors else 200
    return render_template(
        "calculator.html", data=data, form=form, errors=[str(e) for e in errors], models=MODELS, gpus=GPUS,
        models_json=defaults,
    ), status


def _as_typed(args: Mapping[str, str]) -> str:
    """A malformed query as the address bar shows it: the fields given, the length in seconds or frames (`by`)."""
    skip = {"by", "seconds" if args.get("by") == "frames" else "frames"}
    return urlencode([(k, v.strip()) for k, v in args.items() if k not in skip and v.strip()])


@bp.get("/video-calculator/results")
def results() -> Any:
    """The results fragment htmx swaps in as the inputs change, the address bar following the canonical query.
    Malformed input replaces only the message: the last results stay (calculator.js marks them stale)."""
    page_url = url_for("calculator.page")
    try:
        inputs = parse_params(request.args)
    except InputError as e:
        error_box = get_template_attribute("calculator/parts.html", "error_box")
        return error_box([str(e)]), {"HX-Retarget": "#calc-error", "HX-Reswap": "outerHTML",
                                     "HX-Replace-Url": page_url + "?" + _as_typed(request.args)}
    data = _present(inputs)
    html = render_template("calculator/results.html", data=data, form=_form(inputs, data), oob=True)
    return html, {"HX-Replace-Url": page_url + "?" + data["query"]}
