"""The web UI in a real browser: the real app under waitress, real aria2c downloads from a slow loopback CDN,
driven through headless Chromium with Playwright (Debian's /usr/bin/chromium; Playwright never downloads one).

Also takes a screenshot of the downloads page with one file paused and one mid-way; with UPDATE_SCREENSHOTS=1
it replaces docs/screenshots/downloads.png (the README's picture), otherwise it goes to the test's tmp folder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from downloader.config import Settings
from downloader.manifest import load_catalog
from downloader.service import DownloadService
from tests.conftest import served, wait_service_started
from tests.servers import FileServer
from web import create_app
from web.auth import AuthConfig

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

REPO = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = REPO / "docs" / "screenshots" / "downloads.png"
PASSWORD = "pw-for-tests"
FILE_SIZE = 6 << 20
RATE = 250_000  # bytes/s per connection: with 2 connections a 6 MiB file takes ~13 s, long enough to watch


@dataclass
class Web:
    url: str
    svc: DownloadService
    settings: Settings
    cdn: FileServer
    blobs: dict[str, Any]


@pytest.fixture
def web(settings: Settings, make_blob, manifest) -> Iterator[Web]:
    """A manifest with one preset of two slow files, the service running, the app served by waitress."""
    settings = settings.with_(connections=2)
    blobs = {name: make_blob(FILE_SIZE, f"{name}.bin") for name in ("a", "b", "c")}
    with FileServer(rate_limit=RATE) as cdn:
        for name, blob in blobs.items():
            cdn.add_file(f"/files/{name}.bin", blob.path)
        path = manifest(
            f"""
            presets:
              wan-test:
                description: "Two small files standing in for a WAN 2.2 preset"
                models: [model-a, model-b]
            models:
              - id: model-a
                source: {cdn.url}/files/a.bin
                dest: diffusion_models/a.safetensors
                size: {FILE_SIZE}
                sha256: "{blobs["a"].sha256}"
              - id: model-b
                source: {cdn.url}/files/b.bin
                dest: vae/b.safetensors
                size: {FILE_SIZE}
                sha256: "{blobs["b"].sha256}"
            """
        )
        svc = DownloadService(settings, catalog=load_catalog([path], settings.models_dir))
        svc.start()
        wait_service_started(svc)
        app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
        try:
            with served(app) as url:
                yield Web(url, svc, settings, cdn, blobs)
        finally:
            svc.stop()


def login(page: Any, web: Web, path: str = "/downloads") -> None:
    page.goto(web.url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_test_id("password").fill("wrong")
    page.get_by_test_id("login-submit").click()
    expect(page.locator(".flash-error")).to_have_text("Wrong password.")
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(web.url + path)


def progress_of(page: Any, download_id: str) -> float:
    return float(page.locator(f'.dl[data-id="{download_id}"] progress').evaluate("e => e.value"))


def test_start_preset_watch_pause_resume_until_done(web: Web, page: Any) -> None:
    login(page, web)
    section = page.locator('.preset[data-preset="wan-test"]')
    row_a = section.locator('.dl[data-id="model-a"]')
    row_b = section.locator('.dl[data-id="model-b"]')
    expect(row_a.locator(".badge.state")).to_have_text("available")
    expect(page.get_by_test_id("headline")).to_have_text("Nothing started yet")
    expect(row_a.locator('[data-action="start"]')).to_be_visible()
    expect(row_a.locator('[data-action="pause"]')).to_be_hidden()

    section.get_by_test_id("start-preset").click()
    # Updated in place by polling: no navigation happens.
    expect(row_a.locator(".badge.state")).to_have_text("downloading", timeout=20_000)
    expect(section.get_by_test_id("start-preset")).to_be_hidden()
    expect(page).to_have_url(web.url + "/downloads")

    # The bar moves: some progress, short of 100 %, then more.
    page.wait_for_function(
        """() => { const p = document.querySelector('.dl[data-id="model-a"] progress');
                   return p && p.value > 0 && p.value < 100; }""",
        timeout=20_000,
    )
    first = progress_of(page, "model-a")
    page.wait_for_function(
        f"""() => document.querySelector('.dl[data-id="model-a"] progress').value > {first}""", timeout=20_000
    )
    assert progress_of(page, "model-a") < 100, "too fast to watch: slow the CDN down"
    expect(row_a.locator(".speed")).to_have_text(re.compile(r"^\d+(\.\d)? (B|KiB|MiB)/s$"))
    expect(row_a.locator(".eta")).to_have_text(re.compile(r"^ETA \d+:\d\d:\d\d$"))
    expect(row_a.locator(".pct")).to_have_text(re.compile(r"^\d+\.\d%$"))

    # Pause one file: its badge says so, its bytes stop growing, the other keeps going.
    row_a.locator('[data-action="pause"]').click()
    expect(row_a.locator(".badge.state")).to_have_text("paused")
    expect(row_a.locator('[data-action="resume"]')).to_be_visible()
    expect(row_a.locator('[data-action="pause"]')).to_be_hidden()
    expect(row_a.locator(".speed")).to_have_text("")
    held = web.svc.get("model-a").bytes_done
    shown = row_a.locator(".bytes").inner_text()
    b_before = progress_of(page, "model-b")
    # A while later (the other file, still downloading, has moved on: the page has polled since), nothing moved.
    page.wait_for_function(
        f"""() => document.querySelector('.dl[data-id="model-b"] progress').value >= {b_before} + 5""", timeout=10_000
    )
    assert web.svc.get("model-a").state == "paused"
    assert web.svc.get("model-a").bytes_done == held, "a paused download must not grow"
    assert row_a.locator(".bytes").inner_text() == shown
    assert 0 < held < FILE_SIZE
    page.wait_for_function(
        f"""() => document.querySelector('.dl[data-id="model-b"] progress').value > {b_before}""", timeout=10_000
    )
    expect(page.get_by_test_id("headline")).to_have_text("Downloading")
    expect(page.locator('[data-count="paused"] .n')).to_have_text("1")

    # The screenshot: one file paused part-way, the other downloading.
    b_now = progress_of(page, "model-b")
    assert 0 < b_now < 100, f"model-b should be mid-way for the screenshot, is at {b_now}%"
    page.set_viewport_size({"width": 1280, "height": 640})  # full_page: as tall as the content, no empty band
    shot = DOCS_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else web.settings.workspace / "downloads.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.set_viewport_size({"width": 1280, "height": 900})

    row_a.locator('[data-action="resume"]').click()
    expect(row_a.locator(".badge.state")).to_have_text(re.compile("queued|downloading|verifying|done"))

    for row in (row_a, row_b):
        expect(row.locator(".badge.state")).to_have_text("done", timeout=120_000)
        expect(row.locator("progress")).to_have_attribute("value", "100")
        expect(row.locator(".pct")).to_have_text("100.0%")
        expect(row.locator(".verified")).to_be_visible()
        expect(row.locator("form[data-action-form]:visible")).to_have_count(0)
    expect(page.get_by_test_id("headline")).to_have_text("All done")
    expect(page.get_by_test_id("files")).to_have_text("2 of 2 files done")
    expect(page.get_by_test_id("total-bytes")).to_have_text("12.0 MiB / 12.0 MiB")
    expect(page.get_by_test_id("ready")).to_have_attribute("data-ready", "yes")
    expect(page.get_by_test_id("ready")).to_have_text("ComfyUI ready")
    expect(page.locator('[data-count="done"] .n')).to_have_text("2")
    expect(section.get_by_test_id("preset-state")).to_have_text("done")
    expect(section.locator('[data-field="done"]')).to_have_text("2")
    models = web.settings.models_dir
    assert (models / "diffusion_models/a.safetensors").read_bytes() == web.blobs["a"].data
    assert (models / "vae/b.safetensors").read_bytes() == web.blobs["b"].data

    # A reload renders the same state on the server (the page works without JavaScript too).
    page.reload()
    expect(page.get_by_test_id("headline")).to_have_text("All done")
    expect(row_a.locator(".badge.state")).to_have_text("done")


def test_add_form_shows_api_errors_and_status_page_shows_progress(web: Web, page: Any) -> None:
    login(page, web)
    # The server unreachable: a small note says so, and goes away once polling gets through again.
    page.route("**/downloads/live", lambda route: route.abort())
    expect(page.get_by_test_id("conn-note")).to_contain_text("Connection lost")
    page.unroute("**/downloads/live")
    expect(page.get_by_test_id("conn-note")).to_be_hidden(timeout=20_000)

    other = page.get_by_test_id("other-downloads")
    error = page.get_by_test_id("add-error")
    expect(other).to_be_hidden()
    expect(error).to_be_hidden()
    source = f"{web.cdn.url}/files/c.bin"

    # A file name that climbs out of the models dir: refused, said next to the form, nothing queued.
    page.get_by_test_id("add-source").fill(source)
    page.get_by_test_id("add-folder").select_option("loras")
    page.get_by_test_id("add-filename").fill("../../evil.bin")
    page.get_by_test_id("add-submit").click()
    expect(error).to_be_visible()
    expect(error).to_contain_text("..")
    expect(error).to_contain_text("escape the models dir")

    # A malformed sha256: refused the same way.
    page.get_by_test_id("add-filename").fill("")
    page.get_by_test_id("add-sha256").fill("not-a-sha")
    page.get_by_test_id("add-submit").click()
    expect(error).to_contain_text("sha256")
    expect(error).to_contain_text("64 hex digits")
    assert web.svc.downloads() == []
    expect(other).to_be_hidden()
    expect(page.locator(".dl[data-state]:not([data-state='available'])")).to_have_count(0)

    # A good one: the error goes away, the new row appears under "Other downloads" without a reload.
    page.get_by_test_id("add-sha256").fill(web.blobs["c"].sha256)
    page.get_by_test_id("add-filename").fill("c.safetensors")
    page.get_by_test_id("add-submit").click()
    expect(page.get_by_test_id("add-ok")).to_contain_text("Queued c")
    expect(error).to_be_hidden()
    expect(other).to_be_visible()
    row_c = other.locator('.dl[data-id="c"]')
    expect(row_c.locator(".dest-text")).to_have_text("loras/c.safetensors")
    expect(row_c.locator(".badge.state")).to_have_text("downloading", timeout=20_000)
    page.wait_for_function(
        """() => { const p = document.querySelector('.dl[data-id="c"] progress'); return p && p.value > 0; }""",
        timeout=20_000,
    )
    assert [r.id for r in web.svc.downloads()] == ["c"]

    # Installation status: components as cards, the download component with its progress bar.
    log = web.settings.workspace / "comfyui.log"
    log.write_text("starting ComfyUI\nTo see the GUI go to: http://0.0.0.0:8188\n")
    web.svc.store.set_component("comfyui", "done", "ComfyUI is up on :8188", str(log))
    page.get_by_test_id("nav-installation-status").click()
    expect(page).to_have_url(web.url + "/installation-status")
    expect(page.get_by_test_id("nav-installation-status")).to_have_class(re.compile(r"\bactive\b"))
    downloads = page.locator('.comp[data-component="model downloads"]')
    expect(downloads.get_by_test_id("component-state")).to_have_text("running")
    expect(downloads.get_by_test_id("component-message")).to_contain_text("0 of 1 file(s) done")
    bar = downloads.get_by_test_id("component-progress")
    expect(bar).to_be_visible()
    page.wait_for_function(
        """() => document.querySelector('.comp[data-component="model downloads"] progress').value > 0"""
    )
    first = float(bar.evaluate("e => e.value"))
    page.wait_for_function(  # kept live by status.js
        f"""() => document.querySelector('.comp[data-component="model downloads"] progress').value > {first}""",
        timeout=15_000,
    )
    expect(page.locator('.comp[data-component="aria2"]')).to_be_visible()
    comfy = page.locator('.comp[data-component="comfyui"]')
    expect(comfy.get_by_test_id("component-state")).to_have_text("done")
    expect(comfy.locator("details.comp-log")).not_to_have_attribute("open", "")  # done: log collapsed
    expect(comfy.get_by_test_id("component-log")).to_contain_text("0.0.0.0:8188", use_inner_text=False)
    expect(downloads.locator("details.comp-log")).to_have_attribute("open", "")
    expect(downloads.get_by_test_id("component-log")).to_contain_text("c")
    # A component reported later shows up without a reload.
    web.svc.store.set_component("jupyterlab", "running", "starting JupyterLab on :8888")
    jupyter = page.locator('.comp[data-component="jupyterlab"]')
    expect(jupyter.get_by_test_id("component-state")).to_have_text("running")
    expect(jupyter.get_by_test_id("component-message")).to_have_text("starting JupyterLab on :8888")
    expect(page.get_by_test_id("overall-text")).to_have_text(re.compile(r"^\d+\.\d% complete$"))

    # Without JavaScript the buttons are plain form posts: the server answers with a redirect and a flash.
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    try:
        nojs = context.new_page()
        login(nojs, web)
        row_c = nojs.locator('.dl[data-id="c"]')
        expect(row_c.locator('[data-action="pause"]')).to_be_visible()
        row_c.locator('[data-action="pause"]').click()
        expect(nojs).to_have_url(web.url + "/downloads")
        expect(nojs.locator(".flash-info")).to_have_text("pause: c")
        deadline = time.monotonic() + 10
        while web.svc.get("c").state != "paused" and time.monotonic() < deadline:
            time.sleep(0.1)
        nojs.reload()
        expect(row_c.locator(".badge.state")).to_have_text("paused")
        expect(row_c.locator('[data-action="resume"]')).to_be_visible()
    finally:
        context.close()
