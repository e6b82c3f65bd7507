#!/usr/bin/env bash
# Installs the package (runtime dependencies only: no test tools, no browser, no root) into .venv and
# runs the demo on the embedded default (SQLite, outbox): the sample subscribers and bulletin,
# scheduled now, sent by the scheduler, then a summary and how to follow the links. Works on any
# machine with Python 3.11+. Arguments go to `newsletter demo` (e.g. --dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${NEWSLETTER_VENV:-.venv}/bin/newsletter" demo "$@"
