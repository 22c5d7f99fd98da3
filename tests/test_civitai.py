"""CivitAI sources: every form people paste, the API's answer -> file, sha256 and dest, and the signed URL aria2
gets without the token, against a loopback stand-in of CivitAI and its object store (tests/civitai_standin.py)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downloader.civitai import (
    FILE_TYPE_FOLDERS,
    TYPE_FOLDERS,
    CivitaiLinkError,
    CivitaiRef,
    default_dest,
    download_url,
    parse_civitai,
    pick_file,
)
from downloader.civitai_api import NEEDS_TOKEN, USER_AGENT, fresh_url, resolve
from downloader.comfy import MODEL_FOLDERS
from downloader.errors import SourceError
from tests.civitai_standin import (
    TOKEN,
    Catalogue,
    CivitaiStandin,
    ManualClock,
    populate,
)

# --- the forms people paste ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("civitai:2514310", CivitaiRef(2514310)),
        ("  civitai:2514310+1800001 ", CivitaiRef(2514310, 1800001)),
        ("civitai:2514310?type=Model&format=SafeTensor",
         CivitaiRef(2514310, None, (("type", "Model"), ("format", "SafeTensor")))),
        ("https://civitai.com/models/827184?modelVersionId=2514310", CivitaiRef(2514310)),
        ("https://civitai.com/models/827184/wai-illustrious-sdxl?modelVersionId=2514310", CivitaiRef(2514310)),
        ("https://www.civitai.com/models/827184/x?modelVersionId=2514310#images", CivitaiRef(2514310)),
        ("https://civitai.green/models/827184?modelVersionId=2514310", CivitaiRef(2514310)),
        ("https://CivitAI.com:443/models/827184?modelVersionId=2514310", CivitaiRef(2514310)),
        ("https://civitai.com/api/download/models/2514310", CivitaiRef(2514310)),
        ("https://civitai.com/api/download/models/2514310?fileId=77", CivitaiRef(2514310, 77)),
        ("https://civitai.com/api/download/models/2514310?type=Model&format=SafeTensor&size=pruned&fp=fp16",
         CivitaiRef(2514310, None, (("type", "Model"), ("format", "SafeTensor"), ("size", "pruned"), ("fp", "fp16")))),
        ("https://civitai.com/api/v1/model-versions/2514310", CivitaiRef(2514310)),
        ("urn:air:sdxl:checkpoint:civitai:827184@2514310", CivitaiRef(2514310)),
        ("urn:air:wan:lora:civitai:827184@2514310+99", CivitaiRef(2514310, 99)),
        ("urn:air:flux1:lora:civitai:827184@2514310.safetensors", CivitaiRef(2514310)),
        ("http://127.0.0.1:9911/models/5?modelVersionId=6", CivitaiRef(6)),  # the configured endpoint
    ],
)
def test_every_accepted_form_names_the_same_kind_of_version(text: str, expected: CivitaiRef) -> None:
    assert parse_civitai(text, endpoint="http://127.0.0.1:9911") == expected


@pytest.mark.parametrize(
    "text",
    [
        "hf://owner/repo/file.safetensors",
        "https://huggingface.co/owner/repo/resolve/main/x.safetensors",
        "https://example.com/api/download/models/1",
        "https://civitai.com.evil.example/models/1?modelVersionId=2",
        "http://127.0.0.1:9912/api/download/models/1",  # the endpoint's host on another port
        "urn:air:sdxl:checkpoint:huggingface:stabilityai/sdxl@main",
        "12345",  # a bare number: model or version? not ours to guess
    ],
)
def test_what_is_not_civitai_is_left_to_other_sources(text: str) -> None:
    assert parse_civitai(text, endpoint="http://127.0.0.1:9911") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("https://civitai.com/models/827184", "add ?modelVersionId=<versionId>"),
        ("https://civitai.com/models/827184/wai-illustrious", "add ?modelVersionId=<versionId>"),
        ("urn:air:sdxl:checkpoint:civitai:827184", "add @<versionId>"),
        ("civitai:latest", "civitai:<modelVersionId>"),
        ("civitai:0", "must be a positive number"),
        ("https://civitai.com/user/someone", "names no model version"),
        ("https://civitai.com/api/download/models/12?token=SECRETVALUE", "set CIVITAI_TOKEN"),
        ("https://civitai.com/models/1?modelVersionId=abc", "modelVersionId must be a positive number"),
    ],
)
def test_a_civitai_text_that_names_no_version_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(CivitaiLinkError) as err:
        parse_civitai(text)
    assert says in str(err.value)
    assert "SECRETVALUE" not in str(err.value)


@given(
    version=st.integers(1, 10**12 - 1),
    file_id=st.none() | st.integers(1, 10**12 - 1),
    prefs=st.lists(st.sampled_from([("type", "Model"), ("format", "SafeTensor"), ("size", "full"), ("fp", "bf16")]),
                   unique_by=lambda p: p[0]),
)
def test_the_canonical_form_reads_back_as_the_same_reference(version: int, file_id: int | None,
                                                              prefs: list[tuple[str, str]]) -> None:
    order = ("type", "format", "size", "fp")
    ref = CivitaiRef(version, file_id, () if file_id else tuple(sorted(prefs, key=lambda p: order.index(p[0]))))
    assert parse_civitai(str(ref)) == ref
    assert parse_civitai(download_url(ref)) == ref


# --- the API's answer -> the file, its sha256 and where it goes ----------------------------------------------

SHA = "C0FFEE" * 10 + "ABCD"


def version_json(model_type: str = "Checkpoint", air: str = "checkpoint", files: list[dict] | None = None) -> dict:
    """A model version shaped as CivitAI's API answers it."""
    return {
        "id": 2514310, "modelId": 827184, "name": "v16.0", "baseModel": "Illustrious",
        "air": f"urn:air:sdxl:{air}:civitai:827184@2514310",
        "model": {"name": "WAI", "type": model_type, "nsfw": False, "poi": False},
        "files": files if files is not None else [
            {"id": 11, "name": "wai_v16_pruned.safetensors", "type": "Model", "sizeKB": 6775430.248046875,
             "primary": True, "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
             "hashes": {"AutoV2": "C0FFEE0000", "SHA256": SHA}},
            {"id": 12, "name": "wai_v16_full.safetensors", "type": "Model", "sizeKB": 7000000.5, "primary": False,
             "metadata": {"format": "SafeTensor", "size": "full", "fp": "fp32"}, "hashes": {}},
            {"id": 13, "name": "wai_vae.safetensors", "type": "VAE", "sizeKB": 326000, "primary": False,
             "metadata": {"format": "SafeTensor"}, "hashes": {"SHA256": "ab" * 32}},
        ],
    }


