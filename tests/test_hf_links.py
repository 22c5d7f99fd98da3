"""Hugging Face links as people paste them become hf:// sources with a revision, and resolve through the hub's
endpoint with its sha256 exactly as hf:// sources do (against the loopback FakeHub)."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from downloader.config import Settings
from downloader.hf_links import HfLink, HfLinkError, parse_hf_link
from downloader.manifest import ModelSpec, parse_source
from downloader.sources import resolve_hf
from tests.servers import FakeHub

REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
FILE = "split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
MIRROR = "http://127.0.0.1:8931"


@pytest.mark.parametrize(
    ("link", "revision"),
    [
        (f"https://huggingface.co/{REPO}/blob/main/{FILE}", "main"),
        (f"https://huggingface.co/{REPO}/resolve/main/{FILE}", "main"),
        (f"https://huggingface.co/{REPO}/resolve/main/{FILE}?download=true", "main"),
        (f"https://huggingface.co/{REPO}/raw/main/{FILE}", "main"),
        (f"https://hf.co/{REPO}/resolve/main/{FILE}", "main"),
        (f"https://HuggingFace.co:443/{REPO}/resolve/main/{FILE}", "main"),
        (f"https://www.huggingface.co/{REPO}/blob/v1.0/{FILE}#L1", "v1.0"),
        (f"https://huggingface.co/{REPO}/resolve/{'a1b2c3d4' * 5}/{FILE}", "a1b2c3d4" * 5),
        (f"https://huggingface.co/{REPO}/resolve/refs%2Fpr%2F7/{FILE}", "refs/pr/7"),
        (f"  {MIRROR}/{REPO}/resolve/main/{FILE}?download=true  ", "main"),  # the configured HF_ENDPOINT
    ],
)
def test_every_form_of_a_file_link_becomes_the_same_hf_source(link: str, revision: str) -> None:
    parsed = parse_hf_link(link, endpoint=MIRROR)
    assert parsed == HfLink(REPO, FILE, revision)
    assert parsed.source == f"hf://{REPO}/{FILE}"
    assert str(parse_source(parsed.source)) == parsed.source  # the manifest accepts what comes out
    ModelSpec(id="m", source=parsed.source, revision=parsed.revision, dest="diffusion_models/x.safetensors")


def test_an_endpoint_with_a_path_prefix_is_understood() -> None:
    link = f"https://mirror.example/hf/{REPO}/resolve/main/{FILE}"
    assert parse_hf_link(link, endpoint="https://mirror.example/hf") == HfLink(REPO, FILE, "main")


def test_a_percent_encoded_file_name_is_decoded() -> None:
    link = "https://huggingface.co/o/r/resolve/main/folder/my%20model%2B1.safetensors"
    assert parse_hf_link(link) == HfLink("o/r", "folder/my model+1.safetensors", "main")


@pytest.mark.parametrize(
    "link",
    [
        "https://example.com/o/r/resolve/main/x.safetensors",
        "https://huggingface.co.evil.example/o/r/resolve/main/x.safetensors",
        "http://127.0.0.1:8932/o/r/resolve/main/x.safetensors",  # the mirror's host on another port
        "https://127.0.0.1:8931/o/r/resolve/main/x.safetensors",  # the mirror's host and port, other scheme
        "https://civitai.com/models/1?modelVersionId=2",
        "hf://o/r/x.safetensors",
        "ftp://huggingface.co/o/r/resolve/main/x",
    ],
)
def test_links_elsewhere_are_not_hub_links(link: str) -> None:
    assert parse_hf_link(link, endpoint=MIRROR) is None


@pytest.mark.parametrize(
    ("link", "says"),
    [
        ("https://huggingface.co/datasets/o/r/resolve/main/data.parquet", "a dataset, not a model"),
        ("https://huggingface.co/spaces/o/app/blob/main/app.py", "a Space, not a model"),
        (f"https://huggingface.co/{REPO}", "not one file"),
        (f"https://huggingface.co/{REPO}/tree/main/split_files", "not one file"),
        (f"https://huggingface.co/{REPO}/blob/main", "not one file"),
        (f"https://huggingface.co/{REPO}/commits/main/{FILE}", "not one file"),
        ("https://huggingface.co/", "names no repository"),
        ("https://huggingface.co/docs/hub/index", "names no repository"),
        ("https://huggingface.co/gpt2/resolve/main/model.safetensors", "without its owner"),
        ("https://huggingface.co/o/r/resolve/main/../../etc/passwd", "must not contain"),
        ("https://huggingface.co/o/r/resolve/main/a/%2E%2E/b", "must not contain"),
        ("https://huggingface.co/o/r/resolve/main/a%2Fb", "encoded slashes"),
        ("https://huggingface.co/o/r/resolve/main/x.bin?token=hf_SECRET", "set HF_TOKEN"),
        ("https://user:hf_SECRET@huggingface.co/o/r/resolve/main/x.bin", "set HF_TOKEN"),
    ],
)
def test_a_hub_link_that_names_no_model_file_says_what_to_paste(link: str, says: str) -> None:
    with pytest.raises(HfLinkError) as err:
        parse_hf_link(link)
    assert says in str(err.value)
    assert "SECRET" not in str(err.value)


NOT_OWNERS = {"datasets", "spaces", "buckets", "docs", "api", "models", "collections", "papers", "settings",
              "organizations", "blog", "posts"}
segment = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..")
)


@given(owner=segment, repo=segment, path=st.lists(segment, min_size=1, max_size=4),
       revision=st.sampled_from(["main", "v2", "refs/pr/3", "0" * 40]))
def test_any_file_link_the_hub_writes_reads_back(owner: str, repo: str, path: list[str], revision: str) -> None:
    assume(owner not in NOT_OWNERS and repo not in ("blob", "resolve", "raw"))
    link = "https://huggingface.co/" + "/".join(quote(s, safe="") for s in [owner, repo, "resolve", revision, *path])
    assert parse_hf_link(link) == HfLink(f"{owner}/{repo}", "/".join(path), revision)


def test_a_pasted_link_resolves_through_the_endpoint_with_the_hubs_sha256(settings: Settings, hub: FakeHub) -> None:
    data = b"pasted-link-model" * 5000
    info = hub.add_file("org/model", "sub/model.safetensors", data, revision="v1")
    link = parse_hf_link(f"{hub.url}/org/model/blob/v1/sub/model.safetensors", endpoint=hub.url)
    assert link is not None
    spec = ModelSpec(id="m", source=link.source, revision=link.revision, dest="loras/model.safetensors")
    resolved = resolve_hf(spec, parse_source(link.source), settings.with_(hf_endpoint=hub.url))
    assert resolved.sha256 == hashlib.sha256(data).hexdigest() and resolved.sha256_origin == "hub"
    assert resolved.size == len(data) and resolved.commit == info.commit
    assert resolved.url.startswith(f"{hub.url}/org/model/resolve/{info.commit}/")
