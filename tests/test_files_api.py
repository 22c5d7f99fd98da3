"""The file manager's JSON API (web/files.py) through Flask's test client, on a real DownloadService (real aria2c,
SQLite), plus the real service (`python -m downloader serve`) for a 1 GiB upload over HTTP with its memory measured.

Layout: one workspace per module (starting a service costs about a second); each test works in its own folder.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from downloader.aria2 import free_port
from downloader.config import SECRET_STATE_FILES, Settings
from downloader.manifest import ModelSpec
from downloader.service import DownloadService
from tests.conftest import REPO, cli_env, test_settings, wait_service_started
from tests.servers import FileServer
from web import create_app
from web.auth import AuthConfig
from web.files import STALE_UPLOAD_SECONDS

PASSWORD = "files-api-pw"
BEARER = {"Authorization": f"Bearer {PASSWORD}"}
SECRET = "TOP-SECRET-OUTSIDE-THE-ROOT"
CHUNK = 1 << 20  # the app's upload chunk size in these tests


@dataclass
class Env:
    base: Path
    ws: Path
    outside: Path
    settings: Settings
    svc: DownloadService
    app: Any


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every name under `folder` with its size and mtime (links not followed): to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            out[os.path.relpath(p, folder)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("files-api")
    ws, outside = base / "ws", base / "outside"
    (ws / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "victim").mkdir()
    (outside / "victim" / "keep.txt").write_text(SECRET)
    (ws / "sub" / "victim.txt").write_text("inside")
    for name, target in {
        "in_link": "sub",
        "out_file": "../outside/secret.txt",
        "out_dir": "../outside",
        "abs_out": str(outside),
        "sub/up": "../../outside",
        "sub/rootparent": "../..",
        "chain_out": "out_dir",
        "dangling_out": "../outside/nothing",
        "loop1": "loop2",
        "loop2": "loop1",
    }.items():
        os.symlink(target, ws / name)
    settings = test_settings(ws, connections=2)
    svc = DownloadService(settings)
    svc.start()
    # Its start-up (the models folder, aria2c) runs in the background: tests that snapshot the workspace
    # must begin after it, not while it creates ComfyUI/models.
    wait_service_started(svc)
    app = create_app(
        settings, svc, test_config={"FILES_UPLOAD_CHUNK": CHUNK}, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD")
    )
    try:
        yield Env(base, ws, outside, settings, svc, app)
    finally:
        svc.stop()


@pytest.fixture
def client(env: Env) -> Any:
    return env.app.test_client()


@pytest.fixture
def folder(env: Env, request: pytest.FixtureRequest) -> str:
    """A fresh folder in the workspace for this test; returns its API path."""
    name = "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:80]
    (env.ws / name).mkdir()
    return name


def get(client: Any, url: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params)
    return client.get(url + ("?" + query if query else ""), headers=BEARER)


def post(client: Any, url: str, body: Any = None, **kw: Any) -> Any:
    return client.post(url, json=body, headers={**BEARER, **kw.pop("headers", {})}, **kw)


def put(client: Any, url: str, data: bytes, **kw: Any) -> Any:
    return client.put(url, data=data, headers={**BEARER, "Content-Type": "application/octet-stream"}, **kw)


def upload(client: Any, path: str, data: bytes, chunk: int = CHUNK, **open_extra: Any) -> Any:
    """The page's protocol: open, PUT each chunk at its offset, commit; returns the commit response."""
    res = post(client, "/api/files/upload", {"path": path, "size": len(data), **open_extra})
    assert res.status_code in (200, 201), res.get_json()
    up = res.get_json()
    offset = up["offset"]
    while offset < len(data):
        piece = data[offset : offset + chunk]
        r = put(client, f"/api/files/upload/{up['id']}?offset={offset}", piece)
        assert r.status_code == 200, r.get_json()
        offset = r.get_json()["offset"]
    return post(client, f"/api/files/upload/{up['id']}/commit", {})


# =============================================================================================================
# Hostile paths: every route, every trick. Nothing outside is read, written or deleted; the status is exact.
# Values are as they appear in a URL query (decoded once by the server); JSON bodies get the decoded string.
# =============================================================================================================
HOSTILE = [
    ("dotdot", "..", 400),
    ("dotdot-secret", "../outside/secret.txt", 400),
    ("dotdot-in-the-middle", "sub/../../outside/secret.txt", 400),
    ("dotdot-trailing", "sub/..", 400),
    ("dot", ".", 400),
    ("dot-segment", "./sub", 400),
    ("absolute", "/etc/passwd", 400),
    ("absolute-double", "//etc/passwd", 400),
    ("absolute-to-secret", "__SECRET_ABS__", 400),
    ("enc-dotdot", "%2e%2e/outside/secret.txt", 400),
    ("enc-dotdot-slash", "..%2foutside%2fsecret.txt", 400),
    ("enc-everything", "%2e%2e%2foutside%2fsecret.txt", 400),
    ("enc-uppercase", "%2E%2E%2Foutside%2Fsecret.txt", 400),
    ("enc-absolute", "%2fetc%2fpasswd", 400),
    ("backslash", "..%5coutside%5csecret.txt", 400),
    ("backslash-after-folder", "sub%5c..%5c..%5coutside", 400),
    ("unc-path", "%5c%5cserver%5cshare", 400),
    ("drive-letter", "C:%5cWindows%5csystem.ini", 400),
    ("nul-extension", "secret.txt%00.png", 400),
    ("nul-alone", "%00", 400),
    ("nul-before-dotdot", "sub%00/../..", 400),
    ("empty-segment", "sub//victim.txt", 400),
    ("file-url", "file:///etc/passwd", 400),
    ("newline", "sub%0a/victim.txt", 400),
    ("too-long", "a/" * 2100, 400),
    ("symlink-loop", "loop1", 400),
    ("link-to-outside-file", "out_file", 403),
    ("link-to-outside-folder", "out_dir", 403),
    ("through-link-outside", "out_dir/secret.txt", 403),
    ("through-link-into-outside-folder", "out_dir/victim/keep.txt", 403),
    ("absolute-link-outside", "abs_out/secret.txt", 403),
    ("relative-link-up-and-out", "sub/up/secret.txt", 403),
    ("link-to-roots-parent", "sub/rootparent/outside/secret.txt", 403),
    ("chain-of-links-out", "chain_out/secret.txt", 403),
    ("dangling-link-outside", "dangling_out", 403),
    ("inside-link-then-outside-link", "in_link/up/secret.txt", 403),
    ("enc-slash-through-link", "out_dir%2fsecret.txt", 403),
]


def _value(env: Env, raw: str) -> str:
    if raw == "__SECRET_ABS__":
        return urllib.parse.quote(str(env.outside / "secret.txt"))
    return raw


def _attempts(env: Env, raw: str) -> list[tuple[str, Any]]:
    """(label, request thunk) for every route that takes a path."""
    decoded = urllib.parse.unquote(raw, errors="replace")

    def q(url: str) -> Any:
        return lambda c: c.get(f"{url}?path={raw}", headers=BEARER)

    return [
        ("GET list", q("/api/files/list")),
        ("GET sizes", q("/api/files/sizes")),
        ("GET download", q("/api/files/download")),
        ("GET raw", q("/api/files/raw")),
        ("GET text", q("/api/files/text")),
        ("GET page", lambda c: c.get(f"/files?path={raw}", headers=BEARER)),
        ("POST mkdir", lambda c: post(c, "/api/files/mkdir", {"path": decoded})),
        ("POST delete", lambda c: post(c, "/api/files/delete", {"path": decoded, "recursive": True})),
        ("POST rename from", lambda c: post(c, "/api/files/rename", {"from": decoded, "to": "sub/moved.txt"})),
        ("POST rename to", lambda c: post(c, "/api/files/rename", {"from": "sub/victim.txt", "to": decoded})),
        ("POST upload", lambda c: post(c, "/api/files/upload", {"path": decoded, "size": 10, "overwrite": True})),
    ]