def test_the_primary_file_is_taken_with_its_sha256_in_lower_case_and_its_dest() -> None:
    file = pick_file(version_json(), CivitaiRef(2514310))
    assert (file.file_id, file.name, file.sha256) == (11, "wai_v16_pruned.safetensors", SHA.lower())
    assert file.size_estimate == round(6775430.248046875 * 1024)
    assert default_dest(file) == "checkpoints/wai_v16_pruned.safetensors"
    assert file.ref == CivitaiRef(2514310, 11)


def test_a_named_file_or_the_preferences_pick_another_file() -> None:
    vae = pick_file(version_json(), CivitaiRef(2514310, 13))
    assert (vae.name, default_dest(vae)) == ("wai_vae.safetensors", "vae/wai_vae.safetensors")
    full = pick_file(version_json(), CivitaiRef(2514310, None, (("size", "full"),)))
    assert (full.file_id, full.sha256) == (12, None)  # no SHA256 published: verified by structure only
    with pytest.raises(CivitaiLinkError, match="has no file 99 .its files: 11 .wai_v16_pruned"):
        pick_file(version_json(), CivitaiRef(2514310, 99))
    with pytest.raises(CivitaiLinkError, match="no file matching fp=fp8"):
        pick_file(version_json(), CivitaiRef(2514310, None, (("fp", "fp8"),)))


@pytest.mark.parametrize(
    ("model_type", "air", "file_type", "folder"),
    [
        ("LORA", "lora", "Model", "loras"),
        ("LoCon", "lycoris", "Model", "loras"),
        ("DoRA", "dora", "Model", "loras"),
        ("Checkpoint", "checkpoint", "Model", "checkpoints"),
        ("Checkpoint", "checkpoint", "Pruned Model", "checkpoints"),
        ("Checkpoint", "diffusionmodel", "Model", "diffusion_models"),  # WAN: a bare diffusion model
        ("Checkpoint", "checkpoint", "Diffusion Model", "diffusion_models"),
        ("Checkpoint", "checkpoint", "Text Encoder", "text_encoders"),
        ("Checkpoint", "checkpoint", "VAE", "vae"),
        ("VAE", "vae", "Model", "vae"),
        ("TextualInversion", "embedding", "Model", "embeddings"),
        ("Controlnet", "controlnet", "Model", "controlnet"),
        ("Upscaler", "upscaler", "Model", "upscale_models"),
    ],
)
def test_each_model_type_goes_to_its_comfyui_folder(model_type: str, air: str, file_type: str, folder: str) -> None:
    files = [{"id": 1, "name": "f.safetensors", "type": file_type, "primary": True, "hashes": {}}]
    file = pick_file(version_json(model_type, air, files), CivitaiRef(2514310))
    assert default_dest(file) == f"{folder}/f.safetensors"


