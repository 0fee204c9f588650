"""The real Cog HTTP server (coglet) running predict.py with the tiny weights, used as a Replicate client would."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[1]
SONG_SR = 44100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, headers: dict | None = None, method: str | None = None,
             timeout: float = 300) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def start_server(weights_dir: Path, tmp: Path, log_path: Path, **extra_env: str) -> dict:
    """Start coglet on a free port with the venv on PATH; wait until READY."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
           "REMIXER_WEIGHTS_DIR": str(weights_dir), "REMIXER_OFFLINE": "1", "TMPDIR": str(tmp),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra_env}
    log = open(log_path, "w+")
    process = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if _request(f"{base}/health-check", timeout=5)[1].get("status") == "READY":
                break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        if process.poll() is not None:
            break
        time.sleep(1)
    else:
        stop_server({"process": process, "log": log})
        log.seek(0)
        pytest.fail(f"the Cog server did not become READY:\n{log.read()[-3000:]}")
    # Files made at start-up (torch writes one helper module per process) are not per-request leftovers.
    baseline = {p for p in tmp.rglob("*") if p.is_file()}
    return {"url": base, "tmp": tmp, "process": process, "baseline": baseline, "log": log}


def eventually(condition, timeout: float = 60) -> bool:
    """True as soon as `condition()` holds; False if it never does within `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def stop_server(server: dict) -> None:
    """Stop by PID (its process group: the worker too)."""
    process = server["process"]
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    server["log"].close()


def leftovers(server: dict) -> list[Path]:
    """Files in the server's temp folder that a request left behind (outputs of the last one excepted)."""
    return [p for p in server["tmp"].rglob("*")
            if p.is_file() and "remixer-outputs" not in p.parts and p not in server["baseline"]]


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    started = start_server(tiny_weights, tmp_path_factory.mktemp("server-tmp"),
                           tmp_path_factory.mktemp("server-log") / "server.log")
    yield started
    stop_server(started)


def _song_bytes(seconds: float = 4.0) -> bytes:
    buffer = io.BytesIO()
    music = tone(220, seconds, SONG_SR, channels=2, amplitude=0.3) + tone(330, seconds, SONG_SR, channels=2,
                                                                           amplitude=0.2)
    sf.write(buffer, music.T, SONG_SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _data_uri(data: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _decode_output(uri: str) -> tuple[np.ndarray, int]:
    payload = base64.b64decode(uri.split(",", 1)[1])
    from remixer.audio import load_audio

    path = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"out-{time.time_ns()}"
    path.write_bytes(payload)
    try:
        return load_audio(path)
    finally:
        path.unlink()


def test_openapi_lists_every_input(server):
    status, schema = _request(f"{server['url']}/openapi.json")
    assert status == 200
    schemas = schema["components"]["schemas"]
    props = schemas["Input"]["properties"]
    from remixer.request import INPUTS

    assert sorted(props, key=lambda name: props[name]["x-order"]) == [spec.name for spec in INPUTS]
    assert props["chroma_coefficient"]["minimum"] == 0.5 and props["chroma_coefficient"]["maximum"] == 2.0
    assert props["top_k"]["default"] == 250 and props["classifier_free_guidance"]["default"] == 3
    assert schemas["model_version"]["enum"] == ["stereo-chord", "stereo-chord-large", "chord", "chord-large",
                                                "musicongen"]
    assert schemas["normalization_strategy"]["enum"] == ["loudness", "clip", "peak", "rms"]
    assert set(schemas["Input"]["required"]) == {"prompt", "music_input"}
    assert "default" not in props["seed"]


def test_sync_prediction_with_data_uri_gives_stereo_at_the_songs_rate_of_the_input_length(server):
    status, body = _request(f"{server['url']}/predictions",
                            {"input": {"prompt": "bossa nova", "music_input": _data_uri(_song_bytes()), "seed": 5}})
    assert status == 200 and body["status"] == "succeeded", body.get("error") or body.get("logs", "")[-2000:]
    assert len(body["output"]) == 1
    samples, sr = _decode_output(body["output"][0])
    assert sr == SONG_SR and samples.shape == (2, 4 * SONG_SR)  # output_sample_rate=song
    assert "seed 5" in body["logs"] or "(seed 5)" in body["logs"]
    # Replicate's metrics: each stage's seconds, the fidelity numbers and the seed (Cog's metric API).
    metrics = body["metrics"]
    assert metrics["seed"] == 5 and metrics["takes"] == 1
    assert {"decode", "separate", "rhythm", "chords", "generate", "beat_sync", "fidelity", "mix"} \
        <= set(metrics["stage_seconds"])
    assert metrics["stage_seconds"]["generate"] > 0 and 0 <= metrics["fidelity"]["score"] <= 1
    assert "noise" in _request(f"{server['url']}/health-check")[1]["setup"]["logs"]


def test_url_input_mp3_mono_and_instrumental(server):
    song = _song_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(song)))
            self.end_headers()
            self.wfile.write(song)

        def log_message(self, *args):
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/song.wav"
        status, body = _request(f"{server['url']}/predictions", {"input": {
            "prompt": "lofi", "music_input": url, "model_version": "chord", "output_format": "mp3",
            "return_instrumental": True, "seed": 1, "output_sample_rate": "32000"}})
    finally:
        files.shutdown()
        files.server_close()
    assert body["status"] == "succeeded", body.get("error")
    assert len(body["output"]) == 2 and all(uri.startswith("data:audio/mpeg") for uri in body["output"])
    for uri in body["output"]:
        samples, sr = _decode_output(uri)
        assert sr == 32000 and samples.shape[0] == 1  # output_sample_rate=32000: what the original returned
        assert abs(samples.shape[1] - 4 * 32000) <= 576  # mp3 granule


