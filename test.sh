#!/usr/bin/env bash
# The whole test suite: install what it needs (venv, aria2, test tools), then run pytest.
# Arguments go to pytest (e.g. ./test.sh -k manifest).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
WITH_TEST_DEPS=1 source "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/python -m pytest "$@"
