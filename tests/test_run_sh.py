"""run.sh on a machine without Python 3.11: which interpreter it picks, how it fetches one with uv, and what
it says when it cannot. Fake interpreters and a fake uv on a PATH of their own stand in for a fresh machine
(Ubuntu 24.04 ships 3.12): the real download needs the internet, which CI does not have (see docs/development.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("cat", "cp", "mkdir", "rm", "chmod", "sh", "id", "env")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _python(path: Path, minor: int) -> Path:
    """An interpreter that answers run.sh's version check as 3.<minor>."""
    return _script(path, f'[ "$1" = "-c" ] && exit {0 if minor == 11 else 1}\nexit 0\n')


@pytest.fixture
def machine(tmp_path):
    """A checkout folder and a PATH with only the shell's tools: no python3.11, no uv (tests add them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    return bin_dir, checkout


def _find_python(bin_dir: Path, checkout: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": str(bin_dir), "HOME": str(checkout), **env}
    return subprocess.run(["/bin/bash", "-c", f"source {ROOT / 'run.sh'}; find_python"], cwd=checkout,
                          env=environment, capture_output=True, text=True, timeout=60)


def _fake_uv(path: Path, log: Path, python: Path, install_status: int = 0) -> Path:
    return _script(path, f'echo "$UV_PYTHON_INSTALL_DIR $*" >> {log}\n'
                         f'[ "$1 $2" = "python install" ] && exit {install_status}\n'
                         f'[ "$1 $2" = "python find" ] && echo {python}\nexit 0\n')


def test_a_python_311_on_path_is_used_and_nothing_is_fetched(machine):
    bin_dir, checkout = machine
    _python(bin_dir / "python3", 12)
    _python(bin_dir / "python3.11", 11)
    log = checkout / "uv.log"
    _fake_uv(bin_dir / "uv", log, bin_dir / "python3.11")
    done = _find_python(bin_dir, checkout)
    assert done.returncode == 0 and done.stdout.strip() == "python3.11", done.stderr
    assert not log.exists()


def test_without_311_uv_fetches_one_into_the_checkout_and_says_from_where(machine):
    bin_dir, checkout = machine
    _python(bin_dir / "python3", 12)
    fetched = _python(checkout / "fetched-python3.11", 11)
    log = checkout / "uv.log"
    _fake_uv(bin_dir / "uv", log, fetched)
    done = _find_python(bin_dir, checkout)
    assert done.returncode == 0 and done.stdout.strip() == str(fetched), done.stderr
    assert "github.com/astral-sh/python-build-standalone" in done.stderr and ".python/" in done.stderr
    calls = log.read_text().splitlines()
    assert calls == [f"{checkout}/.python python install 3.11",
                     f"{checkout}/.python python find --managed-python 3.11"]


def test_without_uv_it_installs_the_pinned_uv_from_pypi_into_a_tools_venv(machine):
    bin_dir, checkout = machine
    fetched = _python(checkout / "fetched-python3.11", 11)
    log = checkout / "uv.log"
    # python3 (3.12) makes a venv whose pip "installs" uv: the fake uv appears in the venv's bin.
    uv = _fake_uv(checkout / "uv-template", log, fetched)
    pip = _script(checkout / "pip-template", f'echo "$*" >> {checkout}/pip.log\ncp {uv} {checkout}/.uv-tools/bin/uv\n')
    _script(bin_dir / "python3", '[ "$1" = "-c" ] && exit 1\n'
                                 f'[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin" && cp {pip} "$3/bin/python"\nexit 0\n')
    done = _find_python(bin_dir, checkout)
    assert done.returncode == 0 and done.stdout.strip() == str(fetched), done.stderr
    assert "installing uv 0.13.9 from PyPI into .uv-tools/" in done.stderr
    assert (checkout / "pip.log").read_text().split() == ["-m", "pip", "install", "-q", "uv==0.13.9"]
    assert log.read_text().splitlines()[0] == f"{checkout}/.python python install 3.11"


@pytest.mark.parametrize("why", ["opted out", "download failed", "no uv and no python3"])
def test_when_none_can_be_had_it_lists_the_ways_to_get_one(machine, why):
    bin_dir, checkout = machine
    env = {}
    if why == "opted out":
        _python(bin_dir / "python3", 12)
        _fake_uv(bin_dir / "uv", checkout / "uv.log", bin_dir / "python3")
        env = {"REMIXER_FETCH_PYTHON": "0"}
    elif why == "download failed":
        _python(bin_dir / "python3", 12)
        _fake_uv(bin_dir / "uv", checkout / "uv.log", bin_dir / "python3", install_status=2)
    done = _find_python(bin_dir, checkout, **env)
    assert done.returncode == 1 and done.stdout == ""
    for way in ("uv python install 3.11", "ppa:deadsnakes/ppa", "pyenv install 3.11", "PYTHON=/path/to/python3.11"):
        assert way in done.stderr, (why, done.stderr)
    assert not (checkout / ".uv-tools").exists()  # nothing half-made is left behind


def test_a_python_named_in_PYTHON_must_be_311(machine):
    bin_dir, checkout = machine
    wrong = _python(checkout / "python3.12", 12)
    _fake_uv(bin_dir / "uv", checkout / "uv.log", wrong)
    done = _find_python(bin_dir, checkout, PYTHON=str(wrong))
    assert done.returncode == 1 and f"PYTHON={wrong} is not Python 3.11" in done.stderr
    assert not (checkout / "uv.log").exists()
    right = _python(checkout / "python3.11", 11)
    assert _find_python(bin_dir, checkout, PYTHON=str(right)).stdout.strip() == str(right)
