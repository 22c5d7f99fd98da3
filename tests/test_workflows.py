"""ComfyUI workflows (UI and API format) -> the model files they need and where each would come from; a workflow is
untrusted input: bad shapes and hostile sizes are clear errors, hostile names and hosts are never used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downloader.civitai import parse_civitai
from downloader.manifest import ModelSpec
from downloader.origins import origin_of
from downloader.workflow_sources import (
    FROM_MANIFEST,
    FROM_URL,
    INVALID,
    NOT_ALLOWED,
    UNKNOWN,
    NeededFile,
    needed_files,
    parse_allowed_hosts,
)
from downloader.workflows import MAX_DEPTH, WorkflowError, load_workflow, wanted_files

HERE = Path(__file__).parent / "workflows"
UI = (HERE / "wan22_t2v_subgraph.json").read_bytes()
API = (HERE / "sdxl_api.json").read_bytes()
WAN = "hf://Comfy-Org/Wan_2.2_ComfyUI_Repackaged/split_files"
MANIFEST = {"clip_vision_h.safetensors": "clip-vision-h", "wan_2.1_vae.safetensors": "wan21-vae"}


def by_dest(files: list[NeededFile]) -> dict[str, str]:
    return {f.dest or f"{f.folder}/{f.name}": f.where for f in files}


def test_a_ui_workflow_needs_what_its_active_nodes_and_subgraphs_use() -> None:
    files = needed_files(UI, manifest_names=MANIFEST)
    assert by_dest(files) == {
        "loras/wan_style_lora.safetensors": "civitai:2000001",
        "upscale_models/4x_foolhardy_Remacri.pth": "not allowed: http://127.0.0.1:8188/files/4x_foolhardy_Remacri.pth",
        "controlnet/mystery_controlnet.safetensors": "unknown",
        "clip_vision/clip_vision_h.safetensors": "manifest model clip-vision-h",
        "vae/../../../../root/.ssh/authorized_keys": "invalid: dest 'vae/../../../../root/.ssh/authorized_keys' "
        "contains '..' and would escape the models dir",
        "../../custom_nodes/payload.safetensors": "invalid: folder '../../custom_nodes' is not one of ComfyUI's "
        "model folders",
        # inside the active subgraph; its URL comes from the root `models` list
        "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors":
            "hf://Comfy-Org/Wan_2.1_ComfyUI_repackaged/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"
            " @ main",
        "vae/wan_2.1_vae.safetensors": f"{WAN}/vae/wan_2.1_vae.safetensors @ main",
        "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors":
            f"{WAN}/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors @ main",
        "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors":
            f"{WAN}/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors @ main",
    }
    # Muted (mode 2) and bypassed (mode 4) nodes, a subgraph used only by a bypassed node, and root entries no
    # active node uses are not needed: none of their names appears above.
    names = {f.name for f in files}
    assert not names & {"muted_checkpoint.safetensors", "never_needed.safetensors", "unused_by_any_node.safetensors",
                        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
                        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"}


def test_what_each_needed_file_carries_for_the_download() -> None:
    files = {f.name: f for f in needed_files(UI, manifest_names=MANIFEST)}
    high = files["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"]
    assert (high.kind, high.revision, high.sha256) == (FROM_URL, "main", "abcdef0123456789" * 4)
    assert high.nodes == ("#130/122 UNETLoader",)
    vae = files["wan_2.1_vae.safetensors"]
    assert (vae.kind, vae.model_id) == (FROM_URL, "wan21-vae")  # a URL first; the manifest model is named too
    assert files["wan_style_lora.safetensors"].source == "civitai:2000001"
    assert files["mystery_controlnet.safetensors"].kind == UNKNOWN
    assert files["../../../../root/.ssh/authorized_keys"].dest is None and files["payload.safetensors"].kind == INVALID


def test_an_allowed_origin_matches_on_scheme_host_and_port() -> None:
    def upscaler(*allowed: str) -> NeededFile:
        return next(f for f in needed_files(UI, allowed_hosts=allowed) if f.folder == "upscale_models")

    url = "http://127.0.0.1:8188/files/4x_foolhardy_Remacri.pth"
    assert (upscaler("http://127.0.0.1:8188").kind, upscaler("http://127.0.0.1:8188").source) == (FROM_URL, url)
    for other in ("http://127.0.0.1:8189", "127.0.0.1:8188", "127.0.0.1", "https://127.0.0.1:8188", "localhost:8188"):
        assert upscaler(other).kind == NOT_ALLOWED, other


def test_allow_list_entries() -> None:
    assert parse_allowed_hosts(["cdn.example.com", "Files.Example.com:8443", "http://10.0.0.5:8080", " "]) == {
        ("https", "cdn.example.com", 443), ("https", "files.example.com", 8443), ("http", "10.0.0.5", 8080)}
    for bad in ("ftp://x", "x:notaport", "https://x/path", "https://user:pw@x"):
        with pytest.raises(ValueError, match="allowed host"):
            parse_allowed_hosts([bad])


def test_links_to_the_hub_and_civitai_go_through_the_configured_endpoints() -> None:
    doc = {"nodes": [{"id": 1, "type": "LoraLoaderModelOnly", "mode": 0, "widgets_values": ["a.safetensors", 1.0],
                      "properties": {"models": [{"name": "a.safetensors", "directory": "loras",
                                                 "url": "http://127.0.0.1:9001/o/r/resolve/v2/a.safetensors"}]}},
                     {"id": 2, "type": "LoraLoaderModelOnly", "mode": 0, "widgets_values": ["b.safetensors", 1.0],
                      "properties": {"models": [{"name": "b.safetensors", "directory": "loras",
                                                 "url": "http://127.0.0.1:9002/api/download/models/7?fileId=8"}]}},
                     {"id": 3, "type": "LoraLoaderModelOnly", "mode": 0, "widgets_values": ["c.safetensors", 1.0],
                      "properties": {"models": [{"name": "c.safetensors", "directory": "loras",
                                                 "url": "https://civitai.com/models/5"}]}}]}
    files = needed_files(json.dumps(doc), hf_endpoint="http://127.0.0.1:9001", civitai_endpoint="http://127.0.0.1:9002")
    assert [(f.kind, f.source, f.revision) for f in files[:2]] == [
        (FROM_URL, "hf://o/r/a.safetensors", "v2"), (FROM_URL, "civitai:7+8", None)]
    assert files[2].kind == NOT_ALLOWED and "add ?modelVersionId=<versionId>" in (files[2].reason or "")


def test_a_url_with_a_secret_is_never_used_or_shown() -> None:
    doc = {"nodes": [{"id": 1, "type": "VAELoader", "mode": 0, "widgets_values": ["v.safetensors"],
                      "properties": {"models": [{"name": "v.safetensors", "directory": "vae",
                                                 "url": "https://cdn.example.com/v.safetensors?token=SECRET42"}]}}]}
    (file,) = needed_files(json.dumps(doc), allowed_hosts=["cdn.example.com"])
    assert file.kind == NOT_ALLOWED and "SECRET42" not in file.where
    assert file.where.startswith("not allowed: https://cdn.example.com/v.safetensors")


def test_an_api_workflow_needs_the_files_of_its_loader_inputs() -> None:
    names = {"wan_style_lora.safetensors": "my-lora", "clip_l.safetensors": "clip-l"}
    files = needed_files(API, manifest_names=names)
    assert by_dest(files) == {
        "checkpoints/sd_xl_base_1.0.safetensors": "unknown",
        "loras/wan_style_lora.safetensors": "manifest model my-lora",
        "vae/sdxl_vae.safetensors": "unknown",
        "text_encoders/clip_l.safetensors": "manifest model clip-l",
        "text_encoders/t5xxl_fp8_e4m3fn.safetensors": "unknown",
        "controlnet/controlnet-canny-sdxl.safetensors": "unknown",
        "upscale_models/4x-UltraSharp.pth": "unknown",
        "clip_vision/clip_vision_h.safetensors": "unknown",
        "loras/detail_tweaker.safetensors": "unknown",  # a custom node's lora_name input
        "checkpoints/../../../etc/shadow": "invalid: dest 'checkpoints/../../../etc/shadow' contains '..' and "
        "would escape the models dir",
    }
    assert next(f for f in files if f.name == "sd_xl_base_1.0.safetensors").nodes == ("#4 CheckpointLoaderSimple",)


def test_one_file_used_by_several_nodes_is_needed_once() -> None:
    node = {"type": "UNETLoader", "mode": 0, "widgets_values": ["m.safetensors", "default"],
            "properties": {"models": [{"name": "m.safetensors", "directory": "unet",
                                       "url": "https://huggingface.co/o/r/resolve/main/m.safetensors"}]}}
    other = {"id": 2, "type": "UNETLoader", "mode": 0, "widgets_values": ["m.safetensors"]}
    doc = {"nodes": [{"id": 1, **node}, other]}
    (want,) = wanted_files(doc)
    assert (want.folder, want.url, want.nodes) == ("unet", node["properties"]["models"][0]["url"],
                                                   ("#1 UNETLoader", "#2 UNETLoader"))


def test_a_models_entry_counts_only_for_a_widget_value_of_its_node() -> None:
    doc = {"nodes": [{"id": 1, "type": "UNETLoader", "mode": 0, "widgets_values": ["other.safetensors"],
                      "properties": {"models": [{"name": "m.safetensors", "directory": "diffusion_models",
                                                 "url": "https://huggingface.co/o/r/resolve/main/m.safetensors"}]}}]}
    assert [w.name for w in wanted_files(doc)] == ["other.safetensors"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2, 3]", "a workflow is a JSON object"),
        (b'"text"', "a workflow is a JSON object"),
        (b'{"nodes": {"1": {}}}', "'nodes' must be a list"),
        (b'{"nodes": [42]}', "node 1 of the workflow is not an object"),
        (b'{"nodes": [], "definitions": []}', "'definitions' must be an object"),
        (b'{"nodes": [], "definitions": {"subgraphs": [{"nodes": []}]}}', "subgraph #1 must be an object with an id"),
        (b'{"nodes": [{"mode": 0, "properties": {"models": "x"}}]}', "'properties.models' must be a list"),
        (b'{"nodes": [], "models": {"a": 1}}', "'models' must be a list"),
        (b'{"1": {"class_type": "VAELoader", "inputs": []}}', "inputs an object"),
        (b'{"1": {"class_type": 5, "inputs": {}}}', "class_type must be text"),
        (b"[" * 100_000 + b"]" * 100_000, f"nests deeper than {MAX_DEPTH} levels"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH} levels"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_a_bad_workflow_is_a_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(WorkflowError) as err:
        wanted_files(load_workflow(data))
    assert says in str(err.value)


def test_a_huge_workflow_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(WorkflowError, match=r"the workflow is 17.0 MiB; the limit is 16.0 MiB"):
        load_workflow(b" " * (17 * 1024 * 1024))
    with pytest.raises(WorkflowError, match="more than 1000000 values"):
        load_workflow(b"[" + b"0," * 1_000_001 + b"0]")


def test_a_subgraph_that_uses_itself_is_read_once() -> None:
    sg = {"id": "loop", "nodes": [{"id": 1, "type": "loop", "mode": 0},
                                  {"id": 2, "type": "VAELoader", "mode": 0, "widgets_values": ["v.safetensors"]}]}
    doc = {"nodes": [{"id": 9, "type": "loop", "mode": 0}], "definitions": {"subgraphs": [sg]}}
    assert [(w.folder, w.name, w.nodes) for w in wanted_files(doc)] == [("vae", "v.safetensors", ("#9/2 VAELoader",))]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["nodes", "mode", "type", "id", "widgets_values", "properties", "models", "name", "url",
                         "directory", "definitions", "subgraphs", "class_type", "inputs", "ckpt_name", "hash"]),
        inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_any_json_is_a_list_of_needs_or_a_workflow_error(doc: object) -> None:
    try:
        files = needed_files(json.dumps(doc))
    except WorkflowError:
        return
    for f in files:
        assert f.kind in (FROM_URL, FROM_MANIFEST, UNKNOWN, NOT_ALLOWED, INVALID)
        assert f.dest is None or ".." not in f.dest.split("/")


url_text = st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, host, rest: f"{scheme}://{host}{rest}",
              st.sampled_from(["http", "https", "HTTPS", "ftp", "file"]),
              st.sampled_from(["huggingface.co", "civitai.com", "hf.co", "[::1", "127.0.0.1:99999", "x:y:z",
                               "user:pw@civitai.com", "cdn.example.com"]),
              st.text(max_size=40)),
)


@settings(max_examples=500, deadline=None)
@given(url=url_text)
def test_any_url_in_a_workflow_is_classified_without_a_crash(url: str) -> None:
    doc = {"nodes": [{"id": 1, "type": "VAELoader", "mode": 0, "widgets_values": ["v.safetensors"],
                      "properties": {"models": [{"name": "v.safetensors", "directory": "vae", "url": url}]}}]}
    (file,) = needed_files(json.dumps(doc), allowed_hosts=["cdn.example.com"])
    assert file.kind in (FROM_URL, NOT_ALLOWED, UNKNOWN)
    if file.kind == FROM_URL and file.source is not None and file.source.startswith("civitai:"):
        assert str(parse_civitai(file.source)) == file.source
    elif file.kind == FROM_URL:
        spec = ModelSpec(id="m", source=file.source, revision=file.revision, dest=file.dest)  # the manifest takes it
        assert spec.source.startswith("hf://") or origin_of(spec.source) == ("https", "cdn.example.com", 443)
