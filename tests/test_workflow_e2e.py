"""The downloads page's "Workflow models" card in a real browser (headless Chromium through Playwright): pick or
drop a ComfyUI workflow, see what it needs, fetch what is missing with one button and watch the table turn
present, while the page's live poll goes on; the saved workflows with their missing counts. Real app under
waitress, real DownloadService and aria2c, a hub stand-in and loopback hosts (tests/workflow_builder.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from downloader.manifest import Catalog
from downloader.origins import parse_allowed_hosts
from downloader.service import DownloadService
from tests.conftest import served, wait_service_started
from tests.servers import FakeHub, FileServer
from tests.workflow_builder import (
    FETCHED,
    MUTED,
    Payload,
    hub_paths_asked,
    payloads,
    serve,
    wan_workflow,
)
from web import create_app
from web.auth import AuthConfig

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect
PASSWORD = "pw-for-workflow-tests"


@dataclass
class Web:
    url: str
    svc: DownloadService
    forbidden: FileServer
    hub: FakeHub
    files: dict[str, Payload]
    workflow: Path
    clean: Path


@pytest.fixture
def web(settings, tmp_path: Path) -> Iterator[Web]:
    files = payloads()
    with FakeHub() as hub, FileServer() as cdn, FileServer() as forbidden:
        serve(hub, cdn, forbidden, files)
        settings = settings.with_(hf_endpoint=hub.url, allowed_hosts=parse_allowed_hosts([cdn.url]))
        sha = files["style_lora"].sha256
        workflow, clean = tmp_path / "wan test.json", tmp_path / "clean.json"
        workflow.write_bytes(wan_workflow(hub.url, cdn.url, forbidden.url, sha))
        clean.write_bytes(wan_workflow(hub.url, cdn.url, forbidden.url, sha, clean=True))
        saved = settings.workspace / "ComfyUI" / "user" / "default" / "workflows"
        saved.mkdir(parents=True)
        (saved / "saved clean.json").write_bytes(clean.read_bytes())
        (saved / "broken.json").write_text("{ not json")
        svc = DownloadService(settings, catalog=Catalog())
        svc.start()
        wait_service_started(svc)
        app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
        try:
            with served(app) as url:
                yield Web(url, svc, forbidden, hub, files, workflow, clean)
        finally:
            svc.stop()


def login(page: Any, web: Web) -> None:
    page.goto(web.url + "/downloads")
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(web.url + "/downloads")


def row(page: Any, name: str) -> Any:
    return page.locator(f'[data-testid="wf-row"][data-name="{name}"]')


def test_pick_a_workflow_fetch_what_is_missing_and_watch_it_arrive(web: Web, page: Any) -> None:
    login(page, web)
    card = page.get_by_test_id("workflows")
    saved = card.locator('[data-testid="wf-saved"][data-name="saved clean.json"]')
    expect(saved.get_by_test_id("wf-saved-count")).to_have_text("3 of 3 missing")
    expect(card.locator('[data-testid="wf-saved"][data-name="broken.json"]')).to_contain_text("cannot be read")
    expect(card.get_by_test_id("wf-fetch-form")).to_be_hidden()  # the table's button does it with JavaScript

    page.get_by_test_id("wf-file").set_input_files(str(web.workflow))
    table = card.get_by_test_id("wf-table")
    expect(table.get_by_test_id("wf-name")).to_have_text("wan test.json")
    expect(table.get_by_test_id("wf-row")).to_have_count(5)
    expect(table.get_by_test_id("wf-summary")).to_have_text("0 of 5 present, 2 cannot be fetched.")
    upscaler = row(page, "4x_upscaler.pth")
    expect(upscaler.get_by_test_id("wf-source")).to_have_text(f"not allowed: {web.forbidden.url}/files/4x_upscaler.pth")
    expect(upscaler.get_by_test_id("wf-state")).to_have_text("missing")
    expect(row(page, "mystery_controlnet.safetensors").get_by_test_id("wf-source")).to_have_text("unknown")
    expect(row(page, "wan_test_vae.safetensors").get_by_test_id("wf-source")).to_have_text(
        "hf://test-org/wan-test/split_files/vae/wan_test_vae.safetensors @ main")
    expect(page.locator('[data-testid="wf-row"][data-name="muted_lora.safetensors"]')).to_have_count(0)

    page.get_by_test_id("wf-fetch").click()
    expect(page.locator(".flash").filter(has_text="Fetching 3 files. 2 cannot be fetched (see the table).")).to_be_visible()
    for dest in FETCHED:
        expect(row(page, dest.rsplit("/", 1)[1]).get_by_test_id("wf-state")).to_have_text("present", timeout=60_000)
    expect(table.get_by_test_id("wf-summary")).to_have_text("3 of 5 present, 2 cannot be fetched.")
    expect(table.get_by_test_id("wf-fetch")).to_have_count(0)  # nothing left that can be fetched
    # The live poll swapped the downloads part of the page meanwhile: the new downloads show there, done, and
    # the card (outside it) kept its table.
    for download_id in ("wan_test_high", "wan_test_vae", "style_lora"):
        expect(page.locator(f'.dl[data-id="{download_id}"] .badge.state')).to_have_text("done", timeout=30_000)
    expect(table.get_by_test_id("wf-row")).to_have_count(5)
    expect(saved.get_by_test_id("wf-saved-count")).to_have_text("all 3 present")
    assert web.forbidden.requests == [] and MUTED not in hub_paths_asked(web.hub)
    for dest in FETCHED:
        assert (web.svc.settings.models_dir / dest).is_file()


def test_drop_a_workflow_show_a_saved_one_and_a_bad_file_says_why(web: Web, page: Any, tmp_path: Path) -> None:
    login(page, web)
    card = page.get_by_test_id("workflows")
    # Drop the file on the card, as from a file manager.
    page.evaluate(
        """([text, name]) => {
             const dt = new DataTransfer();
             dt.items.add(new File([text], name, {type: "application/json"}));
             const zone = document.getElementById("wf-drop");
             zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
             zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
           }""",
        [web.clean.read_text(), "dropped.json"],
    )
    table = card.get_by_test_id("wf-table")
    expect(table.get_by_test_id("wf-name")).to_have_text("dropped.json")
    expect(table.get_by_test_id("wf-fetch")).to_have_text("Fetch 3 missing")

    card.locator('[data-testid="wf-saved"][data-name="saved clean.json"]').get_by_test_id("wf-saved-show").click()
    expect(table.get_by_test_id("wf-name")).to_have_text("saved clean.json")
    expect(table.get_by_test_id("wf-row")).to_have_count(3)
    expect(page).to_have_url(web.url + "/downloads")  # shown in place

    bad = tmp_path / "notes.json"
    bad.write_text('{"title": "my notes"}')
    page.get_by_test_id("wf-file").set_input_files(str(bad))
    expect(card.get_by_test_id("wf-error")).to_contain_text("this JSON is not a ComfyUI workflow")
    expect(card.get_by_test_id("wf-table")).to_have_count(0)
    assert web.svc.downloads() == []


def test_without_javascript_the_card_still_works(web: Web, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, web)
        page.get_by_test_id("wf-file").set_input_files(str(web.workflow))
        page.get_by_test_id("wf-check").click()
        expect(page).to_have_url(re.compile(r"/workflows/check$"))
        expect(page.get_by_test_id("wf-row")).to_have_count(5)
        expect(page.get_by_test_id("wf-saved")).to_have_count(2)  # the plain page lists the saved ones itself
        page.get_by_test_id("wf-file").set_input_files(str(web.clean))
        page.get_by_test_id("wf-fetch-form").click()
        expect(page).to_have_url(web.url + "/downloads")
        expect(page.locator(".flash")).to_have_text("Fetching 3 files.")
    finally:
        context.close()
