#!/usr/bin/env bash
# Set up and run the service with embedded defaults: models and caches under ./data,
# Redis on 127.0.0.1:6379 (started under ./data/redis if nothing answers there).
# Configuration: environment variables, listed in README.md. Extra arguments go to `camtrap serve`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
[ -n "${REDIS_URL:-}" ] || ensure_debian_packages redis-server:redis-server
ensure_venv
# MegadetectorLite, the offline detector (DETECTOR_FALLBACK): fetched once from PyPI, then kept in the user cache
log "camtrap fetch mdlite"
if ! "$VENV/bin/camtrap" fetch mdlite; then
  log "could not fetch MegadetectorLite (offline?): the service starts anyway; it needs MDv5a, or the fetch later"
fi
# ImageNet weights of the default backbone, so the first training run fine-tunes instead of starting from random
log "camtrap fetch imagenet"
if ! "$VENV/bin/camtrap" fetch imagenet; then
  log "could not fetch ImageNet weights (offline?): training will start from MegadetectorLite's backbone (OFFLINE_BACKBONE)"
fi
exec "$VENV/bin/camtrap" serve "$@"
