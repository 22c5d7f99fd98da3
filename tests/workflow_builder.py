"""A ComfyUI workflow in the shape ComfyUI saves it (as in Comfy-Org/workflow_templates: nodes with `mode`,
`widgets_values` and `properties.models`, a root `models` list, a subgraph under `definitions.subgraphs`), whose
model links point at the tests' loopback stand-ins, plus the files those stand-ins serve for it.

What the "wan test" workflow needs, and what it must not:
- needed: a diffusion model inside the active subgraph (a huggingface.co `resolve` link: fetched through
  HF_ENDPOINT), a VAE inside it whose link is in the root `models` list (a `blob/` link on the HF_ENDPOINT host),
  a LoRA on the allowed loopback host (DOWNLOADER_ALLOWED_HOSTS);
- needed, never fetched: a ControlNet with no URL (unknown) and an upscaler on a host that is not allowed (the
  allowed host's other port);
- not needed: a muted LoRA node (mode 2), a bypassed one (mode 4), a root `models` entry no node uses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

REPO_ID = "test-org/wan-test"
HIGH = "split_files/diffusion_models/wan_test_high.safetensors"
VAE = "split_files/vae/wan_test_vae.safetensors"
MUTED = "split_files/loras/muted_lora.safetensors"
BYPASSED = "split_files/loras/bypassed_lora.safetensors"
UNUSED = "split_files/loras/unused.safetensors"
SUBGRAPH = "6b1c7a2e-1f0d-4c55-9a77-0d3f5e2b9c10"
# What a user of the workflow would see: dest -> where it comes from (for the fetchable and the stuck files).
FETCHED = ("diffusion_models/wan_test_high.safetensors", "vae/wan_test_vae.safetensors", "loras/style_lora.safetensors")
UNKNOWN_DEST = "controlnet/mystery_controlnet.safetensors"
NOT_ALLOWED_DEST = "upscale_models/4x_upscaler.pth"
HUB_PATHS = {HIGH: 700_001, VAE: 300_003, MUTED: 50_000, BYPASSED: 60_000, UNUSED: 70_000}


@dataclass(frozen=True)
class Payload:
    """Bytes a stand-in serves, and their sha256."""

    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def payloads() -> dict[str, Payload]:
    """Random content for every file the workflow names (hub paths, the LoRA and the upscaler)."""
    files = {path: Payload(os.urandom(size)) for path, size in HUB_PATHS.items()}
    files["style_lora"] = Payload(os.urandom(400_007))
    files["upscaler"] = Payload(os.urandom(90_000))
    return files


def serve(hub: object, cdn: object, forbidden: object, files: dict[str, Payload]) -> None:
    """Put every file where the workflow says it is: the hub (all of them, muted ones included, so that a request
    for one would succeed and be seen), the allowed host and the host that is not allowed."""
    for path in HUB_PATHS:
        hub.add_file(REPO_ID, path, files[path].data)  # type: ignore[attr-defined]
    cdn.add_bytes("/files/style_lora.safetensors", files["style_lora"].data)  # type: ignore[attr-defined]
    forbidden.add_bytes("/files/4x_upscaler.pth", files["upscaler"].data)  # type: ignore[attr-defined]


def _node(node_id: int, kind: str, widgets: list[object], mode: int = 0, models: list[dict] | None = None) -> dict:
    node: dict[str, object] = {
        "id": node_id, "type": kind, "pos": [100 * node_id, 200], "size": [315, 82], "flags": {}, "order": node_id,
        "mode": mode, "inputs": [], "outputs": [], "properties": {"Node name for S&R": kind}, "widgets_values": widgets,
    }
    if models is not None:
        node["properties"]["models"] = models  # type: ignore[index]
    return node


def _entry(name: str, url: str, directory: str) -> dict[str, str]:
    return {"name": name, "url": url, "directory": directory}


def wan_workflow(hub_url: str, cdn_url: str, forbidden_url: str, lora_sha256: str, *, clean: bool = False) -> bytes:
    """The workflow's JSON; `clean` leaves out the unknown and the not allowed file (one a fetch can complete).
    The LoRA's entry carries its sha256 (`hash`, as ComfyUI writes it: upper case), the only check a plain URL
    gets besides its size."""
    hf = "https://huggingface.co"
    inner = [
        _node(201, "UNETLoader", ["wan_test_high.safetensors", "default"], models=[
            _entry("wan_test_high.safetensors", f"{hf}/{REPO_ID}/resolve/main/{HIGH}?download=true",
                   "diffusion_models")]),
        _node(202, "VAELoader", ["wan_test_vae.safetensors"]),  # its URL is in the root `models` list
        _node(203, "CLIPTextEncode", ["a red fox in the snow, cinematic"]),
    ]
    nodes = [
        _node(1, SUBGRAPH, []),
        _node(2, "LoraLoaderModelOnly", ["style_lora.safetensors", 0.8], models=[
            {**_entry("style_lora.safetensors", f"{cdn_url}/files/style_lora.safetensors", "loras"),
             "hash": lora_sha256.upper(), "hash_type": "SHA256"}]),
        _node(3, "LoraLoaderModelOnly", ["muted_lora.safetensors", 1.0], mode=2, models=[
            _entry("muted_lora.safetensors", f"{hf}/{REPO_ID}/resolve/main/{MUTED}", "loras")]),
        _node(4, "LoraLoaderModelOnly", ["bypassed_lora.safetensors", 1.0], mode=4, models=[
            _entry("bypassed_lora.safetensors", f"{hf}/{REPO_ID}/resolve/main/{BYPASSED}", "loras")]),
        _node(5, "SaveVideo", ["video/wan_test", "auto", "auto"]),
    ]
    if not clean:
        nodes += [
            _node(6, "ControlNetLoader", ["mystery_controlnet.safetensors"]),
            _node(7, "UpscaleModelLoader", ["4x_upscaler.pth"], models=[
                _entry("4x_upscaler.pth", f"{forbidden_url}/files/4x_upscaler.pth", "upscale_models")]),
        ]
    doc = {
        "id": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "revision": 0,
        "last_node_id": 203,
        "last_link_id": 0,
        "nodes": nodes,
        "links": [],
        "groups": [],
        "definitions": {"subgraphs": [{
            "id": SUBGRAPH, "version": 1, "name": "Wan test: load models", "state": {}, "revision": 0,
            "config": {}, "inputNode": {"id": -10}, "outputNode": {"id": -20}, "inputs": [], "outputs": [],
            "widgets": [], "nodes": inner, "links": [], "groups": [], "extra": {},
        }]},
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "models": [
            _entry("wan_test_vae.safetensors", f"{hub_url}/{REPO_ID}/blob/main/{VAE}", "vae"),
            _entry("unused.safetensors", f"{hf}/{REPO_ID}/resolve/main/{UNUSED}", "loras"),
        ],
        "version": 0.4,
    }
    return json.dumps(doc, indent=1).encode()


def hub_paths_asked(hub: object) -> set[str]:
    """The repository paths the hub (or its CDN) was asked about."""
    out = set()
    for server in (hub, hub.cdn):  # type: ignore[attr-defined]
        for record in server.requests:
            for path in HUB_PATHS:
                if record.path.endswith(path):
                    out.add(path)
    return out
