#!/usr/bin/env bash
# Installs everything (scripts/install.sh), then runs ruff, mypy and the whole test suite.
# Every database test runs on SQLite, and on PostgreSQL too when NEWSLETTER_TEST_DATABASE_URL is set
# or a local server answers on 127.0.0.1:5432. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
if [ -z "${NEWSLETTER_TEST_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 \
   && pg_isready -h 127.0.0.1 -p 5432 -q; then
  export NEWSLETTER_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test"
fi
echo "databases: SQLite${NEWSLETTER_TEST_DATABASE_URL:+ and PostgreSQL ($NEWSLETTER_TEST_DATABASE_URL)}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
