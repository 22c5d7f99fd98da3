"""`POST /api/workflows`, `/api/workflows/fetch` and the saved workflows, through Flask's test client on a real
DownloadService (real aria2c, SQLite), with a hub stand-in serving what a ComfyUI workflow names by
huggingface.co-style links, a host that is allowed and one that is not (tests/workflow_builder.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from downloader.manifest import load_catalog
from downloader.origins import origin_of
from downloader.service import DownloadService
from downloader.workflows import MAX_WORKFLOW_BYTES
from tests.conftest import test_settings, wait_service_started
from tests.servers import FakeHub, FileServer
from tests.workflow_builder import (
    BYPASSED,
    FETCHED,
    HIGH,
    MUTED,
    NOT_ALLOWED_DEST,
    REPO_ID,
    UNKNOWN_DEST,
    UNUSED,
    VAE,
    Payload,
    hub_paths_asked,
    payloads,
    serve,
    wan_workflow,
)
from web import create_app
from web.auth import AuthConfig

PASSWORD = "workflow-test-password"
BEARER = {"Authorization": f"Bearer {PASSWORD}"}


@dataclass
class World:
    """The stand-ins, the service and the app, and the workflow that names their files."""

    svc: DownloadService
    client: Any
    hub: FakeHub
    cdn: FileServer
    forbidden: FileServer
    files: dict[str, Payload]
    workflow: bytes
    clean: bytes

    @property
    def models_dir(self) -> Path:
        return self.svc.settings.models_dir


def origin_text(url: str) -> str:
    scheme, host, port = origin_of(url)  # type: ignore[misc]
    return f"{scheme}://{host}:{port}"


@pytest.fixture
def world(tmp_path: Path, manifest) -> Iterator[World]:
    files = payloads()
    with FakeHub() as hub, FileServer() as cdn, FileServer() as forbidden:
        serve(hub, cdn, forbidden, files)
        clip = Payload(b"clip" * 10_000)
        cdn.add_bytes("/files/clip_x.bin", clip.data)
        catalog_path = manifest(f"models:\n  - id: clip-x\n    source: {cdn.url}/files/clip_x.bin\n"
                                f"    dest: text_encoders/clip_x.safetensors\n    sha256: {clip.sha256}\n")
        ws = tmp_path / "ws"
        ws.mkdir()
        from downloader.origins import parse_allowed_hosts

        settings = test_settings(ws, hf_endpoint=hub.url, allowed_hosts=parse_allowed_hosts([origin_text(cdn.url)]))
        svc = DownloadService(settings, catalog=load_catalog([catalog_path], settings.models_dir))
        svc.start()
        wait_service_started(svc)
        app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
        try:
            yield World(svc, app.test_client(), hub, cdn, forbidden, files,
                        wan_workflow(hub.url, cdn.url, forbidden.url, files["style_lora"].sha256),
                        wan_workflow(hub.url, cdn.url, forbidden.url, files["style_lora"].sha256, clean=True))
        finally:
            svc.stop()


def table(world: World, body: bytes) -> dict[str, dict[str, Any]]:
    res = world.client.post("/api/workflows", data=body, headers=BEARER, content_type="application/json")
    assert res.status_code == 200, res.get_data(as_text=True)
    return {f"{m['folder']}/{m['name']}": m for m in res.get_json()["models"]}


def wait_present(world: World, body: bytes, dests: tuple[str, ...], timeout: float = 60.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        models = table(world, body)
        if all(models[d]["state"] == "present" for d in dests):
            return models
        states = {d: (models[d]["state"], models[d]["detail"]) for d in dests}
        assert all(s != "failed" for s, _ in states.values()), states
        assert time.monotonic() < deadline, f"timed out: {states}"
        time.sleep(0.1)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- the table, a fetch, the table again ----------------------------------------------------------------------
def test_a_workflow_s_models_are_fetched_and_the_table_then_says_present(world: World) -> None:
    before = table(world, world.workflow)
    hf = f"hf://{REPO_ID}"
    assert {d: (m["state"], m["source"]) for d, m in before.items()} == {
        "diffusion_models/wan_test_high.safetensors": ("missing", f"{hf}/{HIGH} @ main"),
        "vae/wan_test_vae.safetensors": ("missing", f"{hf}/{VAE} @ main"),  # a blob/ link on HF_ENDPOINT's host
        "loras/style_lora.safetensors": ("missing", f"{world.cdn.url}/files/style_lora.safetensors"),
        UNKNOWN_DEST: ("missing", "unknown"),
        NOT_ALLOWED_DEST: ("missing", f"not allowed: {world.forbidden.url}/files/4x_upscaler.pth"),
    }
    assert all(m["id"] is None and m["cannot_fetch"] is None for d, m in before.items() if d in FETCHED)
    assert "DOWNLOADER_ALLOWED_HOSTS" in before[NOT_ALLOWED_DEST]["cannot_fetch"]
    assert "no URL" in before[UNKNOWN_DEST]["cannot_fetch"]
    assert world.hub.requests == [] and world.forbidden.requests == []  # reading a workflow fetches nothing

    res = world.client.post("/api/workflows/fetch", data=world.workflow, headers=BEARER)
    assert res.status_code == 202, res.get_data(as_text=True)
    answer = res.get_json()
    assert sorted(answer["ids"]) == ["style_lora", "wan_test_high", "wan_test_vae"]
    assert sorted((n["folder"], n["name"]) for n in answer["not_fetched"]) == [
        ("controlnet", "mystery_controlnet.safetensors"), ("upscale_models", "4x_upscaler.pth")]

    after = wait_present(world, world.workflow, FETCHED)
    for dest, key in zip(FETCHED, (HIGH, VAE, "style_lora")):
        assert (world.models_dir / dest).read_bytes() == world.files[key].data
        assert after[dest]["size"] == len(world.files[key].data) and after[dest]["id"]
    rows = {r.id: r for r in world.svc.downloads()}
    assert rows["wan_test_high"].verified and rows["wan_test_high"].sha256 == world.files[HIGH].sha256  # the hub's
    assert rows["style_lora"].verified and rows["style_lora"].sha256 == world.files["style_lora"].sha256  # the workflow's
    assert after[UNKNOWN_DEST]["state"] == after[NOT_ALLOWED_DEST]["state"] == "missing"
    # Never asked: the host that is not allowed, and what muted, bypassed or unused entries name.
    assert world.forbidden.requests == []
    assert hub_paths_asked(world.hub) == {HIGH, VAE}
    assert not hub_paths_asked(world.hub) & {MUTED, BYPASSED, UNUSED}
    assert tree(world.models_dir) == sorted(["diffusion_models", "vae", "loras", *FETCHED])

    # Fetching again queues nothing: every fetchable file is present.
    again = world.client.post("/api/workflows/fetch", data=world.workflow, headers=BEARER)
    assert again.status_code == 202 and again.get_json()["ids"] == []


def test_a_file_a_manifest_model_has_comes_from_the_manifest(world: World) -> None:
    doc = {"nodes": [{"id": 1, "type": "CLIPLoader", "mode": 0, "widgets_values": ["clip_x.safetensors", "wan"]}]}
    body = json.dumps(doc).encode()
    [clip] = table(world, body).values()
    assert (clip["state"], clip["source"], clip["folder"]) == ("missing", "manifest model clip-x", "text_encoders")
    res = world.client.post("/api/workflows/fetch", data=body, headers=BEARER)
    assert res.status_code == 202 and res.get_json()["ids"] == ["clip-x"]  # the manifest's own download
    [clip] = wait_present(world, body, ("text_encoders/clip_x.safetensors",)).values()
    assert clip["id"] == "clip-x" and world.svc.get("clip-x").state == "done"


def test_a_dest_held_by_a_download_of_the_same_file_is_that_download(world: World) -> None:
    """A dest another download holds is not refused when it brings the same file: that download is re-queued
    (here: it was paused). Another file at a dest the workflow needs is never overwritten: said, not fetched."""
    vae_source = f"hf://{REPO_ID}/{VAE}"
    added = world.client.post("/api/downloads", json={"source": vae_source, "revision": "main", "id": "my-vae",
                                                      "dest": "vae/wan_test_vae.safetensors"}, headers=BEARER)
    assert added.status_code == 201, added.get_data(as_text=True)
    world.svc.pause("my-vae")
    squatter = {"source": f"{world.cdn.url}/files/clip_x.bin", "id": "squatter", "sha256": Payload(b"clip" * 10_000).sha256,
                "dest": "loras/style_lora.safetensors"}
    other = world.client.post("/api/downloads", json=squatter, headers=BEARER)
    assert other.status_code == 201
    assert world.svc.wait_settled(["squatter"], 30)
    (world.models_dir / "loras/style_lora.safetensors").unlink()  # the other file, gone: the workflow's is missing
    models = table(world, world.clean)
    assert (models["vae/wan_test_vae.safetensors"]["state"], models["vae/wan_test_vae.safetensors"]["id"]) == (
        "missing", "my-vae")
    assert models["vae/wan_test_vae.safetensors"]["detail"] == "paused"
    lora = models["loras/style_lora.safetensors"]
    assert lora["state"] == "missing" and "already the destination of download 'squatter'" in lora["cannot_fetch"]

    res = world.client.post("/api/workflows/fetch", data=world.clean, headers=BEARER)
    assert res.status_code == 202, res.get_data(as_text=True)
    assert sorted(res.get_json()["ids"]) == ["my-vae", "wan_test_high"]
    assert [n["name"] for n in res.get_json()["not_fetched"]] == ["style_lora.safetensors"]
    wait_present(world, world.clean, ("vae/wan_test_vae.safetensors", "diffusion_models/wan_test_high.safetensors"))
    assert world.svc.get("squatter").source.endswith("/files/clip_x.bin")  # untouched
    assert not (world.models_dir / "loras/style_lora.safetensors").exists()


def test_a_file_in_place_counts_and_a_download_added_by_hand_is_the_unknown_file(world: World) -> None:
    """A file already in place is present (also in the folder ComfyUI reads with the workflow's: unet for
    diffusion_models); a file the workflow gives no URL for, added by hand at its name, is that download: when its
    file is gone the table says so, and fetching brings it back."""
    (world.models_dir / "unet").mkdir(parents=True)
    (world.models_dir / "unet" / "wan_test_high.safetensors").write_bytes(b"m" * 1234)
    mystery = Payload(b"controlnet" * 5_000)
    world.cdn.add_bytes("/files/mystery.bin", mystery.data)
    added = world.client.post("/api/downloads", headers=BEARER, json={
        "source": f"{world.cdn.url}/files/mystery.bin", "dest": UNKNOWN_DEST, "sha256": mystery.sha256})
    assert added.status_code == 201, added.get_data(as_text=True)
    download_id = added.get_json()["id"]
    assert world.svc.wait_settled([download_id], 30)
    models = table(world, world.workflow)
    high = models["diffusion_models/wan_test_high.safetensors"]
    assert (high["state"], high["size"], high["id"]) == ("present", 1234, None)
    assert (models[UNKNOWN_DEST]["state"], models[UNKNOWN_DEST]["id"]) == ("present", download_id)
    assert models[UNKNOWN_DEST]["source"] == "unknown"  # what the workflow says; the download is someone's answer

    (world.models_dir / UNKNOWN_DEST).unlink()
    gone = table(world, world.workflow)[UNKNOWN_DEST]
    assert (gone["state"], gone["detail"], gone["cannot_fetch"]) == (
        "missing", "its download is done, but the file is no longer there", None)
    res = world.client.post("/api/workflows/fetch", data=world.workflow, headers=BEARER)
    assert res.status_code == 202 and download_id in res.get_json()["ids"]
    assert "wan_test_high" not in res.get_json()["ids"]  # present: never fetched again
    wait_present(world, world.workflow, (UNKNOWN_DEST, "vae/wan_test_vae.safetensors"))
    assert (world.models_dir / UNKNOWN_DEST).read_bytes() == mystery.data
    assert (world.models_dir / "unet" / "wan_test_high.safetensors").read_bytes() == b"m" * 1234
    assert not (world.models_dir / "diffusion_models").exists()


# --- bad input: a clear error, nothing written ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "the workflow is not valid JSON"),
        (b"", 400, "no workflow: send the workflow's JSON"),
        (b"[1, 2, 3]", 400, "a workflow is a JSON object"),
        (b'{"name": "my notes", "items": [1, 2]}', 400, "not a ComfyUI workflow"),
        (b'{"nodes": {"1": {}}}', 400, "'nodes' must be a list"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nests deeper than"),
        (b" " * (MAX_WORKFLOW_BYTES + 1), 413, "the workflow is 16.0 MiB; the limit is 16.0 MiB"),
    ],
)
@pytest.mark.parametrize("path", ["/api/workflows", "/api/workflows/fetch"])
def test_a_body_that_is_not_a_workflow_is_refused_in_words(world: World, path: str, body: bytes, status: int,
                                                           says: str) -> None:
    res = world.client.post(path, data=body, headers=BEARER, content_type="application/json")
    assert res.status_code == status, res.get_data(as_text=True)
    assert says in res.get_json()["error"]
    assert world.svc.downloads() == [] and tree(world.models_dir) == []


def test_a_large_workflow_within_the_limit_is_read(world: World) -> None:
    """Real workflows with notes and many subgraphs run to megabytes: nothing in the app's set-up refuses them."""
    doc = json.loads(world.workflow)
    doc["extra"]["notes"] = "x" * (12 * 1024 * 1024)
    body = json.dumps(doc).encode()
    assert MAX_WORKFLOW_BYTES > len(body) > 12 * 1024 * 1024
    assert len(table(world, body)) == 5
    from io import BytesIO  # and as a file picked in the page's form (no JavaScript)

    res = world.client.post("/workflows/check", headers=BEARER, content_type="multipart/form-data",
                            data={"workflow": (BytesIO(body), "big.json")})
    assert res.status_code == 200 and res.get_data(as_text=True).count('data-testid="wf-row"') == 5


