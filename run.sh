#!/usr/bin/env bash
# One entry point for people and CI: sets up everything when missing, then runs.
#   ./run.sh test [pytest args]            run the test suite
#   ./run.sh remix SONG --prompt TEXT ...   remix a song (see ./run.sh remix --help)
#   ./run.sh batch MANIFEST --out DIR        remix many songs on Ray (see ./run.sh batch --help)
#   ./run.sh app [--port 7860]              remix from the browser (see ./run.sh app --help)
#   ./run.sh lint                           the linter CI runs before the tests (ruff; rules in pyproject.toml)
#   ./run.sh mutate [module ...]             mutation testing of the pure modules (mutmut; on demand, not in CI)
#   ./run.sh setup                          only install
# Idempotent: a second run skips every install step whose inputs did not change.
# Python 3.11: $PYTHON, python3.11 or python3, else fetched with uv into .python/ (REMIXER_FETCH_PYTHON=0: never).
set -euo pipefail

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

PYTHON_VERSION=3.11
UV_VERSION=0.13.9  # pinned; from PyPI, where every other package comes from
UV_TOOLS=.uv-tools     # a venv holding only uv, made when no uv is on PATH (git-ignored)
UV_PYTHONS=.python     # where uv puts the interpreter it downloads (git-ignored: removing the checkout removes it)

is_311() { [ -n "$1" ] && command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }

find_uv() {  # a uv to fetch Python with: on PATH, or installed from PyPI into $UV_TOOLS with any python3
  if command -v uv >/dev/null 2>&1; then echo uv; return 0; fi
  if [ -x "$UV_TOOLS/bin/uv" ]; then echo "$UV_TOOLS/bin/uv"; return 0; fi
  command -v python3 >/dev/null 2>&1 || return 1
  echo "[setup] no uv on PATH: installing uv $UV_VERSION from PyPI into $UV_TOOLS/" >&2
  if ! python3 -m venv "$UV_TOOLS" >/dev/null 2>&1; then  # Debian and Ubuntu ship venv apart from python3
    rm -rf "$UV_TOOLS"
    apt_install python3-venv >&2 && python3 -m venv "$UV_TOOLS" >/dev/null 2>&1 || { rm -rf "$UV_TOOLS"; return 1; }
  fi
  "$UV_TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION" >&2 || { rm -rf "$UV_TOOLS"; return 1; }
  echo "$UV_TOOLS/bin/uv"
}

fetch_python() {  # uv python install: a python-build-standalone build of CPython 3.11 into $UV_PYTHONS
  local uv
  [ "${REMIXER_FETCH_PYTHON:-1}" != "0" ] || return 1
  uv=$(find_uv) || return 1
  echo "[setup] no Python $PYTHON_VERSION here: $uv python install $PYTHON_VERSION downloads CPython from" \
       "github.com/astral-sh/python-build-standalone (its GitHub releases; UV_PYTHON_INSTALL_MIRROR moves it) into $UV_PYTHONS/" >&2
  UV_PYTHON_INSTALL_DIR="$PWD/$UV_PYTHONS" "$uv" python install "$PYTHON_VERSION" >&2 || return 1
  UV_PYTHON_INSTALL_DIR="$PWD/$UV_PYTHONS" "$uv" python find --managed-python "$PYTHON_VERSION"
}

find_python() {  # the interpreter .venv is made from: PYTHON, then one on PATH, then one uv installed or fetches
  local py
  for py in "${PYTHON:-}" python3.11 python3; do
    if is_311 "$py"; then echo "$py"; return 0; fi
  done
  if [ -n "${PYTHON:-}" ]; then
    echo "[setup] PYTHON=$PYTHON is not Python $PYTHON_VERSION" >&2; return 1
  fi
  py=$(fetch_python) && is_311 "$py" && { echo "$py"; return 0; }
  cat >&2 <<MESSAGE
[setup] Python $PYTHON_VERSION is required (torch 2.9.1 and the pinned wheels are built for it), and none was found
        or could be fetched. Any one of these gives one:
          uv python install $PYTHON_VERSION          (uv: pip install uv, or https://docs.astral.sh/uv/)
          sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt install python3.11 python3.11-venv   (Ubuntu)
          pyenv install 3.11                  (https://github.com/pyenv/pyenv)
        then run this again, or point at it: PYTHON=/path/to/python3.11 ./run.sh ...
MESSAGE
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
    local python
    python=$(find_python) || exit 1
    echo "[setup] creating .venv with $python"
    "$python" -m venv .venv
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

setup_mutate() {  # mutmut and what it needs, only for `./run.sh mutate`
  local stamp=.venv/.mutate-installed want
  want=$(sha256sum requirements-mutate.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing the mutation tester (requirements-mutate.txt) into .venv"
    .venv/bin/python -m pip install -q -r requirements-mutate.txt
    echo "$want" > "$stamp"
  fi
}

main() {
  local cmd=${1:-help}
  shift || true
  case "$cmd" in
    setup) setup ;;
    test) setup; if need_browser; then with_lock "$APT_LOCK" install_browser; fi  # the app's browser tests
          export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m pytest "$@" ;;
    lint) setup; exec .venv/bin/ruff check "$@" . ;;
    mutate) setup; with_lock .venv.lock setup_mutate; exec .venv/bin/python tools/mutate.py "$@" ;;
    remix) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer "$@" ;;
    batch) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer batch "$@" ;;
    app) setup; export PATH="$PWD/.venv/bin:$PATH"; exec .venv/bin/python -m remixer app "$@" ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
}

# Sourced (tests call find_python alone), it defines the functions and runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then cd "$(dirname "$0")"; main "$@"; fi
