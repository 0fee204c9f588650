"""The weights manager against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import pytest

from remixer import weights
from remixer.weights import WeightFile, WeightsError
from remixer.testing.file_server import Behaviour, FileServer

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def served():
    behaviour = Behaviour(payload=PAYLOAD)
    server = FileServer(behaviour)
    yield server
    server.close()


@pytest.fixture
def server(served):
    return served.url


def _file(url: str, **kwargs) -> WeightFile:
    return WeightFile("test", "sub/model.bin", url, "MIT", **kwargs)


def test_download_with_checksum_and_progress(server, tmp_path, capsys):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = weights.fetch(_file(f"{server}/model.bin", sha256=digest), tmp_path)
    assert path == tmp_path / "sub" / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert not list(tmp_path.rglob("*.part"))
    err = capsys.readouterr().err
    assert "downloading sub/model.bin" in err and "100%" in err


def test_interrupted_download_resumes_from_the_partial_file(served, tmp_path, monkeypatch):
    monkeypatch.setenv("REMIXER_DOWNLOAD_CHUNK_MB", "0.25")  # four ranges
    file = _file(f"{served.url}/model.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    served.behaviour.drop_after, served.behaviour.drops_left = 1000, 100  # every try of the last ranges dies
    served.behaviour.drop_from = len(PAYLOAD) // 2
    with pytest.raises(WeightsError, match="run again to resume"):
        weights.fetch(file, tmp_path, progress=False)
    assert (tmp_path / "sub" / "model.bin.part").exists()
    assert not (tmp_path / "sub" / "model.bin").exists()  # never a half file under the real name

    served.behaviour.drops_left, served.behaviour.sent = 0, 0
    path = weights.fetch(file, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert served.behaviour.sent <= len(PAYLOAD) // 2 + 1  # only the missing half was fetched again
    assert not list(tmp_path.rglob("*.part*"))


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.fetch(_file(f"{server}/model.bin", sha256="00" * 32), tmp_path, progress=False)
    assert not list(tmp_path.rglob("model.bin*"))


def test_checksum_prefix_as_demucs_publishes_it(server, tmp_path):
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    assert weights.fetch(_file(f"{server}/m", sha256=prefix), tmp_path, progress=False).exists()


def test_http_error_is_explained(server, tmp_path):
    with pytest.raises(WeightsError, match="HTTP 404"):
        weights.fetch(_file(f"{server}/missing"), tmp_path, progress=False)


def test_offline_error_lists_missing_files_and_how_to_get_them(tmp_path, monkeypatch, served):
    monkeypatch.setenv("REMIXER_OFFLINE", "1")
    with pytest.raises(WeightsError) as caught:
        weights.ensure(["btc-large-voca", "htdemucs"], tmp_path)
    message = str(caught.value)
    assert "2 model file(s) missing" in message
    assert str(tmp_path / "btc" / "btc_model_large_voca.pt") in message
    assert "dl.fbaipublicfiles.com/demucs" in message
    assert "remixer.tiny_weights" in message
    assert served.behaviour.requests == []


def test_ensure_is_a_no_op_when_files_are_present(tmp_path):
    for file in weights.files_of(["btc-majmin"]):
        (tmp_path / file.name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file.name).write_bytes(b"x")
    assert weights.ensure(["btc-majmin"], tmp_path, offline=True) == tmp_path


def test_weights_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REMIXER_WEIGHTS_DIR", str(tmp_path))
    assert weights.weights_dir() == tmp_path.resolve()
    monkeypatch.delenv("REMIXER_WEIGHTS_DIR")
    assert weights.weights_dir() == weights.DEFAULT_DIR


def test_unknown_component():
    with pytest.raises(WeightsError, match="unknown model component"):
        weights.files_of(["musicgen-huge"])


def test_manifest_covers_every_component_with_licence():
    names = [f.name for f in weights.MANIFEST]
    assert len(names) == len(set(names))
    licences = {f.component: f.licence for f in weights.MANIFEST}
    assert licences["musicgen-stereo-chord-large"] == "CC-BY-NC-4.0"
    assert licences["mbd"] == licences["encodec"] == "CC-BY-NC-4.0"
    assert licences["t5"] == "Apache-2.0"
    assert licences["htdemucs"] == licences["allin1"] == licences["btc-majmin"] == "MIT"
    assert sum(f.component == "allin1" for f in weights.MANIFEST) == 8


def test_cli_lists_state(tmp_path, capsys):
    assert weights.main(["list", "btc-majmin", "--dir", str(tmp_path)]) == 0
    assert "missing" in capsys.readouterr().out
    assert weights.main(["download", "btc-majmin", "--dir", str(tmp_path), "--offline"]) == 1
    assert "missing" in capsys.readouterr().err