def test_names_that_would_leave_the_models_folder_are_shown_and_never_written(world: World, tmp_path: Path) -> None:
    doc = {"nodes": [
        {"id": 1, "type": "VAELoader", "mode": 0, "widgets_values": ["../../../escaped.safetensors"],
         "properties": {"models": [{"name": "../../../escaped.safetensors", "directory": "vae",
                                    "url": f"https://huggingface.co/{REPO_ID}/resolve/main/{VAE}"}]}},
        {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["x.safetensors"],
         "properties": {"models": [{"name": "x.safetensors", "directory": "../../../tmp",
                                    "url": f"https://huggingface.co/{REPO_ID}/resolve/main/{VAE}"}]}},
    ]}
    body = json.dumps(doc).encode()
    models = table(world, body)
    assert models["vae/../../../escaped.safetensors"]["source"].startswith("invalid: dest 'vae/../../../escaped")
    assert "is not one of ComfyUI's model folders" in models["../../../tmp/x.safetensors"]["source"]
    assert models["loras/x.safetensors"]["source"] == "unknown"  # what the core loader itself reads: no URL for it
    res = world.client.post("/api/workflows/fetch", data=body, headers=BEARER)
    assert res.status_code == 202 and res.get_json()["ids"] == []
    assert world.svc.downloads() == [] and world.hub.requests == []
    assert not list(tmp_path.rglob("escaped.safetensors")) and tree(world.models_dir) == []


