"""VRAM and time estimates for a WAN generation, each scaled from one published anchor and labelled so.

The reference (`shared/reference/video-calculator.md`, "Published timings and memory") has no VRAM formula and
no RTX 5090 timing: every estimate here says which anchor it scales from, how, and what it assumes.
Pure Python, no Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

from downloader.manifest import Catalog

from .model_files import file_size, weights_bytes
from .models import (
    ANCHORS,
    ATTENTION_TOKENS,
    COMFY_FIXED_S,
    COMFY_LOAD_S,
    COMFY_PER_EVAL_S,
    COMFY_TOKENS,
    PUBLISHED_FOR,
    RTX4090D_SPEED,
    Gpu,
    WanModel,
    step_cost,
)

GIB = 1 << 30


@dataclass(frozen=True)
class CostModel:
    """How one class of model scales from its anchor: time per evaluation, fixed time, memory."""

    anchor: str
    anchor_speed: float  # the anchor GPU's speed relative to an RTX 4090
    tokens: int  # of the anchor run
    pixels: int  # width·height·frames of the anchor run
    per_eval_s: float
    fixed_s: float
    load_s: float | None
    weights_file: str | None  # manifest id of the file the anchor run kept on the GPU
    weights_params: float  # bytes of those weights by parameter count, when no manifest has that file
    vram_gb: float
    time_how: str
    vram_how: str  # "{weights}" is the anchor's weights in GB

    def weights_gb(self, catalog: Catalog) -> float:
        """The anchor run's resident weights: its file's size in the catalog, else by parameter count."""
        size = file_size(catalog, self.weights_file) if self.weights_file else None
        return (size or self.weights_params) / GIB

    def act_gb_per_token(self, catalog: Catalog) -> float:
        return (self.vram_gb - self.weights_gb(catalog)) / self.tokens


COSTS: dict[str, CostModel] = {
    # Every 14B model scales from the ComfyUI runs: the calculator predicts ComfyUI runs.
    "14b": CostModel(
        "comfy-4090d-i2v", RTX4090D_SPEED, COMFY_TOKENS, 640 * 640 * 81, COMFY_PER_EVAL_S, COMFY_FIXED_S,
        COMFY_LOAD_S, "wan22-i2v-low-fp8", 14e9, 0.84 * 24,
        "per-evaluation and fixed times solved from the two ComfyUI runs (513 s with 20 steps × CFG = 40 evaluations, "
        "71 s with the 4-step LoRAs = 4 evaluations)",
        "84% of 24 GB in the ComfyUI run, minus the {weights:.1f} GB fp8 expert, taken as activations per token",
    ),
    "5b": CostModel(
        "4090-ti2v", 1.0, 31 * 22 * 40, 1280 * 704 * 121, 534.7 / 100, 0.0, None, "wan22-ti2v-5b-fp16", 5e9 * 2,
        22.9,
        "534.7 s over 50 steps × CFG = 100 evaluations (fixed costs included in them)",
        "22.9 GB minus the {weights:.1f} GB fp16 weights, taken as activations per token",
    ),
    "1.3b": CostModel(
        "4090-t2v-1.3b", 1.0, 21 * 30 * 52, 832 * 480 * 81, 261.4 / 100, 0.0, None, None, 1.3e9 * 2, 8.19,
        "261.4 s over 50 steps × CFG = 100 evaluations (fixed costs included in them)",
        "8.19 GB minus ≈{weights:.1f} GB of fp16 weights (1.3B parameters), taken as activations per token",
    ),
}


@dataclass
class Estimate:
    """A labelled estimate: the value, the published figure it scales from, how, and what it assumes."""

    value: float
    unit: str
    anchor: str
    method: str
    assumptions: list[str]
    published: list[str]  # published figures for this model, as cross-checks
    label: str = "estimate"


@dataclass
class VramEstimate(Estimate):
    weights_gb: float = 0.0
    activations_gb: float = 0.0
    gpu_vram_gb: float = 0.0
    fits: bool = True
    offload: str = "none"  # none / needed (weights partly in system RAM) / insufficient (activations alone too big)


@dataclass
class TimeEstimate(Estimate):
    first_run_s: float = 0.0
    evaluations: int = 0
    per_evaluation_s: float = 0.0
    fixed_s: float = 0.0
    passes: int = 1  # model evaluations per step


def published(m: WanModel) -> list[str]:
    return [ANCHORS[a].text for a in PUBLISHED_FOR.get(m.id, ())]


def _same_dit(m: WanModel) -> bool:
    """True when the anchor ran a different model of the same class (its figures are borrowed)."""
    return m.cost_class == "14b" and m.id != "wan2.2-i2v-a14b"


def vram_estimate(m: WanModel, gpu: Gpu, precision: str, n_tokens: int, catalog: Catalog) -> VramEstimate:
    """Peak while sampling ≈ resident weights + activations ∝ tokens (one chunk's for S2V / Animate); the weights'
    sizes come from the files in the catalog."""
    c = COSTS[m.cost_class]
    weights = weights_bytes(m, precision, catalog) / GIB
    per_token = c.act_gb_per_token(catalog)
    acts = per_token * n_tokens
    total = weights + acts
    offload = "none" if total <= gpu.vram_gb else ("needed" if acts < gpu.vram_gb else "insufficient")
    assumptions = [
        ("Peak while sampling: one DiT's weights at the chosen precision on the GPU (the A14B experts swap, one at a "
        "time) and the text encoder already offloaded."),
        "Activation memory grows linearly with tokens, as in the anchor run.",
        "GB here are GiB (2³⁰ bytes), as nvidia-smi and PyTorch count.",
    ]
    if m.cost_class == "5b":
        assumptions.append("The anchor is the official code (offload + T5 on CPU); ComfyUI's docs say TI2V-5B "
                           "\"should fit well on 8GB vram with the ComfyUI native offloading\".")
    if _same_dit(m):
        assumptions.append(f"{m.label} is taken to use memory like one Wan 2.2 A14B expert (same 14B DiT size).")
    return VramEstimate(
        value=round(total, 2), unit="GB", anchor=ANCHORS[c.anchor].text,
        method=f"{weights:.1f} GB weights + {acts:.1f} GB activations ({per_token * 1e3:.3f} GB per 1,000 "
               f"tokens × {n_tokens:,} tokens); activations per token: "
               + c.vram_how.format(weights=c.weights_gb(catalog)),
        assumptions=assumptions, published=published(m), weights_gb=round(weights, 2), activations_gb=round(acts, 2),
        gpu_vram_gb=gpu.vram_gb, fits=offload == "none", offload=offload,
    )


def time_estimate(m: WanModel, gpu: Gpu, precision: str, lora: bool, steps: int, passes: int, n_tokens: int,
                  pixels: int, n_chunks: int) -> TimeEstimate:
    """(fixed + evaluations × per-evaluation) × chunks, from the anchor, scaled by tokens and GPU speed."""
    c = COSTS[m.cost_class]
    scale = c.anchor_speed / gpu.speed
    per_eval = c.per_eval_s * step_cost(n_tokens) / step_cost(c.tokens) * scale
    fixed = c.fixed_s * pixels / c.pixels * scale
    evals = steps * passes
    warm = (fixed + evals * per_eval) * n_chunks
    first = warm + (c.load_s or 0)
    cfg = "CFG 1: one pass" if passes == 1 else "CFG > 1: conditional + unconditional"
    assumptions = [
        (f"Per-step cost ∝ tokens·(1 + tokens/{ATTENTION_TOKENS:,.0f}) (attention; the constant is solved from the "
        "published H100 T2V-A14B 480p/720p pair), scaled by the GPU's relative speed."),
        f"{gpu.label}: {gpu.speed:g}× an RTX 4090 ({gpu.basis}).",
        f"{evals} model evaluations per clip: {steps} steps × {passes} ({cfg})"
        + (", with the LightX2V 4-step LoRAs" if lora else "") + ".",
        f"{precision} weights, all on the GPU (no offloading); fp8 and fp16 assumed to compute at the same speed.",
    ]
    if c.fixed_s:
        assumptions.append(f"Fixed costs (text encoding, VAE decode): {c.fixed_s:.1f} s on the anchor, scaled with "
                           "width × height × frames.")
    if c.load_s:
        assumptions.append(f"The first run also loads the weights: +{c.load_s:g} s on the anchor machine.")
    if _same_dit(m):
        assumptions.append(f"{m.label} is taken to cost per step what one Wan 2.2 A14B expert does "
                           "(same 14B DiT size).")
    if n_chunks > 1:
        assumptions.append(f"{n_chunks} chunks generated one after another, each costing the same.")
    return TimeEstimate(
        value=round(warm, 1), unit="s", anchor=ANCHORS[c.anchor].text,
        method=f"({fixed:.1f} s fixed + {evals} × {per_eval:.2f} s per evaluation)"
               + (f" × {n_chunks} chunks" if n_chunks > 1 else "") + f"; {c.time_how}",
        assumptions=assumptions, published=published(m), first_run_s=round(first, 1), evaluations=evals * n_chunks,
        per_evaluation_s=round(per_eval, 3), fixed_s=round(fixed, 2), passes=passes,
    )