@pytest.mark.parametrize("bad,field", [
    ({"model_version": "chord-huge"}, "model_version"),
    ({"chroma_coefficient": 5}, "chroma_coefficient"),
    ({"prompt": None}, "prompt"),
    ({"takes": 0}, "takes"),
    ({"takes": 5}, "takes"),
    ({"takes": "two"}, "takes"),
    ({"transpose": 13}, "transpose"),
    ({"transpose": -13}, "transpose"),
    ({"transpose": "up"}, "transpose"),
    ({"tempo": "fast"}, "tempo"),
])
def test_schema_rejects_bad_inputs_with_422(server, bad, field):
    inputs = {"prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), **bad}
    if bad.get("prompt", "") is None:
        del inputs["prompt"]
    status, body = _request(f"{server['url']}/predictions", {"input": inputs})
    assert status == 422
    assert field in json.dumps(body)


def test_corrupt_upload_fails_clearly_and_the_next_request_works(server):
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(b"this is not audio at all" * 50, "audio/wav")}})
    assert body["status"] == "failed"
    assert "not a readable audio file" in body["error"] and "Accepted:" in body["error"]
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(_song_bytes(2.0)), "model_version": "chord"}})
    assert body["status"] == "succeeded", body.get("error")
    assert not leftovers(server)


def test_validation_inside_predict_when_the_schema_allows_it(server):
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), "temperature": 0,
        "multi_band_diffusion": True}})
    assert body["status"] == "failed"
    assert "temperature must be > 0" in body["error"]
    assert "multi_band_diffusion works with the mono models" in body["error"]


def test_bad_tempo_fails_clearly_and_the_next_request_works(server):
    """tempo 0 is refused before any work; tempo on a song without a beat (random All-In-One finds none) after
    the analysis, saying why; the server then serves the next request."""
    cases = [({"tempo": 0}, "tempo must be a positive bpm"),
             ({"tempo": 300}, "no beat was found in it: leave tempo unset"),
             # MusiConGen plays on the song's beats: without one, the chord versions are the way out.
             ({"model_version": "musicongen"}, "musicongen plays on the song's own beats, but no beat was found")]
    for extra, message in cases:
        status, body = _request(f"{server['url']}/predictions", {"input": {
            "prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), "model_version": "chord", **extra}})
        assert status == 200 and body["status"] == "failed" and message in body["error"], body.get("error")
        assert "Traceback" not in body["error"]
    assert "remix this song with a chord model_version (stereo-chord, stereo-chord-large, chord, chord-large)" \
        in body["error"]
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), "model_version": "chord", "transpose": -3}})
    assert body["status"] == "succeeded", body.get("error")
    assert not leftovers(server)


