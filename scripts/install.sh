#!/usr/bin/env bash
# Installs the package and everything its tests need into .venv, from nothing:
# Python packages from PyPI, Debian's chromium for the browser tests (Playwright drives it;
# Playwright's own browser download is never used), and axe-core from npm (package-lock.json) for the
# accessibility checks, into node_modules/ (the tests read it from there; nothing is fetched at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
if [ "$extras" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
if [ "$extras" = "test" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
  fi
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
fi
