"""The tables behind the video calculator: WAN models, GPUs and the published anchors the estimates scale from.

Every number here comes from `shared/reference/video-calculator.md` ("the reference"), except where a comment
says "assumed": GPU speeds that no published Wan figure pins down. File names and sizes are not here:
`model_files` takes them from the loaded manifests. Pure data, no Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WanModel:
    """One WAN model as the reference's "Models" table describes it."""

    id: str
    label: str
    family: str  # "Wan 2.2" / "Wan 2.1"
    kind: str  # t2v, i2v, ti2v, s2v, animate
    params_b: float  # billions of parameters of the DiT that runs at one time (one expert for the A14B)
    experts: int  # 2 for the A14B models (high noise, then low noise)
    sizes: tuple[tuple[int, int], ...]  # sizes the official CLI accepts (the trained set)
    default_size: tuple[int, int]
    fps: int
    default_frames: int
    steps: int  # default steps in this calculator (ComfyUI template where the reference gives one)
    official_steps: int  # the official CLI's default
    shift: float | None
    cfg: float | None  # None: not in the reference (CFG > 1, two passes per step, is assumed)
    vae_stride: tuple[int, int, int]  # (t, h, w)
    latent_channels: int
    area_based: bool  # I2V/TI2V/S2V: the size is a target area; the aspect ratio follows the input image
    default_precision: str
    lora: bool = False  # the LightX2V 4-step LoRAs exist for it (in the reference)
    chunk_frames: int | None = None  # S2V / Animate: frames per chunk in ComfyUI
    cost_class: str = "14b"  # which anchor the time and memory estimates scale from
    notes: tuple[str, ...] = ()
    trained_note: dict[tuple[int, int], str] = field(default_factory=dict)

    @property
    def multiple(self) -> int:
        """Width/height must be a multiple of the VAE's spatial stride times the 2x2 patch."""
        return self.vae_stride[1] * 2

    @property
    def default_seconds(self) -> float:
        return (self.default_frames - 1) / self.fps


A14B_SIZES = ((1280, 720), (720, 1280), (832, 480), (480, 832))
_A14B_NOTES = (
    ("Two experts (high noise, then low noise), each a 14B model: ComfyUI's templates split the steps between "
    "two KSamplerAdvanced nodes (20 steps: 0→10 high, 10→20 low; with the 4-step LoRAs 0→2 / 2→4, CFG 1)."),
)

