"""CivitAI sources end to end (issue #14): every pasted form resolves through CIVITAI_ENDPOINT's API, aria2 gets
the signed storage URL with no header, the file lands in its type's folder verified by the API's SHA256, an expired
URL is resolved again and the download resumes, and the token reaches nothing but the API.

Real aria2c, real SQLite, the loopback CivitAI stand-in (tests/civitai_standin.py: API on 127.0.0.1, storage on
127.0.0.2 refusing any Authorization header and expired signatures); every wait is on a condition.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from downloader.civitai_api import NEEDS_TOKEN
from downloader.cli import main
from downloader.config import Settings
from downloader.fetch import fetch
from downloader.intake import added_spec
from downloader.manager import Manager
from downloader.manifest import ModelSpec, endpoints_of, is_pending, load_catalog
from downloader.plan import build_plan
from downloader.state import Store
from tests.civitai_standin import (
    TOKEN,
    Catalogue,
    CivitaiStandin,
    StandinFile,
    StandinVersion,
    populate,
)
from tests.conftest import cli_env
from tests.test_fetch import run_until


@pytest.fixture
def civitai() -> Iterator[tuple[CivitaiStandin, Catalogue]]:
    with CivitaiStandin() as standin:
        yield standin, populate(standin)


@pytest.fixture
def civ_settings(settings: Settings, civitai) -> Settings:
    standin, _ = civitai
    return settings.with_(civitai_endpoint=standin.url, civitai_token=TOKEN, max_attempts=2)


def dest_path(settings: Settings, row) -> Path:
    return settings.models_dir / row.dest


def token_anywhere(root: Path) -> list[str]:
    """Files under `root` whose bytes hold the token (the DB, aria2's config and log, the models)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def valid_safetensors(n: int) -> bytes:
    """A real safetensors file of about `n` bytes (one F32 tensor), so the structure check has something to read."""
    raw = json.dumps({"w": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n // 4 * 4]}}).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + os.urandom(n // 4 * 4)


def test_a_lora_without_dest_lands_in_loras_verified_by_the_api_sha256_and_the_token_reaches_only_the_api(
    civ_settings, civitai
):
    standin, cat = civitai
    lora = cat.lora.files[0]
    [row] = fetch([ModelSpec(id="lora", source=f"civitai:{cat.lora.id}")], civ_settings)
    assert row.state == "done" and row.verified and row.error is None
    assert row.dest == f"loras/{lora.name}" and row.sha256 == lora.sha256 and row.sha256_origin == "civitai"
    assert dest_path(civ_settings, row).read_bytes() == lora.data
    storage = standin.seen("storage")
    assert storage and all("authorization" not in r.headers for r in storage), "the signed URL got a token"
    assert any(r.method == "GET" and r.status == 206 and r.headers.get("range") != "bytes=0-0" for r in storage)
    api = standin.seen("api")
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api), "the API is asked with the token"
    assert all("token" not in r.query.lower() for r in api + storage), "never in a URL"
    assert token_anywhere(civ_settings.workspace) == [], "the token was written to disk"


@pytest.mark.parametrize(
    "pasted",
    [
        "{url}/models/100002?modelVersionId=2000002",
        "https://civitai.com/models/100002/dream?modelVersionId=2000002",
        "{url}/api/download/models/2000002",
        "urn:air:sdxl:checkpoint:civitai:100002@2000002",
        "civitai:2000002",
    ],
)
def test_every_pasted_form_fetches_the_primary_file_into_its_types_folder(civ_settings, civitai, pasted):
    standin, cat = civitai
    spec = added_spec({"source": pasted.format(url=standin.url)}, civ_settings)
    assert spec.source == "civitai:2000002" and spec.dest is None and spec.id == "civitai-2000002"
    [row] = fetch([spec], civ_settings)
    primary = cat.checkpoint.files[0]
    assert row.state == "done" and row.dest == f"checkpoints/{primary.name}"
    assert dest_path(civ_settings, row).read_bytes() == primary.data


def test_a_named_file_and_a_given_dest_are_honoured(civ_settings, civitai):
    _, cat = civitai
    vae = cat.checkpoint.files[2]
    [named] = fetch([ModelSpec(id="vae", source=f"civitai:{cat.checkpoint.id}+{vae.id}")], civ_settings)
    assert named.state == "done" and named.dest == f"vae/{vae.name}" and named.sha256 == vae.sha256
    [given] = fetch([ModelSpec(id="mine", source=f"civitai:{cat.lora.id}", dest="loras/wan/mine.safetensors")], civ_settings)
    assert given.state == "done" and (civ_settings.models_dir / "loras/wan/mine.safetensors").read_bytes() == cat.lora.files[0].data


def test_a_version_that_needs_a_token_says_set_civitai_token_and_writes_nothing(civ_settings, civitai):
    _, cat = civitai
    settings = civ_settings.with_(civitai_token=None)
    [row] = fetch([ModelSpec(id="gated", source=f"civitai:{cat.gated.id}")], settings)
    assert row.state == "failed" and NEEDS_TOKEN in row.error
    assert is_pending(row.dest), "no file name is known: nothing may be written under one"
    assert [p for p in settings.models_dir.rglob("*") if p.is_file()] == []
    # With the token the same source is fetched.
    [row] = fetch([ModelSpec(id="gated", source=f"civitai:{cat.gated.id}")], civ_settings)
    assert row.state == "done" and row.dest == f"loras/{cat.gated.files[0].name}"


def test_an_unknown_version_says_no_such_model_version(civ_settings):
    [row] = fetch([ModelSpec(id="nope", source="civitai:9999999", dest="loras/x.safetensors")], civ_settings)
    assert row.state == "failed" and "no such model version" in row.error


def test_a_version_without_sha256_is_structure_checked_and_marked_unverified(civ_settings, civitai):
    standin, _ = civitai
    good = valid_safetensors(200_000)
    standin.add(StandinVersion(2_000_010, 100_010, "LORA", [
        StandinFile(3_000_010, "nohash.safetensors", good, primary=True, publish_sha256=False)]))
    standin.add(StandinVersion(2_000_011, 100_011, "LORA", [
        StandinFile(3_000_011, "cut.safetensors", good[:-1000], primary=True, publish_sha256=False)]))
    [row] = fetch([ModelSpec(id="nohash", source="civitai:2000010")], civ_settings)
    assert row.state == "done" and row.verified is False and row.sha256_origin is None
    assert dest_path(civ_settings, row).read_bytes() == good
    [cut] = fetch([ModelSpec(id="cut", source="civitai:2000011")], civ_settings)
    assert cut.state == "failed" and not (civ_settings.models_dir / "loras/cut.safetensors").exists()


def test_an_expired_signed_url_is_resolved_again_and_the_download_resumes(civ_settings, civitai):
    standin, cat = civitai
    lora = cat.lora.files[0]
    standin.gate_after = 1 << 20  # each storage answer stops after 1 MiB until the gate opens
    settings = civ_settings.with_(connections=1)
    spec = ModelSpec(id="lora", source=f"civitai:{cat.lora.id}")
    with Store(settings.db_path) as store, Manager(settings, store) as manager:
        ids = manager.submit(build_plan([spec], settings, store))
        run_until(manager, ids, store, lambda st: st.get("lora").bytes_done >= 1 << 20)
        standin.clock.advance(standin.ttl + 1)  # while paused, the signed URL expired
        standin.gate.set()
        standin.gate_after = None
        manager.resume("lora")
        [row] = manager.run(ids)
        events = [e.message for e in store.events("lora")]
    assert row.state == "done" and row.verified
    assert dest_path(settings, row).read_bytes() == lora.data
    storage = standin.seen("storage")
    assert any(r.status == 403 for r in storage), "the test must hit an expired signature"
    assert any("signed URL expired" in m for m in events)
    resumed = [r for r in storage if r.status == 206 and r.headers.get("range", "").startswith("bytes=")
               and r.headers["range"] not in ("bytes=0-0",) and not r.headers["range"].startswith("bytes=0-")]
    assert resumed, f"the download did not resume past the first byte: {[r.headers.get('range') for r in storage]}"
    assert all("authorization" not in r.headers for r in storage)


def test_storage_that_refuses_every_fresh_url_fails_with_the_reason(civ_settings, civitai):
    standin, cat = civitai
    standin.ttl = -1  # every signature is already expired
    [row] = fetch([ModelSpec(id="lora", source=f"civitai:{cat.lora.id}", dest="loras/l.safetensors")], civ_settings)
    assert row.state == "failed" and "403" in row.error and "signed URL" in row.error
    assert not (civ_settings.models_dir / "loras/l.safetensors").exists()


def test_civitai_down_at_first_is_retried_and_then_names_the_file(civ_settings, civitai):
    standin, cat = civitai
    standin.api_unavailable = 1  # the plan's question gets a 503: the download waits with a placeholder dest
    [row] = fetch([ModelSpec(id="lora", source=f"civitai:{cat.lora.id}")], civ_settings.with_(max_attempts=3))
    assert row.state == "done" and row.dest == f"loras/{cat.lora.files[0].name}"
    with Store(civ_settings.db_path) as store:
        events = [e.message for e in store.events("lora")]
    assert any("CivitAI names the file" in m for m in events)


def test_a_manifest_model_without_dest_is_fetched_and_found_in_place_after_a_restart(civ_settings, civitai, tmp_path):
    standin, cat = civitai
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"models:\n  - id: style\n    source: '{standin.url}/models/100001?modelVersionId={cat.lora.id}'\n")
    catalog = load_catalog([manifest], civ_settings.models_dir, endpoints_of(civ_settings))
    [row] = fetch(list(catalog.models.values()), civ_settings)
    assert row.state == "done" and row.dest == f"loras/{cat.lora.files[0].name}"
    asked = len(standin.requests)
    [again] = fetch(list(catalog.models.values()), civ_settings)
    assert again.state == "done" and len(standin.requests) == asked, "a file in place needs no network"


def test_downloader_add_takes_a_civitai_link_without_dest(civ_settings, civitai):
    standin, cat = civitai
    link = f"{standin.url}/models/100001?modelVersionId={cat.lora.id}"
    result = CliRunner().invoke(main, ["add", link], env=cli_env(civ_settings, CIVITAI_TOKEN=TOKEN,
                                                                   CIVITAI_ENDPOINT=standin.url))
    assert result.exit_code == 0, result.output
    placed = civ_settings.models_dir / "loras" / cat.lora.files[0].name
    assert placed.read_bytes() == cat.lora.files[0].data
    assert TOKEN not in result.output
    bad = CliRunner().invoke(main, ["add", "https://civitai.com/models/100001"], env=cli_env(civ_settings))
    assert bad.exit_code == 2 and "modelVersionId" in bad.output
