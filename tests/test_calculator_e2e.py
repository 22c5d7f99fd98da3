"""The video calculator in a real browser: the app under waitress with the shipped WAN 2.2 manifest, driven through
headless Chromium (Debian's /usr/bin/chromium) with Playwright. Inputs change, results update in place, the
address bar keeps a shareable query; and without JavaScript the same page works as a plain form.

Writes a screenshot of the page to the temp folder (video-calculator.png).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from downloader.manifest import load_catalog
from downloader.service import DownloadService
from tests.conftest import served
from web import create_app
from web.auth import AuthConfig

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = Path(tempfile.gettempdir()) / "video-calculator.png"
PASSWORD = "pw-for-calculator-tests"
API_PATH = "/api/video-calculator"


@pytest.fixture
def url(settings) -> Iterator[str]:
    """The app served by waitress (the download manager is not started: the calculator does not need it)."""
    svc = DownloadService(settings, catalog=load_catalog([REPO / "manifests" / "wan22.yaml"], settings.models_dir))
    app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
    try:
        with served(app) as url:
            yield url
    finally:
        svc.stop()


def new_page(browser: Any, errors: list[str], **context: Any) -> Any:
    """A fresh context at 1280 px, dark. JavaScript errors and failed GETs are collected; the calculator API's
    400 for malformed input is expected where a test types one, so those are left out."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark", **context)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}")
          if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    pg.on("response", lambda r: errors.append(f"GET {r.url} -> {r.status}")
          if r.request.method == "GET" and r.status >= 400 and API_PATH not in r.url else None)
    return pg


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    errors: list[str] = []
    pg = new_page(browser, errors)
    yield pg
    pg.context.close()
    assert errors == [], errors