MODELS: dict[str, WanModel] = {
    m.id: m
    for m in (
        WanModel(
            "wan2.2-t2v-a14b", "Wan 2.2 T2V-A14B", "Wan 2.2", "t2v", 14, 2, A14B_SIZES, (832, 480), 16, 81,
            steps=20, official_steps=40, shift=12.0, cfg=3.5, vae_stride=(4, 8, 8), latent_channels=16,
            area_based=False, default_precision="fp8", lora=True,
            notes=_A14B_NOTES + ("Official CLI: 40 steps, shift 12.0, CFG 3.0–4.0, expert boundary 0.875.",),
        ),
        WanModel(
            "wan2.2-i2v-a14b", "Wan 2.2 I2V-A14B", "Wan 2.2", "i2v", 14, 2, A14B_SIZES, (832, 480), 16, 81,
            steps=20, official_steps=40, shift=5.0, cfg=3.5, vae_stride=(4, 8, 8), latent_channels=16,
            area_based=True, default_precision="fp8", lora=True,
            notes=_A14B_NOTES + ("Official CLI: 40 steps, shift 5.0, CFG 3.5, expert boundary 0.900.",),
        ),
        WanModel(
            "wan2.2-ti2v-5b", "Wan 2.2 TI2V-5B", "Wan 2.2", "ti2v", 5, 1, ((1280, 704), (704, 1280)), (1280, 704),
            24, 121, steps=50, official_steps=50, shift=5.0, cfg=5.0, vae_stride=(4, 16, 16), latent_channels=48,
            area_based=True, default_precision="fp16", cost_class="5b",
            notes=(
                ("Uses the Wan 2.2 VAE (16×16 spatial stride, 48 channels): sizes must be multiples of 32, and "
                "ComfyUI's Wan22ImageToVideoLatent steps width/height by 32."),
                "Only 1280×704 and 704×1280 are accepted by the official CLI.",
            ),
        ),
        WanModel(
            "wan2.2-s2v-14b", "Wan 2.2 S2V-14B", "Wan 2.2", "s2v", 14, 1,
            ((1280, 720), (720, 1280), (832, 480), (480, 832), (1024, 704), (704, 1024), (704, 1280), (1280, 704)),
            (832, 480), 16, 77, steps=40, official_steps=40, shift=3.0, cfg=4.5, vae_stride=(4, 8, 8),
            latent_channels=16, area_based=True, default_precision="fp8", chunk_frames=77,
            notes=(
                ("ComfyUI generates 77 frames per chunk (≈4.81 s at 16 fps) and extends chunk by chunk to cover "
                "the audio; the official CLI uses 80-frame clips (a multiple of 4)."),
            ),
        ),
        WanModel(
            "wan2.2-animate-14b", "Wan 2.2 Animate-14B", "Wan 2.2", "animate", 14, 1, ((1280, 720), (720, 1280)),
            (1280, 720), 30, 77, steps=20, official_steps=20, shift=5.0, cfg=1.0, vae_stride=(4, 8, 8),
            latent_channels=16, area_based=False, default_precision="fp8", chunk_frames=77,
            notes=("Clips of 77 frames (4n+1); each extend adds 77 frames.",),
        ),
        WanModel(
            "wan2.1-t2v-1.3b", "Wan 2.1 T2V-1.3B", "Wan 2.1", "t2v", 1.3, 1, ((832, 480), (480, 832)), (832, 480),
            16, 81, steps=50, official_steps=50, shift=None, cfg=None, vae_stride=(4, 8, 8), latent_channels=16,
            area_based=False, default_precision="fp16", cost_class="1.3b",
            trained_note={(1280, 720): "720p works but the model card calls it \"less stable\"",
                          (720, 1280): "720p works but the model card calls it \"less stable\""},
        ),
        WanModel(
            "wan2.1-t2v-14b", "Wan 2.1 T2V-14B", "Wan 2.1", "t2v", 14, 1, A14B_SIZES, (832, 480), 16, 81,
            steps=50, official_steps=50, shift=5.0, cfg=None, vae_stride=(4, 8, 8), latent_channels=16,
            area_based=False, default_precision="fp8",
        ),
        WanModel(
            "wan2.1-i2v-14b-480p", "Wan 2.1 I2V-14B 480P", "Wan 2.1", "i2v", 14, 1, ((832, 480), (480, 832)),
            (832, 480), 16, 81, steps=40, official_steps=40, shift=3.0, cfg=None, vae_stride=(4, 8, 8),
            latent_channels=16, area_based=True, default_precision="fp8",
            notes=("Separate 480P and 720P checkpoints; official shift 3.0 at 480p.",),
        ),
        WanModel(
            "wan2.1-i2v-14b-720p", "Wan 2.1 I2V-14B 720P", "Wan 2.1", "i2v", 14, 1, ((1280, 720), (720, 1280)),
            (1280, 720), 16, 81, steps=40, official_steps=40, shift=5.0, cfg=None, vae_stride=(4, 8, 8),
            latent_channels=16, area_based=True, default_precision="fp8",
            notes=("Separate 480P and 720P checkpoints.",),
        ),
    )
}
DEFAULT_MODEL = "wan2.2-t2v-a14b"
PRECISIONS = ("fp8", "fp16")


