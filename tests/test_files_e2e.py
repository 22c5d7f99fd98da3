"""The file manager in a real browser: the real app under waitress (the production server, which buffers request
bodies), a real DownloadService, driven through headless Chromium with Playwright (Debian's /usr/bin/chromium).

Uploads go through the page's own chunked protocol (1 MiB chunks here, so a 2.5 MiB file takes three PUTs).
A screenshot of the page is written to /tmp/files-page.png for people to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from downloader.config import Settings
from downloader.service import DownloadService
from tests.conftest import served, wait_service_started
from web import create_app
from web.auth import AuthConfig

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

SCREENSHOT = Path("/tmp/files-page.png")
PASSWORD = "pw-for-files-e2e"


@dataclass
class Web:
    url: str
    ws: Path
    svc: DownloadService


@pytest.fixture
def web(settings: Settings) -> Iterator[Web]:
    """A small workspace like a pod's, the service running, the app served by waitress."""
    ws = settings.workspace
    (ws / "ComfyUI" / "models" / "loras").mkdir(parents=True)
    (ws / "ComfyUI" / "output").mkdir(parents=True)
    (ws / "ComfyUI" / "models" / "loras" / "wan22-style.safetensors").write_bytes(os.urandom(300_000))
    (ws / "ComfyUI" / "output" / "frame_00001.png").write_bytes(_png())
    (ws / "comfyui.log").write_text("".join(f"[{i:04d}] prompt executed\n" for i in range(2000)))
    (ws / "workflows").mkdir()
    (ws / "workflows" / "wan22-t2v.json").write_text('{"nodes": []}\n')
    (ws / "outside").mkdir()  # a sibling of nothing: just a folder name
    os.symlink("/etc", ws / "etc-link")  # a link leading outside the workspace
    svc = DownloadService(settings)
    svc.start()
    wait_service_started(svc)
    app = create_app(
        settings, svc, test_config={"FILES_UPLOAD_CHUNK": 1 << 20}, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD")
    )
    try:
        with served(app) as url:
            yield Web(url, ws, svc)
    finally:
        svc.stop()


