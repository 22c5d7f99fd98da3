"""Stop on SIGINT/SIGTERM by calling back, so the program can save its state and exit 128 + signal."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals(callback: Callable[[], None]) -> Iterator[list[int]]:
    """Within the block, SIGINT/SIGTERM call `callback`; yields the list of signals received."""
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        callback()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)
