# Shared by scripts/serve.sh and scripts/test.sh: idempotent set-up of the machine and the venv.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CAMTRAP_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '\033[1m[camtrap]\033[0m %s\n' "$*" >&2; }

# ensure_debian_packages CMD:PACKAGE ...: install PACKAGE with apt-get when CMD is missing.
ensure_debian_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "please install: ${missing[*]} (apt-get install ${missing[*]})"; return 1; }
    sudo="sudo"
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv [EXTRA]: create $VENV and install the project (with extras EXTRA) when pyproject.toml changed.
ensure_venv() {
  local extra="${1:-}" spec="$REPO_ROOT" stamp want
  [ -n "$extra" ] && spec="$REPO_ROOT[$extra]"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { log "Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))"; return 1; }
  want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16)-${extra:-base}"
  stamp="$VENV/.camtrap-installed"
  if [ -f "$stamp" ] && grep -qx -- "$want" "$stamp" 2>/dev/null; then
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip 2> >(grep -v 'is neither a file nor a directory' >&2)
  fi
  log "installing camtrap-ml-backend${extra:+[$extra]} into $VENV (torch with CUDA: a few GB on first run)"
  # The machine's pip.conf may list local file:// indexes; their "is ignored" warnings are noise.
  "$VENV/bin/pip" install -q -e "$spec" 2> >(grep -v 'is neither a file nor a directory' >&2)
  "$VENV/bin/python" -c 'import cv2, torch, torchvision, megadetector, label_studio_sdk, yolov5' \
    || { log "the installed environment does not import; see the errors above"; return 1; }
  echo "$want" >"$stamp"
}