def _png() -> bytes:
    """A valid 2x2 PNG (so the image preview really decodes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x40\x40" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def login(page: Any, web: Web, path: str = "/files") -> None:
    page.goto(web.url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(web.url + path)


def row(page: Any, path: str) -> Any:
    return page.locator(f'tr.fm-row[data-path="{path}"]')


def test_upload_see_rename_delete_through_the_page(web: Web, page: Any, tmp_path: Path) -> None:
    login(page, web)
    expect(page.get_by_test_id("nav-files")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("disk")).to_contain_text("free")

    # Into ComfyUI/models/loras by clicking, no page load; the breadcrumbs follow.
    row(page, "ComfyUI").get_by_test_id("entry-name").click()
    expect(page).to_have_url(web.url + "/files?path=ComfyUI")
    row(page, "ComfyUI/models").get_by_test_id("entry-name").click()
    row(page, "ComfyUI/models/loras").get_by_test_id("entry-name").click()
    expect(page).to_have_url(web.url + "/files?path=ComfyUI/models/loras")
    expect(page.get_by_test_id("breadcrumbs")).to_have_text("ws/ComfyUI/models/loras")
    expect(row(page, "ComfyUI/models/loras/wan22-style.safetensors").get_by_test_id("entry-size")).to_have_text("293.0 KiB")

    # Upload through the page's file picker: three 1 MiB-chunk PUTs, then listed with its size.
    data = os.urandom(2_621_440 + 123)
    source = tmp_path / "my-lora.safetensors"
    source.write_bytes(data)
    page.get_by_test_id("upload-input").set_input_files(str(source))
    item = page.get_by_test_id("upload-item")
    expect(item.locator('[data-field="state"]')).to_have_text("done", timeout=30_000)
    expect(item.locator('[data-field="bytes"]')).to_have_text("2.5 MiB / 2.5 MiB")
    uploaded = row(page, "ComfyUI/models/loras/my-lora.safetensors")
    expect(uploaded).to_be_visible()
    expect(uploaded.get_by_test_id("entry-size")).to_have_text("2.5 MiB")
    target = web.ws / "ComfyUI" / "models" / "loras" / "my-lora.safetensors"
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["my-lora.safetensors", "wan22-style.safetensors"]

    page.set_viewport_size({"width": 1280, "height": 640})
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Rename in the page's dialog; a clash is explained inside the dialog, which stays open to fix the name.
    uploaded.get_by_test_id("rename").click()
    dialog = page.get_by_test_id("dialog")
    expect(dialog).to_be_visible()
    field = page.get_by_test_id("dialog-input")
    expect(field).to_have_value("ComfyUI/models/loras/my-lora.safetensors")
    field.fill("ComfyUI/models/loras/wan22-style.safetensors")
    page.get_by_test_id("dialog-ok").click()
    expect(page.get_by_test_id("dialog-error")).to_contain_text("already exists")
    expect(dialog).to_be_visible()
    field.fill("ComfyUI/models/loras/renamed.safetensors")
    page.get_by_test_id("dialog-ok").click()
    expect(dialog).to_be_hidden()
    renamed = row(page, "ComfyUI/models/loras/renamed.safetensors")
    expect(renamed).to_be_visible()
    expect(uploaded).to_have_count(0)
    assert (target.parent / "renamed.safetensors").read_bytes() == data and not target.exists()

    # Delete with the confirmation in the page: cancelling keeps the file, confirming deletes it.
    renamed.get_by_test_id("delete").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Delete renamed.safetensors?")
    expect(dialog).to_contain_text("2.5 MiB")
    page.get_by_test_id("dialog-cancel").click()
    expect(dialog).to_be_hidden()
    expect(renamed).to_be_visible()
    assert (target.parent / "renamed.safetensors").exists()
    renamed.get_by_test_id("delete").click()
    page.get_by_test_id("dialog-ok").click()
    expect(renamed).to_have_count(0)
    expect(page.locator(".flash").last).to_contain_text("Deleted ComfyUI/models/loras/renamed.safetensors.")
    assert not (target.parent / "renamed.safetensors").exists()

    # The browser's back button walks the folders back.
    page.go_back()
    expect(page).to_have_url(web.url + "/files?path=ComfyUI/models")
    expect(row(page, "ComfyUI/models/loras")).to_be_visible()


def _drop(page: Any, files: dict[str, str]) -> None:
    """Drop files (name -> text) on the page as a person dragging them from the desktop would."""
    dt = page.evaluate_handle(
        """files => { const dt = new DataTransfer();
                      for (const [name, text] of Object.entries(files)) dt.items.add(new File([text], name));
                      return dt; }""",
        files,
    )
    page.dispatch_event("main", "dragenter", {"dataTransfer": dt})
    expect(page.locator("#fm-drop")).to_be_visible()
    page.dispatch_event("main", "dragover", {"dataTransfer": dt})
    page.dispatch_event("main", "drop", {"dataTransfer": dt})
    expect(page.locator("#fm-drop")).to_be_hidden()


def test_new_folder_drop_upload_replace_preview_and_sizes(web: Web, page: Any) -> None:
    login(page, web)
    # A new folder, named in the page's dialog.
    page.get_by_test_id("mkdir").click()
    page.get_by_test_id("dialog-input").fill("my uploads")
    page.get_by_test_id("dialog-ok").click()
    folder = row(page, "my uploads")
    expect(folder).to_be_visible()
    assert (web.ws / "my uploads").is_dir()
    folder.get_by_test_id("entry-name").click()
    expect(page.get_by_test_id("empty")).to_be_visible()

    # Drag and drop two files.
    _drop(page, {"notes.txt": "first line\nsecond line\n", "run.log": "boot\nready\n"})
    expect(page.get_by_test_id("upload-item").locator('[data-field="state"]')).to_have_text(["done", "done"])
    expect(row(page, "my uploads/notes.txt")).to_be_visible()
    expect(row(page, "my uploads/run.log")).to_be_visible()
    assert (web.ws / "my uploads" / "notes.txt").read_text() == "first line\nsecond line\n"

    # Dropping a file that exists asks before replacing it; "Cancel" keeps the old one, "Replace" replaces it.
    page.get_by_test_id("uploads-clear").click()
    _drop(page, {"notes.txt": "changed\n"})
    expect(page.get_by_test_id("dialog")).to_contain_text("already exists")
    page.get_by_test_id("dialog-cancel").click()
    expect(page.get_by_test_id("upload-item").locator('[data-field="state"]')).to_have_text("skipped")
    assert (web.ws / "my uploads" / "notes.txt").read_text() == "first line\nsecond line\n"
    _drop(page, {"notes.txt": "changed\n"})
    page.get_by_test_id("dialog-ok").click()
    expect(page.get_by_test_id("upload-item").last.locator('[data-field="state"]')).to_have_text("done")
    assert (web.ws / "my uploads" / "notes.txt").read_text() == "changed\n"

    # Text preview: the tail of the file.
    row(page, "my uploads/run.log").get_by_test_id("preview").click()
    expect(page.get_by_test_id("preview-text")).to_have_text("boot\nready\n")
    page.get_by_test_id("preview-close").click()
    expect(page.get_by_test_id("preview-dialog")).to_be_hidden()

    # Back to the root through the breadcrumbs: the folder's size on request, the image preview, the log tail.
    page.get_by_test_id("breadcrumbs").get_by_role("link", name="ws").click()
    expect(page).to_have_url(web.url + "/files")
    page.get_by_test_id("sizes").click()
    expect(row(page, "my uploads").get_by_test_id("entry-size")).to_have_text("19 B")
    # Sorting by a column header: folders stay first, files by size, largest first on the second click.
    page.get_by_test_id("sort-size").click()
    expect(page).to_have_url(web.url + "/files?sort=size")
    page.get_by_test_id("sort-size").click()
    expect(page).to_have_url(web.url + "/files?sort=size&order=desc")
    files = page.locator('tr.fm-row[data-type="file"]')
    expect(files.first).to_have_attribute("data-path", "comfyui.log")
    expect(page.locator("tr.fm-row").first).to_have_attribute("data-type", "dir")
    expect(page.locator('th[data-sort-col="size"]')).to_have_attribute("aria-sort", "descending")
    row(page, "comfyui.log").get_by_test_id("preview").click()
    expect(page.get_by_test_id("preview-text")).to_contain_text("[1999] prompt executed")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("preview-dialog")).to_be_hidden()
    row(page, "ComfyUI").get_by_test_id("entry-name").click()
    row(page, "ComfyUI/output").get_by_test_id("entry-name").click()
    row(page, "ComfyUI/output/frame_00001.png").get_by_test_id("preview").click()
    image = page.get_by_test_id("preview-media")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") == 2
    page.get_by_test_id("preview-close").click()


def test_refusals_are_shown_and_nothing_dangerous_is_offered(web: Web, page: Any, expected_failures: list[str]) -> None:
    expected_failures.append("path=..%2F..%2Fetc")
    login(page, web)
    state = row(page, ".downloader")
    expect(state.locator('[data-tag="protected"]')).to_be_visible()
    expect(state.get_by_test_id("delete")).to_be_hidden()
    expect(state.get_by_test_id("rename")).to_be_hidden()
    link = row(page, "etc-link")
    expect(link.locator('[data-tag="blocked"]')).to_have_text("outside the workspace")
    expect(link.get_by_test_id("delete")).to_be_hidden()
    # A refused rename (moving a folder into itself) is explained in the dialog; nothing moves.
    row(page, "workflows").get_by_test_id("rename").click()
    page.get_by_test_id("dialog-input").fill("workflows/inside")
    page.get_by_test_id("dialog-ok").click()
    expect(page.get_by_test_id("dialog-error")).to_contain_text("into itself")
    page.get_by_test_id("dialog-cancel").click()
    assert (web.ws / "workflows" / "wan22-t2v.json").exists()
    # A hostile address in the URL bar gets the page with the reason, not a listing.
    response = page.goto(web.url + "/files?path=..%2F..%2Fetc")
    assert response is not None and response.status == 400
    expect(page.get_by_test_id("files-error")).to_contain_text("'..' is not allowed")
    # ... and the page still works from there: the breadcrumbs are rebuilt by a listing.
    page.goto(web.url + "/files?path=workflows")
    expect(row(page, "workflows/wan22-t2v.json")).to_be_visible()


def test_a_question_asked_right_after_a_cancelled_one_stays_open(web: Web, page: Any) -> None:
    """Cancel, then at once another question (a second drop of a file that exists, a second "New folder"): the first
    dialog's close event arrives after the second opened, and must not close it."""
    login(page, web)
    # files.js marks <html> once its modules (and their listeners) are in; a visible button is not proof of that
    # (before files.css has loaded nothing hides it).
    page.wait_for_function("() => document.documentElement.classList.contains('fm-js')")
    page.evaluate("""() => {
        document.getElementById("mkdir").click();
        document.querySelector('[data-testid="dialog-cancel"]').click();
        document.getElementById("mkdir").click();  // the same task: the first close event is still to come
    }""")
    page.wait_for_function("() => new Promise(r => setTimeout(() => r(true), 0))")  # let that close event run
    expect(page.get_by_test_id("dialog")).to_be_visible()
    page.get_by_test_id("dialog-input").fill("asked twice")
    page.get_by_test_id("dialog-ok").click()
    expect(row(page, "asked twice")).to_be_visible()
    assert (web.ws / "asked twice").is_dir()