# --- published anchors -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A published run: the figure an estimate scales from."""

    id: str
    gpu: str
    run: str
    width: int
    height: int
    frames: int
    steps: int
    passes: int  # model evaluations per step: 2 with CFG > 1, 1 with CFG 1
    time_s: float | None
    vram_gb: float | None
    source: str
    vram_text: str | None = None  # how the source gives the memory, when not in GB

    @property
    def text(self) -> str:
        parts = [f"{self.gpu}, {self.run}, {self.width}×{self.height}×{self.frames}, {self.steps} steps"]
        if self.time_s is not None:
            parts.append(f"{self.time_s:g} s")
        if self.vram_gb is not None:
            parts.append(self.vram_text or f"{self.vram_gb:g} GB")
        return f"{' · '.join(parts)} ({self.source})"


ANCHORS: dict[str, Anchor] = {
    a.id: a
    for a in (
        Anchor("comfy-4090d-i2v", "RTX 4090D 24 GB", "ComfyUI I2V-A14B fp8_scaled, second run", 640, 640, 81, 20, 2,
               513, 0.84 * 24, "ComfyUI template note: ≈536 s first run, ≈513 s second; 84% VRAM", "84% of 24 GB"),
        Anchor("comfy-4090d-i2v-lora", "RTX 4090D 24 GB", "ComfyUI I2V-A14B fp8_scaled + 4-step LoRAs, second run",
               640, 640, 81, 4, 1, 71, 0.83 * 24, "ComfyUI template note: ≈97 s first run, ≈71 s second; 83% VRAM",
               "83% of 24 GB"),
        Anchor("h100-t2v-480p", "H100", "T2V-A14B 480p (official code)", 832, 480, 81, 40, 2, 326.9, 41.3,
               "Wan2.2 README efficiency table"),
        Anchor("h100-t2v-720p", "H100", "T2V-A14B 720p (official code)", 1280, 720, 81, 40, 2, 1041.5, 59.8,
               "Wan2.2 README efficiency table"),
        Anchor("h100-i2v-480p", "H100", "I2V-A14B 480p (official code)", 832, 480, 81, 40, 2, 327.8, 41.0,
               "Wan2.2 README efficiency table"),
        Anchor("h100-i2v-720p", "H100", "I2V-A14B 720p (official code)", 1280, 720, 81, 40, 2, 1055.9, 59.7,
               "Wan2.2 README efficiency table"),
        Anchor("4090-ti2v", "RTX 4090", "TI2V-5B 720p, T2V mode (official code, offload + T5 on CPU)", 1280, 704,
               121, 50, 2, 534.7, 22.9, "Wan2.2 README efficiency table"),
        Anchor("4090-ti2v-i2v", "RTX 4090", "TI2V-5B 720p, I2V mode (official code, offload + T5 on CPU)", 1280,
               704, 121, 50, 2, 524.8, 22.8, "Wan2.2 README efficiency table"),
        Anchor("4090-t2v-1.3b", "RTX 4090", "Wan 2.1 T2V-1.3B 480p (official code)", 832, 480, 81, 50, 2, 261.4,
               8.19, "Wan2.1 README"),
        Anchor("h100-t2v-14b-21", "H100", "Wan 2.1 T2V-14B 720p (official code)", 1280, 720, 81, 50, 2, 1837.9,
               69.1, "Wan2.1 README"),
    )
}
# Published figures for a model, shown beside its estimate as cross-checks.
PUBLISHED_FOR: dict[str, tuple[str, ...]] = {
    "wan2.2-t2v-a14b": ("h100-t2v-480p", "h100-t2v-720p"),
    "wan2.2-i2v-a14b": ("comfy-4090d-i2v", "comfy-4090d-i2v-lora", "h100-i2v-480p", "h100-i2v-720p"),
    "wan2.2-ti2v-5b": ("4090-ti2v", "4090-ti2v-i2v"),
    "wan2.1-t2v-1.3b": ("4090-t2v-1.3b",),
    "wan2.1-t2v-14b": ("h100-t2v-14b-21",),
}


# --- derived constants (from the anchors above) --------------------------------------------------------------


