"""Plan a WAN video generation before spending GPU time: valid frame counts and sizes, the latent and its
token count, and labelled estimates of VRAM and time. Pure Python, no Flask (the web page and API wrap it).

Facts and formulas: `shared/reference/video-calculator.md` ("the reference"); the tables live in
`downloader.calculator.models`. Every estimate names the published anchor it scales from and how.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from .estimates import TimeEstimate, VramEstimate, time_estimate, vram_estimate
from .models import (
    DEFAULT_GPU,
    DEFAULT_MODEL,
    GPUS,
    MODELS,
    PRECISIONS,
    FileNeed,
    Gpu,
    WanModel,
    files_for,
)

MAX_SIDE = 8192
MAX_SECONDS = 600.0
MAX_FRAMES = 10_000
MAX_FPS = 120.0
MAX_STEPS = 200

# --- formulas (reference, "Rules and formulas") ---------------------------------------------------------------------


def frames_from_seconds(seconds: float, fps: float) -> int:
    """`F = 4·round(s·fps/4) + 1` (halves round up): 5 s at 16 fps → 81, at 24 fps → 121."""
    return 4 * math.floor(seconds * fps / 4 + 0.5) + 1


def is_valid_frames(frames: int) -> bool:
    """Wan's `--frame_num` must be 4n+1."""
    return frames >= 1 and (frames - 1) % 4 == 0


def latent_frames(frames: int) -> int:
    """`T_lat = (F-1)//4 + 1`: what ComfyUI's Wan latent nodes make of any length (floored)."""
    return (frames - 1) // 4 + 1


def comfyui_frames(frames: int) -> int:
    """The frames ComfyUI decodes for a requested length: `4·(T_lat-1) + 1` (80 → 77)."""
    return 4 * (latent_frames(frames) - 1) + 1


def nearest_valid_frames(frames: int) -> list[int]:
    """The 4n+1 lengths around `frames`: just below and just above (or either side of a valid one)."""
    below = comfyui_frames(frames)
    near = (frames - 4, frames, frames + 4) if below == frames else (below, below + 4)
    return [f for f in near if 1 <= f <= MAX_FRAMES or f == frames]


