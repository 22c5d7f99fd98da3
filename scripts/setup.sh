#!/usr/bin/env bash
# Install what the project needs on a Debian machine (as root), idempotently:
# python3 with venv, aria2 (when aria2c is missing), and a venv at .venv with the project installed.
# Sourced by run.sh and test.sh; WITH_TEST_DEPS=1 adds the test tools, Chromium and MooseFS.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

apt_updated=0
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install $* (apt-get); install it yourself or run as root" >&2
    exit 1
  fi
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
command -v aria2c >/dev/null 2>&1 || apt_install aria2
if [ -n "${WITH_TEST_DEPS:-}" ]; then
  # Browser tests drive Debian's Chromium through playwright (which never downloads a browser of its own).
  command -v chromium >/dev/null 2>&1 || apt_install chromium fonts-liberation
  # A real MooseFS (what RunPod network volumes are) for the shared-volume tests: tests/moosefs.py runs a master
  # and a chunkserver in a network namespace of its own and mounts the volume twice, as two pods would.
  for tool in mfsmaster mfschunkserver mfsmount; do
    command -v "$tool" >/dev/null 2>&1 || { apt_install moosefs-master moosefs-chunkserver moosefs-client; break; }
  done
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)${WITH_TEST_DEPS:+-test}"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  if [ -n "${WITH_TEST_DEPS:-}" ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
