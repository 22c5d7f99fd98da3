"""WAN's rules for lengths and sizes (reference, "Rules and formulas"): 4n+1 frames, sizes in multiples of the
VAE stride × patch, the latent and its token count, and S2V / Animate chunks. Pure functions."""

from __future__ import annotations

import math

from .inputs import MAX_FRAMES, MAX_SIDE
from .models import WanModel


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
