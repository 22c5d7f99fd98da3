"""Plan a WAN video generation before spending GPU time: everything the page shows for one set of inputs (valid
frame count and size, the latent and its tokens, problems and warnings with suggestions, labelled estimates of VRAM
and time, the files needed). Pure Python, no Flask (the web page and API wrap it); the catalog is passed in.

Facts and formulas: `shared/reference/video-calculator.md` ("the reference"); the tables live in
`downloader.calculator.models`. Every estimate names the published anchor it scales from and how.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from downloader.manifest import Catalog

from .estimates import TimeEstimate, VramEstimate, time_estimate, vram_estimate
from .inputs import Inputs, format_number, parse_params
from .model_files import FileNeed, files_for
from .models import GPUS, MODELS, Gpu, WanModel
from .shapes import (
    chunk_count,
    comfyui_frames,
    frames_from_seconds,
    is_valid_frames,
    latent_frames,
    latent_shape,
    nearest_multiple,
    nearest_valid_frames,
    size_is_valid,
    suggest_sizes,
    tokens,
)


@dataclass
class Suggestion:
    label: str
    params: dict[str, Any]  # query parameters to change
    query: str = ""  # the whole query string with the change applied (a link)


@dataclass
class Message:
    field: str
    message: str
    suggestions: list[Suggestion] = field(default_factory=list)


@dataclass
class Chunks:
    count: int
    frames_per_chunk: int
    seconds_per_chunk: float
    total_frames: int
    tokens_per_chunk: int
    basis: str


@dataclass
class Result:
    valid: bool
    problems: list[Message]
    warnings: list[Message]
    notes: list[str]
    model: dict[str, Any]
    gpu: dict[str, Any]
    inputs: dict[str, Any]
    query: str
    fps: float
    frames: int  # always 4n+1: the frames ComfyUI makes
    frames_from: str  # seconds / frames / audio / default
    requested_frames: int | None
    requested_seconds: float | None
    duration_s: float
    nearest_frames: list[int]
    width: int
    height: int
    effective_width: int
    effective_height: int
    size_valid: bool
    size_suggestions: list[list[int]]
    trained_size: bool
    latent_frames: int
    latent_shape: list[int]
    tokens: int
    chunks: Chunks | None
    steps: int
    precision: str
    lora: bool
    vram_gb: float
    vram: VramEstimate
    time_s: float
    time: TimeEstimate
    files: list[FileNeed]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dur(frames: int, fps: float) -> str:
    return f"{(frames - 1) / fps:.3g} s"


def _size_label(w: int, h: int) -> str:
    return f"{w}×{h}"


def _orientation(w: int, h: int) -> str:
    return "landscape" if w > h else "portrait" if h > w else "square"


def calculate(inp: Inputs, catalog: Catalog) -> Result:
    """Everything the page shows for one set of inputs (well-formed: parse_params has checked them); the files and
    the weights' sizes come from the catalog (the loaded manifests)."""
    m, gpu = MODELS[inp.model], GPUS[inp.gpu]
    problems: list[Message] = []
    warnings: list[Message] = []
    notes: list[str] = list(m.notes)
    fps = inp.fps if inp.fps is not None else float(m.fps)
    precision = inp.precision or m.default_precision
    width, height = inp.width or m.default_size[0], inp.height or m.default_size[1]

    # Frames: from seconds (always 4n+1), or as given (floored by ComfyUI if not 4n+1).
    requested_frames, requested_seconds = inp.frames, inp.seconds
    if inp.frames is not None:
        frames_from, frames = "frames", comfyui_frames(inp.frames)
        if not is_valid_frames(inp.frames):
            near = nearest_valid_frames(inp.frames)
            problems.append(Message(
                "frames",
                f"{inp.frames} frames is not 4n+1: ComfyUI floors it to {latent_frames(inp.frames)} latent frames, "
                f"which decode to {frames} frames ({_dur(frames, fps)}). Use {' or '.join(map(str, near))}.",
                [Suggestion(f"use {f} frames ({_dur(f, fps)})", {"frames": f}) for f in near],
            ))
    elif inp.seconds is not None:
        frames_from, frames = "seconds", frames_from_seconds(inp.seconds, fps)
    elif inp.audio is not None and m.kind == "s2v":
        frames_from, frames = "audio", frames_from_seconds(inp.audio, fps)
    else:
        frames_from, frames = "default", m.default_frames
    duration = (frames - 1) / fps
    if inp.seconds is not None and frames_from == "seconds" and abs(duration - inp.seconds) > 1e-9:
        notes.append(f"{format_number(inp.seconds)} s at {format_number(fps)} fps is not a whole 4n+1 length: "
                     f"{frames} frames "
                     f"last exactly {duration:.4g} s (nearest: {', '.join(map(str, nearest_valid_frames(frames)))}).")
    if frames == 1:
        warnings.append(Message("frames", "1 frame is a still image.",
                                [Suggestion(f"use {m.default_frames} frames", {"frames": m.default_frames})]))
    elif frames > m.default_frames and not m.chunk_frames:
        warnings.append(Message(
            "frames", f"{frames} frames is longer than {m.label}'s default of {m.default_frames} "
            f"({m.default_seconds:g} s at {m.fps} fps): no published figure covers longer single clips.",
            [Suggestion(f"use {m.default_frames} frames", {"frames": m.default_frames})],
        ))
    if fps != m.fps:
        warnings.append(Message(
            "fps", f"{m.label} generates at {m.fps} fps: another fps only changes playback speed and the frame count "
            "for a given duration.", [Suggestion(f"use {m.fps} fps", {"fps": m.fps})],
        ))

    # Width and height.
    k = m.multiple
    size_valid = size_is_valid(width, height, k)
    suggestions = [] if size_valid else suggest_sizes(width, height, k, prefer=m.sizes)
    eff_w, eff_h = (width, height) if size_valid else (nearest_multiple(width, k), nearest_multiple(height, k))
    if not size_valid:
        bad = " and ".join(n for n, v in (("width", width), ("height", height)) if v % k or v < k)
        node = "Wan22ImageToVideoLatent steps" if k == 32 else "Wan latent nodes step"
        problems.append(Message(
            "size",
            f"{bad.capitalize()} must be a multiple of {k} for {m.label} "
            f"({m.vae_stride[1]}×{m.vae_stride[1]} VAE × 2×2 patch); ComfyUI's {node} width/height by {k}. "
            f"Figures below use {_size_label(eff_w, eff_h)}.",
            [Suggestion(f"use {_size_label(w, h)}", {"width": w, "height": h}) for w, h in suggestions],
        ))
    trained = _trained(m, eff_w, eff_h)
    if not trained:
        same = [s for s in m.sizes if _orientation(*s) == _orientation(eff_w, eff_h)] or list(m.sizes)
        best = min(same, key=lambda s: abs(math.log(s[0] * s[1] / (eff_w * eff_h))))
        extra = m.trained_note.get((eff_w, eff_h))
        what = "target area" if m.area_based else "size"
        warnings.append(Message(
            "size", (f"{_size_label(eff_w, eff_h)}: {extra}." if extra else
                     f"{_size_label(eff_w, eff_h)} is outside {m.label}'s trained set "
                     f"({', '.join(_size_label(*s) for s in m.sizes)}); quality may suffer.")
            + (f" The size is a {what}: the aspect ratio follows the input image." if m.area_based else ""),
            [Suggestion(f"use {_size_label(*best)}", {"width": best[0], "height": best[1]})],
        ))
    elif m.area_based:
        notes.append("For this model the size is a target area: the output's aspect ratio follows the input image.")
    if m.id == "wan2.1-i2v-14b-480p" and eff_w * eff_h > 832 * 480 * 1.5:
        warnings.append(Message("model", "This is the 480P checkpoint; the 720P one is trained for this size.",
                                [Suggestion("use Wan 2.1 I2V-14B 720P", {"model": "wan2.1-i2v-14b-720p"})]))

    # Steps, CFG and the 4-step LoRAs.
    lora = inp.lora
    if lora and not m.lora:
        problems.append(Message(
            "lora", f"The LightX2V 4-step LoRAs in the reference are for Wan 2.2 T2V/I2V-A14B, not {m.label}.",
            [Suggestion("turn the 4-step LoRA off", {"lora": 0})],
        ))
        lora = False
    steps = inp.steps or (4 if lora else m.steps)
    if lora and steps != 4:
        warnings.append(Message("steps", f"The 4-step LoRAs are made for 4 steps at CFG 1 (you set {steps}).",
                                [Suggestion("use 4 steps", {"steps": 4})]))
    passes = 1 if lora or m.cfg == 1.0 else 2
    if m.experts == 2:
        half = steps // 2
        notes.append(f"{steps} steps: 0→{half} on the high-noise expert, {half}→{steps} on the low-noise expert"
                     f"{', CFG 1' if lora else ''}.")
    if precision == "fp8" and not gpu.fp8_tensor:
        notes.append(f"The {gpu.name} has no fp8 tensor cores: fp8 weights still halve the memory, and compute runs "
                     "in 16-bit (as the estimates assume anyway).")
    if inp.audio is not None and m.kind != "s2v":
        warnings.append(Message("audio", "The audio length only applies to S2V; it is ignored here.",
                                [Suggestion("clear the audio length", {"audio": ""})]))

    # Latent, tokens and chunks.
    n_tokens = tokens(frames, eff_w, eff_h, m)
    chunks = None
    pass_frames, n_passes = frames, 1
    if m.chunk_frames:
        audio = inp.audio if m.kind == "s2v" else None
        count = chunk_count(m, frames, audio, fps)
        pass_frames, n_passes = (m.chunk_frames, count) if frames >= m.chunk_frames or audio else (frames, 1)
        basis = (f"ceil({format_number(audio)} s × {format_number(fps)} fps / {m.chunk_frames})" if audio else
                 f"ceil({frames} / {m.chunk_frames})" + ("; each extend adds 77 frames" if m.kind == "animate" else ""))
        chunks = Chunks(count, pass_frames, round(m.chunk_frames / fps, 4), count * pass_frames,
                        tokens(pass_frames, eff_w, eff_h, m), basis)
        if audio and frames_from in ("frames", "seconds") and frames < (count - 1) * m.chunk_frames:
            warnings.append(Message("audio", f"The audio ({format_number(audio)} s) needs {count} chunks of "
                                    f"{m.chunk_frames} frames, more than the {frames} frames you set: the video "
                                    "follows the audio."))
    pass_tokens = tokens(pass_frames, eff_w, eff_h, m)

    vram = vram_estimate(m, gpu, precision, pass_tokens, catalog)
    time = time_estimate(m, gpu, precision, lora, steps, passes, pass_tokens, eff_w * eff_h * pass_frames, n_passes)
    if vram.offload == "needed":
        warnings.append(Message("gpu", f"{m.label} at {_size_label(eff_w, eff_h)} × {pass_frames} frames needs an "
                                f"estimated {vram.value:.1f} GB, more than the {gpu.name}'s {gpu.vram_gb:g} GB: "
                                "ComfyUI will offload part of the weights to system RAM (slower than the time "
                                "estimate).",
                                _memory_suggestions(m, gpu, precision, eff_w, eff_h)))
    elif vram.offload == "insufficient":
        warnings.append(Message("gpu", "Even without the weights, the activations "
                                f"(≈{vram.activations_gb:.1f} GB) exceed the {gpu.name}'s {gpu.vram_gb:g} GB: "
                                "expect out-of-memory. Use fewer frames or a "
                                "smaller size.", _memory_suggestions(m, gpu, precision, eff_w, eff_h)))
    elif vram.value > 0.9 * gpu.vram_gb:
        warnings.append(Message("gpu", f"Tight: the estimated {vram.value:.1f} GB is over 90% of the {gpu.name}'s "
                                f"{gpu.vram_gb:g} GB."))

    for msg in problems + warnings:
        for sug in msg.suggestions:
            sug.query = inp.updated(sug.params).query()
    return Result(
        valid=not problems, problems=problems, warnings=warnings, notes=notes,
        model=_model_info(m), gpu={**dataclasses.asdict(gpu), "label": gpu.label},
        inputs={**dataclasses.asdict(inp), "by": "frames" if inp.frames is not None else "seconds"},
        query=inp.query(), fps=fps, frames=frames, frames_from=frames_from, requested_frames=requested_frames,
        requested_seconds=requested_seconds, duration_s=round(duration, 6),
        nearest_frames=nearest_valid_frames(requested_frames or frames), width=width, height=height,
        effective_width=eff_w, effective_height=eff_h, size_valid=size_valid,
        size_suggestions=[list(s) for s in suggestions],
        trained_size=trained, latent_frames=latent_frames(frames),
        latent_shape=list(latent_shape(frames, eff_w, eff_h, m)),
        tokens=n_tokens, chunks=chunks, steps=steps, precision=precision, lora=lora,
        vram_gb=round(vram.value, 1), vram=vram, time_s=round(time.value), time=time,
        files=files_for(m.id, precision, lora, catalog),
    )


