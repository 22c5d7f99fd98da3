"""Every route of the web app through Flask's test client, on a real DownloadService (real aria2c, SQLite)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.aria2 import free_port
from downloader.config import Settings
from downloader.manifest import load_catalog
from downloader.service import DownloadService
from tests.conftest import wait_service_started
from web import create_app
from web.auth import AuthConfig, resolve_auth

PASSWORD = "correct horse battery staple"
TOKEN = "hf_SECRET-token-never-to-be-shown-anywhere-1234"


@pytest.fixture
def files(cdn, make_blob):
    a, b = make_blob(1 << 20), make_blob(2 << 20)
    cdn.add_file("/a.bin", a.path)
    cdn.add_file("/b.bin", b.path)
    return a, b


@pytest.fixture
def svc(settings, cdn, files, manifest) -> Iterator[DownloadService]:
    a, b = files
    path = manifest(f"""
        presets:
          small: {{description: "two small files", models: [a, b]}}
        models:
          - id: a
            source: {cdn.url}/a.bin
            dest: loras/a.safetensors
            sha256: {a.sha256}
          - id: b
            source: {cdn.url}/b.bin
            dest: vae/b.safetensors
            sha256: {b.sha256}
            required: false
    """)
    service = DownloadService(settings.with_(hf_token=TOKEN), catalog=load_catalog([path], settings.models_dir))
    service.start()
    wait_service_started(service)
    yield service
    service.stop()


@pytest.fixture
def app(svc):
    return create_app(svc.settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))


@pytest.fixture
def client(app):
    return app.test_client()


def basic(password: str = PASSWORD, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {PASSWORD}"}


def login(client) -> str:
    """Log in through the form like a person; returns the CSRF token of the page they land on."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True)).group(1)
    res = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/downloads"})
    assert res.status_code == 302 and res.headers["Location"].endswith("/downloads")
    landed = client.get("/downloads").get_data(as_text=True)  # logging in starts a new session (and token)
    return re.search(r'name="csrf-token" content="([^"]+)"', landed).group(1)


def wait_states(client, ids, states=("done",), timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = client.get("/api/downloads", headers=BEARER).get_json()
        by_id = {d["id"]: d for d in data["downloads"]}
        if all(by_id[i]["state"] in states for i in ids):
            return by_id
        assert time.monotonic() < deadline, f"timed out: {[(i, by_id[i]['state'], by_id[i]['error']) for i in ids]}"
        time.sleep(0.1)


# --- auth ---------------------------------------------------------------------------------------------


def test_healthz_is_open_and_small(client):
    res = client.get("/healthz")
    assert res.status_code == 200
    body = res.get_json()
    assert body["status"] == "ok" and set(body["downloads"]) >= {"queued", "done", "failed"}


@pytest.mark.parametrize("path", ["/downloads", "/installation-status", "/"])
def test_pages_redirect_to_login(client, path):
    res = client.get(path)
    assert res.status_code == 302 and "/login" in res.headers["Location"]


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/api/downloads"), ("GET", "/api/presets"), ("GET", "/api/installation-status"),
     ("POST", "/api/presets/small/start"), ("POST", "/api/downloads"), ("POST", "/api/downloads/a/pause")],
)
def test_api_without_credentials_is_401_and_changes_nothing(client, svc, method, path):
    res = client.open(path, method=method, json={})
    assert res.status_code == 401
    assert res.headers["WWW-Authenticate"].startswith("Basic")
    assert "authentication required" in res.get_json()["error"]
    assert svc.downloads() == []


