#!/usr/bin/env bash
# Install Label Studio (the PyPI package, pinned) into its own virtualenv under a cache directory and
# build a once-migrated template database, for the end-to-end tests (tests/e2e/).
#
# Label Studio's pins clash with ours, so it never goes into the project's .venv. A fresh SQLite data
# dir spends about a minute in migrations; the e2e fixtures copy the template database into each
# fresh data dir instead, which makes a start take seconds.
#
# Idempotent: when the venv and the template exist it does nothing and prints where they are.
#
# Environment (all optional):
#   CAMTRAP_LS_CACHE    cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/camtrap-ml-backend/label-studio,
#                       outside the checkout so fresh clones, CI included, reuse it)
#   CAMTRAP_LS_VERSION  Label Studio version (default: 1.23.2)
#   CAMTRAP_LS_PYTHON   interpreter for the venv (default: python3; LS 1.23 needs 3.10-3.13)
#
# Output: progress on stderr; on stdout, the machine-readable lines the fixtures read:
#   LS_VENV=...  LS_BIN=...  LS_TEMPLATE_DB=...  LS_VERSION=...
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VERSION="${CAMTRAP_LS_VERSION:-1.23.2}"
LS_CACHE="${CAMTRAP_LS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camtrap-ml-backend/label-studio}"
LS_PYTHON="${CAMTRAP_LS_PYTHON:-python3}"
LS_VENV="$LS_CACHE/venv-$LS_VERSION"
LS_BIN="$LS_VENV/bin/label-studio"
STAMP="$LS_VENV/.camtrap-installed"
TEMPLATE_DIR="$LS_CACHE/template-$LS_VERSION"
TEMPLATE_DB="$TEMPLATE_DIR/label_studio.sqlite3"

log() { printf '[label-studio] %s\n' "$*" >&2; }
elapsed() { echo $(($(date +%s) - $1)); }

mkdir -p "$LS_CACHE"
# One installer at a time (two pytest runs, or a developer and CI, may start together).
exec 9>"$LS_CACHE/.lock"
if ! flock -w 900 9; then
  log "another install holds $LS_CACHE/.lock for over 15 minutes; giving up"
  exit 1
fi

# --- 1. the virtualenv ---------------------------------------------------------------------------
if [ -f "$STAMP" ] && [ -x "$LS_BIN" ]; then
  log "label-studio $LS_VERSION already installed in $LS_VENV"
else
  start=$(date +%s)
  if [ ! -x "$LS_VENV/bin/python" ]; then
    log "creating virtualenv $LS_VENV ($("$LS_PYTHON" --version 2>&1))"
    "$LS_PYTHON" -m venv "$LS_VENV"
  fi
  log "pip install label-studio==$LS_VERSION into $LS_VENV (about 3 minutes on a cold cache)"
  pip_log="$LS_CACHE/pip-install.log"
  # pip's warnings about the machine's absent local indexes are noise: keep them in the log file.
  if ! "$LS_VENV/bin/pip" install --disable-pip-version-check -q "label-studio==$LS_VERSION" >"$pip_log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$pip_log" | tail -n 40 >&2
    log "pip install failed (full log: $pip_log)"
    exit 1
  fi
  installed="$("$LS_VENV/bin/python" -c 'import label_studio; print(label_studio.__version__)')"
  if [ "$installed" != "$LS_VERSION" ]; then
    log "expected label-studio $LS_VERSION, the venv imports $installed"
    exit 1
  fi
  echo "$LS_VERSION" >"$STAMP"
  log "installed label-studio $LS_VERSION in $(elapsed "$start") s"
fi

# --- 2. the migrated template database ----------------------------------------------------------
if [ -s "$TEMPLATE_DB" ]; then
  log "template database ready: $TEMPLATE_DB"
else
  start=$(date +%s)
  build="$LS_CACHE/.template-build-$$"
  rm -rf "$build"
  mkdir -p "$build/data" "$build/home"
  log "migrating an empty database (about a minute) to build $TEMPLATE_DB"
  # A clean environment: LS reads HOST, PORT, USERNAME, ... and any LABEL_STUDIO_* variable.
  # `label-studio version` applies every migration, prints the version and exits.
  if ! env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$build/home" LANG=C.UTF-8 \
      LABEL_STUDIO_BASE_DATA_DIR="$build/data" LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false \
      "$LS_BIN" version >"$build/migrate.log" 2>&1; then
    tail -n 40 "$build/migrate.log" >&2
    log "migration failed (log: $build/migrate.log)"
    exit 1
  fi
  if [ ! -s "$build/data/label_studio.sqlite3" ]; then
    log "migration produced no database in $build/data"
    exit 1
  fi
  mkdir -p "$TEMPLATE_DIR"
  # Only the database: each data dir gets its own secret key (.env) and media folders.
  cp "$build/data/label_studio.sqlite3" "$TEMPLATE_DB.tmp"
  mv "$TEMPLATE_DB.tmp" "$TEMPLATE_DB"
  rm -rf "$build"
  log "template database built in $(elapsed "$start") s"
fi

echo "LS_VENV=$LS_VENV"
echo "LS_BIN=$LS_BIN"
echo "LS_TEMPLATE_DB=$TEMPLATE_DB"
echo "LS_VERSION=$LS_VERSION"