class _Webhooks:
    def __init__(self):
        self.events: list[dict] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                hooks.events.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, predicate, timeout: float = 240) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            time.sleep(0.2)
        raise AssertionError(f"no matching webhook among {[e.get('status') for e in self.events]}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _when_ready(server) -> None:
    """The server frees its slot just after answering: wait for READY before the next prediction."""
    assert eventually(lambda: _request(f"{server['url']}/health-check")[1]["status"] == "READY")


def test_analysis_stems_and_a_section_come_back_in_order(server):
    _when_ready(server)
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "funk", "music_input": _data_uri(_song_bytes(12.0)), "model_version": "chord", "seed": 4,
        "return_instrumental": True, "return_stems": True, "return_analysis": True,
        "start_time": 2.0, "end_time": 9.5, "normalization_strategy": "peak"}})
    assert body["status"] == "succeeded", body.get("error") or body.get("logs", "")[-2000:]
    names = [uri.split(";")[0].split("/")[-1] for uri in body["output"]]
    assert len(names) == 8  # remix, instrumental, drums, bass, other, vocals, analysis.json, analysis.png
    assert names[-2:] == ["json", "png"]
    audio = [_decode_output(uri) for uri in body["output"][:6]]
    assert all(sr == SONG_SR and samples.shape == (1, int(7.5 * SONG_SR)) for samples, sr in audio)  # the section
    instrumental = audio[1][0]
    parts = sum(samples for samples, _ in audio[2:5])
    # Drums + bass + other add up to the instrumental (16-bit rounding of four files, peak-normalised).
    assert np.abs(parts - instrumental).max() < 2e-4
    report = json.loads(base64.b64decode(body["output"][6].split(",", 1)[1]))
    assert report["schema_version"] == 1 and report["section"] == {"start": 2.0, "end": 9.5}
    assert report["duration"] == 7.5 and report["model_version"] == "chord" and report["seed"] == 4
    assert {"bpm", "meter", "beats", "downbeats", "sections", "chords", "prompt", "timings"} <= set(report)
    assert report["chords"][0]["start"] == 2.0 and report["chords"][-1]["end"] == 9.5  # the song's timeline
    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(body["output"][7].split(",", 1)[1])))
    assert picture.size == (1600, 500)


def test_a_real_song_through_the_server_with_madmoms_beats_gets_its_bars_and_user_chords(server):
    """The CC BY recording (ogg) uploaded as a data URI: madmom's real networks find its 4/4 bars, the user's
    chords land on them, and the remix comes back at the part's length."""
    from tests.conftest import SHARED

    _when_ready(server)
    song = (SHARED / "songs" / "lets_go_fishin_0-40s.ogg").read_bytes()
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "funk", "music_input": _data_uri(song, "audio/ogg"), "model_version": "chord", "seed": 1,
        "beat_tracker": "madmom", "end_time": 10.0, "chords": "C G Am F", "return_analysis": True}})
    assert body["status"] == "succeeded", body.get("error") or body.get("logs", "")[-2000:]
    samples, rate = _decode_output(body["output"][0])
    assert rate == 44100 and samples.shape[1] == 10 * 44100  # the recording's own rate
    report = json.loads(base64.b64decode(body["output"][1].split(",", 1)[1]))
    assert report["beat_tracker"] == "madmom" and report["meter"] == 4 and abs(report["bpm"] - 176) <= 1.5
    chord_starts = [c["start"] for c in report["chords"]]
    assert chord_starts[1:] == report["downbeats"][1:len(chord_starts)]
    assert [c["label"] for c in report["chords"][:4]] == ["C", "G", "Am", "F"]


