"""downloader/pod/supervisor.py with real short-lived children and a fake clock for the restart backoff.

Every wait polls a condition with a generous deadline: the children are real processes on a busy machine.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader.pod.supervisor import Spec, Supervisor

PY = sys.executable


class FakeClock:
    """What the supervisor reads as "now"; only the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0, sup: Supervisor | None = None) -> None:
    """Poll `predicate` (ticking `sup` first, if given) until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if sup is not None:
            sup.tick()
        if predicate():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def changes() -> list[tuple[str, str, str]]:
    """(child, state, message) for every on_change call, in order."""
    return []


@pytest.fixture
def sup(tmp_path: Path, clock: FakeClock, out: io.StringIO, changes: list[tuple[str, str, str]]):
    s = Supervisor(tmp_path / "logs", clock=clock, out=out,
                   on_change=lambda child, message: changes.append((child.spec.name, child.state, message)))
    yield s
    s.stop_all(grace=5)


def test_a_crashing_service_backs_off_1_2_4_up_to_30_s_then_gives_up(sup, clock, changes) -> None:
    child = sup.start(Spec("svc", [PY, "-c", "import sys; print('up'); sys.exit(3)"], max_restarts=7))
    assert child.state == "running" and changes[-1][2] == f"started (pid {child.pid})"
    pids = [child.pid]
    for restarts, delay in enumerate([1, 2, 4, 8, 16, 30, 30]):
        wait_for(lambda: child.state == "backoff", f"exit {restarts + 1}", sup=sup)
        assert child.last_exit == 3 and child.restarts == restarts
        assert changes[-1] == ("svc", "backoff", f"exited with code 3; restarting in {delay} s")
        assert child.next_start == clock.now + delay
        # Not a moment before the delay is over, however often the loop ticks.
        clock.now += delay - 0.25  # binary fractions: the clock arithmetic is exact
        for _ in range(3):
            sup.tick()
        assert child.state == "backoff" and child.pid == pids[-1]
        clock.now += 0.25
        sup.tick()
        assert child.state == "running" and child.restarts == restarts + 1 and child.pid not in pids
        pids.append(child.pid)
    # The bound: the 7th restart was the last one.
    wait_for(lambda: child.state != "running", "the last exit", sup=sup)
    assert child.state == "failed" and child.restarts == 7 and child.last_exit == 3
    assert changes[-1] == ("svc", "failed", "exited with code 3; gave up after 7 restarts")
    clock.now += 3600
    sup.tick()
    assert child.state == "failed" and child.pid == pids[-1], "a service given up on is not started again"
    assert len(pids) == 8
    assert (sup.log_dir / "svc.log").read_text() == "up\n" * 8, "every run appends to the same log"


def test_the_backoff_restarts_from_1_s_for_a_new_start(sup, clock) -> None:
    child = sup.start(Spec("svc", [PY, "-c", "raise SystemExit(1)"], max_restarts=0))
    wait_for(lambda: child.state == "failed", "gave up at once (max_restarts=0)", sup=sup)
    again = sup.start(Spec("svc", [PY, "-c", "raise SystemExit(1)"], max_restarts=1))
    assert sup.children["svc"] is again and again.restarts == 0
    wait_for(lambda: again.state == "backoff", "the first exit", sup=sup)
    assert again.next_start == clock.now + 1


# A service that runs until the test creates the file named by argv[1], then removes it and crashes (exit 3):
# the test decides how long each run lasts on the fake clock.
CRASH_ON_CUE = """
import os, sys, time
cue = sys.argv[1]
while not os.path.exists(cue):
    time.sleep(0.02)
