"""Shared fixtures: audio made on the fly, nothing large committed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from remixer.testing.audio import dominant_frequency, tone, write_song  # noqa: F401  (tests import them from here)


def pytest_configure(config):
    """The suite decodes with the float32 CPU decoder, the one the token fixtures were recorded with (its
    subprocesses inherit it); tests/test_precision.py runs bfloat16 and int8, each by name."""
    os.environ["REMIXER_DECODER_DTYPE"] = "float32"


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda are skipped where no GPU is found, so CPU runs collect them and say why."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def exact_cuda_math(request):
    """CUDA-vs-CPU comparisons without TF32: cuDNN convolutions (demucs, EnCodec, MBD, All-In-One) use TF32
    by default on Ampere and later, which keeps 10 mantissa bits and would need tolerances 100x looser."""
    if "cuda" not in request.keywords:
        yield
        return
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _shared_testdata() -> Path:
    """Reference fixtures: $REMIXER_TESTDATA, else ../shared/testdata beside the checkout."""
    candidates = [os.environ.get("REMIXER_TESTDATA"), Path(__file__).resolve().parents[2] / "shared" / "testdata",
                  "/work/shared/testdata"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "btc").is_dir():
            return Path(candidate)
    # Not fatal at import: the CUDA tests run on a machine without them (benchmarks/gpu_check.py);
    # a test that needs them fails on its missing file, which names this folder.
    return Path(candidates[1])


SHARED = _shared_testdata()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session", autouse=True)
def ray_temp_dir():
    """Ray's session folders (logs, sockets) in one short folder of the test run, removed after it."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="ray-tests-")  # short: Ray's socket paths must stay under 108 bytes
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    yield Path(folder)
    if previous is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = previous
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def require_ffmpeg():
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is required by the tests; ./run.sh installs it")


@pytest.fixture(scope="session")
def source_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "source.wav"
    sf.write(path, tone(channels=1).T, 44100, subtype="FLOAT")
    return path


@pytest.fixture(scope="session")
def tiny_remixer(tiny_weights):
    """One `Remixer` over the tiny weights, loaded once for every test that remixes in-process."""
    from remixer.pipeline import Remixer

    return Remixer(tiny_weights, "cpu", offline=True)


@pytest.fixture(scope="session")
def remixer(tiny_remixer):
    """The shared tiny-weight Remixer under the name the pipeline and wiring tests use."""
    return tiny_remixer


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Small random checkpoints of every landed component, in the real formats."""
    from remixer.tiny_weights import write_all

    directory = tmp_path_factory.mktemp("weights")
    write_all(directory, seed=0)
    return directory
