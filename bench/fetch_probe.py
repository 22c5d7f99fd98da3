"""`python -m downloader ...` with timestamps: the real CLI, timed from inside by wrapping a few functions.

Used by bench/bench_nginx.py only; the product files are not touched (the wrappers live in this process).
Run as `python bench/fetch_probe.py fetch manifest.yaml`; the timeline (wall-clock seconds, `time.time()`)
goes as JSON to $BENCH_PROBE_OUT when the process exits. $BENCH_ARIA2_EXTRA (JSON object) overrides aria2
options of the project (e.g. aria2's own defaults), to separate "our aria2 options" from "our overhead".

Points: python (this file's first line: interpreter up), imports (the CLI package imported), manifest
(manifests loaded), resolve_start/resolved (the sources asked for size), aria2_start/aria2_ready (aria2c
spawned, its RPC answering), added (aria2.addUri returned), complete_seen (the loop saw aria2 report complete,
with left_to_hash: bytes the prefix hasher still had to read), place_start (sha256 done) / placed, close_start
/ closed (Manager closed: aria2c stopped), exit (atexit).
"""

import time

T: dict[str, float] = {"python": time.time()}

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _dump() -> None:
    T["exit"] = time.time()
    out = os.environ.get("BENCH_PROBE_OUT")
    if out:
        Path(out).write_text(json.dumps(T))


atexit.register(_dump)


def _timed(owner: Any, name: str, before: str | None, after: str | None) -> None:
    """Wrap `owner.name` to note the time before and/or after each call (the first call only)."""
    original = getattr(owner, name, None)
    if original is None:  # the product moved it: the point is simply missing from the timeline
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            T.setdefault(before, time.time())
        try:
            return original(*args, **kwargs)
        finally:
            if after:
                T.setdefault(after, time.time())

    setattr(owner, name, wrapper)


from downloader import cli  # what `python -m downloader` imports

T["imports"] = time.time()

import downloader.aria2 as aria2_mod
import downloader.manager as manager_mod
import downloader.plan as plan_mod

with_extra = json.loads(os.environ.get("BENCH_ARIA2_EXTRA") or "{}")
if with_extra:
    original_options = aria2_mod.Aria2Daemon._options

    def _options(self: Any, port: int, secret: str) -> dict[str, str]:
        options = original_options(self, port, secret)
        options.update(with_extra)
        return options

    aria2_mod.Aria2Daemon._options = _options  # type: ignore[method-assign]

try:
    import downloader.cli.app as app_mod

    _timed(app_mod, "load", None, "manifest")
except ImportError:
    pass
_timed(plan_mod, "resolve_all", "resolve_start", "resolved")
_timed(aria2_mod.Aria2Daemon, "start", "aria2_start", "aria2_ready")
_timed(aria2_mod.Aria2Daemon, "add", None, "added")
_timed(manager_mod.Manager, "close", "close_start", "closed")
for module_name in ("downloader.manager", "downloader.placing"):  # wherever the loop finds `place` today
    try:
        _timed(__import__(module_name, fromlist=["place"]), "place", "place_start", "placed")
    except ImportError:
        pass


class _RecordingHashTask(manager_mod.HashTask):  # type: ignore[misc,name-defined]
    """Notes when the loop saw aria2 finish, and how much of the file the prefix hasher still had to read."""

    def __init__(self, path: Path, hasher: Any = None, size: int = 0, **kwargs: Any) -> None:
        if hasher is not None and "complete_seen" not in T:
            T["complete_seen"] = time.time()
            T["left_to_hash"] = float(max(size - hasher.hashed, 0))
        super().__init__(path, hasher, size, **kwargs)


manager_mod.HashTask = _RecordingHashTask  # type: ignore[misc]

sys.argv = ["downloader", *sys.argv[1:]]
cli.main()