def tokens(frames: int, width: int, height: int, model: WanModel) -> int:
    """Tokens per step: `T_lat · (H/(2s)) · (W/(2s))` for a VAE spatial stride s and a 2×2 patch."""
    p = model.multiple
    return latent_frames(frames) * (height // p) * (width // p)


def latent_shape(frames: int, width: int, height: int, model: WanModel) -> tuple[int, int, int, int]:
    """`(C, (F-1)//4 + 1, H/s, W/s)`."""
    s = model.vae_stride[1]
    return (model.latent_channels, latent_frames(frames), height // s, width // s)


def size_is_valid(width: int, height: int, multiple: int) -> bool:
    return width >= multiple and height >= multiple and width % multiple == 0 and height % multiple == 0


def nearest_multiple(x: int, multiple: int) -> int:
    return min(max(multiple, multiple * math.floor(x / multiple + 0.5)), MAX_SIDE - MAX_SIDE % multiple)


def suggest_sizes(
    width: int, height: int, multiple: int, limit: int = 3, prefer: tuple[tuple[int, int], ...] = ()
) -> list[tuple[int, int]]:
    """Valid sizes nearest to `width`×`height` with (nearly) the same aspect ratio, best first; a `prefer`red
    (trained) size within 5% of the aspect ratio and 25% of the area comes first."""
    aspect, area = width / height, width * height
    top = MAX_SIDE - MAX_SIDE % multiple
    candidates: set[tuple[int, int]] = set()
    for fw in (math.floor, math.ceil):
        for fh in (math.floor, math.ceil):
            candidates.add((fw(width / multiple) * multiple, fh(height / multiple) * multiple))
    centre = max(1, round(width / multiple))
    for k in range(max(1, centre - 6), centre + 7):
        w = k * multiple
        candidates.add((w, round(w / aspect / multiple) * multiple))
    ok = {(w, h) for w, h in candidates if multiple <= w <= top and multiple <= h <= top and (w, h) != (width, height)}

    def distance(wh: tuple[int, int]) -> tuple[float, float]:
        w, h = wh
        return abs(math.log((w / h) / aspect)), abs(math.log(w * h / area))

    near = [p for p in prefer if size_is_valid(*p, multiple) and p != (width, height)
            and distance(p)[0] < math.log(1.05) and distance(p)[1] < math.log(1.25)]
    rest = sorted(ok - set(near), key=lambda wh: (sum(distance(wh)), wh))
    return (sorted(near, key=lambda wh: sum(distance(wh))) + rest)[:limit]


def chunk_count(model: WanModel, frames: int, audio_s: float | None, fps: float) -> int:
    """S2V: `ceil(audio_s·fps/77)` chunks (fps 16 in the reference); Animate: each extend adds 77 frames."""
    assert model.chunk_frames
    if audio_s is not None and model.kind == "s2v":
        return max(1, math.ceil(audio_s * fps / model.chunk_frames - 1e-9))
    return max(1, math.ceil(frames / model.chunk_frames))


# --- inputs -------------------------------------------------------------------------------------------------------


class InputError(ValueError):
    """Malformed input: names the parameter (the API answers 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


PARAMS = ("model", "width", "height", "seconds", "frames", "by", "fps", "gpu", "precision", "steps", "lora", "audio")
_INT = re.compile(r"^[+-]?[0-9]+$")
_NUM = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
_TRUE, _FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no"}


@dataclass(frozen=True)
class Inputs:
    """What the user picked; None means "the model's default"."""

    model: str = DEFAULT_MODEL
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    frames: int | None = None
    fps: float | None = None
    gpu: str = DEFAULT_GPU
    precision: str | None = None
    steps: int | None = None
    lora: bool = False
    audio: float | None = None

    def updated(self, params: Mapping[str, Any]) -> Inputs:
        """These inputs with some changed (a suggestion): frames and seconds replace each other."""
        changes: dict[str, Any] = {}
        for key, value in params.items():
            if value == "":
                value = None
            if key == "frames":
                changes.update(frames=value, seconds=None)
            elif key == "seconds":
                changes.update(seconds=value, frames=None)
            elif key == "lora":
                changes["lora"] = bool(value)
            else:
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def query(self) -> str:
        """The canonical query string: the shareable URL's."""
        m = MODELS[self.model]
        w, h = self.width or m.default_size[0], self.height or m.default_size[1]
        pairs: list[tuple[str, Any]] = [("model", self.model), ("width", w), ("height", h)]
        if self.frames is not None:
            pairs.append(("frames", self.frames))
        elif self.seconds is not None:
            pairs.append(("seconds", format_number(self.seconds)))
        for key in ("fps", "audio"):
            value = getattr(self, key)
            if value is not None:
                pairs.append((key, format_number(value)))
        pairs += [("gpu", self.gpu), ("precision", self.precision or m.default_precision)]
        if self.steps is not None:
            pairs.append(("steps", self.steps))
        if self.lora:
            pairs.append(("lora", 1))
        return urlencode(pairs)


def format_number(x: float) -> str:
    """The shortest text that reads back as the same float, without an exponent (5.0 -> '5')."""
    return str(int(x)) if x == int(x) else format(Decimal(repr(x)), "f")


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


def _int(name: str, raw: str, low: int, high: int) -> int:
    text = raw.strip()
    if not _INT.match(text):
        raise InputError(name, f"must be a whole number from {low} to {high} (got {_show(raw)})")
    value = int(text)
    if value < low:
        what = "zero" if value == 0 else "negative" if value < 0 else "too small"
        raise InputError(name, f"must be at least {low} (got {_show(text)}: {what})")
    if value > high:
        raise InputError(name, f"must be at most {high} (got {_show(text)})")
    return value


def _float(name: str, raw: str, high: float, unit: str = "") -> float:
    text = raw.strip()
    if not _NUM.match(text):
        raise InputError(name, f"must be a number above 0 and at most {high:g}{unit} (got {_show(raw)})")
    value = float(text)
    if value <= 0:
        raise InputError(name, f"must be above 0 (got {_show(raw)})")
    if value > high:
        raise InputError(name, f"must be at most {high:g}{unit} (got {_show(raw)})")
    return value


def _choice(
    name: str, raw: str, known: Mapping[str, Any] | tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> str:
    value = raw.strip().lower()
    value = (aliases or {}).get(value, value)
    if value not in known:
        raise InputError(name, f"unknown {name} {_show(raw)}; valid ids: {', '.join(known)}")
    return value


def parse_params(params: Mapping[str, str]) -> Inputs:
    """Query parameters → Inputs; raises InputError naming the parameter. Empty values mean "default"."""
    unknown = sorted(k for k in params if k not in PARAMS)
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "…"
        raise InputError(name, f"unknown parameter (known: {', '.join(PARAMS)})")
    get = {k: v for k, v in params.items() if v is not None and str(v).strip() != ""}
    out: dict[str, Any] = {}
    if "model" in get:
        out["model"] = _choice("model", get["model"], MODELS)
    if "gpu" in get:
        out["gpu"] = _choice("gpu", get["gpu"], GPUS)
    if "precision" in get:
        out["precision"] = _choice("precision", get["precision"], PRECISIONS, {"bf16": "fp16"})
    for key in ("width", "height"):
        if key in get:
            out[key] = _int(key, get[key], 1, MAX_SIDE)
    if "steps" in get:
        out["steps"] = _int("steps", get["steps"], 1, MAX_STEPS)
    if "fps" in get:
        out["fps"] = _float("fps", get["fps"], MAX_FPS)
    if "audio" in get:
        out["audio"] = _float("audio", get["audio"], MAX_SECONDS, " s")
    if "lora" in get:
        flag = get["lora"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise InputError("lora", f"must be 1 or 0 (on/off, true/false) (got {_show(get['lora'])})")
        out["lora"] = flag in _TRUE
    by = get.get("by", "").strip().lower() or None
    if by not in (None, "seconds", "frames"):
        raise InputError("by", f"must be 'seconds' or 'frames' (got {_show(get['by'])})")
    if by is None and "seconds" in get and "frames" in get:
        raise InputError("frames", "give seconds or frames, not both (or add by=seconds / by=frames)")
    if "seconds" in get and by != "frames":
        out["seconds"] = _float("seconds", get["seconds"], MAX_SECONDS, " s")
    if "frames" in get and by != "seconds":
        out["frames"] = _int("frames", get["frames"], 1, MAX_FRAMES)
    return Inputs(**out)


# --- outputs ------------------------------------------------------------------------------------------------------


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


def calculate(inp: Inputs) -> Result:
    """Everything the page shows for one set of inputs (well-formed: parse_params has checked them)."""
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

    vram = vram_estimate(m, gpu, precision, pass_tokens)
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
        files=files_for(m.id, precision, lora),
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


def calculate_params(params: Mapping[str, str]) -> Result:
    """parse_params + calculate."""
    return calculate(parse_params(params))