os.remove(cue)
sys.exit(3)
"""


def crash(sup: Supervisor, child, cue: Path) -> None:
    """Make the running service crash now and wait until the supervisor has noticed it."""
    assert child.state == "running"
    cue.touch()
    wait_for(lambda: child.state != "running", "the crash to be noticed", sup=sup)


def test_a_run_of_stable_seconds_resets_the_backoff_and_the_restart_count(sup, clock, changes, tmp_path) -> None:
    cue = tmp_path / "crash"
    child = sup.start(Spec("svc", [PY, "-c", CRASH_ON_CUE, str(cue)], max_restarts=2, stable_seconds=60))
    crash(sup, child, cue)
    assert changes[-1] == ("svc", "backoff", "exited with code 3; restarting in 1 s")
    clock.now += 1
    sup.tick()
    crash(sup, child, cue)
    assert changes[-1] == ("svc", "backoff", "exited with code 3; restarting in 2 s")
    clock.now += 2
    sup.tick()
    assert child.state == "running" and child.restarts == 2, "one more crash in a row and it is given up on"
    # It now runs for SERVICE_STABLE_SECONDS without exiting: it has recovered.
    clock.now += 60
    sup.tick()
    assert child.state == "running" and child.restarts == 0
    # A crash after that is a new incident: 1 s again, and the bound of 2 restarts counts from zero.
    crash(sup, child, cue)
    assert changes[-1] == ("svc", "backoff", "exited with code 3; restarting in 1 s")
    for delay in (1, 2):
        clock.now += delay
        sup.tick()
        assert child.state == "running"
        crash(sup, child, cue)
    assert child.state == "failed" and child.restarts == 2
    assert changes[-1] == ("svc", "failed", "exited with code 3; gave up after 2 restarts")


@pytest.mark.parametrize(("ran", "restarts", "delay"), [
    (59.75, 1, 2),  # not stable yet: the same crash loop, counting on
    (60.0, 0, 1),  # stable, noticed at the crash itself: counted afresh
])
def test_a_crash_before_stable_seconds_keeps_counting(sup, clock, changes, tmp_path, ran, restarts, delay) -> None:
    cue = tmp_path / "crash"
    child = sup.start(Spec("svc", [PY, "-c", CRASH_ON_CUE, str(cue)], max_restarts=5, stable_seconds=60))
    crash(sup, child, cue)
    clock.now += 1
    sup.tick()
    assert child.state == "running" and child.restarts == 1
    clock.now += ran  # the clock stands still from here: every tick until the crash sees this run `ran` s old
    crash(sup, child, cue)
    assert child.state == "backoff" and child.restarts == restarts
    assert changes[-1] == ("svc", "backoff", f"exited with code 3; restarting in {delay} s")
    assert child.next_start == clock.now + delay


@pytest.mark.parametrize("code,state", [(0, "done"), (5, "failed")])
def test_a_one_shot_job_ends_by_its_exit_code_and_is_never_restarted(sup, clock, changes, code, state) -> None:
    child = sup.start(Spec("job", [PY, "-c", f"raise SystemExit({code})"], restart=False))
    wait_for(lambda: child.state != "running", "the job to end", sup=sup)
    assert child.state == state and child.last_exit == code and child.restarts == 0
    assert changes[-1] == ("job", state, f"exited with code {code}")
    clock.now += 3600
    sup.tick()
    assert child.state == state and child.restarts == 0


def test_output_goes_to_the_log_file_and_prefixed_to_out(sup, out) -> None:
    script = "import sys; print('hello'); print('to stderr', file=sys.stderr, flush=True); print('bye')"
    child = sup.start(Spec("job", [PY, "-c", script], restart=False))
    wait_for(lambda: child.state == "done", "the job", sup=sup)
    log = sup.log_dir / "job.log"
    wait_for(lambda: log.read_text().count("\n") == 3, "three lines in the log")
    assert child.log_path == log
    assert sorted(log.read_text().splitlines()) == ["bye", "hello", "to stderr"]
    wait_for(lambda: out.getvalue().count("\n") == 3, "three lines on out")
    assert sorted(out.getvalue().splitlines()) == ["[job] bye", "[job] hello", "[job] to stderr"]


def test_a_shell_string_runs_through_sh_in_the_given_folder_and_environment(sup, tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "GREETING": "hi there"}
    child = sup.start(Spec("sh", 'echo "$GREETING from $(pwd)"', cwd=tmp_path, env=env, restart=False))
    wait_for(lambda: child.state == "done", "the shell job", sup=sup)
    log = sup.log_dir / "sh.log"
    wait_for(lambda: log.read_text().endswith("\n"), "its line")
    assert log.read_text() == f"hi there from {tmp_path}\n"


@pytest.mark.parametrize("how", ["no such program", "no such folder"])
def test_a_command_that_cannot_start_fails_with_the_reason_in_its_log(sup, tmp_path, changes, how) -> None:
    if how == "no such program":
        spec = Spec("bad", [str(tmp_path / "no-such-program")])
    else:
        spec = Spec("bad", [PY, "-c", "pass"], cwd=tmp_path / "no-such-folder")
    child = sup.start(spec)
    assert child.state == "failed" and child.proc is None and child.pid is None
    text = (sup.log_dir / "bad.log").read_text()
    assert text.startswith("cannot start: [Errno 2] No such file or directory") and "no-such-" in text
    assert changes[-1] == ("bad", "failed", text.strip())
    sup.tick()
    assert child.state == "failed", "not retried as if it had crashed"


def test_a_restart_that_cannot_start_fails(sup, clock, tmp_path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    child = sup.start(Spec("svc", [PY, "-c", "raise SystemExit(1)"], cwd=folder))
    wait_for(lambda: child.state == "backoff", "the first exit", sup=sup)
    folder.rmdir()
    clock.now += 1
    sup.tick()
    assert child.state == "failed" and "cannot start" in (sup.log_dir / "svc.log").read_text()


# A child that ignores SIGTERM, with a grandchild in its process group that records the SIGTERM it gets.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print("ready", grandchild.pid, flush=True)
while True:
    time.sleep(1)
"""
GRANDCHILD = """
import pathlib, signal, sys, time
def on_term(*_):
    pathlib.Path(sys.argv[1]).write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1] + ".ready").touch()
while True:
    time.sleep(1)
"""
POLITE = """
import signal, sys, time
def on_term(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_stop_all_sends_sigterm_to_each_group_then_sigkill_after_the_grace(sup, tmp_path) -> None:
    mark = tmp_path / "grandchild-term"
    stubborn = sup.start(Spec("stubborn", [PY, "-c", STUBBORN, GRANDCHILD, str(mark)]))
    polite = sup.start(Spec("polite", [PY, "-c", POLITE]))
    waiting = sup.start(Spec("waiting", [PY, "-c", "raise SystemExit(1)"]))
    stubborn_log, polite_log = sup.log_dir / "stubborn.log", sup.log_dir / "polite.log"
    # Signal handlers are installed before "ready": only then is a signal's effect known.
    wait_for(lambda: stubborn_log.exists() and stubborn_log.read_text().startswith("ready "), "the stubborn child")
    wait_for(lambda: Path(f"{mark}.ready").exists(), "the grandchild")
    wait_for(lambda: polite_log.exists() and polite_log.read_text() == "ready\n", "the polite child")
    wait_for(lambda: waiting.state == "backoff", "a crashed service waiting to restart", sup=sup)
    grandchild = int(stubborn_log.read_text().split()[1])

    sup.stop_all(grace=1.0)

    assert polite.proc is not None and polite.proc.returncode == 0
    wait_for(lambda: polite_log.read_text() == "ready\ngot SIGTERM\n", "the polite child's last words")
    assert mark.read_text() == "SIGTERM", "SIGTERM reaches the whole process group, not just its leader"
    assert stubborn.proc is not None and stubborn.proc.returncode == -signal.SIGKILL, "SIGKILL after the grace"
    wait_for(lambda: gone(grandchild), "the grandchild to be gone")
    assert {c.spec.name: c.state for c in sup.children.values()} == {
        "stubborn": "stopped", "polite": "stopped", "waiting": "stopped"}


def test_stop_one_child(sup) -> None:
    polite = sup.start(Spec("polite", [PY, "-c", POLITE]))
    other = sup.start(Spec("other", [PY, "-c", POLITE]))
    log = sup.log_dir / "polite.log"
    wait_for(lambda: log.exists() and log.read_text() == "ready\n", "the child")
    sup.stop("polite", grace=10)
    assert polite.state == "stopped" and polite.last_exit == 0
    assert log.read_text() == "ready\ngot SIGTERM\n"
    sup.tick()
    assert other.state == "running" and other.proc is not None and other.proc.poll() is None

