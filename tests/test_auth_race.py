"""The secrets kept in the state folder (the UI password, the session key, the Jupyter token) when several processes
create one at the same moment, as pods starting together on one network volume do (issue #12): exactly one value
wins, every process uses it, none ever reads a half-written file, nothing is overwritten.

Races are run for real, many rounds, by threads and by processes released together by a barrier; on a tmp folder
and (marker `shared_volume`) on a real MooseFS mounted twice, one side through each mount. The moments in between
(a file created but not yet written, a file that appears between the read and the create) are made to happen
deterministically through the hooks `read_or_create` offers.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from downloader import secret_files
from downloader.config import (
    JUPYTER_TOKEN_FILE,
    SESSION_KEY_FILE,
    UI_PASSWORD_FILE,
    PodSettings,
    Settings,
)
from downloader.errors import DownloaderError
from downloader.pod.workspace import jupyter_token
from downloader.secret_files import read_or_create
from web.auth import resolve_auth, secret_key

THREADS = 8
ROUNDS = 25


@pytest.fixture
def second_view(request: pytest.FixtureRequest, workspace: Path) -> Path:
    """The workspace as another pod mounts it: the same folder on a local disk; on MooseFS the same folder through
    the second mount."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("workspace") == "moosefs":
        return request.getfixturevalue("moosefs").on_b(workspace)  # type: ignore[no-any-return]
    return workspace


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; their results in order (an exception fails the test)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def assert_one_winner(results: list[tuple[str, bool]], file: Path, where: str) -> None:
    values = {value for value, _ in results}
    assert len(values) == 1 and "" not in values, f"{where}: {results}"
    assert sum(created for _, created in results) == 1, f"{where}: exactly one creates it: {results}"
    assert file.read_text() == values.pop() + "\n", where
    assert stat.S_IMODE(file.stat().st_mode) == 0o600, where
    assert [p.name for p in file.parent.iterdir()] == [file.name], f"{where}: temporary files left"


@pytest.mark.shared_volume
def test_threads_creating_one_secret_at_once_agree_on_one(workspace, second_view) -> None:
    for round_ in range(ROUNDS):
        folder = f"round-{round_}"
        # Half the threads on each mount: two pods' processes.
        paths = [(workspace if i % 2 else second_view) / folder / UI_PASSWORD_FILE for i in range(THREADS)]
        calls = [lambda path=path, i=i: read_or_create(path, lambda i=i: f"value-of-thread-{i}") for i, path in
                 enumerate(paths)]
        assert_one_winner(race(calls), workspace / folder / UI_PASSWORD_FILE, f"round {round_}")


def _process(base: str, rounds: int, barrier: Any, results: Any, who: str) -> None:
    """One racing process (a pod starting): each round, released with the other, reads or creates the round's file."""
    for round_ in range(rounds):
        barrier.wait(60)
        value, created = read_or_create(Path(base) / f"round-{round_}" / SESSION_KEY_FILE,
                                        lambda round_=round_: f"{who}-{round_}")
        results.put((who, round_, value, created))


@pytest.mark.shared_volume
def test_processes_creating_one_secret_at_once_agree_on_one(workspace, second_view) -> None:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each, as each pod has
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(str(base), ROUNDS, barrier, results, who))
             for base, who in ((workspace, "pod-a"), (second_view, "pod-b"))]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for round_ in range(ROUNDS):
        mine = [(value, created) for _, r, value, created in got if r == round_]
        assert_one_winner(mine, workspace / f"round-{round_}" / SESSION_KEY_FILE, f"round {round_}")


