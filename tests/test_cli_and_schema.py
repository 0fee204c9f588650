"""The command line and the committed Cog schema."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import torch

from remixer.request import INPUTS
from tests.conftest import tone

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remixer", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=600)


def test_help_documents_every_input():
    out = _cli("--help").stdout
    for spec in INPUTS:
        if spec.name == "music_input":
            assert "SONG" in out
        elif spec.type is bool and spec.default:
            assert f"--no-{spec.name.replace('_', '-')}" in out
        else:
            assert f"--{spec.name.replace('_', '-')}" in out
    assert "--output" in out and "--weights-dir" in out


def test_cli_remixes_with_tiny_weights(tiny_weights, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 3.0, 44100).T, 44100)
    output = tmp_path / "result" / "mine.wav"
    done = _cli(str(song), "--prompt", "reggae", "--model-version", "chord", "--seed", "4",
                "--return-instrumental", "--return-analysis", "--output", str(output),
                env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"remix: {output}" in done.stdout and "seed: 4" in done.stdout
    assert sf.info(output).frames == 3 * 44100  # the song's own rate
    assert (tmp_path / "result" / "mine.instrumental.wav").exists()
    assert sorted(p.name for p in output.parent.iterdir()) == ["mine.analysis.json", "mine.analysis.png",
                                                               "mine.instrumental.wav", "mine.wav"]
    # The summary: tempo, bars, sections, chords and stage times (random weights find no beat).
    assert "song: no beat found, 0 bars" in done.stdout and "chords (recognised):" in done.stdout
    assert "stages: decode" in done.stdout and "generate" in done.stdout
    assert "generating" in done.stderr  # the progress bar


def test_cli_errors_are_messages_not_tracebacks(tiny_weights, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    done = _cli(str(text), "--prompt", "x", "--model-version", "chord",
                env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
    assert done.returncode == 1
    assert "not a readable audio file" in done.stderr and "Traceback" not in done.stderr
    done = _cli(str(text), "--prompt", "x", "--chroma-coefficient", "9")
    assert done.returncode == 2 and "chroma_coefficient must be <= 2.0" in done.stderr


def test_a_damaged_weight_file_is_named_not_a_traceback(tiny_weights, tmp_path):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    damaged = weights / "btc" / "btc_model_large_voca.pt"
    damaged.write_bytes(damaged.read_bytes()[:5000])  # a download cut short
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 1.0, 44100).T, 44100)
    done = _cli(str(song), "--prompt", "x", "--model-version", "chord",
                env={"REMIXER_WEIGHTS_DIR": str(weights), "REMIXER_OFFLINE": "1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert str(damaged) in done.stderr and "python -m remixer.weights download btc-large-voca" in done.stderr


def test_committed_schema_matches_predict():
    done = subprocess.run([sys.executable, "tools/write_openapi_schema.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_predict_signature_is_the_input_table():
    sys.path.insert(0, str(ROOT))
    from predict import Predictor

    parameters = [p for p in inspect.signature(Predictor.predict).parameters if p != "self"]
    assert parameters == [spec.name for spec in INPUTS]
    schema = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text())
    assert list(schema["components"]["schemas"]["Input"]["properties"]) == sorted(parameters)


def test_asking_for_a_gpu_that_is_not_there_is_one_line(tiny_weights, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 1.0, 44100).T, 44100)
    cases = [("tpu", "cpu, cuda or cuda:N"), ("cuda:99", "'cuda:99' was asked for")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "no usable CUDA GPU"))
    for device, phrase in cases:
        done = _cli(str(song), "--prompt", "x", "--device", device, env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
        assert done.returncode == 1, (device, done.stderr[-2000:])
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert "Traceback" not in done.stderr and lines[-1].startswith("musicgen-remix: ") and phrase in lines[-1]


def test_progress_bar_closes_when_the_last_token_is_generated(capsys):
    from remixer.cli import _ProgressBar

    with _ProgressBar() as bar:
        bar.update(3, 10)
        assert not bar.closed
        bar.update(10, 10)
        assert bar.closed  # before the stages after generation log anything
        after_generation = capsys.readouterr().err
        bar.update(10, 10)  # a late report changes nothing
    assert "10/10" in after_generation and after_generation.endswith("\n")
    assert capsys.readouterr().err == ""


def test_cli_musicongen_on_a_song_without_a_beat_names_the_versions_that_can(tiny_weights, tmp_path):
    """End to end on the tiny weights: random All-In-One finds no beat, which MusiConGen needs."""
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 1.5, 44100).T, 44100)
    done = _cli(str(song), "--prompt", "x", "--model-version", "musicongen", "--output", str(tmp_path / "out.wav"),
                env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "musicongen plays on the song's own beats, but no beat was found in 'song.wav' by all-in-one: try " \
           "beat_tracker=madmom, or remix this song with a chord model_version (stereo-chord, stereo-chord-large, " \
           "chord, chord-large)" in done.stderr
    assert not (tmp_path / "out.wav").exists() and not list(tmp_path.glob(".out.wav.work*"))


def test_cli_takes_write_beside_the_remix_and_the_summary_ranks_them(tiny_weights, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 1.5, 44100).T, 44100)
    output = tmp_path / "mine.wav"
    done = _cli(str(song), "--prompt", "x", "--model-version", "chord", "--seed", "2", "--takes", "3",
                "--return-takes", "--output", str(output), env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("mine*")) == ["mine.take2.wav", "mine.take3.wav", "mine.wav"]
    assert "takes (best first): take " in done.stdout and "(returned)" in done.stdout
    assert "fidelity: chord_majmin" in done.stdout
    assert "not measured: no beats were found in the song" in done.stdout
    bad = _cli(str(song), "--prompt", "x", "--takes", "5", env={"REMIXER_WEIGHTS_DIR": str(tiny_weights)})
    assert bad.returncode == 2 and "takes must be <= 4, got 5" in bad.stderr


def test_cli_transpose_and_tempo(tiny_weights, tmp_path):
    """transpose runs end to end and is summarised; an out-of-range transpose is refused before any work (tempo
    on a song without a beat: tests/test_keytempo.py, in process)."""
    song = tmp_path / "song.wav"
    sf.write(song, tone(220, 1.5, 44100).T, 44100)
    env = {"REMIXER_WEIGHTS_DIR": str(tiny_weights)}
    done = _cli(str(song), "--prompt", "x", "--model-version", "chord", "--seed", "2", "--transpose", "-3",
                "--output", str(tmp_path / "low.wav"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "key and tempo: -3 semitones" in done.stdout and sf.info(tmp_path / "low.wav").duration == 1.5
    bad = _cli(str(song), "--prompt", "x", "--transpose", "13", env=env)
    assert bad.returncode == 2 and "transpose must be <= 12, got 13" in bad.stderr
