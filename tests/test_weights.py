"""The weights manager against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from remixer import download, weights
from remixer.testing.file_server import Behaviour, FileServer
from remixer.weights import WeightFile, WeightsError

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


# --- the manifest against its sources' conventions (issue: the first real run) -------------------------------

def test_demucs_digest_is_the_part_after_the_dash_of_its_file_name():
    """demucs names a file <signature>-<first 8 hex digits of its sha256>.th (states.py save_with_checksum) and
    checks the part after the dash (repo.py check_checksum; torch.hub's check_hash the same): the manifest's
    digest must be that part, derived here from the URL demucs publishes."""
    demucs_files = [f for f in weights.MANIFEST if "dl.fbaipublicfiles.com/demucs/" in f.url]
    assert demucs_files
    for file in demucs_files:
        stem = file.url.rsplit("/", 1)[1].removesuffix(".th")
        signature, digest = stem.split("-")
        assert re.fullmatch(r"[0-9a-f]{8}", signature) and re.fullmatch(r"[0-9a-f]{8}", digest)
        assert file.sha256 is not None and file.sha256.startswith(digest), file
        assert file.sha256 != signature


def test_a_file_saved_the_demucs_way_downloads_and_checks_with_the_manifests_rule(served, tmp_path):
    """Save bytes as demucs' save_with_checksum names them, serve them, and download them with a digest
    derived as the manifest derives it: the real first run, in small."""
    content = PAYLOAD
    name = f"955717e8-{hashlib.sha256(content).hexdigest()[:8]}.th"
    digest = name.removesuffix(".th").split("-")[1]
    path = weights.fetch(WeightFile("htdemucs", f"demucs/{name}", f"{served.url}/{name}", "MIT", sha256=digest),
                         tmp_path, progress=False)
    assert path.read_bytes() == content
    # The signature (the part before the dash), taken for the digest as before, is refused.
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.fetch(WeightFile("htdemucs", "other/x.th", f"{served.url}/x.th", "MIT", sha256="955717e8"),
                      tmp_path, progress=False)


def test_every_file_names_its_source_and_hub_files_name_their_repository():
    for file in weights.MANIFEST:
        assert len(file.source) > 20, file.name
        if "huggingface.co/" in file.url:
            repo = file.url.split("huggingface.co/", 1)[1].split("/resolve/", 1)[0]
            assert f"hub {repo}" in file.source, file.name
        if "github.com/" in file.url:
            assert "github" in file.source, file.name


def test_licences_file_gives_musicongen_the_binding_non_commercial_term():
    text = (Path(__file__).resolve().parents[1] / "LICENSE_weights").read_text()
    rows = {line.split("|")[1].strip().lower(): line for line in text.splitlines() if line.startswith("|")}
    assert any("musicongen" in key and "CC-BY-NC 4.0" in line for key, line in rows.items())
    assert {f.licence for f in weights.files_of(["musicongen"])} == {weights.CC_BY_NC}
    assert "MusiConGen README" in text  # the binding term and why the hub's MIT tag is not it


# --- a mirror -------------------------------------------------------------------------------------------------

HUB_FILE = WeightFile("encodec", "encodec/config.json",
                      "https://huggingface.co/facebook/encodec_32khz/resolve/main/config.json", "CC-BY-NC-4.0",
                      sha256=hashlib.sha256(PAYLOAD).hexdigest())


def _mirror(files: dict[str, bytes], **behaviour) -> FileServer:
    return FileServer(Behaviour(files=files, **behaviour))


def test_a_mirror_keeps_the_path_and_the_checks(tmp_path, monkeypatch):
    server = _mirror({"/models/facebook/encodec_32khz/resolve/main/config.json": PAYLOAD})
    try:
        mirror = f"{server.url}/models/"
        assert weights.url_of(HUB_FILE, mirror) == f"{server.url}/models/facebook/encodec_32khz/resolve/main/config.json"
        path = weights.fetch(HUB_FILE, tmp_path, progress=False, mirror=mirror)
        assert path.read_bytes() == PAYLOAD
        # The setting: REMIXER_WEIGHTS_MIRROR, read by every download.
        monkeypatch.setenv(weights.MIRROR_ENV, mirror)
        assert weights.fetch(HUB_FILE, tmp_path / "env", progress=False).read_bytes() == PAYLOAD
        # A mirror's copy that differs from the source's digest is refused like any other.
        server.behaviour.files[HUB_FILE.url.split("huggingface.co")[1].replace("/", "/models/", 1)] = PAYLOAD[::-1]
        with pytest.raises(WeightsError, match="checksum mismatch"):
            weights.fetch(HUB_FILE, tmp_path / "bad", progress=False)
        assert not any((tmp_path / "bad").rglob("*.json"))
    finally:
        server.close()


@pytest.mark.parametrize("bad", ["ftp://example.com/x", "example.com", "https://example.com/?a=1"])
def test_a_mirror_that_is_not_an_http_url_is_refused(bad):
    with pytest.raises(WeightsError, match="must be an http"):
        weights.url_of(HUB_FILE, bad)


# --- check before downloading -------------------------------------------------------------------------------

def _tree(files: list[WeightFile], payloads: dict[str, bytes]) -> dict[str, bytes]:
    """A mirror's folder tree: each file's source path under /m."""
    from urllib.parse import urlsplit

    return {"/m" + urlsplit(f.url).path: payloads[f.name] for f in files if f.name in payloads}


def test_check_reports_present_moved_and_resized_files_without_downloading(tmp_path):
    sized = WeightFile("t5", "t5/config.json", "https://huggingface.co/google-t5/t5-base/resolve/main/config.json",
                       "Apache-2.0", size=len(PAYLOAD))
    resized = WeightFile("t5", "t5/model.safetensors",
                         "https://huggingface.co/google-t5/t5-base/resolve/main/model.safetensors", "Apache-2.0",
                         size=len(PAYLOAD) + 1)
    moved = WeightFile("t5", "t5/tokenizer.json",
                       "https://huggingface.co/google-t5/t5-base/resolve/main/tokenizer.json", "Apache-2.0")
    files = [sized, resized, moved]
    for head in (True, False):  # a server that refuses HEAD is asked for one byte instead
        server = _mirror(_tree(files, {sized.name: PAYLOAD, resized.name: PAYLOAD}), head=head)
        try:
            results = {r.file.name: r for r in weights.check(files, tmp_path, f"{server.url}/m")}
            sent = server.behaviour.sent
        finally:
            server.close()
        method = "HEAD" if head else "GET bytes=0-0"
        assert results[sized.name].remote == download.Remote(True, len(PAYLOAD), method)
        assert results[sized.name].ok and results[sized.name].size_agrees
        assert results[resized.name].size_agrees is False and not results[resized.name].ok
        assert results[moved.name].remote.present is False and results[moved.name].remote.problem == "HTTP 404"
        assert sent <= 2  # nothing downloaded: at most the one-byte answers
        assert not any(tmp_path.iterdir())
        assert "the manifest says" in results[resized.name].line() and "MISSING (HTTP 404" in results[moved.name].line()


def test_weights_check_command_over_the_chosen_versions(tmp_path, capsys):
    """`musicgen-remix weights --check --versions chord` against a mirror: exit 1 while a file is missing or a
    file on disk has the wrong digest, 0 when all are there; one line per file the versions need."""
    from remixer import cli

    needed = weights.files_of(weights.components_for(["chord"]))
    assert {f.component for f in needed} == {*weights.SETUP_COMPONENTS, "musicgen-chord"}
    # Files whose size the manifest knows (madmom's) are served as published; the rest stand-in bytes.
    payloads = {f.name: weights.installed_copy(f).read_bytes() if f.size else f.name.encode() for f in needed}
    server = _mirror(_tree(needed, {k: v for k, v in payloads.items() if "demucs" not in k}))
    try:
        argv = ["weights", "--check", "--versions", "chord", "--mirror", f"{server.url}/m", "--weights-dir",
                str(tmp_path)]
        assert cli.main(argv) == 1
        out = capsys.readouterr().out
        assert len([line for line in out.splitlines() if line.startswith(("ok ", "BAD"))]) == len(needed)
        assert re.search(r"BAD demucs/955717e8-8726e21a\.th .*MISSING \(HTTP 404", out)
        server.behaviour.files.update(_tree(needed, payloads))
        demucs = tmp_path / "demucs" / "955717e8-8726e21a.th"
        demucs.parent.mkdir(parents=True)
        demucs.write_bytes(b"not the published file")
        assert cli.main(argv) == 1
        assert "DIGEST WRONG" in capsys.readouterr().out
        demucs.unlink()
        assert cli.main(argv) == 0
        assert f"{len(needed)} of {len(needed)} files ok" in capsys.readouterr().out
        assert cli.main(["weights", "--check", "--versions", "chord-huge"]) == 1
        assert "unknown model_version" in capsys.readouterr().err
    finally:
        server.close()
