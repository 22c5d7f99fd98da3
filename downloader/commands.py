"""Requests to the manager loop, the one writer of download states: a queue of calls and their answers.

A request thread (the web UI, a CLI client of the service) puts a call on the queue and waits, bounded, for the
loop to run it; the answer is the call's return value or the exception it raised (NotFound, Conflict, ...). A call
whose caller gave up waiting is never run afterwards, so a time-out means "nothing happened".
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import DownloaderError

T = TypeVar("T")


class NotFound(DownloaderError, KeyError):
    """No such download or preset."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Conflict(DownloaderError):
    """The request contradicts what exists (an id or a dest already taken)."""


class EngineUnavailable(DownloaderError):
    """The loop cannot answer now (starting, aria2c not running, the loop failing); the message says why."""


class Command(Generic[T]):
    """One call for the loop to run; `wait` gives its answer to the thread that asked."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._started = False
        self._result: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        """Run the call (in the loop thread) unless its caller stopped waiting; keep the answer."""
        with self._lock:
            if self._abandoned:
                return
            self._started = True
        try:
            self._result = self.fn()
        except BaseException as e:  # noqa: BLE001 - the caller gets it; the loop carries on
            self._error = e
        self._done.set()

    def wait(self, timeout: float, why: Callable[[], str]) -> T:
        """The call's answer, raised if it is an exception; EngineUnavailable(why()) if none came in time."""
        if not self._done.wait(timeout):
            with self._lock:
                if not self._started:
                    self._abandoned = True  # the loop must not act on a request its caller was told failed
                    raise EngineUnavailable(f"the download engine did not answer within {timeout:.0f} s: {why()}")
            # The loop is running it: its answer is what happened (commands are short database writes).
            if not self._done.wait(timeout):
                raise EngineUnavailable(f"the download engine is still working on the request after {2 * timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class CommandQueue:
    """Calls waiting for the loop, oldest first."""

    def __init__(self, wake: threading.Event) -> None:
        self._queue: queue.Queue[Command[Any]] = queue.Queue()
        self._wake = wake

    def put(self, fn: Callable[[], T]) -> Command[T]:
        """Queue a call and wake the loop; returns the command to wait on (or to forget: fire and forget)."""
        command = Command(fn)
        self._queue.put(command)
        self._wake.set()
        return command

    def run_pending(self) -> None:
        """Run every queued call, in the calling (loop) thread."""
        while True:
            try:
                command = self._queue.get_nowait()
            except queue.Empty:
                return
            command.run()
