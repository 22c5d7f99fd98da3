"""The aria2c daemon's start-up: its RPC secret never stays on disk, whatever way the start fails."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from downloader.aria2 import Aria2Daemon
from downloader.errors import Aria2Error
from tests.conftest import test_settings


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _secret_files(state_dir: Path) -> list[str]:
    return sorted(p.name for p in state_dir.glob("aria2.*.conf"))


@pytest.mark.parametrize(
    "program, expected",
    [
        ("not a program: no shebang, no ELF header\n", "cannot start aria2c"),
        (f"#!{sys.executable}\nimport sys; print('broken build'); sys.exit(3)\n", "exited at start with code 3"),
        (f"#!{sys.executable}\nimport time; time.sleep(60)\n", "did not answer RPC"),
    ],
    ids=["cannot-exec", "exits-at-once", "never-answers"],
)
def test_a_failed_start_says_why_and_leaves_no_secret_behind(workspace: Path, program: str, expected: str) -> None:
    fake = _executable(workspace / "fake-aria2c", program)
    settings = test_settings(workspace, aria2c=str(fake), aria2_start_timeout=1.0)
    daemon = Aria2Daemon(settings)
    with pytest.raises(Aria2Error, match=expected):
        daemon.start()
    assert _secret_files(settings.state_dir) == []
    assert daemon.proc is None, "a daemon that did not come up is not left running"


def test_a_started_daemon_has_already_removed_its_secret_file(workspace: Path) -> None:
    settings = test_settings(workspace)
    with Aria2Daemon(settings) as daemon:
        assert daemon.pid is not None
        assert _secret_files(settings.state_dir) == []
