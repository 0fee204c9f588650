"""Batch remixing on Ray (remixer.manifest, remixer.batch, `musicgen-remix batch`).

The manifest and pool tests need no Ray; the end-to-end ones run real remixes on the tiny weights over a
local Ray instance (two CPU workers), real actors killed with SIGKILL where a test says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from remixer.batch import LOCK_FILE, PARTIAL_DIR, RESULTS_FILE, BatchError, Ledger, import_ray, plan_pool, run_batch
from remixer.cli import main
from remixer.manifest import ManifestError, input_hash, read_manifest
from remixer.request import RemixRequest
from tests.conftest import write_song

REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """Four short songs (3 s) and one 'song' that is not audio, in one folder."""
    folder = tmp_path_factory.mktemp("songs")
    for n in range(1, 5):
        write_song(folder / f"song{n}.wav", 3.0, low=200 + 20 * n)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(4000))
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the manifest: read and checked whole before any work ------------------------------------------------


def test_bad_manifest_is_rejected_naming_every_problem_before_any_work(songs, tmp_path, capsys):
    manifest = write_csv(
        tmp_path / "m.csv", "id,music_input,prompt,chroma_coefficent,top_k",
        f"a,{songs / 'song1.wav'},jazz,,",
        f"b,{songs / 'song2.wav'},,,",  # no prompt
        f"c,{songs / 'song3.wav'},rock,,-5",  # top_k out of range
        "d,missing.wav,pop,,",
    )
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "unknown column(s) ['chroma_coefficent']" in message and "chroma_coefficient" in message
    assert "row 2 (line 3): prompt is required" in message
    assert "row 3 (line 4): top_k must be >= 0, got -5" in message
    assert f"row 4 (line 5): music_input: no such file {tmp_path / 'missing.wav'}" in message
    assert "row 1" not in message  # the good row is not blamed

    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s), nothing was run" in err and "row 3 (line 4): top_k" in err
    assert not out.exists()  # nothing started, nothing written


def test_jsonl_manifest_problems_by_row(songs, tmp_path):
    lines = [
        json.dumps({"music_input": str(songs / "song1.wav"), "prompt": "jazz", "id": "x"}),
        "",  # blank lines are allowed and not rows
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"music_input": str(songs / "song1.wav"), "prompt": "jazz", "id": "x", "speed": 3}),
        json.dumps({"music_input": str(songs / "song2.wav"), "prompt": "jazz", "id": "../up"}),
        json.dumps({"music_input": str(songs / "song2.wav"), "prompt": "jazz", "temperature": "hot"}),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "row 2 (line 3): not JSON" in message
    assert "row 3 (line 4): a row is a JSON object, got list" in message
    assert "row 4 (line 5): unknown column(s) ['speed']" in message
    assert "row 4: id 'x' is already used by row 1" in message
    assert "row 5: id '../up' must be letters" in message
    assert "row 6 (line 7): temperature: 'hot' is not a float" in message


def test_manifest_rows_take_defaults_relative_paths_and_csv_quoting(songs, tmp_path):
    (tmp_path / "music").mkdir()
    song = write_song(tmp_path / "music" / "My Song!.wav", 3.0)
    manifest = write_csv(tmp_path / "m.csv", "music_input,prompt,seed,return_stems,id,model_version",
                         'music/My Song!.wav,"bossa nova, nylon guitar",7,yes,,',
                         "music/My Song!.wav,jazz,,,take2,chord")
    first, second = read_manifest(manifest)
    assert first.request == RemixRequest(prompt="bossa nova, nylon guitar", music_input=song.resolve(), seed=7,
                                         return_stems=True)  # every other input at its default
    assert (first.id, second.id) == ("0001-My-Song", "take2")
    assert second.request.model_version == "chord" and second.request.seed is None
    # The same rows as JSON Lines are the same work (same hash), whatever the file format.
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"music_input": "music/My Song!.wav", "prompt": "bossa nova, nylon guitar",
                                 "seed": 7, "return_stems": True, "model_version": None}) + "\n")
    (again,) = read_manifest(jsonl)
    assert again.request == first.request and again.input_hash == first.input_hash
    assert first.request.music_input == song.resolve()
    # What a worker gets: the request itself, through pickle, without being checked again.
    import pickle

    assert pickle.loads(pickle.dumps(first.request)) == first.request


def test_input_hash_changes_with_any_input_and_with_the_song_file(tmp_path):
    song = write_song(tmp_path / "s.wav", 2.0)
    request = RemixRequest(prompt="jazz", music_input=song)
    before = input_hash(request)
    assert input_hash(RemixRequest(prompt="jazz", music_input=song)) == before
    assert input_hash(RemixRequest(prompt="rock", music_input=song)) != before
    assert input_hash(RemixRequest(prompt="jazz", music_input=song, top_k=10)) != before
    write_song(song, 2.5)  # the song replaced on disk
    assert input_hash(request) != before


# --- results.jsonl and the pool's shape ------------------------------------------------------------------


def test_ledger_keeps_one_line_per_row_and_ignores_a_broken_line(tmp_path, songs):
    path = tmp_path / RESULTS_FILE
    ledger = Ledger(path)
    ledger.record({"id": "a", "status": "failed", "outputs": {}})
    ledger.record({"id": "b", "status": "ok", "outputs": {}})
    ledger.record({"id": "a", "status": "ok", "outputs": {}})  # a failed row done later: replaced, in place
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0])["status"] == "ok"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it
    path.write_text(path.read_text() + '{"id": "c", "stat')  # a line cut short by some other writer
    assert set(Ledger(path).records) == {"a", "b"}


def test_a_row_is_done_only_with_the_same_inputs_and_every_output_still_there(tmp_path, songs):
    """What resume skips: an ok row with the same input hash whose every recorded output exists."""
    (row,) = read_manifest(write_csv(tmp_path / "m.csv", "id,music_input,prompt", f"a,{songs / 'song1.wav'},jazz"))
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    outputs = {"remix": "a/remix.wav", "analysis_json": "a/analysis.json"}
    for name in outputs.values():
        (out / name).write_bytes(b"x")
    ledger = Ledger(out / RESULTS_FILE)
    ledger.record({"id": "a", "status": "ok", "input_hash": row.input_hash, "outputs": outputs})
    assert Ledger(out / RESULTS_FILE).done(row)
    (out / "a" / "analysis.json").unlink()  # one output of two gone: the row runs again
    assert not Ledger(out / RESULTS_FILE).done(row)
    (out / "a" / "analysis.json").mkdir()  # a folder where the file was is not the file
    assert not Ledger(out / RESULTS_FILE).done(row)
    (out / "a" / "analysis.json").rmdir()
    (out / "a" / "analysis.json").write_bytes(b"x")
    ledger.record({"id": "a", "status": "ok", "input_hash": "another", "outputs": outputs})
    assert not Ledger(out / RESULTS_FILE).done(row)  # inputs edited since
    ledger.record({"id": "a", "status": "failed", "input_hash": row.input_hash, "outputs": {}})
    assert not Ledger(out / RESULTS_FILE).done(row)


def test_pool_plan_follows_the_cluster():
    gpus = {"GPU": 8.0, "CPU": 64.0}
    assert plan_pool(gpus, rows=100) == plan_pool(gpus, 100, 8, 1, 8)
    assert plan_pool(gpus, rows=3).workers == 3  # no idle workers for a short manifest
    assert plan_pool(gpus, 100, gpus_per_worker=0.5).workers == 16  # two per GPU
    assert plan_pool({"CPU": 16.0}, rows=10) == plan_pool({"CPU": 16.0}, 10, 1, 0, 16)
    assert plan_pool({"CPU": 16.0}, rows=10, workers=4).cpus_per_worker == 4
    with pytest.raises(BatchError, match="has 0"):
        plan_pool({"CPU": 16.0}, 10, gpus_per_worker=1)
    with pytest.raises(BatchError, match="need 16 GPU and 64 CPU, but the Ray cluster has 8 GPU"):
        plan_pool(gpus, 100, workers=16, cpus_per_worker=4)


def test_missing_ray_says_how_to_install_it_before_any_work(songs, tmp_path, monkeypatch):
    manifest = write_csv(tmp_path / "m.csv", "music_input,prompt", f"{songs / 'song1.wav'},jazz")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    with pytest.raises(BatchError, match=r"pip install 'musicgen-remixer\[batch\]'"):
        import_ray()
    with pytest.raises(BatchError, match="Ray, which is not installed"):
        run_batch(manifest, tmp_path / "out", weights_dir=tmp_path / "no-weights", offline=True)
    assert not (tmp_path / "out" / RESULTS_FILE).exists() and not (tmp_path / "no-weights").exists()


def test_a_second_batch_into_the_same_folder_is_refused(songs, tmp_path):
    from remixer.batch import _only_run

    manifest = write_csv(tmp_path / "m.csv", "music_input,prompt", f"{songs / 'song1.wav'},jazz")
    out = tmp_path / "out"
    out.mkdir()
    with _only_run(out):  # a batch running into `out`
        with pytest.raises(BatchError, match="another batch is writing to"):
            run_batch(manifest, out, offline=True)
        assert (out / LOCK_FILE).exists()  # the running batch keeps its lock
    assert not (out / LOCK_FILE).exists()


# --- the command, stopped with Ctrl-C (its own Ray instance, in a subprocess) ----------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_leaves_only_finished_rows(songs, tiny_weights, tmp_path, stop):
    long_songs = [write_song(tmp_path / f"long{n}.wav", 8.0, low=180 + 30 * n) for n in range(3)]
    manifest = write_csv(tmp_path / "m.csv", "music_input,prompt", *(f"{s},jazz" for s in long_songs))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "remixer", "batch", str(manifest), "--out", str(out), "--workers", "1",
         "--weights-dir", str(tiny_weights), "--offline", "--quiet"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / RESULTS_FILE
    # Wait for the first finished row however slow the machine is (the bound only stops a hang): a signal
    # sent before it would test another story (no row done) and fail by chance on a busy machine.
    deadline = time.monotonic() + 900
    while not (results.exists() and results.read_text().strip()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no row finished in 15 minutes"
        time.sleep(0.2)
    process.send_signal(stop)  # during the second row
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "stopped:" in stdout and "run the same command again" in stdout
    records = [json.loads(line) for line in results.read_text().splitlines()]  # every line whole
    assert [r["status"] for r in records] == ["ok"] * len(records) and 1 <= len(records) < 3
    for record in records:
        assert sf.info(out / record["outputs"]["remix"]).duration == pytest.approx(8.0, abs=0.05)
    done = {r["id"] for r in records}
    assert sorted(p.name for p in out.iterdir()) == sorted([RESULTS_FILE, *done])  # no partial, no lock
    assert LOCK_FILE not in os.listdir(out) and PARTIAL_DIR not in os.listdir(out)


# --- end to end on a local Ray instance: real remixes, real actors -----------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for this module's in-process runs (run_batch uses a running one)."""
    import ray  # the test install includes the batch extra
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_batch_remixes_rows_on_two_workers_and_a_bad_song_fails_alone(local_ray, songs, tiny_weights, tmp_path):
    manifest = write_csv(
        tmp_path / "m.csv", "id,music_input,prompt,seed,return_instrumental",
        f"one,{songs / 'song1.wav'},jazz,1,",
        f"two,{songs / 'song2.wav'},rock,2,true",
        f"bad,{songs / 'corrupt.wav'},funk,3,",
        f"four,{songs / 'song3.wav'},pop,,",
        f"five,{songs / 'song4.wav'},bossa nova,5,",
    )
    out = tmp_path / "out"
    summary = run_batch(manifest, out, workers=2, weights_dir=tiny_weights, offline=True, progress=False)

    assert sorted(summary.ok) == ["five", "four", "one", "two"]
    assert list(summary.failed) == ["bad"]
    assert "corrupt.wav: not a readable audio file" in summary.failed["bad"] and "Accepted: wav" in \
        summary.failed["bad"]
    records = {r["id"]: r for r in map(json.loads, (out / RESULTS_FILE).read_text().splitlines())}
    assert set(records) == {"one", "two", "bad", "four", "five"}
    assert records["bad"]["status"] == "failed" and records["bad"]["outputs"] == {}
    assert not (out / "bad").exists()
    for row_id in summary.ok:
        record = records[row_id]
        remix = out / record["outputs"]["remix"]
        assert record["status"] == "ok" and record["error"] is None and record["attempts"] == 1
        assert sf.info(remix).duration == pytest.approx(3.0, abs=0.02) and remix.parent == out / row_id
        assert record["duration"] == pytest.approx(3.0, abs=0.02) and {"separate", "generate"} <= set(
            record["timings"])
    assert records["one"]["seed"] == 1 and isinstance(records["four"]["seed"], int)
    assert set(records["two"]["outputs"]) == {"remix", "instrumental"}
    # Two worker processes, each set up once (one setup report each), served all five rows: the models
    # were loaded once per worker, never per row, and no other process remixed.
    assert len(summary.workers) == 2 and all(w["setup_s"] > 0 for w in summary.workers)
    assert sum(w["rows"] for w in summary.workers) == 5 and min(w["rows"] for w in summary.workers) >= 1
    workers = {f"{w['host']}:{w['pid']}" for w in summary.workers}
    assert len(workers) == 2 and {r["worker"] for r in records.values()} == workers
    assert sorted(os.listdir(out)) == sorted([RESULTS_FILE, *summary.ok])

    # Resume: the same manifest again, with the bad song mended and one prompt edited.
    before = {row_id: digest(out / records[row_id]["outputs"]["remix"]) for row_id in summary.ok}
    stamps = {row_id: (out / records[row_id]["outputs"]["remix"]).stat().st_mtime_ns for row_id in summary.ok}
    write_song(songs / "corrupt.wav", 3.0)
    manifest.write_text(manifest.read_text().replace("rock", "reggae"))
    again = run_batch(manifest, out, workers=2, weights_dir=tiny_weights, offline=True, progress=False)
    assert sorted(again.skipped) == ["five", "four", "one"]
    assert sorted(again.ok) == ["bad", "two"] and not again.failed
    assert sum(w["rows"] for w in again.workers) == 2  # nothing else was recomputed
    for row_id in ("one", "four", "five"):  # untouched: same bytes, same file
        remix = out / records[row_id]["outputs"]["remix"]
        assert digest(remix) == before[row_id] and remix.stat().st_mtime_ns == stamps[row_id]
    records = {r["id"]: r for r in map(json.loads, (out / RESULTS_FILE).read_text().splitlines())}
    assert len(records) == 5 and records["bad"]["status"] == "ok" and records["two"]["prompt"] == "reggae"
    assert sf.info(out / "bad" / "remix.wav").duration == pytest.approx(3.0, abs=0.02)

    # Everything done: a third run starts no worker at all.
    third = run_batch(manifest, out, workers=2, weights_dir=tiny_weights, offline=True, progress=False)
    assert len(third.skipped) == 5 and third.plan is None and third.workers == []


