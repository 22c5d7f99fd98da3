"""The files a WAN model needs in ComfyUI, and the size of the DiT it keeps on the GPU, from the loaded manifests.

A file the shipped manifests hold is named here by its manifest id only: its folder, name and size come from the
catalog (`downloader.manifest.Catalog`). A file they lack keeps the name it is commonly published under, and a
size only where `shared/reference/wan-models.md` gives one; a loaded manifest with a file of that name claims it.
Pure: the caller passes the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from downloader.manifest import Catalog, ModelSpec

from .models import MODELS, WanModel

NAME_ONLY = "not in the shipped manifests (name as commonly published; size and sha256 unknown here)"
# wan-models.md: the published fp16 low-noise experts (not in the shipped manifests; no high-noise size found).
FP16_LOW_NOISE_BYTES = {"t2v": 28_577_095_592, "i2v": 28_577_914_792}


@dataclass(frozen=True)
class FileNeed:
    """A file a model needs in ComfyUI: in the loaded manifests (`manifest_id`) or only known by name."""

    role: str
    filename: str
    folder: str  # ComfyUI models folder
    manifest_id: str | None = None
    size: int | None = None  # bytes: the manifest's, else wan-models.md's when it has one
    optional: bool = False
    note: str | None = None


@dataclass(frozen=True)
class _Shipped:
    """A file of the shipped manifests, found in the catalog by its manifest id."""

    role: str
    manifest_id: str
    note: str | None = None


@dataclass(frozen=True)
class _Named:
    """A file the shipped manifests lack: its commonly published name."""

    role: str
    filename: str
    folder: str = "diffusion_models"
    size: int | None = None
    note: str | None = NAME_ONLY


UMT5 = _Shipped("text encoder (UMT5-XXL fp8)", "umt5-xxl-fp8")
VAE21 = _Shipped("VAE (Wan 2.1 VAE)", "wan21-vae")
VAE22 = _Shipped("VAE (Wan 2.2 VAE, 5B only)", "wan22-vae")
CLIP_H = _Named("CLIP vision image encoder", "clip_vision_h.safetensors", "clip_vision", note=None)


def _experts(kind: str, precision: str) -> list[_Shipped | _Named]:
    if precision == "fp8":
        return [_Shipped(f"{noise} noise expert ({kind.upper()} 14B fp8)", f"wan22-{kind}-{noise}-fp8")
                for noise in ("high", "low")]
    return [
        _Named(f"high noise expert ({kind.upper()} 14B fp16)", f"wan2.2_{kind}_high_noise_14B_fp16.safetensors",
               note="not in the shipped manifests (size not published, ≈28.6 GB)"),
        _Named(f"low noise expert ({kind.upper()} 14B fp16)", f"wan2.2_{kind}_low_noise_14B_fp16.safetensors",
               size=FP16_LOW_NOISE_BYTES[kind], note="not in the shipped manifests"),
    ]


def _loras(kind: str) -> list[_Shipped | _Named]:
    return [_Shipped(f"4-step LoRA, {noise} noise", f"wan22-{kind}-lightx2v-4step-{noise}")
            for noise in ("high", "low")]


def _recipe(m: WanModel, precision: str, lora: bool) -> list[_Shipped | _Named]:
    """What ComfyUI loads for this model (wan-models.md "Which files belong together", else by name)."""
    fp8 = precision == "fp8"
    if m.id in ("wan2.2-t2v-a14b", "wan2.2-i2v-a14b"):
        return _experts(m.kind, precision) + [UMT5, VAE21] + (_loras(m.kind) if lora else [])
    if m.id == "wan2.2-ti2v-5b":
        note = "the only published file is fp16: ComfyUI can cast it to fp8 when loading (weight_dtype)"
        return [_Shipped("diffusion model (TI2V 5B fp16)", "wan22-ti2v-5b-fp16", note if fp8 else None), UMT5, VAE22]
    if m.id == "wan2.2-s2v-14b":
        name = "wan2.2_s2v_14B_fp8_scaled.safetensors" if fp8 else "wan2.2_s2v_14B_bf16.safetensors"
        return [_Named(f"diffusion model (S2V 14B {precision})", name),
                _Named("audio encoder (wav2vec2)", "wav2vec2_large_english_fp16.safetensors", "audio_encoders"),
                UMT5, VAE21]
    if m.id == "wan2.2-animate-14b":
        name = "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors" if fp8 else "wan2.2_animate_14B_bf16.safetensors"
        return [_Named(f"diffusion model (Animate 14B {precision})", name), CLIP_H, UMT5, VAE21]
    if m.id == "wan2.1-t2v-1.3b":
        return [_Named("diffusion model (T2V 1.3B fp16)", "wan2.1_t2v_1.3B_fp16.safetensors"), UMT5, VAE21]
    suffix = "fp8_e4m3fn" if fp8 else "fp16"
    if m.id == "wan2.1-t2v-14b":
        return [_Named(f"diffusion model (T2V 14B {precision})", f"wan2.1_t2v_14B_{suffix}.safetensors"), UMT5, VAE21]
    res = "480p" if m.id.endswith("480p") else "720p"
    return [_Named(f"diffusion model (I2V {res} 14B {precision})", f"wan2.1_i2v_{res}_14B_{suffix}.safetensors"),
            CLIP_H, UMT5, VAE21]


def _from_spec(role: str, spec: ModelSpec, note: str | None) -> FileNeed:
    folder, _, filename = (spec.dest or "").rpartition("/")  # no dest: CivitAI names it once resolved
    return FileNeed(role, filename, folder, spec.id, spec.size, note=note)


def files_for(model_id: str, precision: str, lora: bool, catalog: Catalog) -> list[FileNeed]:
    """The files ComfyUI loads for this choice, as the catalog has them (or by name, where it has none)."""
    by_name = {spec.dest.rpartition("/")[2]: spec for spec in catalog.models.values() if spec.dest is not None}
    files = []
    for need in _recipe(MODELS[model_id], precision, lora):
        if isinstance(need, _Shipped):
            spec = catalog.models.get(need.manifest_id)
            if spec is None:  # manifests without the shipped one: no name to show, only what is missing
                note = f"not in the loaded manifests (manifest id {need.manifest_id})"
                files.append(FileNeed(need.role, "", "", note=note))
            else:
                files.append(_from_spec(need.role, spec, need.note))
        elif need.filename in by_name:
            files.append(_from_spec(need.role, by_name[need.filename], need.note))
        else:
            files.append(FileNeed(need.role, need.filename, need.folder, size=need.size, note=need.note))
    return files


def file_size(catalog: Catalog, manifest_id: str) -> int | None:
    """The size a loaded manifest gives for a model, if it has that model and a size."""
    spec = catalog.models.get(manifest_id)
    return spec.size if spec is not None else None


def weights_bytes(model: WanModel, precision: str, catalog: Catalog) -> int:
    """Bytes of the weights resident while sampling: one expert / the one DiT, at that precision. Its file's size
    where the catalog (or wan-models.md) has one; else parameters × bytes per parameter."""
    per_param = 2 if precision == "fp16" else 1
    size: int | None = None
    if model.cost_class == "14b":
        # Every 14B Wan DiT has the shape of a Wan 2.2 T2V expert (the fp16 file is not shipped: wan-models.md).
        size = FP16_LOW_NOISE_BYTES["t2v"] if precision == "fp16" else file_size(catalog, "wan22-t2v-low-fp8")
    elif model.cost_class == "5b":
        fp16 = file_size(catalog, "wan22-ti2v-5b-fp16")  # the only published 5B file: fp8 halves it
        size = fp16 * per_param // 2 if fp16 else None
    return size or int(model.params_b * 1e9 * per_param)  # 1.3B: no file size in the reference
