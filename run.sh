#!/usr/bin/env bash
# The main job: install what is needed, then fetch the default presets ($MODEL_PRESETS) into $WORKSPACE.
# Any arguments go to `downloader fetch` (e.g. ./run.sh --preset wan22-ti2v-5b).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/scripts/setup.sh"
exec "$here/.venv/bin/downloader" fetch "$@"
