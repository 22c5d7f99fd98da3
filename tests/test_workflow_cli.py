"""`downloader workflow FILE.json [--fetch]` as a real process: the table and the exit codes, fetching in-process
and through a running `downloader serve`, against a hub stand-in (huggingface.co-style links on HF_ENDPOINT), an
allowed loopback host and a host that is not allowed, which must never be asked (tests/workflow_builder.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from downloader.state import Store
from downloader.workflows import MAX_WORKFLOW_BYTES
from tests.conftest import run_cli, service_process, wait_for
from tests.servers import FakeHub, FileServer
from tests.test_cli_client import lock_owner
from tests.workflow_builder import (
    BYPASSED,
    FETCHED,
    HIGH,
    MUTED,
    UNUSED,
    VAE,
    Payload,
    hub_paths_asked,
    payloads,
    serve,
    wan_workflow,
)

PASSWORD = "workflow-cli-pw"


@dataclass
class Setup:
    hub: FakeHub
    cdn: FileServer
    forbidden: FileServer
    files: dict[str, Payload]
    workflow: Path  # needs an unknown file and one on a host that is not allowed
    clean: Path  # needs only what can be fetched
    env: dict[str, str]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    files = payloads()
    with FakeHub() as hub, FileServer() as cdn, FileServer() as forbidden:
        serve(hub, cdn, forbidden, files)
        sha = files["style_lora"].sha256
        workflow, clean = tmp_path / "wan test.json", tmp_path / "clean.json"
        workflow.write_bytes(wan_workflow(hub.url, cdn.url, forbidden.url, sha))
        clean.write_bytes(wan_workflow(hub.url, cdn.url, forbidden.url, sha, clean=True))
        env = {"HF_ENDPOINT": hub.url, "DOWNLOADER_ALLOWED_HOSTS": cdn.url}  # http://127.0.0.1:<port>
        yield Setup(hub, cdn, forbidden, files, workflow, clean, env)


def placed(settings, setup: Setup) -> bool:
    expected = dict(zip(FETCHED, (setup.files[HIGH], setup.files[VAE], setup.files["style_lora"])))
    return all((settings.models_dir / d).is_file() and (settings.models_dir / d).read_bytes() == p.data
               for d, p in expected.items())


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FAILED ")]


def never_asked(setup: Setup) -> None:
    """The host that is not allowed got no request; the hub none for muted, bypassed or unused entries."""
    assert setup.forbidden.requests == []
    assert not hub_paths_asked(setup.hub) & {MUTED, BYPASSED, UNUSED}


def test_the_table_and_fetching_in_this_process(settings, setup: Setup) -> None:
    res = run_cli(settings, "workflow", str(setup.workflow), **setup.env)
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    for name in ("wan_test_high.safetensors", "wan_test_vae.safetensors", "style_lora.safetensors",
                 "mystery_controlnet.safetensors", "4x_upscaler.pth"):
        assert re.search(rf"{re.escape(name)}\s*│\s*missing", out), name
    assert f"not allowed: {setup.forbidden.url}/files/4x_upscaler.pth" in out
    assert "hf://test-org/wan-test/split_files/vae/wan_test_vae.safetensors @ main" in out
    assert "muted_lora" not in out and "bypassed_lora" not in out and "unused" not in out
    assert "0 of 5 model file(s) present" in out and "--fetch` downloads the 3 that can be fetched" in out
    assert setup.hub.requests == [] and not settings.models_dir.exists()  # reading it fetched and wrote nothing

    res = run_cli(settings, "workflow", str(setup.workflow), "--fetch", **setup.env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert sorted(failed_lines(res.stderr)) == [
        ("FAILED controlnet/mystery_controlnet.safetensors: unknown (the workflow gives no URL for it and no "
         "manifest model has its name: add it by URL)"),
        (f"FAILED upscale_models/4x_upscaler.pth: not allowed: {setup.forbidden.url}/files/4x_upscaler.pth (only "
         "the hub, CivitAI and the hosts in DOWNLOADER_ALLOWED_HOSTS are fetched)"),
    ]
    assert "3 of 5 model file(s) present" in res.stdout
    assert placed(settings, setup)
    never_asked(setup)
    with Store(settings.db_path) as store:
        assert {r.id: (r.state, r.verified) for r in store.downloads()} == {
            "wan_test_high": ("done", True), "wan_test_vae": ("done", True), "style_lora": ("done", True)}

    res = run_cli(settings, "workflow", str(setup.clean), **setup.env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 3 model file(s) present" in res.stdout and res.stdout.count("present") == 4
    res = run_cli(settings, "workflow", str(setup.clean), "--fetch", **setup.env)
    assert res.returncode == 0 and "all 3 model file(s) present" in res.stdout


def test_fetch_goes_through_the_running_service(settings, setup: Setup, tmp_path: Path) -> None:
    with service_process(settings, tmp_path / "service.log", DOWNLOADER_PASSWORD=PASSWORD, **setup.env) as svc:
        wait_for(lambda: lock_owner(settings) == svc.proc.pid, "the service to own the workspace")
        res = run_cli(settings, "workflow", str(setup.clean), "--fetch", **setup.env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "all 3 model file(s) present" in res.stdout and "waiting" not in res.stdout + res.stderr
        assert placed(settings, setup)
        assert lock_owner(settings) == svc.proc.pid  # the service downloaded them: it held the workspace all along
        code, data = svc.api("GET", "/api/downloads", PASSWORD)
        rows = {d["id"]: d for d in data["downloads"]}
        assert code == 200 and all(rows[i]["state"] == "done" and rows[i]["verified"]
                                   for i in ("wan_test_high", "wan_test_vae", "style_lora"))
        # The other workflow: what it has is present, what cannot be fetched is one line each, exit 1.
        res = run_cli(settings, "workflow", str(setup.workflow), "--fetch", **setup.env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert [line.split(":")[0] for line in sorted(failed_lines(res.stderr))] == [
            "FAILED controlnet/mystery_controlnet.safetensors", "FAILED upscale_models/4x_upscaler.pth"]
        # The service's own answer is the same table.
        code, answer = svc.api("POST", "/api/workflows", PASSWORD, json.loads(setup.workflow.read_text()))
        assert code == 200 and sorted(m["state"] for m in answer["models"]) == ["missing"] * 2 + ["present"] * 3
    never_asked(setup)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "the workflow is not valid JSON"),
        (b'{"name": "a shopping list"}', "this JSON is not a ComfyUI workflow"),
        (b"[]", "a workflow is a JSON object"),
        (None, "the workflow is 17.0 MiB; the limit is 16.0 MiB"),
    ],
)
def test_a_file_that_is_not_a_workflow_exits_2_with_one_line(settings, tmp_path: Path, content: bytes | None,
                                                            says: str) -> None:
    path = tmp_path / "not-a-workflow.json"
    if content is None:
        with open(path, "wb") as fh:  # sparse: 17 MiB that take no room
            fh.truncate(MAX_WORKFLOW_BYTES + 1024 * 1024)
    else:
        path.write_bytes(content)
    for extra in ((), ("--fetch",)):
        res = run_cli(settings, "workflow", str(path), *extra)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and says in lines[0] and str(path) in lines[0], res.stderr
        assert res.stdout == ""
    assert not settings.models_dir.exists() and not settings.db_path.exists()


def test_a_missing_file_or_a_folder_is_bad_input(settings, tmp_path: Path) -> None:
    for target in (tmp_path / "nope.json", tmp_path):
        res = run_cli(settings, "workflow", str(target))
        assert res.returncode == 2 and "FILE" in res.stderr, res.stderr


def test_the_command_has_help_with_an_example(settings) -> None:
    res = run_cli(settings, "workflow", "--help")
    assert res.returncode == 0 and "Example:" in res.stdout and "--fetch" in res.stdout