def test_the_folder_table_names_only_comfyui_folders() -> None:
    assert set(TYPE_FOLDERS.values()) | set(FILE_TYPE_FOLDERS.values()) <= set(MODEL_FOLDERS)


@pytest.mark.parametrize(
    ("model_type", "file_type", "name", "says"),
    [
        ("MotionModule", "Model", "mm.safetensors", "no ComfyUI models folder here: give a dest"),
        ("LORA", "Training Data", "data.zip", "not a model file"),
        ("LORA", "Model", "../../etc/passwd", "not a plain file name"),
        ("LORA", "Model", "sub/dir.safetensors", "not a plain file name"),
        ("LORA", "Model", "..\\x.safetensors", "not a plain file name"),
        ("LORA", "Model", "..", "not a plain file name"),
        ("LORA", "Model", "", "not a plain file name"),
        ("LORA", "Model", "bell\x07.safetensors", "cannot be used as is"),
    ],
)
def test_no_default_dest_for_unknown_types_or_unsafe_names(
    model_type: str, file_type: str, name: str, says: str
) -> None:
    files = [{"id": 1, "name": name, "type": file_type, "primary": True}]
    file = pick_file(version_json(model_type, model_type.lower(), files), CivitaiRef(2514310))
    with pytest.raises(ValueError, match=says):
        default_dest(file)


def test_an_answer_without_files_is_an_error_not_a_crash() -> None:
    for answer in ({}, {"files": "x"}, [], None, {"files": [{"id": "1"}]}):
        with pytest.raises(CivitaiLinkError):
            pick_file(answer, CivitaiRef(1))


# --- against the stand-in ------------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[tuple[CivitaiStandin, Catalogue]]:
    with CivitaiStandin(clock=ManualClock()) as server:
        yield server, populate(server)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "test-client", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_public_lora_resolves_to_a_signed_url_with_its_sha256_size_and_dest(standin) -> None:
    server, cat = standin
    data = cat.lora.files[0].data
    resolved = resolve(CivitaiRef(cat.lora.id), endpoint=server.url)
    assert resolved.file.sha256 == hashlib.sha256(data).hexdigest()
    assert resolved.size == len(data)  # exact, from the store's Content-Range (sizeKB is only an estimate)
    assert default_dest(resolved.file) == "loras/wan_style_lora.safetensors"
    assert resolved.ref == CivitaiRef(cat.lora.id, cat.lora.files[0].id)
    assert resolved.signed.url.startswith(server.storage_url + "/file/")
    assert fetch(resolved.signed.url) == (200, data)
    # CivitAI's Cloudflare is asked with a real User-Agent; the store is probed with a 1-byte GET, never HEAD.
    assert {r.headers.get("user-agent") for r in server.seen("api")} == {USER_AGENT}
    probes = [r for r in server.seen("storage") if r.headers.get("user-agent") == USER_AGENT]
    assert [(r.method, r.headers.get("range")) for r in probes] == [("GET", "bytes=0-0")]
    assert all(r.method != "HEAD" for r in server.requests)


def test_the_token_goes_to_civitai_in_a_header_and_nowhere_else(standin) -> None:
    server, cat = standin
    resolved = resolve(CivitaiRef(cat.gated.id), endpoint=server.url, token=TOKEN)
    assert fetch(resolved.signed.url) == (200, cat.gated.files[0].data)
    assert TOKEN not in repr(resolved) and TOKEN not in resolved.signed.url
    assert [r.headers.get("authorization") for r in server.seen("api")] == [f"Bearer {TOKEN}"] * 2
    assert all("authorization" not in r.headers for r in server.seen("storage"))
    assert all(TOKEN not in r.path + r.query for r in server.requests)


def test_a_version_that_needs_a_token_says_so_in_words(standin) -> None:
    server, cat = standin
    with pytest.raises(SourceError) as err:
        resolve(CivitaiRef(cat.gated.id), endpoint=server.url)
    assert NEEDS_TOKEN == "this model needs a CivitAI API token: set CIVITAI_TOKEN"
    assert NEEDS_TOKEN in str(err.value) and err.value.status == 401 and not err.value.retryable
    with pytest.raises(SourceError, match="CivitAI refused CIVITAI_TOKEN .* check the token") as err:
        resolve(CivitaiRef(cat.gated.id), endpoint=server.url, token="wrong-token-123")
    assert "wrong-token-123" not in str(err.value)