def login(page: Any, url: str, path: str = "/video-calculator") -> None:
    page.goto(url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(url + path)


def stat(page: Any, testid: str) -> Any:
    return page.locator("#summary").get_by_test_id(testid)


def test_inputs_change_and_results_update_in_place(url: str, page: Any) -> None:
    login(page, url)
    expect(page.get_by_test_id("nav-video-calculator")).to_have_attribute("aria-current", "page")
    expect(stat(page, "frames")).to_have_text("81")
    expect(stat(page, "tokens")).to_have_text("32,760")
    expect(stat(page, "valid")).to_have_text("Valid settings")
    expect(page.get_by_test_id("calc-submit")).to_be_hidden()  # live: no button needed
    page.evaluate("window.__samePage = true")  # gone if anything navigates

    # Seconds → frames (4n+1), the frames box follows, the URL stays shareable.
    page.get_by_test_id("f-seconds").fill("10")
    expect(stat(page, "frames")).to_have_text("161")
    expect(stat(page, "duration")).to_have_text("10 s")
    expect(page.get_by_test_id("f-frames")).to_have_value("161")
    expect(page).to_have_url(re.compile(r"/video-calculator\?model=wan2\.2-t2v-a14b&width=832&height=480&seconds=10"))
    expect(page.get_by_test_id("share-url")).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/video-calculator\?.*seconds=10"))
    expect(page.get_by_test_id("warnings")).to_contain_text("longer than")

    # An invalid length: what ComfyUI does with it, and the nearest valid ones as links that set the input.
    page.get_by_test_id("f-frames").fill("80")
    expect(page.locator("#by-frames")).to_be_checked()
    expect(stat(page, "valid")).to_have_text("1 problem")
    expect(page.locator("#summary")).to_have_attribute("data-valid", "no")
    expect(page.get_by_test_id("problems")).to_contain_text("80 frames is not 4n+1")
    expect(stat(page, "frames")).to_have_text("77")
    expect(page.get_by_test_id("length")).to_contain_text("ComfyUI makes 20 latent frames")
    page.get_by_test_id("problems").get_by_role("link", name="use 81 frames (5 s)").click()
    expect(page.get_by_test_id("f-frames")).to_have_value("81")
    expect(stat(page, "valid")).to_have_text("Valid settings")
    expect(page.get_by_test_id("messages")).to_be_hidden()
    expect(page).to_have_url(re.compile(r"frames=81"))

    # Another model: its defaults (fps, precision, sizes), its 32-pixel rule, a suggestion that fixes the size.
    page.get_by_test_id("f-model").select_option("wan2.2-ti2v-5b")
    expect(page.get_by_test_id("f-fps")).to_have_attribute("placeholder", "24 (model default)")
    expect(page.get_by_test_id("f-precision-fp16")).to_be_checked()
    expect(page.get_by_test_id("size-presets").locator(".chip")).to_have_text(["1280×704", "704×1280"])
    expect(stat(page, "tokens")).to_have_text("8,190")  # 832×480×81 at 16×16×2×2
    page.get_by_test_id("size-presets").get_by_text("1280×704").click()
    expect(page.get_by_test_id("f-width")).to_have_value("1280")
    expect(page.get_by_test_id("f-height")).to_have_value("704")
    page.get_by_test_id("f-seconds").fill("5")
    expect(stat(page, "frames")).to_have_text("121")
    expect(stat(page, "tokens")).to_have_text("27,280")
    expect(page.get_by_test_id("est-time")).to_contain_text("534.7 s")  # the published anchor, named
    page.get_by_test_id("f-width").fill("1290")
    expect(page.get_by_test_id("problems")).to_contain_text("multiple of 32")
    page.get_by_test_id("problems").get_by_role("link", name="use 1280×704").click()
    expect(page.get_by_test_id("f-width")).to_have_value("1280")
    expect(stat(page, "valid")).to_have_text("Valid settings")
    expect(page.get_by_test_id("files")).to_contain_text("wan2.2_vae.safetensors")

    # The GPU: estimates move, labelled as estimates.
    before = stat(page, "time").inner_text()
    page.get_by_test_id("f-gpu").select_option("h100")
    expect(page.get_by_test_id("summary-title")).to_contain_text("H100 80 GB")
    expect(stat(page, "time")).not_to_have_text(before)
    expect(page.locator("#est-time .est-tag")).to_have_text("estimate")

    # Back to the A14B, 720p on a 24 GB card: the offloading warning; the LoRA: 4 steps, CFG 1.
    page.get_by_test_id("f-model").select_option("wan2.2-t2v-a14b")
    page.get_by_test_id("f-gpu").select_option("rtx4090")
    page.get_by_test_id("size-presets").get_by_text("1280×720").click()
    expect(page.get_by_test_id("warnings")).to_contain_text("offload")
    expect(stat(page, "vram-sub")).to_have_text("over 24 GB")
    page.get_by_test_id("f-lora").check()
    expect(page.get_by_test_id("f-steps")).to_have_attribute("placeholder", "4")
    expect(page.get_by_test_id("comfy")).to_contain_text("4 steps × 1 pass (CFG 1), 4-step LoRAs")
    expect(page.get_by_test_id("files")).to_contain_text("4-step LoRA, high noise")

    # Malformed input: the API's message, the last results kept; fixed, it goes away.
    page.get_by_test_id("f-width").fill("abc")
    expect(page.get_by_test_id("calc-error")).to_contain_text("width: must be a whole number")
    expect(page.get_by_test_id("results")).to_have_class(re.compile("stale"))
    page.get_by_test_id("f-width").fill("832")
    expect(page.get_by_test_id("calc-error")).to_be_hidden()
    expect(stat(page, "tokens")).to_have_text("49,140")  # 832×720×81
    assert page.evaluate("window.__samePage") is True, "the page must update in place, not navigate"

    # The shareable URL, opened fresh, renders the same on the server.
    shown = {k: stat(page, k).inner_text() for k in ("frames", "tokens", "vram", "time")}
    share = page.get_by_test_id("share-url").input_value()
    page.goto(share)
    for k, v in shown.items():
        expect(stat(page, k)).to_have_text(v)
    expect(page.get_by_test_id("f-lora")).to_be_checked()

    page.set_viewport_size({"width": 1280, "height": 700})
    page.goto(url + "/video-calculator?model=wan2.2-t2v-a14b&width=850&height=480&frames=80&gpu=rtx5090")
    expect(stat(page, "valid")).to_have_text("2 problems")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_without_javascript_the_page_is_a_plain_form(url: str, browser: Any) -> None:
    errors: list[str] = []
    page = new_page(browser, errors, java_script_enabled=False)
    try:
        login(page, url)
        expect(page.get_by_test_id("calc-submit")).to_be_visible()
        page.locator("#by-frames + span").click()  # the segmented button
        expect(page.locator("#by-frames")).to_be_checked()
        page.get_by_test_id("f-frames").fill("80")
        page.get_by_test_id("f-gpu").select_option("rtx5090")
        page.get_by_test_id("calc-submit").click()
        expect(page).to_have_url(re.compile(r"by=frames.*gpu=rtx5090|gpu=rtx5090.*by=frames"))
        expect(stat(page, "frames")).to_have_text("77")
        expect(stat(page, "valid")).to_have_text("1 problem")
        expect(page.get_by_test_id("summary-title")).to_contain_text("RTX 5090")
        # A suggestion is an ordinary link to the corrected query.
        page.get_by_test_id("problems").get_by_role("link", name="use 81 frames (5 s)").click()
        expect(stat(page, "frames")).to_have_text("81")
        expect(stat(page, "valid")).to_have_text("Valid settings")
        expect(page.get_by_test_id("f-frames")).to_have_value("81")
        # Size presets are links too.
        page.get_by_test_id("size-presets").get_by_text("480×832").click()
        expect(stat(page, "tokens")).to_have_text("32,760")
        expect(page.get_by_test_id("f-width")).to_have_value("480")
    finally:
        page.context.close()
    assert errors == [], errors
