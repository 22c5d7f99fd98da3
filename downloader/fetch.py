"""The whole fetch as one call: plan, refuse early, then run a Manager until every file is settled.

The CLI adds printing and signals around it; tests and benchmarks call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .config import Settings
from .errors import WorkspaceBusy
from .manager import Manager
from .manifest import ModelSpec
from .plan import Plan, build_plan
from .state import Download, Store


def start_manager(settings: Settings, store: Store, wait: bool, on_wait: Callable[[str], None] | None = None) -> Manager:
    """A started Manager; if another process owns the workspace, wait for it (or raise WorkspaceBusy)."""
    manager = Manager(settings, store)
    while True:
        try:
            manager.start()
            return manager
        except WorkspaceBusy as e:
            if not wait:
                raise
            if on_wait is not None:
                on_wait(str(e))
            time.sleep(1)


def run_plan(
    plan: Plan,
    manager: Manager,
    on_tick: Callable[[list[Download]], None] | None = None,
) -> list[Download]:
    """Submit a plan (whose disk check the caller made before starting the Manager) and work until every file
    is done, failed or paused."""
    ids = manager.submit(plan)
    return manager.run(ids, on_tick=on_tick)


def fetch(
    specs: Sequence[ModelSpec],
    settings: Settings,
    on_tick: Callable[[list[Download]], None] | None = None,
    wait: bool = True,
) -> list[Download]:
    """Plan, check the disk, download, verify and place `specs`; returns their final rows."""
    with Store(settings.db_path) as store:
        plan = build_plan(specs, settings, store)
        plan.check_disk()
        manager = start_manager(settings, store, wait)
        try:
            return run_plan(plan, manager, on_tick)
        finally:
            manager.close()