def _kill_remixing_workers(times: int, killed: list[int]) -> threading.Thread:
    """SIGKILL the process of a Ray actor in the middle of RemixWorker.remix, `times` times. Only this test
    run's actors (their environment holds this run's RAY_TMPDIR): another suite on the same machine has its
    own (a run beside this one once lost its rows to these kills)."""
    ours = f"RAY_TMPDIR={os.environ['RAY_TMPDIR']}".encode()

    def watch():
        deadline = time.monotonic() + 180
        while len(killed) < times and time.monotonic() < deadline:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in killed:
                    continue
                try:
                    title = (entry / "cmdline").read_bytes()
                    mine = title.startswith(b"ray::RemixWorker.remix") and \
                        ours in (entry / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if mine:
                    time.sleep(0.3)  # well inside the row
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                    break
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kills", [1, 2])
def test_a_worker_killed_mid_row_is_retried_once_on_another(local_ray, songs, tiny_weights, tmp_path, kills):
    long_song = write_song(tmp_path / "long.wav", 6.0)
    manifest = write_csv(tmp_path / "m.csv", "id,music_input,prompt,seed", f"row,{long_song},jazz,4")
    killed: list[int] = []
    watcher = _kill_remixing_workers(kills, killed)
    summary = run_batch(manifest, tmp_path / "out", workers=1, weights_dir=tiny_weights, offline=True,
                        progress=False)
    watcher.join(timeout=5)
    assert len(killed) == kills
    (record,) = map(json.loads, (tmp_path / "out" / RESULTS_FILE).read_text().splitlines())
    assert record["attempts"] == 2 and "died" in record["retried_because"]
    if kills == 1:  # the replacement worker remixes it
        assert summary.ok == ["row"] and record["status"] == "ok"
        assert int(record["worker"].split(":")[1]) not in killed
        assert sf.info(tmp_path / "out" / "row" / "remix.wav").duration == pytest.approx(6.0, abs=0.02)
    else:  # died again: failed, with the reason, and nothing of it kept
        assert summary.failed == {"row": record["error"]} and record["status"] == "failed"
        assert record["error"].startswith("the worker died remixing this row, twice")
        assert not (tmp_path / "out" / "row").exists()
    assert not (tmp_path / "out" / PARTIAL_DIR).exists()


def test_manifest_takes_column_is_checked_like_a_request(songs, tmp_path):
    manifest = write_csv(
        tmp_path / "m.csv", "id,music_input,prompt,takes,return_takes",
        f"a,{songs / 'song1.wav'},jazz,3,true",
        f"b,{songs / 'song2.wav'},jazz,5,",
        f"c,{songs / 'song3.wav'},jazz,two,",
        f"d,{songs / 'song3.wav'},jazz,,",
    )
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "row 2 (line 3): takes must be <= 4, got 5" in message
    assert "row 3 (line 4): takes: 'two' is not a int" in message
    assert "row 1" not in message and "row 4" not in message
    good = write_csv(tmp_path / "good.csv", "id,music_input,prompt,takes,return_takes",
                     f"a,{songs / 'song1.wav'},jazz,3,true", f"d,{songs / 'song3.wav'},jazz,,")
    rows = read_manifest(good)
    assert (rows[0].request.takes, rows[0].request.return_takes) == (3, True)
    assert (rows[1].request.takes, rows[1].request.return_takes) == (1, False)  # empty cells: the defaults


def test_manifest_transpose_and_tempo_columns_are_checked_like_a_request(songs, tmp_path):
    header = "id,music_input,prompt,transpose,tempo"
    manifest = write_csv(tmp_path / "m.csv", header, f"a,{songs / 'song1.wav'},jazz,-2,96.5",
                         f"b,{songs / 'song2.wav'},jazz,13,", f"c,{songs / 'song3.wav'},jazz,,0")
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "row 2 (line 3): transpose must be <= 12, got 13" in message
    assert "row 3 (line 4): tempo must be a positive bpm" in message and "row 1" not in message
    rows = read_manifest(write_csv(tmp_path / "good.csv", header, f"a,{songs / 'song1.wav'},jazz,-2,96.5",
                                   f"d,{songs / 'song3.wav'},jazz,,"))
    assert (rows[0].request.transpose, rows[0].request.tempo) == (-2, 96.5)
    assert (rows[1].request.transpose, rows[1].request.tempo) == (0, None)
