"""The installation-status page shows components' logs, and only logs: never the state folder's secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.config import SECRET_STATE_FILES, Settings
from downloader.manifest import Catalog
from downloader.service import DownloadService
from web import create_app
from web.auth import AuthConfig

PASSWORD = "status-page-password"
BEARER = {"Authorization": f"Bearer {PASSWORD}"}


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[object, DownloadService]]:
    svc = DownloadService(settings, catalog=Catalog(models={}, presets={}))  # not started: no download needed
    app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
    yield app.test_client(), svc
    svc.store.close()


def _secrets(settings: Settings) -> dict[str, str]:
    """The secret files of the state folder, as the service writes them (the session key exists once the app does)."""
    values = {}
    for name in SECRET_STATE_FILES:
        path = settings.state_dir / name
        if not path.exists():
            path.write_text(f"{name}-value-that-must-never-be-served\n")
        values[name] = path.read_text().strip()
    return values


def _shown(client) -> str:
    return client.get("/api/installation-status", headers=BEARER).get_data(as_text=True)


@pytest.mark.parametrize("secret", sorted(SECRET_STATE_FILES))
def test_a_secret_file_is_refused_as_a_log_and_never_shown(served, settings, secret) -> None:
    client, _ = served
    values = _secrets(settings)
    res = client.post("/api/installation-status/jupyterlab", headers=BEARER,
                      json={"state": "running", "log_path": str(settings.state_dir / secret)})
    assert res.status_code == 400 and "log file" in res.get_json()["error"]
    page = _shown(client) + client.get("/installation-status", headers=BEARER).get_data(as_text=True)
    assert all(value not in page for value in values.values())


def test_a_secret_recorded_earlier_is_still_not_shown(served, settings) -> None:
    """A row written before this rule (or straight into the DB) is checked again when the page is built."""
    client, svc = served
    values = _secrets(settings)
    for i, name in enumerate(sorted(SECRET_STATE_FILES)):
        svc.store.set_component(f"old-{i}", "done", "from an older version", str(settings.state_dir / name))
    page = _shown(client)
    assert "not a log file" in page
    assert all(value not in page for value in values.values())


def test_a_log_named_link_to_a_secret_is_not_followed(served, settings) -> None:
    client, _ = served
    values = _secrets(settings)
    settings.logs_dir.mkdir(parents=True)
    trap = settings.logs_dir / "innocent.log"
    trap.symlink_to(settings.state_dir / "session-key")
    res = client.post("/api/installation-status/custom", headers=BEARER, json={"state": "done", "log_path": str(trap)})
    assert res.status_code == 400
    assert values["session-key"] not in _shown(client)


def test_logs_in_the_logs_folder_and_log_files_are_shown(served, settings) -> None:
    client, _ = served
    settings.logs_dir.mkdir(parents=True)
    (settings.logs_dir / "comfyui").write_text("ComfyUI says hello\n")  # the logs folder: any name
    (settings.state_dir / "aria2.log").write_text("aria2 notice line\n")  # a *.log file in the state folder
    for name, path in (("comfyui", settings.logs_dir / "comfyui"), ("aria2-extra", settings.state_dir / "aria2.log")):
        res = client.post(f"/api/installation-status/{name}", headers=BEARER, json={"state": "running", "log_path": str(path)})
        assert res.status_code == 200, res.get_json()
    page = _shown(client)
    assert "ComfyUI says hello" in page and "aria2 notice line" in page


def test_a_log_outside_the_workspace_is_refused(served, tmp_path: Path) -> None:
    client, _ = served
    outside = tmp_path / "elsewhere.log"
    outside.write_text("private\n")
    res = client.post("/api/installation-status/x", headers=BEARER, json={"state": "done", "log_path": str(outside)})
    assert res.status_code == 400 and "private" not in _shown(client)