@pytest.mark.parametrize("inputs,message", [
    ({"start_time": 10.0}, "at least 5 s inside the song, which is 6.00 s long"),
    ({"start_time": 3.0, "end_time": 4.0}, "end_time must be at least 5 s after start_time"),
    ({"chords": "C H7 Am"}, "cannot read chord 'H7'"),
    ({"chords": "C G Am F"}, "no beat was found in it"),  # random weights find no beat
])
def test_new_inputs_explain_bad_values(server, inputs, message):
    _when_ready(server)
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "funk", "music_input": _data_uri(_song_bytes(6.0)), "model_version": "chord", **inputs}})
    assert body["status"] == "failed" and message in body["error"], body.get("error")


def test_async_prediction_sends_webhooks(server):
    hooks = _Webhooks()
    try:
        status, body = _request(f"{server['url']}/predictions", {
            "id": "async-1", "input": {"prompt": "funk", "music_input": _data_uri(_song_bytes(2.0)),
                                       "model_version": "chord", "seed": 9},
            "webhook": hooks.url, "webhook_events_filter": ["start", "completed"]},
            headers={"Prefer": "respond-async"})
        assert status == 202
        done = hooks.wait_for(lambda e: e.get("status") in {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done.get("error")
        assert any(e.get("status") == "processing" for e in hooks.events)  # the start event
        samples, sr = _decode_output(done["output"][0])
        assert sr == SONG_SR and samples.shape == (1, 2 * SONG_SR)
    finally:
        hooks.close()


def test_cancel_stops_the_work_and_busy_server_answers_409(server):
    hooks = _Webhooks()
    try:
        status, _ = _request(f"{server['url']}/predictions", {
            "id": "long-1", "input": {"prompt": "epic", "music_input": _data_uri(_song_bytes(60.0)),
                                      "model_version": "chord"},
            "webhook": hooks.url}, headers={"Prefer": "respond-async"})
        assert status == 202
        hooks.wait_for(lambda e: "generating" in e.get("logs", "") or "generate" in e.get("logs", ""), timeout=240)
        status, _ = _request(f"{server['url']}/predictions", {
            "input": {"prompt": "x", "music_input": _data_uri(_song_bytes(1.0))}}, headers={"Prefer": "respond-async"})
        assert status == 409
        status, _ = _request(f"{server['url']}/predictions/long-1/cancel", {})
        assert status == 200
        final = hooks.wait_for(lambda e: e.get("status") in {"succeeded", "failed", "canceled"}, timeout=120)
        assert final["status"] == "canceled"
        # The worker cleans up as the cancel unwinds; READY again means it has finished doing so.
        assert eventually(lambda: _request(f"{server['url']}/health-check")[1]["status"] == "READY")
        assert not leftovers(server)
        outputs = server["tmp"] / "remixer-outputs"
        assert not outputs.exists() or not any(outputs.iterdir())
    finally:
        hooks.close()
    # and the server still serves
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), "model_version": "chord"}})
    assert body["status"] == "succeeded", body.get("error")


def test_no_files_accumulate_in_the_servers_temp_folder(server):
    """Runs last: after every prediction above, only the last request's outputs remain."""
    assert leftovers(server) == []
    outputs = server["tmp"] / "remixer-outputs"
    assert not outputs.exists() or len(list(outputs.iterdir())) <= 1


def test_takes_through_the_server_return_the_other_takes_after_the_remix(server):
    _when_ready(server)
    status, body = _request(f"{server['url']}/predictions", {"input": {
        "prompt": "jazz", "music_input": _data_uri(_song_bytes(1.0)), "model_version": "chord", "seed": 3,
        "takes": 2, "return_takes": True}})
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert len(body["output"]) == 2  # the remix, then take2
    first, second = (_decode_output(uri)[0] for uri in body["output"])
    assert first.shape == second.shape == (1, SONG_SR) and not np.array_equal(first, second)
    assert "takes ranked by fidelity score" in body.get("logs", "")