def test_an_unknown_version_is_no_such_model_version(standin) -> None:
    server, _ = standin
    with pytest.raises(SourceError, match="no such model version: model version 999") as err:
        resolve(CivitaiRef(999), endpoint=server.url)
    assert err.value.status == 404


def test_a_version_without_sha256_resolves_unverified(standin) -> None:
    server, cat = standin
    resolved = resolve(CivitaiRef(cat.unhashed.id), endpoint=server.url)
    assert resolved.file.sha256 is None
    assert default_dest(resolved.file) == "embeddings/old_embedding.pt"
    assert fetch(resolved.signed.url) == (200, cat.unhashed.files[0].data)


def test_early_access_is_explained(standin) -> None:
    server, cat = standin
    with pytest.raises(SourceError, match="early access until 2031-01-01"):
        resolve(CivitaiRef(cat.early.id), endpoint=server.url, token=TOKEN)


def test_a_named_file_of_a_version_is_the_one_signed(standin) -> None:
    server, cat = standin
    vae = cat.checkpoint.files[2]
    resolved = resolve(CivitaiRef(cat.checkpoint.id, vae.id), endpoint=server.url)
    assert (default_dest(resolved.file), resolved.file.sha256, resolved.size) == (
        "vae/dream_vae.safetensors", vae.sha256, len(vae.data))
    assert fetch(resolved.signed.url) == (200, vae.data)
    ref = parse_civitai(f"{server.url}/api/download/models/{cat.checkpoint.id}?size=full", endpoint=server.url)
    assert ref is not None
    full = resolve(ref, endpoint=server.url)
    assert full.file.name == "dream_full.safetensors"
    with pytest.raises(SourceError, match="has no file 42"):
        resolve(CivitaiRef(cat.checkpoint.id, 42), endpoint=server.url)


def test_an_expired_signed_url_is_refused_and_a_fresh_one_works(standin) -> None:
    server, cat = standin
    resolved = resolve(CivitaiRef(cat.lora.id), endpoint=server.url)
    server.clock.advance(server.ttl + 1)
    assert fetch(resolved.signed.url)[0] == 403
    again = fresh_url(resolved.ref, endpoint=server.url)
    assert again.url != resolved.signed.url and again.size == resolved.size
    assert fetch(again.url) == (200, cat.lora.files[0].data)


def test_the_store_refuses_a_request_that_carries_the_token(standin) -> None:
    """Why the redirect is resolved here: the store refuses an Authorization header with a signed URL."""
    server, cat = standin
    resolved = resolve(CivitaiRef(cat.lora.id), endpoint=server.url)
    assert fetch(resolved.signed.url, {"Authorization": f"Bearer {TOKEN}"})[0] == 400


def test_civitai_unreachable_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(SourceError, match=f"cannot reach http://127.0.0.1:{port}") as err:
            resolve(CivitaiRef(1), endpoint=f"http://127.0.0.1:{port}")
    assert err.value.retryable


ARIA2C = shutil.which("aria2c")


def aria2(url: str, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [ARIA2C or "aria2c", "--no-conf", f"--dir={folder}", "--out=model.safetensors", "--split=4",
               "--max-connection-per-server=4", "--min-split-size=1M", "--max-tries=1", "--summary-interval=0",
               "--console-log-level=warn", "--allow-overwrite=true", *extra, url]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed")
def test_aria2_fetches_the_signed_url_on_several_connections_and_the_sha256_matches(standin, tmp_path: Path) -> None:
    server, cat = standin
    resolved = resolve(CivitaiRef(cat.lora.id), endpoint=server.url, token=TOKEN)
    result = aria2(resolved.signed.url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest() == resolved.file.sha256
    ranges = [r for r in server.seen("storage") if r.headers.get("user-agent", "").startswith("aria2")]
    assert len(ranges) > 1 and all("authorization" not in r.headers for r in ranges)


@pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed")
def test_aria2_given_the_token_header_fails_at_the_store(standin, tmp_path: Path) -> None:
    """The trap this module avoids: aria2 re-sends its headers to the redirect target, which refuses them."""
    server, cat = standin
    url = f"{server.url}/api/download/models/{cat.lora.id}"
    result = aria2(url, tmp_path, f"--header=Authorization: Bearer {TOKEN}")
    assert result.returncode != 0
    assert any(r.status == 400 and "authorization" in r.headers for r in server.seen("storage"))
