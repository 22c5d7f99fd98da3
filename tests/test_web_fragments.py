"""What the pages' own requests get (htmx, with HX-Request: true): the fragments they poll and swap in, and the
answers to their forms. Through Flask's test client, on a real DownloadService (real aria2c, SQLite)."""

from __future__ import annotations

import json
import re

from tests.test_web_api import BEARER, app, client, files, login, svc, wait_states  # noqa: F401  (fixtures)

HX = {"HX-Request": "true"}


def test_fragments_need_the_login(client):  # noqa: F811
    for path in ("/downloads/live", "/installation-status/live"):
        res = client.get(path, headers=HX)
        assert res.status_code == 302 and "/login" in res.headers["Location"], path


def test_the_downloads_fragment_is_what_the_page_shows_and_follows_the_state(client):  # noqa: F811
    login(client)
    page = client.get("/downloads").get_data(as_text=True)
    live = client.get("/downloads/live", headers=HX).get_data(as_text=True)
    assert 'data-testid="headline" data-tone="">Nothing started yet' in live
    assert live.count('class="dl"') == 2 and live.strip() in page, "the page renders the same fragment inside it"
    assert "Start preset" in live and 'data-action-form="pause"' in live
    assert "<html" not in live and "Add a download" not in live
    client.post("/api/presets/small/start", headers=BEARER)
    wait_states(client, ["a", "b"])
    live = client.get("/downloads/live", headers=HX).get_data(as_text=True)
    assert ">All done</h1>" in live and "2 of 2 files done" in live and "ComfyUI ready" in live
    assert "Start preset" not in live and "sha256 &#10003;" in live
    # A done row offers no button: every action form of it is hidden.
    row = re.search(r'<div class="dl" id="dl-a".*?<div class="dl-actions">(.*?)</div>', live, re.DOTALL).group(1)
    assert row.count("<form") == 5 and row.count(" hidden>") == 5


def test_the_page_s_buttons_get_json_and_words_to_flash(client):  # noqa: F811
    token = login(client)
    res = client.post("/api/downloads/all/pause", data={"csrf_token": token}, headers=HX)
    assert res.status_code == 202 and res.get_json() == {"action": "pause", "count": 0}
    assert json.loads(res.headers["HX-Trigger"]) == {"flash": {"message": "Paused 0 downloads.", "category": "info"}}
    refused = client.post("/api/downloads/nope/pause", data={"csrf_token": token}, headers=HX)
    assert refused.status_code == 404 and "nope" in refused.get_json()["error"], "the page flashes the error"


def test_the_add_form_answers_with_its_card(client, cdn):  # noqa: F811
    token = login(client)
    form = {"csrf_token": token, "source": f"{cdn.url}/a.bin", "folder": "loras", "filename": "../../evil.bin"}
    card = client.post("/api/downloads", data=form, headers=HX).get_data(as_text=True)
    assert 'data-testid="add-error"' in card and "escape the models dir" in card
    assert 'value="../../evil.bin"' in card and '<option value="loras" selected>' in card, "what was typed stays"
    card = client.post("/api/downloads", data={**form, "filename": "x.safetensors"}, headers=HX).get_data(as_text=True)
    assert 'data-testid="add-ok"' in card and "Queued x \u2192 loras/x.safetensors." in card
    assert 'value="../../evil.bin"' not in card and 'id="add-source"' in card and 'value=""' in card
    assert "add-error" not in card


def test_the_status_fragment_renders_the_components(client, svc):  # noqa: F811
    login(client)
    svc.store.set_component("comfyui", "done", "up on :8188")
    live = client.get("/installation-status/live", headers=HX).get_data(as_text=True)
    assert 'data-component="comfyui"' in live and "up on :8188" in live and "% complete" in live
    assert 'data-component="aria2"' in live and "<html" not in live
