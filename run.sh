#!/usr/bin/env bash
# One entry point for people and CI: sets up everything when missing, then runs.
#   ./run.sh test [pytest args]            run the test suite
#   ./run.sh remix SONG --prompt TEXT ...   remix a song (see ./run.sh remix --help)
#   ./run.sh batch MANIFEST --out DIR        remix many songs on Ray (see ./run.sh batch --help)
#   ./run.sh app [--port 7860]              remix from the browser (see ./run.sh app --help)
#   ./run.sh lint                           the linter CI runs before the tests (ruff; rules in pyproject.toml)
#   ./run.sh setup                          only install
# Idempotent: a second run skips every install step whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {  # Debian packages, as root or through sudo; waits for another install to finish
  local sudo="" wait="-o DPkg::Lock::Timeout=1200"
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "[setup] installing Debian's $*"
  # shellcheck disable=SC2086  # $wait is two words on purpose
  $sudo apt-get $wait install -y -q "$@" >/dev/null \
    || { $sudo apt-get $wait update -q >/dev/null && $sudo apt-get $wait install -y -q "$@" >/dev/null; }
}

# Two run.sh started at once (two clones, or CI beside a person) take turns: one installs, the other
# waits, then finds everything there. flock comes with util-linux, on every Debian.
with_lock() {  # with_lock FILE COMMAND...
  local file=$1; shift
  if command -v flock >/dev/null 2>&1; then
    ( flock -w 1800 9 || { echo "[setup] waited 30 min for $file; giving up" >&2; exit 1; }; "$@" ) 9>"$file"
  else
    "$@"
  fi
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

install_ffmpeg() { if need_ffmpeg; then apt_install ffmpeg; fi; }

install_browser() { if need_browser; then apt_install chromium chromium-driver; fi; }

APT_LOCK="${TMPDIR:-/tmp}/musicgen-remixer-apt.lock"

setup() {
  if need_ffmpeg; then with_lock "$APT_LOCK" install_ffmpeg; fi
  with_lock .venv.lock setup_venv
}

setup_venv() {
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
  test) setup; if need_browser; then with_lock "$APT_LOCK" install_browser; fi  # the app's browser tests
        export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m pytest "$@" ;;
  lint) setup; exec .venv/bin/ruff check "$@" . ;;
  remix) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer "$@" ;;
  batch) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer batch "$@" ;;
  app) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer app "$@" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
