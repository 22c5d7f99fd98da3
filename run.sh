#!/usr/bin/env bash
# The main job: install what is needed, then run the downloader service (web UI + downloads) on
# 0.0.0.0:${DOWNLOADER_PORT:-8765} with the shipped manifests, state in $WORKSPACE (default /workspace).
# Arguments go to `downloader serve` (e.g. ./run.sh --preset wan22-t2v-14b-fp8).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/scripts/setup.sh"
exec "$here/.venv/bin/downloader" serve "$@"
