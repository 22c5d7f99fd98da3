"""Facts about ComfyUI that several parts need, in one place."""

from __future__ import annotations

# The model folders ComfyUI looks in (models/<folder>/), in the order a person picks from.
MODEL_FOLDERS: tuple[str, ...] = (
    "diffusion_models",
    "text_encoders",
    "vae",
    "loras",
    "clip_vision",
    "checkpoints",
    "unet",
    "clip",
    "controlnet",
    "upscale_models",
    "embeddings",
    "audio_encoders",
    "model_patches",
)
