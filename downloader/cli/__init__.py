"""`downloader` command line: fetch, plan, status, verify, add, pause/resume/retry/cancel, presets, serve, workflow.

`main` is the console script (`downloader.cli:main`); the modules below register their commands on it. When
`downloader serve` runs for the workspace, the commands are its clients (cli/client.py); otherwise they work
in this process, as the only writer of the workspace.
"""

from __future__ import annotations

from . import actions, fetching, info, workflow  # noqa: F401  (each registers its commands on `main`)
from .app import main

__all__ = ["main"]
