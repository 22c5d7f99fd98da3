"""What the calculator accepts: query parameters parsed into `Inputs`, with a message naming the parameter when
one is malformed, and the canonical query string (the shareable URL's). Pure Python."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from .models import DEFAULT_GPU, DEFAULT_MODEL, GPUS, MODELS, PRECISIONS

# The largest values accepted (and suggested).
MAX_SIDE = 8192
MAX_SECONDS = 600.0
MAX_FRAMES = 10_000
MAX_FPS = 120.0
MAX_STEPS = 200


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