@pytest.mark.shared_volume
def test_two_pods_starting_together_get_one_password_one_session_key_one_token(workspace, second_view) -> None:
    env = {"MODEL_PRESETS": "none"}
    pods = [Settings.from_env({**env, "WORKSPACE": str(w), "RUNPOD_POD_ID": n})
            for w, n in ((workspace, "a"), (second_view, "b"))]
    cfg = PodSettings.from_env(env)
    passwords = race([lambda s=s: resolve_auth(s).password for s in pods])
    keys = race([lambda s=s: secret_key(s.state_dir) for s in pods])
    tokens = race([lambda s=s: jupyter_token(cfg, s.state_dir)[0] for s in pods])
    for values, name in ((passwords, UI_PASSWORD_FILE), (keys, SESSION_KEY_FILE), (tokens, JUPYTER_TOKEN_FILE)):
        assert len(set(values)) == 1 and values[0], name
        assert (pods[0].state_dir / name).read_text() == values[0] + "\n", name


# --- the moments in between, made to happen ------------------------------------------------------------------
def test_a_file_another_process_made_is_read_not_replaced(tmp_path) -> None:
    path = tmp_path / "state" / UI_PASSWORD_FILE
    path.parent.mkdir()
    path.write_text("set-by-a-person")  # no newline: a file someone wrote by hand is taken as it is
    assert read_or_create(path, lambda: "new") == ("set-by-a-person", False)
    assert path.read_text() == "set-by-a-person"


def test_a_file_that_appears_between_the_read_and_the_create_wins(tmp_path) -> None:
    path = tmp_path / "state" / UI_PASSWORD_FILE

    def make() -> str:  # this process found no file; the other pod creates it now, before this one can
        path.write_text("the-other-pod-s\n")
        return "this-pod-s"

    assert read_or_create(path, make) == ("the-other-pod-s", False)
    assert path.read_text() == "the-other-pod-s\n"
    assert [p.name for p in path.parent.iterdir()] == [UI_PASSWORD_FILE]


def test_a_file_being_written_is_waited_for_never_read_empty(tmp_path) -> None:
    path = tmp_path / "state" / SESSION_KEY_FILE
    path.parent.mkdir()
    path.touch()  # another process created it and has not written it yet
    waits = []

    def pause() -> None:  # the other process finishes while this one waits
        waits.append(path.read_text())
        path.write_text("written-at-last\n")

    assert read_or_create(path, lambda: "mine", pause=pause) == ("written-at-last", False)
    assert waits == [""], "it waited once, having seen the file empty"


def test_a_file_created_empty_in_the_race_window_is_waited_for(tmp_path) -> None:
    path = tmp_path / "state" / JUPYTER_TOKEN_FILE

    def make() -> str:  # the other pod wins the create and is still writing
        path.touch()
        return "this-pod-s"

    assert read_or_create(path, make, pause=lambda: path.write_text("the-other-pod-s\n")) == ("the-other-pod-s", False)


def test_a_file_left_empty_is_an_error_in_words_and_is_not_replaced(tmp_path, monkeypatch) -> None:
    """Before this version, a process killed between its create and its write left an empty file: the service
    must not run with an empty password (any empty credential would match it), nor make up another one."""
    path = tmp_path / "state" / UI_PASSWORD_FILE
    path.parent.mkdir()
    path.touch()
    monkeypatch.setattr(secret_files, "WAIT_SECONDS", 0.05)
    settings = Settings.from_env({"DOWNLOADER_STATE": str(path.parent), "WORKSPACE": str(tmp_path)})
    with pytest.raises(DownloaderError, match=r"ui-password is still empty after 0 s.*delete it and start again"):
        resolve_auth(settings)
    assert path.read_text() == ""


def test_without_hard_links_the_race_still_has_one_winner(tmp_path, monkeypatch) -> None:
    """A filesystem that offers no link(2): an exclusive create and one write; readers wait while it is empty."""

    def no_links(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / UI_PASSWORD_FILE
        calls = [lambda i=i, path=path: read_or_create(path, lambda: f"value-{i}") for i in range(THREADS)]
        assert_one_winner(race(calls), path, f"round {round_}")


def test_a_bad_generator_is_refused(tmp_path) -> None:
    for bad in ("", "two\nlines"):
        with pytest.raises(ValueError, match="one non-empty line"):
            read_or_create(tmp_path / "s" / UI_PASSWORD_FILE, lambda bad=bad: bad)
    assert not (tmp_path / "s" / UI_PASSWORD_FILE).exists()
