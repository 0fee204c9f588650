#!/usr/bin/env bash
# One entry point for people and CI: sets up everything when missing, then runs.
#   ./run.sh test [pytest args]            run the test suite
#   ./run.sh remix SONG --prompt TEXT ...   remix a song (see ./run.sh remix --help)
#   ./run.sh batch MANIFEST --out DIR        remix many songs on Ray (see ./run.sh batch --help)
#   ./run.sh app [--port 7860]              remix from the browser (see ./run.sh app --help)
#   ./run.sh setup                          only install
# Idempotent: a second run skips every install step whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {  # Debian packages, as root or through sudo
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "[setup] installing Debian's $*"
  $sudo apt-get install -y -q "$@" >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
}

need_browser() { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; }

need_ffmpeg() { ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; }

find_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 \
       && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  echo "[setup] Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

setup() {
  if need_ffmpeg; then apt_install ffmpeg; fi
  if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$(find_python)" -m venv .venv
  fi
  local stamp=.venv/.installed want
  want=$(cat requirements.txt requirements-test.txt requirements-batch.txt requirements-app.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing pinned packages into .venv (first run downloads torch, a few GB)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt -r requirements-batch.txt \
      -r requirements-app.txt
    .venv/bin/python -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; if need_browser; then apt_install chromium chromium-driver; fi  # the web app's browser tests
        export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m pytest "$@" ;;
  remix) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer "$@" ;;
  batch) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer batch "$@" ;;
  app) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer app "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
