#!/usr/bin/env bash
# Set up and run the whole test suite: lint (ruff, formatting, import layers, mypy), unit and
# integration tests (real Redis, real RQ workers), the end-to-end suite against a real Label Studio,
# and the browser check.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not e2e"`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
ensure_debian_packages redis-server:redis-server chromium:chromium docker-compose:docker-compose
ensure_venv test
log "camtrap fetch mdlite (the tests run the real MegadetectorLite)"
"$VENV/bin/camtrap" fetch mdlite
log "ruff check"
"$VENV/bin/ruff" check .
log "ruff format --check"
"$VENV/bin/ruff" format --check .
log "lint-imports (the layer rules in pyproject.toml)"
"$VENV/bin/lint-imports"
log "mypy"
"$VENV/bin/mypy"
log "pytest"
set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  log "pytest collected no tests: that is a failure"
  exit 1
fi
exit "$rc"
