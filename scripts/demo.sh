#!/usr/bin/env bash
# Installs the package into .venv and runs the main job on the embedded default (SQLite, outbox):
# the demo subscribers and bulletin, scheduled now, sent by the scheduler, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test >/dev/null
exec .venv/bin/newsletter demo "$@"