def _attention_tokens() -> float:
    """The `const` of the reference's `cost ∝ tokens·(1 + tokens/const)`, solved from the H100 T2V-A14B pair
    (480p 326.9 s, 720p 1041.5 s, same steps), ignoring their small fixed costs."""
    a, b = ANCHORS["h100-t2v-720p"], ANCHORS["h100-t2v-480p"]
    ta, tb = 21 * 45 * 80, 21 * 30 * 52  # 75,600 and 32,760 tokens
    ratio = a.time_s / b.time_s  # type: ignore[operator]
    return (ta * ta - ratio * tb * tb) / (ratio * tb - ta)


ATTENTION_TOKENS = _attention_tokens()  # ≈ 79,800


def step_cost(n_tokens: int) -> float:
    """Relative cost of one model evaluation: linear layers ∝ tokens, attention ∝ tokens²."""
    return n_tokens * (1 + n_tokens / ATTENTION_TOKENS)


COMFY_TOKENS = 21 * 40 * 40  # the ComfyUI anchor's 640×640×81 → 33,600 tokens
# Two runs of the same workflow: 40 evaluations (20 steps × CFG) in 513 s, 4 (4 steps, CFG 1) in 71 s.
COMFY_PER_EVAL_S = (513 - 71) / (20 * 2 - 4 * 1)  # ≈ 12.28 s per evaluation at 33,600 tokens
COMFY_FIXED_S = 71 - 4 * COMFY_PER_EVAL_S  # ≈ 21.9 s: text encoding, VAE decode
COMFY_LOAD_S = ((536 - 513) + (97 - 71)) / 2  # first run minus second run: loading the weights, ≈ 24.5 s
# An RTX 4090D has 114 of the 4090's 128 SMs at about the same clocks: the ComfyUI anchors ran on one.
RTX4090D_SPEED = 114 / 128


def _h100_speed() -> float:
    """H100 vs RTX 4090 from the A14B anchors: per evaluation, H100 480p (326.9 s / 80) against the 4090D's
    (scaled from 33,600 to 32,760 tokens), times the 4090D's 114/128 SMs."""
    h100 = ANCHORS["h100-t2v-480p"]
    per_eval_h100 = h100.time_s / (h100.steps * h100.passes)  # type: ignore[operator]
    per_eval_4090d = COMFY_PER_EVAL_S * step_cost(32_760) / step_cost(COMFY_TOKENS)
    return per_eval_4090d / per_eval_h100 * RTX4090D_SPEED


H100_SPEED = _h100_speed()  # ≈ 2.59


# --- GPUs -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    id: str
    name: str
    vram_gb: float  # GiB, as nvidia-smi and PyTorch count
    speed: float  # relative to an RTX 4090 = 1.0
    basis: str  # where the speed comes from
    fp8_tensor: bool  # native fp8 matmuls (Ada, Hopper, Blackwell); fp8 weights still load everywhere

    @property
    def label(self) -> str:
        return f"{self.name} {self.vram_gb:g} GB"


ASSUMED = ("assumed, no published Wan timing: a rough ratio to the RTX 4090 from tensor throughput and memory "
           "bandwidth (treat as ±30%)")

GPUS: dict[str, Gpu] = {
    g.id: g
    for g in (
        Gpu("rtx4090", "RTX 4090", 24, 1.0,
            "reference GPU: the RTX 4090 / 4090D anchors (a 4090D taken as 114/128 SMs of a 4090)", True),
        Gpu("rtx5090", "RTX 5090", 32, 1.3,
            "assumed: no official RTX 5090 timing was found; ≈1.3× a 4090 from tensor throughput and memory "
            "bandwidth (treat as ±30%)", True),
        Gpu("rtx3090", "RTX 3090", 24, 0.5, ASSUMED, False),
        Gpu("rtxa6000", "RTX A6000", 48, 0.5, ASSUMED, False),
        Gpu("l40s", "L40S", 48, 1.0, ASSUMED, True),
        Gpu("a100", "A100", 80, 1.0, ASSUMED, False),
        Gpu("h100", "H100", 80, round(H100_SPEED, 2),
            "derived from the published H100 (Wan2.2 README) and RTX 4090D (ComfyUI) A14B timings", True),
    )
}
DEFAULT_GPU = "rtx4090"