@pytest.mark.parametrize("raw,status", [(r, s) for _, r, s in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_path_matrix(env: Env, client: Any, raw: str, status: int) -> None:
    before_out, before_ws = _snapshot(env.outside), _snapshot(env.ws)
    raw = _value(env, raw)
    for label, attempt in _attempts(env, raw):
        res = attempt(client)
        text = res.get_data(as_text=True)
        assert SECRET not in text, f"{label}: the secret leaked"
        assert res.status_code == status, f"{label} {raw!r}: {res.status_code} {text[:300]}"
        if label == "GET page":
            assert "note-error" in text
            continue
        error = res.get_json()["error"]
        assert error, label
        if status == 403:
            assert "outside the workspace" in error, f"{label}: {error}"
    assert _snapshot(env.outside) == before_out, "something outside the root changed"
    after_ws = _snapshot(env.ws)
    changed = {k for k in set(before_ws) | set(after_ws) if before_ws.get(k) != after_ws.get(k)}
    assert not {k for k in changed if not k.startswith((".downloader", "t-"))}, f"the workspace changed: {changed}"


# After one decode these are ordinary (odd) names inside the root: never decoded twice, never outside.
LITERAL = [
    ("double-enc-dotdot", "%252e%252e%252foutside%252fsecret.txt", "%2e%2e%2foutside%2fsecret.txt"),
    ("double-enc-backslash", "%255c..%255csecret.txt", "%5c..%5csecret.txt"),
    ("overlong-utf8-dots", "%c0%ae%c0%ae", "%C0%AE%C0%AE"),  # invalid UTF-8 stays percent-text
    ("fullwidth-dots", "%ef%bc%8e%ef%bc%8e", "\uff0e\uff0e"),
    ("tilde", "~", "~"),
    ("three-dots", "...", "..."),
]


@pytest.mark.parametrize("raw,name", [(r, n) for _, r, n in LITERAL], ids=[i for i, _, _ in LITERAL])
def test_encoded_looking_names_are_just_names_inside_the_root(env: Env, client: Any, raw: str, name: str) -> None:
    before_out = _snapshot(env.outside)
    for url in ("/api/files/list", "/api/files/download", "/api/files/text"):
        res = client.get(f"{url}?path={raw}", headers=BEARER)
        assert res.status_code == 404, (url, res.get_json())
        assert repr(name) in res.get_json()["error"]
    made = post(client, "/api/files/mkdir", {"path": name})
    assert made.status_code == 201 and made.get_json()["path"] == name
    assert (env.ws / name).is_dir(), "created under its literal name, inside the root"
    listed = client.get(f"/api/files/list?path={raw}", headers=BEARER)
    assert listed.status_code == 200 and listed.get_json()["entries"] == []
    assert post(client, "/api/files/delete", {"path": name}).status_code == 200
    assert not (env.ws / name).exists()
    assert _snapshot(env.outside) == before_out


@hsettings(max_examples=300, deadline=None)
@given(
    segments=st.lists(
        st.sampled_from(["..", ".", "", "%2e%2e", "%252e", "%2f", "%5c", "%00", "out_dir", "sub", "up", "in_link",
                         "secret.txt", "outside", "rootparent", "chain_out", "victim"])
        | st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
        max_size=6,
    ),
    lead=st.sampled_from(["", "/", "%2f", "//"]),
)
def test_property_no_generated_path_reads_outside(env: Env, segments: list[str], lead: str) -> None:
    client = env.app.test_client()
    raw = lead + "/".join(urllib.parse.quote(s, safe="%") for s in segments)
    for url in ("/api/files/list", "/api/files/download", "/api/files/text", "/api/files/raw", "/api/files/sizes"):
        res = client.get(f"{url}?path={raw}", headers=BEARER)
        assert res.status_code in (200, 400, 403, 404), (url, raw, res.status_code)
        body = res.get_data()
        assert SECRET.encode() not in body, (url, raw)
        if res.status_code == 200 and url == "/api/files/list":
            for e in res.get_json()["entries"]:
                assert not e["path"].startswith(("/", "..")), e


# =============================================================================================================
# Login and CSRF
# =============================================================================================================
ROUTES = [
    ("GET", "/api/files/list"), ("GET", "/api/files/sizes"), ("GET", "/api/files/download?path=sub/victim.txt"),
    ("GET", "/api/files/raw?path=sub/victim.txt"), ("GET", "/api/files/text?path=sub/victim.txt"),
    ("POST", "/api/files/mkdir"), ("POST", "/api/files/rename"), ("POST", "/api/files/delete"),
    ("POST", "/api/files/upload"), ("PUT", "/api/files/upload/0123456789abcdef?offset=0"),
    ("POST", "/api/files/upload/0123456789abcdef/commit"), ("DELETE", "/api/files/upload/0123456789abcdef"),
]


@pytest.mark.parametrize("method,url", ROUTES)
def test_every_route_needs_the_login(env: Env, client: Any, method: str, url: str) -> None:
    before = _snapshot(env.ws)
    res = client.open(url, method=method, json={"path": "sub/victim.txt", "from": "sub/victim.txt", "to": "x"})
    assert res.status_code == 401 and "authentication required" in res.get_json()["error"]
    assert SECRET not in res.get_data(as_text=True) and "inside" not in res.get_data(as_text=True)
    assert _snapshot(env.ws) == before


def test_the_page_redirects_to_login(client: Any) -> None:
    res = client.get("/files?path=sub")
    assert res.status_code == 302 and "/login?next=/files" in res.headers["Location"]


def _login(client: Any) -> str:
    """Log in with the form like a person; returns the CSRF token of the files page (as files.js reads it)."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True)).group(1)
    res = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/files"})
    assert res.status_code == 302
    html = client.get("/files").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def test_cookie_users_need_the_csrf_token_for_every_change(env: Env, client: Any, folder: str) -> None:
    token = _login(client)
    assert client.get(f"/api/files/list?path={folder}").status_code == 200, "reads need no token"
    changes = [
        ("POST", "/api/files/mkdir", {"path": f"{folder}/new"}),
        ("POST", "/api/files/upload", {"path": f"{folder}/u.bin", "size": 3}),
        ("POST", "/api/files/delete", {"path": "sub/victim.txt"}),
        ("POST", "/api/files/rename", {"from": "sub/victim.txt", "to": f"{folder}/v.txt"}),
    ]
    for method, url, body in changes:
        res = client.open(url, method=method, json=body)
        assert res.status_code == 400 and "CSRF" in res.get_data(as_text=True), url
    assert (env.ws / "sub" / "victim.txt").exists() and list((env.ws / folder).iterdir()) == []
    ok = client.post("/api/files/mkdir", json={"path": f"{folder}/new"}, headers={"X-CSRFToken": token})
    assert ok.status_code == 201
    opened = client.post("/api/files/upload", json={"path": f"{folder}/u.bin", "size": 3}, headers={"X-CSRFToken": token})
    up = opened.get_json()
    chunk = f"/api/files/upload/{up['id']}?offset=0"
    assert client.put(chunk, data=b"abc").status_code == 400, "a PUT with the cookie needs the token too"
    assert client.put(chunk, data=b"abc", headers={"X-CSRFToken": token}).status_code == 200
    assert client.post(f"/api/files/upload/{up['id']}/commit", headers={"X-CSRFToken": token}).status_code == 201
    assert (env.ws / folder / "u.bin").read_bytes() == b"abc"


def test_header_users_need_no_csrf_token(env: Env, client: Any, folder: str) -> None:
    assert post(client, "/api/files/mkdir", {"path": f"{folder}/x"}).status_code == 201
    assert client.post("/api/files/mkdir", json={"path": f"{folder}/y"}, headers={"Authorization": "Bearer nope"}).status_code == 401


# =============================================================================================================
# Browse
# =============================================================================================================
def test_list_shows_folders_first_with_sizes_times_and_disk(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "b-dir").mkdir()
    (f / "a.txt").write_bytes(b"x" * 10)
    (f / "c.bin").write_bytes(b"x" * 3000)
    (f / "B.png").write_bytes(b"x" * 500)
    os.utime(f / "a.txt", (1_700_000_000, 1_700_000_000))
    os.symlink("a.txt", f / "z-link")
    res = get(client, "/api/files/list", path=folder)
    assert res.status_code == 200
    data = res.get_json()
    assert data["path"] == folder and data["parent"] == ""
    assert data["breadcrumbs"] == [{"name": "ws", "path": ""}, {"name": folder, "path": folder}]
    assert [e["name"] for e in data["entries"]] == ["b-dir", "a.txt", "B.png", "c.bin", "z-link"]
    by = {e["name"]: e for e in data["entries"]}
    assert by["b-dir"]["type"] == "dir" and by["b-dir"]["size"] is None
    assert by["a.txt"] | {"mtime": 0} == {
        "name": "a.txt", "path": f"{folder}/a.txt", "type": "file", "size": 10, "mtime": 0, "link": False,
        "in_progress": None, "protected": False, "upload": False, "kind": "text", "error": None,
    }
    assert by["a.txt"]["mtime"] == 1_700_000_000
    assert by["B.png"]["kind"] == "image" and by["c.bin"]["kind"] is None
    assert by["z-link"]["link"] is True and by["z-link"]["type"] == "file" and by["z-link"]["size"] == 10
    disk = data["disk"]
    assert disk["total"] > 0 and 0 <= disk["free"] <= disk["total"] and disk["used"] > 0
    assert data["truncated"] is False and data["chunk_size"] == CHUNK


@pytest.mark.parametrize(
    "sort,order,names",
    [
        ("name", "asc", ["d1", "d2", "a", "b", "c"]),
        ("name", "desc", ["d2", "d1", "c", "b", "a"]),
        ("size", "asc", ["d1", "d2", "c", "a", "b"]),
        ("size", "desc", ["d2", "d1", "b", "a", "c"]),
        ("mtime", "asc", ["d1", "d2", "b", "c", "a"]),
        ("mtime", "desc", ["d2", "d1", "a", "c", "b"]),
    ],
)
def test_list_sorting(env: Env, client: Any, folder: str, sort: str, order: str, names: list[str]) -> None:
    f = env.ws / folder
    for name, size, mtime in (("a", 20, 3000), ("b", 30, 1000), ("c", 10, 2000)):
        (f / name).write_bytes(b"x" * size)
        os.utime(f / name, (mtime, mtime))
    for name in ("d1", "d2"):
        (f / name).mkdir()
    os.utime(f / "d1", (1, 1))
    os.utime(f / "d2", (2, 2))
    data = get(client, "/api/files/list", path=folder, sort=sort, order=order).get_json()
    assert [e["name"] for e in data["entries"]] == names
    assert (data["sort"], data["order"]) == (sort, order)


def test_list_failures(env: Env, client: Any, folder: str) -> None:
    (env.ws / folder / "f.txt").write_text("x")
    missing = get(client, "/api/files/list", path=f"{folder}/nope")
    assert missing.status_code == 404 and "does not exist" in missing.get_json()["error"]
    a_file = get(client, "/api/files/list", path=f"{folder}/f.txt")
    assert a_file.status_code == 400 and "is a file" in a_file.get_json()["error"]
    assert get(client, "/api/files/list", sort="colour").status_code == 400
    assert get(client, "/api/files/list", order="sideways").status_code == 400


def test_root_listing_marks_the_state_folder_and_odd_links(env: Env, client: Any) -> None:
    data = get(client, "/api/files/list").get_json()
    assert data["path"] == "" and data["parent"] is None and data["breadcrumbs"] == [{"name": "ws", "path": ""}]
    by = {e["name"]: e for e in data["entries"]}
    assert by[".downloader"]["protected"] is True and by[".downloader"]["type"] == "dir"
    assert by["sub"]["protected"] is False
    assert by["in_link"]["type"] == "dir" and by["in_link"]["link"] is True
    for name in ("out_file", "out_dir", "abs_out", "chain_out", "dangling_out"):
        assert by[name]["type"] == "blocked" and "outside the workspace" in by[name]["error"], name
        assert by[name]["size"] is None and by[name]["mtime"] is None, "nothing about the target is shown"
    assert by["loop1"]["type"] == "blocked" and "too many levels" in by["loop1"]["error"]


def test_broken_link_inside_and_other_file_types(env: Env, client: Any, folder: str) -> None:
    os.symlink("nothing-here", env.ws / folder / "broken")
    os.mkfifo(env.ws / folder / "fifo")
    by = {e["name"]: e for e in get(client, "/api/files/list", path=folder).get_json()["entries"]}
    assert by["broken"]["type"] == "broken" and by["broken"]["link"] is True
    assert by["fifo"]["type"] == "other"
    assert get(client, "/api/files/download", path=f"{folder}/fifo").status_code == 400
    assert post(client, "/api/files/delete", {"path": f"{folder}/broken"}).get_json()["deleted"] == "link"


def test_many_entries_are_capped(env: Env, client: Any, folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import web.files

    monkeypatch.setattr(web.files, "LIST_MAX", 5)
    for i in range(8):
        (env.ws / folder / f"f{i}").write_text("x")
    data = get(client, "/api/files/list", path=folder).get_json()
    assert data["truncated"] is True and len(data["entries"]) == 5


def test_folder_sizes_do_not_follow_links_and_respect_the_time_budget(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "a" / "deeper").mkdir(parents=True)
    (f / "a" / "one").write_bytes(b"x" * 1000)
    (f / "a" / "deeper" / "two").write_bytes(b"x" * 2000)
    (f / "empty").mkdir()
    (f / "top.bin").write_bytes(b"x" * 5)
    os.symlink("a", f / "a-again")  # a link to a folder: not walked (no double counting)
    os.symlink(str(env.outside), f / "a" / "outside-link")  # never walked
    data = get(client, "/api/files/sizes", path=folder).get_json()
    link_size = os.lstat(f / "a" / "outside-link").st_size
    assert data["sizes"] == {
        "a": {"size": 3000 + link_size, "files": 3, "complete": True},
        "empty": {"size": 0, "files": 0, "complete": True},
    }
    assert data["total"] == 3005 + link_size and data["complete"] is True
    env.app.config["FILES_SIZES_SECONDS"] = 0
    try:
        rushed = get(client, "/api/files/sizes", path=folder).get_json()
    finally:
        env.app.config.pop("FILES_SIZES_SECONDS")
    assert rushed["complete"] is False and rushed["sizes"]["a"]["complete"] is False
    assert get(client, "/api/files/sizes", path=f"{folder}/top.bin").status_code == 400
    assert get(client, "/api/files/sizes", path=f"{folder}/nope").status_code == 404


def test_the_page_renders_the_listing_on_the_server(env: Env, client: Any, folder: str) -> None:
    (env.ws / folder / "hello <b>.txt").write_text("hi")
    _login(client)
    html = client.get(f"/files?path={folder}").get_data(as_text=True)
    assert 'data-testid="nav-files"' in html and 'aria-current="page"' in html
    assert "hello &lt;b&gt;.txt" in html and "hello <b>" not in html, "names are escaped"
    assert f'href="/api/files/download?path={folder}/hello' in html
    assert 'id="fm-data"' in html and "files.js" in html and "files.css" in html
    bad = client.get("/files?path=../outside")
    assert bad.status_code == 400 and "&#39;..&#39; is not allowed" in bad.get_data(as_text=True)
    assert client.get(f"/files?path={folder}/nope").status_code == 404


# =============================================================================================================
# Read: download (Range), raw previews, text tails
# =============================================================================================================
@pytest.fixture
def blob_file(env: Env, folder: str) -> tuple[str, bytes]:
    data = os.urandom(100_000)
    (env.ws / folder / "clip.mp4").write_bytes(data)
    return f"{folder}/clip.mp4", data


def test_download_whole_file_as_attachment(client: Any, blob_file: tuple[str, bytes]) -> None:
    path, data = blob_file
    res = get(client, "/api/files/download", path=path)
    assert res.status_code == 200 and res.data == data
    assert res.headers["Content-Disposition"] == "attachment; filename=clip.mp4"
    assert res.headers["Accept-Ranges"] == "bytes" and res.headers["X-Content-Type-Options"] == "nosniff"
    assert int(res.headers["Content-Length"]) == len(data)
    head = client.head(f"/api/files/download?path={path}", headers=BEARER)
    assert head.status_code == 200 and head.data == b"" and int(head.headers["Content-Length"]) == len(data)


@pytest.mark.parametrize(
    "header,start,end",
    [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, 99_999), ("bytes=-500", 99_500, 99_999), ("bytes=99999-99999", 99_999, 99_999)],
)
def test_download_ranges_resume(client: Any, blob_file: tuple[str, bytes], header: str, start: int, end: int) -> None:
    path, data = blob_file
    res = client.get(f"/api/files/download?path={path}", headers={**BEARER, "Range": header})
    assert res.status_code == 206
    assert res.data == data[start : end + 1]
    assert res.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"


def test_download_range_failures_and_if_range(client: Any, blob_file: tuple[str, bytes]) -> None:
    path, data = blob_file
    res = client.get(f"/api/files/download?path={path}", headers={**BEARER, "Range": "bytes=200000-"})
    assert res.status_code == 416 and res.headers["Content-Range"] == f"bytes */{len(data)}"
    etag = get(client, "/api/files/download", path=path).headers["ETag"]
    same = client.get(f"/api/files/download?path={path}", headers={**BEARER, "Range": "bytes=10-19", "If-Range": etag})
    assert same.status_code == 206 and same.data == data[10:20]
    changed = client.get(f"/api/files/download?path={path}", headers={**BEARER, "Range": "bytes=10-19", "If-Range": '"other"'})
    assert changed.status_code == 200 and changed.data == data, "a changed file comes whole"
    cached = client.get(f"/api/files/download?path={path}", headers={**BEARER, "If-None-Match": etag})
    assert cached.status_code == 304


def test_download_failures(env: Env, client: Any, folder: str) -> None:
    assert get(client, "/api/files/download", path=folder).status_code == 400
    assert "is a folder" in get(client, "/api/files/download", path=folder).get_json()["error"]
    assert get(client, "/api/files/download", path=f"{folder}/nope").status_code == 404
    no_path = get(client, "/api/files/download")
    assert no_path.status_code == 400 and "give a path" in no_path.get_json()["error"]
    for url in ("/api/files/delete", "/api/files/mkdir", "/api/files/upload"):
        res = post(client, url, {"size": 1})
        assert res.status_code == 400 and "give a path" in res.get_json()["error"], url


def test_download_follows_an_inside_link(env: Env, client: Any) -> None:
    res = get(client, "/api/files/download", path="in_link/victim.txt")
    assert res.status_code == 200 and res.data == b"inside"
    assert res.headers["Content-Disposition"] == "attachment; filename=victim.txt"


def test_raw_previews_video_with_ranges_and_safe_headers(client: Any, blob_file: tuple[str, bytes]) -> None:
    path, data = blob_file
    res = client.get(f"/api/files/raw?path={path}", headers={**BEARER, "Range": "bytes=0-1023"})
    assert res.status_code == 206 and res.data == data[:1024]
    assert res.headers["Content-Type"] == "video/mp4"
    assert res.headers["Content-Disposition"].startswith("inline")
    assert "sandbox" in res.headers["Content-Security-Policy"] and res.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "name,inline,ctype",
    [("a.png", True, "image/png"), ("a.webp", True, "image/webp"), ("a.jpg", True, "image/jpeg"),
     ("a.webm", True, "video/webm"), ("a.mp3", True, "audio/mpeg"),
     ("page.html", False, "application/octet-stream"), ("logo.svg", False, "application/octet-stream"),
     ("x.js", False, "application/octet-stream"), ("model.safetensors", False, "application/octet-stream")],
)
def test_raw_serves_only_media_inline(env: Env, client: Any, folder: str, name: str, inline: bool, ctype: str) -> None:
    (env.ws / folder / name).write_bytes(b"<script>alert(1)</script>")
    res = get(client, "/api/files/raw", path=f"{folder}/{name}")
    assert res.status_code == 200
    assert res.headers["Content-Type"].split(";")[0] == ctype
    assert res.headers["Content-Disposition"].startswith("inline" if inline else "attachment")


def test_text_is_the_tail_from_a_whole_line(env: Env, client: Any, folder: str) -> None:
    lines = "".join(f"line {i:05d}\n" for i in range(10_000))  # 110,000 bytes
    (env.ws / folder / "run.log").write_text(lines)
    data = get(client, "/api/files/text", path=f"{folder}/run.log", bytes=1000).get_json()
    assert data["size"] == len(lines) and data["truncated"] is True and data["binary"] is False
    assert data["text"].endswith("line 09999\n")
    assert data["text"].startswith("line ") and data["text"] == lines[data["start"] :]
    assert len(data["text"]) <= 1000
    whole = get(client, "/api/files/text", path=f"{folder}/run.log", bytes=10_000_000).get_json()
    assert whole["start"] >= len(lines) - (1 << 20) and whole["text"] == lines[whole["start"] :]
    short = get(client, "/api/files/text", path=f"{folder}/run.log").get_json()
    assert short["truncated"] and len(short["text"]) <= 64 * 1024


def test_text_decodes_leniently_and_flags_binary(env: Env, client: Any, folder: str) -> None:
    (env.ws / folder / "mixed.txt").write_bytes("caf\u00e9 \xff\xfe ok".encode("latin-1", "replace") + b"\n\xc3\xa9")
    data = get(client, "/api/files/text", path=f"{folder}/mixed.txt").get_json()
    assert data["truncated"] is False and data["start"] == 0
    assert "\ufffd" in data["text"] and data["text"].endswith("\u00e9")
    (env.ws / folder / "blob.bin").write_bytes(b"\x00\x01\x02")
    assert get(client, "/api/files/text", path=f"{folder}/blob.bin").get_json()["binary"] is True
    (env.ws / folder / "empty.log").write_bytes(b"")
    assert get(client, "/api/files/text", path=f"{folder}/empty.log").get_json()["text"] == ""


def test_text_failures(env: Env, client: Any, folder: str) -> None:
    (env.ws / folder / "a.log").write_text("x")
    for bad in ("-1", "0", "abc", "1e3"):
        assert get(client, "/api/files/text", path=f"{folder}/a.log", bytes=bad).status_code == 400
    assert get(client, "/api/files/text", path=folder).status_code == 400
    assert get(client, "/api/files/text", path=f"{folder}/none.log").status_code == 404


# =============================================================================================================
# Change: mkdir, rename/move, delete
# =============================================================================================================
def test_mkdir(env: Env, client: Any, folder: str) -> None:
    res = post(client, "/api/files/mkdir", {"path": f"{folder}/loras"})
    assert res.status_code == 201 and res.get_json() == {"path": f"{folder}/loras"}
    assert (env.ws / folder / "loras").is_dir()
    again = post(client, "/api/files/mkdir", {"path": f"{folder}/loras"})
    assert again.status_code == 409 and "already exists" in again.get_json()["error"]
    orphan = post(client, "/api/files/mkdir", {"path": f"{folder}/no/such/parent"})
    assert orphan.status_code == 404 and "does not exist" in orphan.get_json()["error"]
    assert post(client, "/api/files/mkdir", {"path": ""}).status_code == 409
    assert post(client, "/api/files/mkdir", {"path": f"{folder}/a\tb"}).status_code == 400
    assert post(client, "/api/files/mkdir", {}).status_code == 400
    assert post(client, "/api/files/mkdir", {"path": 5}).status_code == 400
    not_json = client.post("/api/files/mkdir", data="path=x", headers=BEARER)
    assert not_json.status_code == 400 and "JSON" in not_json.get_json()["error"]
    state = post(client, "/api/files/mkdir", {"path": ".downloader/evil"})
    assert state.status_code == 403 and "state folder" in state.get_json()["error"]
    assert not (env.settings.state_dir / "evil").exists()


def test_rename_and_move_files_and_folders(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "a.txt").write_text("A")
    (f / "dest").mkdir()
    (f / "tree" / "inner").mkdir(parents=True)
    (f / "tree" / "inner" / "x").write_text("X")
    res = post(client, "/api/files/rename", {"from": f"{folder}/a.txt", "to": f"{folder}/b.txt"})
    assert res.status_code == 200 and res.get_json() == {"from": f"{folder}/a.txt", "to": f"{folder}/b.txt"}
    assert (f / "b.txt").read_text() == "A" and not (f / "a.txt").exists()
    assert post(client, "/api/files/rename", {"from": f"{folder}/b.txt", "to": f"{folder}/dest/b.txt"}).status_code == 200
    assert (f / "dest" / "b.txt").read_text() == "A"
    assert post(client, "/api/files/rename", {"from": f"{folder}/tree", "to": f"{folder}/dest/tree2"}).status_code == 200
    assert (f / "dest" / "tree2" / "inner" / "x").read_text() == "X"


def test_rename_never_replaces_unless_asked(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "a").write_text("new")
    (f / "b").write_text("old")
    (f / "dir").mkdir()
    clash = post(client, "/api/files/rename", {"from": f"{folder}/a", "to": f"{folder}/b"})
    assert clash.status_code == 409 and clash.get_json()["exists"] is True
    assert (f / "a").read_text() == "new" and (f / "b").read_text() == "old"
    assert post(client, "/api/files/rename", {"from": f"{folder}/a", "to": f"{folder}/b", "overwrite": "yes"}).status_code == 400
    ok = post(client, "/api/files/rename", {"from": f"{folder}/a", "to": f"{folder}/b", "overwrite": True})
    assert ok.status_code == 200 and (f / "b").read_text() == "new" and not (f / "a").exists()
    onto_dir = post(client, "/api/files/rename", {"from": f"{folder}/b", "to": f"{folder}/dir", "overwrite": True})
    assert onto_dir.status_code == 409 and "existing folder" in onto_dir.get_json()["error"]
    (f / "dir2").mkdir()
    dir_onto_file = post(client, "/api/files/rename", {"from": f"{folder}/dir2", "to": f"{folder}/b", "overwrite": True})
    assert dir_onto_file.status_code == 409
    assert (f / "b").read_text() == "new" and (f / "dir").is_dir() and (f / "dir2").is_dir()


def test_rename_failures(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "d" / "e").mkdir(parents=True)
    (f / "x").write_text("x")
    cases = [
        ({"from": f"{folder}/d", "to": f"{folder}/d/e/d"}, 400, "into itself"),
        ({"from": f"{folder}/d", "to": f"{folder}/d/new"}, 400, "into itself"),
        ({"from": f"{folder}/x", "to": f"{folder}/x"}, 400, "already there"),
        ({"from": f"{folder}/nope", "to": f"{folder}/y"}, 404, "does not exist"),
        ({"from": f"{folder}/x", "to": f"{folder}/no/dir/x"}, 404, "does not exist"),
        ({"from": "", "to": f"{folder}/root"}, 403, "workspace root"),
        ({"from": ".downloader", "to": f"{folder}/state"}, 403, "state folder"),
        ({"from": ".downloader/state.db", "to": f"{folder}/db"}, 403, "state folder"),
        ({"from": f"{folder}/x", "to": ".downloader/x"}, 403, "state folder"),
        ({"from": f"{folder}/x", "to": ""}, 409, "root"),
        ({"from": f"{folder}/x"}, 400, "from and to"),
        ({"from": f"{folder}/x", "to": f"{folder}/y", "overwrite": 1}, 400, "true or false"),
    ]
    for body, status, words in cases:
        res = post(client, "/api/files/rename", body)
        assert res.status_code == status and words in res.get_json()["error"], (body, res.get_json())
    assert (f / "d" / "e").is_dir() and (f / "x").read_text() == "x"
    assert (env.settings.state_dir / "state.db").exists()


def test_rename_moves_a_link_not_its_target(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "target").mkdir()
    (f / "target" / "t").write_text("t")
    os.symlink("target", f / "ln")
    assert post(client, "/api/files/rename", {"from": f"{folder}/ln", "to": f"{folder}/ln2"}).status_code == 200
    assert os.readlink(f / "ln2") == "target" and (f / "target" / "t").exists()


def test_delete_file_folder_and_link(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    (f / "a.txt").write_text("a")
    (f / "empty").mkdir()
    (f / "full" / "deep").mkdir(parents=True)
    (f / "full" / "deep" / "x").write_text("x")
    (f / "keep").mkdir()
    (f / "keep" / "precious").write_text("p")
    os.symlink("keep", f / "link-to-keep")
    os.symlink(str(f / "keep"), f / "full" / "abs-link-to-keep")
    assert post(client, "/api/files/delete", {"path": f"{folder}/a.txt"}).get_json() == {"path": f"{folder}/a.txt", "deleted": "file"}
    assert post(client, "/api/files/delete", {"path": f"{folder}/empty"}).get_json()["deleted"] == "folder"
    refused = post(client, "/api/files/delete", {"path": f"{folder}/full"})
    assert refused.status_code == 409 and "not empty" in refused.get_json()["error"] and (f / "full").exists()
    assert post(client, "/api/files/delete", {"path": f"{folder}/full", "recursive": True}).status_code == 200
    assert not (f / "full").exists()
    assert post(client, "/api/files/delete", {"path": f"{folder}/link-to-keep", "recursive": True}).get_json()["deleted"] == "link"
    assert (f / "keep" / "precious").read_text() == "p", "deleting links (also inside a folder) never touches targets"
    assert sorted(p.name for p in f.iterdir()) == ["keep"]
    missing = post(client, "/api/files/delete", {"path": f"{folder}/a.txt"})
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "path,words",
    [("", "workspace root"), (".downloader", "state folder"), (".downloader/state.db", "state folder"),
     (".downloader/", "state folder")],
)
def test_delete_refuses_the_root_and_the_state_folder(env: Env, client: Any, path: str, words: str) -> None:
    before = _snapshot(env.settings.state_dir)
    res = post(client, "/api/files/delete", {"path": path, "recursive": True})
    assert res.status_code == 403 and words in res.get_json()["error"]
    assert set(_snapshot(env.settings.state_dir)) >= set(before) and (env.ws / "sub").exists()


def test_a_folder_holding_the_state_folder_cannot_be_deleted_or_moved(tmp_path: Path) -> None:
    """DOWNLOADER_STATE deeper in the workspace: its parents are protected too."""
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    settings = Settings(workspace=ws, models_dir=ws / "models", state_dir=ws / "data" / "state", manifest_dirs=())
    svc = DownloadService(settings)
    try:
        client = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "x")).test_client()
        for url, body in (("/api/files/delete", {"path": "data", "recursive": True}),
                          ("/api/files/rename", {"from": "data", "to": "data2"})):
            res = post(client, url, body)
            assert res.status_code == 403 and "holds the downloader's state folder" in res.get_json()["error"]
        listed = {e["name"]: e for e in get(client, "/api/files/list").get_json()["entries"]}
        assert listed["data"]["protected"] is True
    finally:
        svc.stop()
    assert (ws / "data" / "state").is_dir()


def test_in_progress_download_cannot_be_deleted_or_moved(env: Env, client: Any, make_blob: Any) -> None:
    """A real aria2c download from a slow loopback CDN, paused mid-way: its partial file is the downloader's."""
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=150_000) as cdn:
        cdn.add_file("/busy.bin", blob.path)
        env.svc.add(ModelSpec(id="busy-one", source=f"{cdn.url}/busy.bin", dest="loras/busy.safetensors"))
        part = env.settings.models_dir / "loras" / "busy.safetensors.part"
        deadline = time.monotonic() + 30
        while not (part.exists() and env.svc.get("busy-one").bytes_done > 0):
            assert time.monotonic() < deadline, env.svc.get("busy-one").as_dict()
            time.sleep(0.05)
        try:
            rel = "ComfyUI/models/loras"
            by = {e["name"]: e for e in get(client, "/api/files/list", path=rel).get_json()["entries"]}
            assert by["busy.safetensors.part"]["in_progress"] == "busy-one"
            parent = {e["name"]: e for e in get(client, "/api/files/list", path="ComfyUI/models").get_json()["entries"]}
            assert parent["loras"]["in_progress"] == "busy-one", "a folder holding one shows it too"
            for url, body in (
                ("/api/files/delete", {"path": f"{rel}/busy.safetensors.part"}),
                ("/api/files/delete", {"path": "ComfyUI", "recursive": True}),
                ("/api/files/rename", {"from": f"{rel}/busy.safetensors.part", "to": f"{rel}/x"}),
                ("/api/files/rename", {"from": "ComfyUI", "to": "Comfy2"}),
            ):
                res = post(client, url, body)
                assert res.status_code == 409, (url, res.get_json())
                assert "'busy-one'" in res.get_json()["error"] and res.get_json()["download_id"] == "busy-one"
            clash = post(client, "/api/files/upload", {"path": f"{rel}/busy.safetensors.part", "size": 1, "overwrite": True})
            assert clash.status_code == 409 and "busy-one" in clash.get_json()["error"]
            env.svc.pause("busy-one")  # paused: still the downloader's (it resumes from that file)
            deadline = time.monotonic() + 10
            while env.svc.get("busy-one").state != "paused":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert post(client, "/api/files/delete", {"path": f"{rel}/busy.safetensors.part"}).status_code == 409
            assert part.exists()
        finally:
            env.svc.cancel("busy-one")
        deadline = time.monotonic() + 10
        while env.svc.get("busy-one").state != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "busy.safetensors.part" not in json.dumps(env.svc.in_progress(), default=str)


# =============================================================================================================
# Upload: the chunked protocol
# =============================================================================================================
def test_upload_in_chunks_lands_byte_identical_under_its_name(env: Env, client: Any, folder: str) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    opened = post(client, "/api/files/upload", {"path": f"{folder}/my lora.safetensors", "size": len(data)})
    assert opened.status_code == 201
    up = opened.get_json()
    assert up["offset"] == 0 and up["size"] == len(data) and up["chunk_size"] == CHUNK
    assert re.fullmatch(r"\.my lora\.safetensors\.upload-[0-9a-f]{16}", up["temp"])
    temp = env.ws / folder / up["temp"]
    assert temp.exists() and not (env.ws / folder / "my lora.safetensors").exists()
    listed = {e["name"]: e for e in get(client, "/api/files/list", path=folder).get_json()["entries"]}
    assert listed[up["temp"]]["upload"] is True
    offset = 0
    while offset < len(data):
        res = put(client, f"/api/files/upload/{up['id']}?offset={offset}", data[offset : offset + CHUNK])
        assert res.status_code == 200
        body = res.get_json()
        offset = body["offset"]
        assert body["complete"] == (offset == len(data))
        assert not (env.ws / folder / "my lora.safetensors").exists(), "never a half file under the real name"
    done = post(client, f"/api/files/upload/{up['id']}/commit")
    assert done.status_code == 201 and done.get_json() == {"path": f"{folder}/my lora.safetensors", "size": len(data)}
    assert (env.ws / folder / "my lora.safetensors").read_bytes() == data
    assert not temp.exists()
    assert oct((env.ws / folder / "my lora.safetensors").stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    gone = put(client, f"/api/files/upload/{up['id']}?offset=0", b"x")
    assert gone.status_code == 404 and "open it again" in gone.get_json()["error"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_empty_file_upload(env: Env, client: Any, folder: str) -> None:
    assert upload(client, f"{folder}/empty.txt", b"").status_code == 201
    assert (env.ws / folder / "empty.txt").read_bytes() == b""


def test_a_cut_upload_resumes_where_it_stopped(env: Env, client: Any, folder: str) -> None:
    data = os.urandom(4 * CHUNK)
    body = {"path": f"{folder}/big.bin", "size": len(data), "key": "1700000000000"}
    up = post(client, "/api/files/upload", body).get_json()
    assert put(client, f"/api/files/upload/{up['id']}?offset=0", data[:CHUNK]).status_code == 200
    assert put(client, f"/api/files/upload/{up['id']}?offset={CHUNK}", data[CHUNK : 2 * CHUNK]).status_code == 200
    # The page is closed; later the same file is chosen again: the same upload, resumed.
    again = post(client, "/api/files/upload", body)
    assert again.status_code == 200 and again.get_json()["id"] == up["id"] and again.get_json()["offset"] == 2 * CHUNK
    # A different file (another key or size) is a different upload.
    other = post(client, "/api/files/upload", {**body, "key": "other"}).get_json()
    assert other["id"] != up["id"] and other["offset"] == 0
    assert post(client, f"/api/files/upload/{other['id']}", None).status_code == 405
    assert client.delete(f"/api/files/upload/{other['id']}", headers=BEARER).get_json()["cancelled"] is True
    # After a restart of the service the registry is empty: a PUT says so, re-opening picks the file up.
    env.app.extensions["files.uploads"].clear()
    lost = put(client, f"/api/files/upload/{up['id']}?offset={2 * CHUNK}", data[2 * CHUNK : 3 * CHUNK])
    assert lost.status_code == 404
    assert post(client, "/api/files/upload", body).get_json()["offset"] == 2 * CHUNK
    assert put(client, f"/api/files/upload/{up['id']}?offset={2 * CHUNK}", data[2 * CHUNK :]).get_json()["complete"]
    assert post(client, f"/api/files/upload/{up['id']}/commit").status_code == 201
    assert (env.ws / folder / "big.bin").read_bytes() == data
    assert [p.name for p in (env.ws / folder).iterdir()] == ["big.bin"]


def test_chunk_offsets_are_checked(env: Env, client: Any, folder: str) -> None:
    data = os.urandom(3000)
    up = post(client, "/api/files/upload", {"path": f"{folder}/f.bin", "size": 3000}).get_json()
    url = f"/api/files/upload/{up['id']}"
    assert put(client, f"{url}?offset=0", data[:1000]).get_json()["offset"] == 1000
    ahead = put(client, f"{url}?offset=2000", data[2000:])
    assert ahead.status_code == 409 and ahead.get_json()["offset"] == 1000, "a gap is refused, the offset told"
    # A chunk whose answer was lost is sent again: rewritten in place.
    assert put(client, f"{url}?offset=0", data[:1000]).get_json()["offset"] == 1000
    assert put(client, f"{url}?offset=500", data[500:2000]).get_json()["offset"] == 2000
    past = put(client, f"{url}?offset=2000", data[2000:] + b"extra")
    assert past.status_code == 413 and "past the declared size" in past.get_json()["error"]
    assert put(client, f"{url}?offset=x", b"1").status_code == 400
    assert put(client, f"{url}?offset=-1", b"1").status_code == 400
    early = post(client, f"{url}/commit")
    assert early.status_code == 409 and early.get_json()["offset"] == 2000 and "incomplete" in early.get_json()["error"]
    chunked = {**BEARER, "Transfer-Encoding": "chunked"}  # no Content-Length: cannot be checked against the size
    no_length = client.put(f"{url}?offset=2000", input_stream=io.BytesIO(data[2000:]), headers=chunked)
    assert no_length.status_code == 411
    assert put(client, f"{url}?offset=2000", data[2000:]).get_json()["complete"] is True
    assert post(client, f"{url}/commit").status_code == 201
    assert (env.ws / folder / "f.bin").read_bytes() == data


def test_upload_never_replaces_unless_asked(env: Env, client: Any, folder: str) -> None:
    target = env.ws / folder / "model.safetensors"
    target.write_bytes(b"old")
    clash = post(client, "/api/files/upload", {"path": f"{folder}/model.safetensors", "size": 3})
    assert clash.status_code == 409 and clash.get_json()["exists"] is True
    assert upload(client, f"{folder}/model.safetensors", b"new", overwrite=True).status_code == 201
    assert target.read_bytes() == b"new"
    # The file appears while the upload runs: the commit refuses rather than replaces.
    up = post(client, "/api/files/upload", {"path": f"{folder}/late.bin", "size": 2}).get_json()
    put(client, f"/api/files/upload/{up['id']}?offset=0", b"up")
    (env.ws / folder / "late.bin").write_bytes(b"someone else")
    late = post(client, f"/api/files/upload/{up['id']}/commit", {})
    assert late.status_code == 409 and late.get_json()["exists"] is True
    assert (env.ws / folder / "late.bin").read_bytes() == b"someone else"
    assert post(client, f"/api/files/upload/{up['id']}/commit", {"overwrite": True}).status_code == 201
    assert (env.ws / folder / "late.bin").read_bytes() == b"up"


def test_upload_failures(env: Env, client: Any, folder: str) -> None:
    (env.ws / folder / "dir").mkdir()
    cases = [
        ({"path": f"{folder}/dir", "size": 1, "overwrite": True}, 409, "is a folder"),
        ({"path": f"{folder}/x", "size": -1}, 400, "size"),
        ({"path": f"{folder}/x", "size": "12"}, 400, "size"),
        ({"path": f"{folder}/x", "size": True}, 400, "size"),
        ({"path": f"{folder}/x"}, 400, "size"),
        ({"path": f"{folder}/x", "size": 1, "key": 5}, 400, "key"),
        ({"path": f"{folder}/nope/x", "size": 1}, 404, "does not exist"),
        ({"path": "", "size": 1}, 400, "including its name"),
        ({"path": ".downloader/state.db", "size": 1, "overwrite": True}, 403, "state folder"),
        ({"path": f"{folder}/.x.upload-0123456789abcdef", "size": 1}, 400, "reserved"),
        ({"path": f"{folder}/huge", "size": 1 << 60}, 507, "not enough free space"),
    ]
    for body, status, words in cases:
        res = post(client, "/api/files/upload", body)
        assert res.status_code == status and words in res.get_json()["error"], (body, res.get_json())
    assert sorted(p.name for p in (env.ws / folder).iterdir()) == ["dir"]
    for method, url in (("PUT", "/api/files/upload/ffffffffffffffff?offset=0"),
                        ("POST", "/api/files/upload/ffffffffffffffff/commit"),
                        ("DELETE", "/api/files/upload/ffffffffffffffff")):
        assert client.open(url, method=method, data=b"x", headers=BEARER).status_code == 404


def test_cancel_and_a_vanished_temp_file(env: Env, client: Any, folder: str) -> None:
    up = post(client, "/api/files/upload", {"path": f"{folder}/c.bin", "size": 10}).get_json()
    put(client, f"/api/files/upload/{up['id']}?offset=0", b"12345")
    cancelled = client.delete(f"/api/files/upload/{up['id']}", headers=BEARER)
    assert cancelled.status_code == 200 and cancelled.get_json()["path"] == f"{folder}/c.bin"
    assert list((env.ws / folder).iterdir()) == []
    up = post(client, "/api/files/upload", {"path": f"{folder}/c.bin", "size": 10}).get_json()
    (env.ws / folder / up["temp"]).unlink()  # someone deleted it in the file manager
    assert put(client, f"/api/files/upload/{up['id']}?offset=0", b"12345").status_code == 410
    assert post(client, f"/api/files/upload/{up['id']}/commit").status_code == 410
    # Deleting a partial upload in the listing forgets it too.
    up = post(client, "/api/files/upload", {"path": f"{folder}/d.bin", "size": 10}).get_json()
    assert post(client, "/api/files/delete", {"path": f"{folder}/{up['temp']}"}).status_code == 200
    assert put(client, f"/api/files/upload/{up['id']}?offset=0", b"1").status_code == 404


def test_old_abandoned_uploads_are_swept(env: Env, client: Any, folder: str) -> None:
    f = env.ws / folder
    stale = f / ".old.bin.upload-0123456789abcdef"
    fresh = f / ".new.bin.upload-fedcba9876543210"
    lookalike = f / ".old.bin.upload-notanid"
    for p in (stale, fresh, lookalike):
        p.write_bytes(b"x")
    long_ago = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    os.utime(lookalike, (long_ago, long_ago))
    post(client, "/api/files/upload", {"path": f"{folder}/another.bin", "size": 1})
    assert not stale.exists() and fresh.exists() and lookalike.exists()


def test_long_names_get_a_temp_name_that_fits(env: Env, client: Any, folder: str) -> None:
    name = "n" * 250 + ".bin"
    assert upload(client, f"{folder}/{name}", b"data").status_code == 201
    assert (env.ws / folder / name).read_bytes() == b"data"


# =============================================================================================================
# The real service: a 1 GiB upload over HTTP with the service's peak memory measured, and a cut connection
# =============================================================================================================
@dataclass
class Served:
    url: str
    port: int
    proc: subprocess.Popen[str]
    ws: Path




def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """`python -m downloader serve` (waitress, the production server) as its own process."""
    ws = tmp_path_factory.mktemp("served") / "ws"
    (ws / "uploads").mkdir(parents=True)
    settings = Settings(workspace=ws, models_dir=ws / "ComfyUI" / "models", state_dir=ws / ".downloader", manifest_dirs=())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "downloader", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(settings, DOWNLOADER_PASSWORD=PASSWORD),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        yield Served(f"http://127.0.0.1:{port}", port, proc, ws)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


class Http:
    """A tiny keep-alive client speaking the upload protocol with Bearer auth (what a script would do)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, blocksize=1 << 20)

    def call(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        headers = {**BEARER, **(headers or {})}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, url, body=body, headers=headers)
        res = self.conn.getresponse()
        raw = res.read()
        return res.status, (json.loads(raw) if raw and res.getheader("Content-Type", "").startswith("application/json") else raw)


def _file_chunks(path: Path, start: int, length: int, piece: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left:
            data = fh.read(min(piece, left))
            assert data
            left -= len(data)
            yield data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_upload_1_gib_through_the_real_service_keeps_memory_low(served: Served, tmp_path: Path, record_property: Any) -> None:
    size = 1 << 30
    source = tmp_path / "big.safetensors"
    h = hashlib.sha256()
    with open(source, "wb") as fh:
        for _ in range(size // (4 << 20)):
            block = os.urandom(4 << 20)
            h.update(block)
            fh.write(block)
    digest = h.hexdigest()
    target = served.ws / "uploads" / "big.safetensors"
    try:
        before = _status_kib(served.proc.pid, "VmHWM")
        client = Http(served.port)
        status, up = client.call("POST", "/api/files/upload", {"path": "uploads/big.safetensors", "size": size})
        assert status == 201, up
        chunk = up["chunk_size"]
        assert 16 << 20 <= chunk <= 64 << 20, "the page's chunk size"
        offset, started = 0, time.monotonic()
        while offset < size:
            length = min(chunk, size - offset)
            status, body = client.call(
                "PUT", f"/api/files/upload/{up['id']}?offset={offset}", body=_file_chunks(source, offset, length),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
            )
            assert status == 200, body
            offset = body["offset"]
            assert not target.exists()
        status, body = client.call("POST", f"/api/files/upload/{up['id']}/commit", {})
        elapsed = time.monotonic() - started
        assert status == 201, body
        peak = _status_kib(served.proc.pid, "VmHWM")
        record_property("vmhwm_before_kib", before)
        record_property("vmhwm_after_kib", peak)
        print(f"\n1 GiB upload: {elapsed:.1f} s, service peak RSS {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB after")
        assert peak < 250 * 1024, f"the service's peak RSS reached {peak / 1024:.0f} MiB"
        assert target.stat().st_size == size
        assert _sha256(target) == digest, "the uploaded file differs"
        assert [p.name for p in target.parent.iterdir()] == ["big.safetensors"], "no temporary file left"
        # And it comes back out in ranges.
        status, tail = client.call("GET", "/api/files/download?path=uploads/big.safetensors", headers={"Range": f"bytes={size - 16}-"})
        with open(source, "rb") as fh:
            fh.seek(size - 16)
            assert status == 206 and tail == fh.read()
    finally:
        source.unlink(missing_ok=True)
        target.unlink(missing_ok=True)


def test_a_connection_cut_mid_chunk_leaves_no_half_file(served: Served) -> None:
    data = os.urandom(3 << 20)
    client = Http(served.port)
    status, up = client.call("POST", "/api/files/upload", {"path": "uploads/cut.bin", "size": len(data)})
    assert status == 201
    status, body = client.call("PUT", f"/api/files/upload/{up['id']}?offset=0", data[: 1 << 20],
                               headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body["offset"] == 1 << 20
    # The second chunk: headers promise 1 MiB, 300 KB arrive, then the connection drops.
    with socket.create_connection(("127.0.0.1", served.port)) as s:
        head = (
            f"PUT /api/files/upload/{up['id']}?offset={1 << 20} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {PASSWORD}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n"
        ).encode()
        s.sendall(head + data[1 << 20 : (1 << 20) + 300_000])
        s.shutdown(socket.SHUT_WR)  # the client is gone: the server reads the end of the stream
        # The server closing its side is the proof it is done with the cut request (whatever it answered).
        s.settimeout(30)
        while s.recv(65536):
            pass
    target = served.ws / "uploads" / "cut.bin"
    temp = served.ws / "uploads" / up["temp"]
    assert not target.exists(), "nothing under the real name"
    assert temp.stat().st_size == 1 << 20, "only what was fully received"
    # The next attempt (a new connection, the same file) resumes from there.
    client = Http(served.port)
    status, again = client.call("POST", "/api/files/upload", {"path": "uploads/cut.bin", "size": len(data)})
    assert status == 200 and again["offset"] == 1 << 20
    status, body = client.call("PUT", f"/api/files/upload/{up['id']}?offset={1 << 20}", data[1 << 20 :],
                               headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body["complete"]
    assert client.call("POST", f"/api/files/upload/{up['id']}/commit", {})[0] == 201
    assert target.read_bytes() == data and not temp.exists()
    target.unlink()


@pytest.mark.parametrize("name", sorted(SECRET_STATE_FILES))  # service.json too: the CLI's local token
@pytest.mark.parametrize("route", ["/api/files/download", "/api/files/raw", "/api/files/text"])
def test_secret_files_in_the_state_folder_are_never_served(env: Env, client: Any, name: str, route: str) -> None:
    secret = env.settings.state_dir / name
    if not secret.exists():
        secret.write_text("s3cr3t-value\n")
    res = get(client, route, path=f".downloader/{name}")
    assert res.status_code == 403 and "holds a secret" in res.get_json()["error"]
    assert b"s3cr3t" not in res.data and secret.read_text().strip().encode() not in res.data
    log = env.settings.state_dir / "aria2.log"
    assert get(client, "/api/files/text", path=".downloader/aria2.log").status_code == (200 if log.exists() else 404)