def _trained(m: WanModel, w: int, h: int) -> bool:
    if (w, h) in m.sizes:
        return True
    # For I2V/TI2V/S2V the size is a target area: any aspect within 10% of a trained area counts.
    return m.area_based and any(abs(w * h / (a * b) - 1) <= 0.10 for a, b in m.sizes)


def _memory_suggestions(m: WanModel, gpu: Gpu, precision: str, w: int, h: int) -> list[Suggestion]:
    out = []
    if precision == "fp16" and m.cost_class != "1.3b":
        out.append(Suggestion("use fp8", {"precision": "fp8"}))
    smaller = [s for s in m.sizes if s[0] * s[1] < w * h and _orientation(*s) == _orientation(w, h)]
    if smaller:
        s = max(smaller, key=lambda s: s[0] * s[1])
        out.append(Suggestion(f"use {_size_label(*s)}", {"width": s[0], "height": s[1]}))
    bigger = [g for g in GPUS.values() if g.vram_gb > gpu.vram_gb]
    if bigger:
        g = min(bigger, key=lambda g: (g.vram_gb, -g.speed))
        out.append(Suggestion(f"switch to the {g.label}", {"gpu": g.id}))
    return out


def _model_info(m: WanModel) -> dict[str, Any]:
    return {
        "id": m.id, "label": m.label, "family": m.family, "kind": m.kind, "fps": m.fps,
        "default_frames": m.default_frames, "default_seconds": m.default_seconds, "multiple": m.multiple,
        "sizes": [list(s) for s in m.sizes], "default_size": list(m.default_size), "steps": m.steps,
        "official_steps": m.official_steps, "shift": m.shift, "cfg": m.cfg, "vae_stride": list(m.vae_stride),
        "latent_channels": m.latent_channels, "experts": m.experts, "area_based": m.area_based,
        "default_precision": m.default_precision, "lora": m.lora, "chunk_frames": m.chunk_frames,
    }


def calculate_params(params: Mapping[str, str], catalog: Catalog) -> Result:
    """parse_params + calculate."""
    return calculate(parse_params(params), catalog)