# --- who may ask -----------------------------------------------------------------------------------------------
def test_the_workflow_api_needs_the_password_and_a_csrf_token_with_a_cookie(world: World) -> None:
    for path in ("/api/workflows", "/api/workflows/fetch"):
        res = world.client.post(path, data=world.workflow)
        assert res.status_code == 401 and "authentication required" in res.get_json()["error"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"me:{PASSWORD}".encode()).decode()}
    assert world.client.post("/api/workflows", data=world.workflow, headers=basic).status_code == 200
    assert world.client.get("/api/workflows/saved").status_code == 401
    # Logged in with a cookie: a post without the page's CSRF token is refused, with it answered.
    page = world.client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    world.client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/downloads"})
    landed = world.client.get("/downloads").get_data(as_text=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', landed).group(1)
    refused = world.client.post("/api/workflows/fetch", data=world.workflow, content_type="application/json")
    assert refused.status_code == 400 and "CSRF" in refused.get_json()["error"]
    assert world.svc.downloads() == []
    ok = world.client.post("/api/workflows", data=world.workflow, headers={"X-CSRFToken": csrf},
                           content_type="application/json")
    assert ok.status_code == 200 and len(ok.get_json()["models"]) == 5


# --- saved workflows ---------------------------------------------------------------------------------------------
def test_saved_workflows_are_listed_with_their_missing_counts(world: World, tmp_path: Path) -> None:
    folder = world.svc.settings.workspace / "ComfyUI" / "user" / "default" / "workflows"
    res = world.client.get("/api/workflows/saved", headers=BEARER)
    assert res.status_code == 200 and res.get_json()["workflows"] == []
    assert "no workflows saved yet" in res.get_json()["note"]
    folder.mkdir(parents=True)
    (folder / "wan test.json").write_bytes(world.workflow)
    (folder / "clean.json").write_bytes(world.clean)
    (folder / "broken.json").write_text("{not json")
    (folder / "notes.txt").write_text("not listed")
    outside = tmp_path / "secret.json"
    outside.write_bytes(world.clean)
    (folder / "link-out.json").symlink_to(outside)
    (folder / "link-in.json").symlink_to(folder / "clean.json")
    os.mkfifo(folder / "pipe.json")

    listed = {w["name"]: w for w in world.client.get("/api/workflows/saved", headers=BEARER).get_json()["workflows"]}
    assert sorted(listed) == ["broken.json", "clean.json", "link-in.json", "link-out.json", "pipe.json", "wan test.json"]
    assert (listed["wan test.json"]["models"], listed["wan test.json"]["missing"]) == (5, 5)
    assert (listed["clean.json"]["models"], listed["clean.json"]["missing"], listed["clean.json"]["error"]) == (3, 3, None)
    assert listed["link-in.json"]["missing"] == 3  # a link that stays inside the folder is followed
    assert "not valid JSON" in listed["broken.json"]["error"]
    assert "leads outside" in listed["link-out.json"]["error"]
    assert "not a regular file" in listed["pipe.json"]["error"]

    one = world.client.get("/api/workflows/saved/wan%20test.json", headers=BEARER)
    assert one.status_code == 200 and len(one.get_json()["models"]) == 5
    assert world.client.get("/api/workflows/saved/link-out.json", headers=BEARER).status_code == 403
    for bad, status, says in (("..%2Fsecret.json", 400, "is a path, not a name"), ("nope.json", 404, "no saved"),
                              ("notes.txt", 400, "not a .json file"), ("sub/../clean.json", 400, "is a path")):
        res = world.client.get(f"/api/workflows/saved/{bad}", headers=BEARER)
        assert (res.status_code, says in res.get_json()["error"]) == (status, True), (bad, res.get_json())
        res = world.client.post(f"/api/workflows/saved/{bad}/fetch", headers=BEARER)
        assert (res.status_code, says in res.get_json()["error"]) == (status, True), (bad, res.get_json())
    assert world.svc.downloads() == []

    res = world.client.post("/api/workflows/saved/clean.json/fetch", headers=BEARER)
    assert res.status_code == 202 and len(res.get_json()["ids"]) == 3
    wait_present(world, world.clean, FETCHED)
    listed = {w["name"]: w for w in world.client.get("/api/workflows/saved", headers=BEARER).get_json()["workflows"]}
    assert listed["clean.json"]["missing"] == 0 and listed["wan test.json"]["missing"] == 2
    assert world.forbidden.requests == []


# --- the page's card -------------------------------------------------------------------------------------------
def test_the_card_is_on_the_downloads_page_and_its_fragments_render_the_table(world: World) -> None:
    page = world.client.get("/downloads", headers=BEARER).get_data(as_text=True)
    assert 'id="workflows"' in page and 'data-testid="wf-file"' in page and "workflows.js" in page
    # the card is outside the part of the page the live poll swaps
    live = world.client.get("/downloads/live", headers=BEARER).get_data(as_text=True)
    assert 'id="workflows"' not in live
    res = world.client.post("/workflows/check", data=world.workflow, content_type="application/json",
                            headers={**BEARER, "HX-Request": "true", "X-Filename": "wan%20test.json"})
    html = res.get_data(as_text=True)
    assert res.status_code == 200 and "Fetch 3 missing" in html and "wan test.json" in html
    assert html.count('data-testid="wf-row"') == 5 and "not allowed: " in html
    bad = world.client.post("/workflows/check", data=b"{", content_type="application/json",
                            headers={**BEARER, "HX-Request": "true"})
    assert bad.status_code == 400 and "not valid JSON" in bad.get_data(as_text=True)


def test_without_javascript_the_card_s_form_posts_the_file(world: World) -> None:
    from io import BytesIO

    res = world.client.post("/workflows/check", headers=BEARER, content_type="multipart/form-data",
                            data={"workflow": (BytesIO(world.workflow), "wan.json")})
    html = res.get_data(as_text=True)
    assert res.status_code == 200 and html.count('data-testid="wf-row"') == 5 and "<title>Workflow models" in html
    res = world.client.post("/workflows/fetch", headers=BEARER, content_type="multipart/form-data",
                            data={"workflow": (BytesIO(world.clean), "clean.json")})
    assert res.status_code == 302 and res.headers["Location"].endswith("/downloads")
    wait_present(world, world.clean, FETCHED)
    empty = world.client.post("/workflows/check", headers=BEARER, content_type="multipart/form-data", data={})
    assert empty.status_code == 400 and "pick a workflow file" in empty.get_data(as_text=True)
    huge = world.client.post("/workflows/fetch", headers=BEARER, content_type="multipart/form-data",
                             data={"workflow": (BytesIO(b" " * (MAX_WORKFLOW_BYTES + 100_000)), "huge.json")})
    assert huge.status_code == 413 and "the limit is 16.0 MiB" in huge.get_data(as_text=True)
    assert sorted(r.id for r in world.svc.downloads()) == ["style_lora", "wan_test_high", "wan_test_vae"]


# --- CivitAI ------------------------------------------------------------------------------------------------------
def test_a_civitai_link_in_a_workflow_is_fetched_through_civitai_endpoint(settings, tmp_path: Path) -> None:
    """A civitai.com download link in a workflow resolves through CIVITAI_ENDPOINT (the stand-in): the file lands
    under the name the workflow gives, verified with the API's sha256, and storage never sees a token."""
    from tests.civitai_standin import TOKEN, CivitaiStandin, populate

    with CivitaiStandin() as civitai:
        lora = populate(civitai).lora
        svc = DownloadService(settings.with_(civitai_endpoint=civitai.url, civitai_token=TOKEN))
        svc.start()
        try:
            wait_service_started(svc)
            client = create_app(svc.settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD")).test_client()
            name = "my_wan_style.safetensors"  # not CivitAI's name: the workflow's widget value is what ComfyUI loads
            doc = {"nodes": [{"id": 1, "type": "LoraLoaderModelOnly", "mode": 0, "widgets_values": [name, 1.0],
                              "properties": {"models": [{"name": name, "directory": "loras",
                                                         "url": f"https://civitai.com/api/download/models/{lora.id}"}]}}]}
            body = json.dumps(doc).encode()
            res = client.post("/api/workflows", data=body, headers=BEARER)
            [model] = res.get_json()["models"]
            assert (model["state"], model["source"]) == ("missing", f"civitai:{lora.id}")
            res = client.post("/api/workflows/fetch", data=body, headers=BEARER)
            assert res.status_code == 202, res.get_data(as_text=True)
            [download_id] = res.get_json()["ids"]
            assert svc.wait_settled([download_id], 60)
            row = svc.get(download_id)
            assert (row.state, row.verified, row.dest) == ("done", True, f"loras/{name}"), row.error
            assert (svc.settings.models_dir / "loras" / name).read_bytes() == lora.files[0].data
            [model] = client.post("/api/workflows", data=body, headers=BEARER).get_json()["models"]
            assert model["state"] == "present"
            assert all("authorization" not in r.headers for r in civitai.seen("storage"))
        finally:
            svc.stop()
