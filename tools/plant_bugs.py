"""Plant realistic one-line bugs, one at a time, and count how many the fast tests catch.

    .venv/bin/python tools/plant_bugs.py                  # this checkout's code and tests
    .venv/bin/python tools/plant_bugs.py --commit 7ed9fc7 # an older commit, for a before/after table

Each bug is a single textual edit in a scratch copy (the working tree is never
touched); the copy runs the fast test files with this checkout's virtual
environment and a bug counts as caught when pytest fails. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_TESTS = ["test_wiring.py", "test_pipeline.py", "test_mix.py", "test_generation.py", "test_mbd.py",
              "test_separation_rhythm.py", "test_beatsync.py", "test_chords.py", "test_btc.py", "test_audio.py",
              "test_checkpoints.py", "test_batch.py"]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str


BUGS = [
    Bug("beat-sync downbeats swapped", "remixer/pipeline.py",
        "generated.downbeats,\n                                              song.downbeats, threshold=threshold",
        "song.downbeats,\n                                              generated.downbeats, threshold=threshold"),
    Bug("beat-sync skipped", "remixer/pipeline.py", "instrumental, band = self._beat_sync(",
        "_, band = self._beat_sync("),
    Bug("beat_sync_threshold ignored", "remixer/pipeline.py",
        "song.downbeats, threshold=threshold, bpm=song.bpm), None",
        "song.downbeats, threshold=None, bpm=song.bpm), None"),
    Bug("chroma reaches generation as zeros", "remixer/pipeline.py",
        "chords.segments_to_chroma(segments, duration, request.chroma_coefficient)",
        "chords.segments_to_chroma(segments, duration, request.chroma_coefficient) * 0"),
    Bug("chroma_coefficient not passed", "remixer/pipeline.py",
        "chords.segments_to_chroma(segments, duration, request.chroma_coefficient)",
        "chords.segments_to_chroma(segments, duration, 1.0)"),
    Bug("large_chord_voca ignored", "remixer/pipeline.py", "self.recognizers[request.large_chord_voca]",
        "self.recognizers[True]"),
    Bug("temperature not passed", "remixer/pipeline.py", "request.top_p, request.temperature,",
        "request.top_p, 1.0,"),
    Bug("top_p not passed", "remixer/pipeline.py", "Sampling(request.top_k, request.top_p,",
        "Sampling(request.top_k, 0.0,"),
    Bug("seed not passed", "remixer/pipeline.py", "seed=request.seed, bpm=song_rhythm.bpm",
        "seed=None, bpm=song_rhythm.bpm"),
    Bug("bpm not in the prompt", "remixer/pipeline.py", "seed=request.seed, bpm=song_rhythm.bpm",
        "seed=request.seed, bpm=None"),
    Bug("chords on the vocals only", "remixer/pipeline.py", "recognizer.recognize(stems.drumless",
        "recognizer.recognize(stems.vocals"),
    Bug("another stem mixed as vocals", "remixer/pipeline.py", "mix.prepare_vocals(stems.vocals,",
        "mix.prepare_vocals(stems['other'],"),
    Bug("separation not destandardised", "remixer/separation.py", "sources = (sources * std + mean)",
        "sources = (sources)"),
    Bug("stereo tokens decoded with channels swapped", "remixer/generation.py",
        "[codes[0::2], codes[1::2]]", "[codes[1::2], codes[0::2]]"),
    Bug("stereo tokens split in halves", "remixer/generation.py",
        "[codes[0::2], codes[1::2]]", "[codes[:4], codes[4:]]"),
    Bug("MBD default step list changed", "remixer/mbd.py", "list(range(1000))[::-50] + [0]",
        "list(range(1000))[::-40] + [0]"),
    Bug("stereo vocals' channels swapped", "remixer/mix.py", "converted = resample(convert_channels(stem, channels)",
        "converted = resample(convert_channels(stem, channels)[::-1]"),
    Bug("every window conditioned on the song's opening", "remixer/generation.py",
        "windows = window_chroma(chroma, starts)", "windows = window_chroma(chroma, [0.0] * len(starts))"),
    Bug("guidance not passed", "remixer/pipeline.py", "request.classifier_free_guidance),",
        "0),"),
    Bug("instrumental not the synced one", "remixer/pipeline.py", "level = audio.normalize(instrumental, rate,",
        "level = audio.normalize(generated.audio, rate,"),
    Bug("batch: a dead worker's row not retried", "remixer/batch.py", "if attempt == 1:", "if attempt == 0:"),
    Bug("batch: resume ignores edited inputs", "remixer/batch.py",
        'record.get("status") == "ok" and record.get("input_hash") == row.input_hash',
        'record.get("status") == "ok"'),
    Bug("batch: failed rows not retried on resume", "remixer/batch.py",
        'record.get("status") == "ok" and', 'record.get("status") in ("ok", "failed") and'),
    Bug("batch: outputs left in the staging folder", "remixer/batch.py",
        "os.replace(out / PARTIAL_DIR / f\"{row.id}.{attempt}\", final)",
        "(out / PARTIAL_DIR / f\"{row.id}.{attempt}\").exists()"),
    Bug("batch: a new worker (and models) per row", "remixer/batch.py",
        "                    pool.idle.append(actor)\n", "                    pool.lost(actor)\n"),
    Bug("batch: song paths read from the current folder", "remixer/manifest.py",
        "song if song.is_absolute() else (base / song).resolve()", "song.resolve()"),
    Bug("batch: manifest rows numbered from 0", "remixer/manifest.py",
        "for number, values in enumerate(reader, start=1):", "for number, values in enumerate(reader):"),
    Bug("batch: Ctrl-C leaves rows in progress behind", "remixer/batch.py",
        "        pool.close()\n        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)\n",
        "        pool.close()\n"),
]


def scratch_copy(commit: str | None) -> Path:
    target = Path(tempfile.mkdtemp(prefix="planted-"))
    if commit:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    else:
        shutil.copytree(ROOT, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.converted", "weights"))
    return target


def run_tests(tree: Path, files: list[str]) -> tuple[bool, float]:
    present = [f"tests/{name}" for name in files if (tree / "tests" / name).exists()]
    start = time.perf_counter()
    # One thread per run: several runs (or a developer's own) share the machine without OpenMP spinning.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *present],
                          cwd=tree, capture_output=True, text=True, env=env)
    return done.returncode == 0, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", help="plant into this commit's code and tests instead of the working tree")
    parser.add_argument("--only", nargs="*", help="bug names (substring match)")
    parser.add_argument("--files", nargs="*", default=FAST_TESTS, help="test files to run (default: the fast ones)")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.only or any(o in b.name for o in args.only)]
    rows = []
    for bug in bugs:
        tree = scratch_copy(args.commit)
        try:
            path = tree / bug.path
            text = path.read_text()
            if text.count(bug.old) != 1:
                rows.append((bug.name, "not applicable", 0.0))
                continue
            path.write_text(text.replace(bug.old, bug.new))
            passed, seconds = run_tests(tree, args.files)
            rows.append((bug.name, "missed" if passed else "caught", seconds))
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        print(f"{rows[-1][1]:>14}  {bug.name}", file=sys.stderr, flush=True)
    width = max(len(name) for name, _, _ in rows)
    print(f"| {'planted bug'.ljust(width)} | result | tests (s) |")
    print(f"|{'-' * (width + 2)}|--------|-----------|")
    for name, result, seconds in rows:
        print(f"| {name.ljust(width)} | {result} | {seconds:9.0f} |")
    caught = sum(result == "caught" for _, result, _ in rows)
    applicable = sum(result != "not applicable" for _, result, _ in rows)
    print(f"caught {caught} of {applicable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
