#!/usr/bin/env bash
# Installs the package into .venv, from nothing, without root, on any machine with Python 3.11+.
#   bash scripts/install.sh           the package and what it needs to run (the demo uses only this)
#   bash scripts/install.sh test      also the test tools, and Debian's chromium for the browser tests
#                                     (Playwright drives it; Playwright's own browser download is never used)
# Says what it is doing on stderr as it goes. NEWSLETTER_VENV puts the venv elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
venv="${NEWSLETTER_VENV:-.venv}"
say() { printf 'install: %s\n' "$*" >&2; }

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  say "error: Python 3.11 or newer is needed (python3.11, python3.12 or python3 on PATH)"
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv with $("$python" --version)"
  if ! "$python" -m venv "$venv"; then
    say "error: '$python -m venv' failed (on Debian or Ubuntu: install the python3-venv package)"
    exit 1
  fi
fi
say "upgrading pip in $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
if [ -n "$extras" ]; then
  say "installing the package with its [$extras] extras (a minute or so on a fresh machine)…"
  spec=".[${extras}]"
else
  say "installing the package and its runtime dependencies (about 30 s on a fresh machine)…"
  spec="."
fi
# pip prints one line per package it collects, so the wait is never silent.
# Its errors go to stderr untouched; a failed install stops here.
set +e
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e "$spec" \
  | grep --line-buffered -E '^(Collecting|Successfully installed)' | sed -u 's/^/install:   /' >&2
pip_status=${PIPESTATUS[0]}
set -e
if [ "$pip_status" != 0 ]; then
  say "error: pip could not install the package (its message is above)"
  exit 1
fi

if [ "$extras" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium for the browser tests (needs root or sudo)"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
say "done: $venv/bin/newsletter"