def test_basic_with_any_user_and_bearer_are_accepted_wrong_password_is_not(client):
    assert client.get("/api/downloads", headers=basic(user="whoever")).status_code == 200
    assert client.get("/api/downloads", headers=BEARER).status_code == 200
    assert client.get("/api/downloads", headers=basic("wrong")).status_code == 401
    assert client.get("/api/downloads", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/downloads", headers={"Authorization": "Basic !!notbase64"}).status_code == 401


def test_login_form_wrong_then_right_password(client):
    page = client.get("/login?next=/installation-status")
    html = page.get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    bad = client.post("/login", data={"password": "nope", "csrf_token": token, "next": "/installation-status"})
    assert bad.status_code == 401 and "Wrong password" in bad.get_data(as_text=True)
    assert client.get("/api/downloads").status_code == 401
    good = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/installation-status"})
    assert good.status_code == 302 and good.headers["Location"].endswith("/installation-status")
    assert client.get("/installation-status").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_login_never_redirects_off_site(client, target):
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    res = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": target})
    assert res.status_code == 302 and res.headers["Location"] == "/downloads"


def test_login_without_csrf_token_is_refused(client):
    res = client.post("/login", data={"password": PASSWORD})
    assert res.status_code == 302, "a form post without a token goes back with the reason, not in"
    assert client.get("/api/downloads").status_code == 401
    assert "CSRF token is missing" in client.get("/login").get_data(as_text=True)


def test_cookie_posts_need_the_csrf_token_header_posts_do_not(client, svc):
    token = login(client)
    res = client.post("/api/downloads/all/pause")
    assert res.status_code == 400, "a cookie-authenticated POST without a CSRF token must be refused"
    assert "CSRF" in res.get_json()["error"]
    assert client.post("/api/downloads/all/pause", headers={"X-CSRFToken": token}).status_code == 202
    other = client.application.test_client()
    assert other.post("/api/downloads/all/pause", headers=BEARER).status_code == 202


def test_logout_ends_the_session(client):
    token = login(client)
    assert client.get("/api/downloads").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/downloads").status_code == 401


def test_login_attempts_are_rate_limited(client):
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    codes = [client.post("/login", data={"password": "guess", "csrf_token": token}).status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[-1] == 429


def test_password_sources_in_order_and_generated_one_is_stable(tmp_path):
    state = tmp_path / "state"

    def resolve_auth_env(env):  # the password as the service resolves it from this environment
        return resolve_auth(Settings.from_env({"DOWNLOADER_STATE": str(state), **env}))

    assert resolve_auth_env({"DOWNLOADER_PASSWORD": "a", "JUPYTER_PASSWORD": "b"}) == AuthConfig(
        "a", "DOWNLOADER_PASSWORD")
    assert resolve_auth_env({"JUPYTER_PASSWORD": "b"}).password == "b"
    first = resolve_auth_env({})
    assert first.source == "generated" and len(first.password) >= 12
    assert resolve_auth_env({}).password == first.password, "stable across restarts"
    assert (state / "ui-password").stat().st_mode & 0o777 == 0o600
    assert resolve_auth_env({"DOWNLOADER_AUTH": "none", "DOWNLOADER_PASSWORD": "a"}).password is None


def test_auth_none_opens_everything(svc):
    app = create_app(svc.settings, svc, auth_config=AuthConfig(None, "none"))
    assert app.test_client().get("/api/downloads").status_code == 200
    assert app.test_client().get("/downloads").status_code == 200


def test_tokens_are_never_rendered_or_returned(client, svc):
    login(client)
    client.post("/api/presets/small/start", headers=BEARER)
    for path in ("/downloads", "/installation-status", "/api/downloads", "/api/presets", "/api/installation-status",
                 "/healthz", "/login"):
        assert TOKEN not in client.get(path).get_data(as_text=True), path


# --- downloads ------------------------------------------------------------------------------------------


def test_preset_start_downloads_everything_and_api_reports_it(client, files):
    res = client.post("/api/presets/small/start", headers=BEARER)
    assert res.status_code == 202 and res.get_json()["ids"] == ["a", "b"]
    by_id = wait_states(client, ["a", "b"])
    assert by_id["a"]["progress"] == 1.0 and by_id["a"]["verified"] is True
    assert by_id["a"]["presets"] == ["small"] and by_id["a"]["size"] == files[0].size
    data = client.get("/api/presets", headers=BEARER).get_json()
    assert data["presets"][0]["state"] == "done" and data["presets"][0]["done"] == 2
    assert client.get("/healthz").get_json()["required_done"] is True


def test_available_models_are_listed_before_anything_starts(client):
    data = client.get("/api/downloads", headers=BEARER).get_json()
    assert {d["id"]: d["state"] for d in data["downloads"]} == {"a": "available", "b": "available"}
    assert "loras" in data["folders"]


def test_single_model_start_and_unknown_ids(client):
    assert client.post("/api/models/a/start", headers=BEARER).status_code == 202
    wait_states(client, ["a"])
    res = client.post("/api/models/nope/start", headers=BEARER)
    assert res.status_code == 404 and "nope" in res.get_json()["error"]
    assert client.post("/api/presets/nope/start", headers=BEARER).status_code == 404
    for verb in ("pause", "resume", "cancel", "retry"):
        assert client.post(f"/api/downloads/nope/{verb}", headers=BEARER).status_code == 404
    assert client.post("/api/downloads/a/explode", headers=BEARER).status_code == 404
    assert client.post("/api/downloads/all/cancel", headers=BEARER).status_code == 404


def test_add_download_by_url(client, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/extra.bin", blob.path)
    res = client.post("/api/downloads", headers=BEARER,
                      json={"source": f"{cdn.url}/extra.bin", "dest": "loras/extra.safetensors", "sha256": blob.sha256})
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["id"] == "extra"
    by_id = wait_states(client, ["extra"])
    assert by_id["extra"]["verified"] is True and by_id["extra"]["presets"] == []


def test_add_download_with_folder_and_filename(client, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/files/my-lora.safetensors", blob.path)
    res = client.post("/api/downloads", headers=BEARER,
                      json={"source": f"{cdn.url}/files/my-lora.safetensors", "folder": "loras"})
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["dest"] == "loras/my-lora.safetensors"


@pytest.mark.parametrize(
    "body,status,says",
    [
        ({"source": "ftp://x/y", "dest": "loras/x.safetensors"}, 400, "source"),
        ({"source": "not a url", "dest": "loras/x.safetensors"}, 400, "source"),
        ({"source": "https://h/x?token=abc", "dest": "loras/x.safetensors"}, 400, "token"),
        ({"source": "https://h/x", "dest": "../../etc/passwd"}, 400, "escape"),
        ({"source": "https://h/x", "dest": "/etc/passwd"}, 400, "absolute"),
        ({"source": "https://h/x", "dest": "loras/x.safetensors", "sha256": "abc"}, 400, "sha256"),
        ({"source": "https://h/x", "dest": "loras/x.safetensors", "size": -1}, 400, "size"),
        ({"source": "https://h/x", "dest": "loras/x.safetensors", "colour": "red"}, 400, "unknown field"),
        ({"dest": "loras/x.safetensors"}, 400, "source"),
        ({"source": "https://h/x"}, 400, "dest"),
        (["not", "an", "object"], 400, "JSON object"),
        ({"source": "hf://Org/Repo/x.safetensors", "dest": "loras/a.safetensors"}, 409, "already"),
        ({"source": "https://h/x", "dest": "loras/x.safetensors", "id": "a"}, 409, "already used"),
    ],
)
def test_bad_additions_get_a_clear_4xx_and_change_nothing(client, svc, body, status, says):
    if status == 409:  # make 'a' exist first
        client.post("/api/models/a/start", headers=BEARER)
    before = [(r.id, r.state) for r in svc.downloads()]
    res = client.post("/api/downloads", headers=BEARER, json=body)
    assert res.status_code == status, res.get_json()
    assert says.lower() in res.get_json()["error"].lower()
    assert [r.id for r in svc.downloads()] == [i for i, _ in before]


def test_unreachable_url_is_refused_with_the_server_answer(client, cdn):
    res = client.post("/api/downloads", headers=BEARER,
                      json={"source": f"{cdn.url}/missing.bin", "dest": "loras/missing.safetensors"})
    assert res.status_code == 422 and "404" in res.get_json()["error"]


def test_pause_resume_cancel_retry_on_a_slow_download(settings, make_blob, manifest):
    from tests.servers import FileServer

    blob = make_blob(6 << 20)
    with FileServer(rate_limit=400_000) as slow:
        slow.add_file("/s.bin", blob.path)
        path = manifest(f"""
            models:
              - id: s
                source: {slow.url}/s.bin
                dest: loras/s.safetensors
                sha256: {blob.sha256}
        """)
        svc = DownloadService(settings, catalog=load_catalog([path], settings.models_dir))
        svc.start()
        wait_service_started(svc)
        try:
            client = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "x")).test_client()
            assert client.post("/api/models/s/start", headers=BEARER).status_code == 202
            wait_states(client, ["s"], ("downloading",))
            deadline = time.monotonic() + 20
            while svc.get("s").bytes_done == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.post("/api/downloads/s/pause", headers=BEARER).status_code == 202
            paused = wait_states(client, ["s"], ("paused",))["s"]
            assert 0 < paused["bytes_done"] < blob.size
            assert client.post("/api/downloads/s/cancel", headers=BEARER).status_code == 202
            cancelled = wait_states(client, ["s"], ("failed",))["s"]
            assert cancelled["error"] == "cancelled by user"
            assert not any(settings.models_dir.rglob("s.safetensors.part*")), "cancel deletes the partial file"
            assert client.post("/api/downloads/s/retry", headers=BEARER).status_code == 202
            wait_states(client, ["s"], ("downloading",))
            client.post("/api/downloads/all/pause", headers=BEARER)
            wait_states(client, ["s"], ("paused",))
            assert client.post("/api/downloads/all/resume", headers=BEARER).get_json()["count"] == 1
            wait_states(client, ["s"], ("done",), timeout=60)
        finally:
            svc.stop()
    assert (settings.models_dir / "loras/s.safetensors").read_bytes() == blob.data


def test_form_posts_without_javascript_redirect_back_with_a_message(client):
    token = login(client)
    res = client.post("/api/presets/small/start", data={"csrf_token": token})
    assert res.status_code == 302 and res.headers["Location"].endswith("/downloads")
    page = client.get("/downloads").get_data(as_text=True)
    assert "started preset small" in page


def test_downloads_page_renders_presets_and_models(client):
    login(client)
    html = client.get("/downloads").get_data(as_text=True)
    assert "two small files" in html and "loras/a.safetensors" in html and 'data-id="a"' in html


# --- installation status --------------------------------------------------------------------------------


def test_installation_status_reports_components_and_overall_percent(client, svc, settings):
    log = settings.workspace / "logs" / "jupyter.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    res = client.post("/api/installation-status/jupyterlab", headers=BEARER,
                      json={"state": "done", "message": "listening on 8888", "log_path": str(log)})
    assert res.status_code == 200
    svc.store.set_component("sageattention", "running", "building")
    data = client.get("/api/installation-status", headers=BEARER).get_json()
    names = [c["name"] for c in data["components"]]
    assert names[:2] == ["aria2", "model downloads"] and "jupyterlab" in names and "sageattention" in names
    jupyter = next(c for c in data["components"] if c["name"] == "jupyterlab")
    assert jupyter["state"] == "done" and jupyter["log"][-1] == "line 99" and len(jupyter["log"]) == 40
    assert jupyter["started_at"] is None and jupyter["ended_at"]
    assert 0 <= data["overall_percent"] <= 100
    assert client.get("/installation-status", headers=BEARER).status_code == 200


def test_component_logs_outside_the_workspace_are_not_shown(client, svc):
    res = client.post("/api/installation-status/evil", headers=BEARER, json={"state": "running", "log_path": "/etc/shadow"})
    assert res.status_code == 400 and "log file" in res.get_json()["error"]  # refused when reported (#13)...
    svc.store.set_component("evil", "running", None, "/etc/shadow")  # ...and not shown when recorded some other way
    data = client.get("/api/installation-status", headers=BEARER).get_json()
    evil = next(c for c in data["components"] if c["name"] == "evil")
    assert evil["log"] == ["(log /etc/shadow is not a log file in the workspace: not shown)"]


@pytest.mark.parametrize("body", [{"state": "exploded"}, {}, None])
def test_component_report_with_bad_state_is_400(client, body):
    res = client.post("/api/installation-status/x", headers=BEARER, json=body)
    assert res.status_code == 400 and "state" in res.get_json()["error"]


def test_serve_command_answers_and_stops_on_sigterm(settings):
    import signal
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import REPO, cli_env

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "downloader", "serve", "--port", str(port)],
                            env=cli_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
                time.sleep(0.1)
        assert b'"status":"ok"' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out
    password = (Path(settings.state_dir) / "ui-password").read_text().strip()
    assert "password (generated, kept in" in out and password in out


