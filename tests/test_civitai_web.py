"""Pasted sources through the web API (issue #14): a CivitAI link without dest, a hub `blob/` link, and the add
form's "automatic" folder; bad input gets a clear 4xx and no row. Flask's test client against a running service;
real aria2c, loopback stand-ins for CivitAI and the hub."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from downloader.civitai_api import NEEDS_TOKEN
from downloader.service import DownloadService
from tests.civitai_standin import TOKEN, CivitaiStandin, populate
from tests.conftest import wait_service_started
from tests.test_web_api import BEARER, PASSWORD, wait_states
from web import create_app
from web.auth import AuthConfig


@pytest.fixture
def civitai():
    with CivitaiStandin() as standin:
        yield standin, populate(standin)


@pytest.fixture
def svc(settings, civitai, hub) -> Iterator[DownloadService]:
    standin, _ = civitai
    service = DownloadService(settings.with_(civitai_endpoint=standin.url, civitai_token=TOKEN, hf_endpoint=hub.url))
    service.start()
    wait_service_started(service)
    yield service
    service.stop()


@pytest.fixture
def client(svc):
    return create_app(svc.settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD")).test_client()


def test_a_civitai_link_without_dest_is_queued_named_and_fetched(client, svc, civitai):
    standin, cat = civitai
    link = f"{standin.url}/models/{cat.lora.model_id}?modelVersionId={cat.lora.id}"
    res = client.post("/api/downloads", headers=BEARER, json={"source": link})
    assert res.status_code == 201, res.get_json()
    row = res.get_json()
    name = cat.lora.files[0].name
    assert (row["id"], row["source"], row["dest"]) == (f"civitai-{cat.lora.id}", f"civitai:{cat.lora.id}", f"loras/{name}")
    done = wait_states(client, [row["id"]])[row["id"]]
    assert done["verified"] is True and done["sha256_origin"] == "civitai"
    assert (svc.settings.models_dir / "loras" / name).read_bytes() == cat.lora.files[0].data
    page = client.get("/downloads", headers=BEARER).get_data(as_text=True)
    assert TOKEN not in page and TOKEN not in client.get("/api/downloads", headers=BEARER).get_data(as_text=True)


def test_a_hub_blob_link_is_a_hub_source_with_the_hubs_sha256(client, svc, hub, make_blob):
    blob = make_blob(1 << 20)
    hub.add_file("Org/Wan", "split_files/loras/w.safetensors", blob.path)
    link = f"{hub.url}/Org/Wan/blob/main/split_files/loras/w.safetensors"
    res = client.post("/api/downloads", headers=BEARER, json={"source": link, "folder": "loras"})
    assert res.status_code == 201, res.get_json()
    row = res.get_json()
    assert (row["source"], row["revision"], row["dest"]) == ("hf://Org/Wan/split_files/loras/w.safetensors", "main",
                                                              "loras/w.safetensors")
    done = wait_states(client, [row["id"]])[row["id"]]
    assert done["sha256"] == blob.sha256 and done["sha256_origin"] == "hub"


def test_the_add_forms_automatic_folder_is_for_civitai(client, svc, civitai):
    standin, cat = civitai
    res = client.post("/api/downloads", headers=BEARER, json={"source": f"civitai:{cat.checkpoint.id}", "folder": "", "filename": ""})
    assert res.status_code == 201 and res.get_json()["dest"] == f"checkpoints/{cat.checkpoint.files[0].name}"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"source": "https://example.com/x.safetensors", "folder": ""}, 400, "folder"),
        ({"source": "civitai:2000001", "folder": "loras"}, 400, "CivitAI names its files"),
        ({"source": "https://civitai.com/models/100001"}, 400, "modelVersionId"),
        ({"source": "https://huggingface.co/datasets/o/d/blob/main/x.json", "dest": "loras/x.json"}, 400, "dataset"),
        ({"source": "civitai:2000003"}, 422, NEEDS_TOKEN),  # the gated version, and this service has a token...
        ({"source": "civitai:9999999"}, 422, "no such model version"),
    ],
)
def test_bad_pasted_sources_get_a_clear_4xx_and_no_row(client, svc, civitai, body, status, says):
    if says == NEEDS_TOKEN:
        svc.settings = svc.settings.with_(civitai_token=None)  # ...that this case takes away
    res = client.post("/api/downloads", headers=BEARER, json=body)
    assert res.status_code == status, res.get_json()
    assert says.lower() in res.get_json()["error"].lower()
    assert svc.downloads() == []
