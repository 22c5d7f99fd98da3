"""The house rules a reader relies on: the dependency rule holds, and no module grows past a reader's patience."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

from tests.conftest import REPO

MAX_LINES = 500  # a module a newcomer can read in one sitting
CLIENT_PACKAGES = {"cli", "calculator", "pod"}  # downloader/'s subpackages: clients of the engine, not part of it
OUTSIDE_THE_ENGINE = {"__init__", "__main__", "service"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_the_dependency_rule_holds() -> None:
    """engine <- service <- {web, cli, pod}, as pyproject.toml's contracts say (import-linter)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_engine_contract_names_every_engine_module() -> None:
    """A new module in downloader/ is part of the engine and must be listed, or the rule would not see it."""
    listed = {m.removeprefix("downloader.") for m in _contracts()["engine"]["source_modules"]}
    modules = {p.stem for p in (REPO / "downloader").glob("*.py")} - OUTSIDE_THE_ENGINE
    assert modules == listed, f"add to / remove from the engine contract: {sorted(modules ^ listed)}"
    packages = {p.parent.name for p in (REPO / "downloader").glob("*/__init__.py")}
    assert packages == CLIENT_PACKAGES, f"a new subpackage needs a place in the contracts: {sorted(packages)}"


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    scripts = [p for p in (REPO / "web" / "static").rglob("*.js") if "vendor" not in p.parts]
    sources = [*(REPO / "downloader").rglob("*.py"), *(REPO / "web").rglob("*.py"), *scripts, REPO / "entrypoint.py"]
    long = {str(p.relative_to(REPO)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
