"""The weights manager against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from remixer import weights
from remixer.weights import WeightFile, WeightsError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; `cut_after` drops the connection mid-body."""

    cut_after: int | None = None
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).requests.append(self.headers.get("Range"))
        if self.path == "/missing":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.cut_after = None
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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


def test_interrupted_download_resumes_from_the_partial_file(server, tmp_path):
    file = _file(f"{server}/model.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    _Handler.cut_after = 300_000
    with pytest.raises(WeightsError, match="run again to resume"):
        weights.fetch(file, tmp_path, progress=False)
    part = tmp_path / "sub" / "model.bin.part"
    assert part.stat().st_size == 300_000
    assert not (tmp_path / "sub" / "model.bin").exists()  # never a half file under the real name

    _Handler.cut_after = None
    path = weights.fetch(file, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.requests[-1] == "bytes=300000-"


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


def test_offline_error_lists_missing_files_and_how_to_get_them(tmp_path, monkeypatch, server):
    monkeypatch.setenv("REMIXER_OFFLINE", "1")
    with pytest.raises(WeightsError) as caught:
        weights.ensure(["btc-large-voca", "htdemucs"], tmp_path)
    message = str(caught.value)
    assert "2 model file(s) missing" in message
    assert str(tmp_path / "btc" / "btc_model_large_voca.pt") in message
    assert "dl.fbaipublicfiles.com/demucs" in message
    assert "remixer.tiny_weights" in message
    assert _Handler.requests == []


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
