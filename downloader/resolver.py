"""Resolving sources off the manager loop: a hub can take a minute to answer, and the loop must keep ticking.

The loop starts a resolution here and collects its result on a later tick (a finished one wakes it); only the
loop writes what came back into the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .config import Settings
from .errors import SourceError
from .manifest import ModelSpec, is_pending
from .sources import Resolved, resolve_all
from .state import Download

log = logging.getLogger(__name__)
WORKERS = 4  # resolutions at once: the loop starts at most max_concurrent of them anyway


def spec_of(row: Download) -> ModelSpec:
    """The spec to resolve a stored download with: a sha256 from the manifest stays pinned, one from the hub
    is asked again; a CivitAI download whose file is not named yet has no dest (resolving names it)."""
    pinned = row.sha256 if row.sha256_origin == "manifest" else None
    dest = None if is_pending(row.dest) else row.dest
    return ModelSpec(id=row.id, source=row.source, dest=dest, revision=row.revision, sha256=pinned)


def _resolve_one(spec: ModelSpec, settings: Settings) -> Resolved | SourceError:
    try:
        return resolve_all([spec], settings)[0]
    except Exception as e:  # a bug or an odd answer must not be lost in the pool: it is retried
        log.exception("resolving %s failed", spec.id)
        return SourceError(f"resolving failed: {type(e).__name__}: {e}", retryable=True)


class ResolverPool:
    """Resolutions in flight, by download id."""

    def __init__(self, settings: Settings, on_done: Callable[[], None]) -> None:
        self.settings = settings
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="resolve")
        self._futures: dict[str, Future[Resolved | SourceError]] = {}

    def __contains__(self, download_id: object) -> bool:
        return download_id in self._futures

    def __len__(self) -> int:
        return len(self._futures)

    def start(self, row: Download) -> None:
        """Begin resolving a download's source in a worker thread."""
        future = self._pool.submit(_resolve_one, spec_of(row), self.settings)
        self._futures[row.id] = future
        future.add_done_callback(lambda _f: self._on_done())

    def finished(self) -> list[tuple[str, Resolved | SourceError]]:
        """The results that came in since the last call (each given once)."""
        done = [(i, f) for i, f in self._futures.items() if f.done()]
        for download_id, _ in done:
            del self._futures[download_id]
        return [(download_id, f.result()) for download_id, f in done]

    def forget(self) -> None:
        """Drop every resolution in flight: their results, when they come, are not wanted (the loop restarts)."""
        self._futures.clear()

    def close(self) -> None:
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
