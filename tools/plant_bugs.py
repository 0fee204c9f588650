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
              "test_checkpoints.py", "test_batch.py", "test_download.py", "test_capture.py", "test_decoding.py"]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str


BUGS = [
    Bug("beat-sync downbeats swapped", "remixer/pipeline.py",
        "musicgen.SAMPLE_RATE, generated.downbeats,\n                                            song.downbeats,",
        "musicgen.SAMPLE_RATE, song.downbeats,\n                                            generated.downbeats,"),
    Bug("beat-sync skipped", "remixer/pipeline.py", "take.instrumental, take.band = synced.instrumental, synced.band",
        "take.band = synced.band"),
    Bug("beat_sync_threshold ignored", "remixer/pipeline.py",
        "song.downbeats, threshold=threshold, bpm=song.bpm,", "song.downbeats, threshold=None, bpm=song.bpm,"),
    Bug("chroma reaches generation as zeros", "remixer/pipeline.py",
        "chords.segments_to_chroma(song.chords, song.duration, request.chroma_coefficient)",
        "chords.segments_to_chroma(song.chords, song.duration, request.chroma_coefficient) * 0"),
    Bug("chroma_coefficient not passed", "remixer/pipeline.py",
        "chords.segments_to_chroma(song.chords, song.duration, request.chroma_coefficient)",
        "chords.segments_to_chroma(song.chords, song.duration, 1.0)"),
    Bug("large_chord_voca ignored", "remixer/pipeline.py", "self.recognizers[request.large_chord_voca]",
        "self.recognizers[True]"),
    Bug("temperature not passed", "remixer/pipeline.py", "request.top_p, request.temperature,",
        "request.top_p, 1.0,"),
    Bug("top_p not passed", "remixer/pipeline.py", "Sampling(request.top_k, request.top_p,",
        "Sampling(request.top_k, 0.0,"),
    Bug("seed not passed", "remixer/pipeline.py", "seed=request.seed, bpm=song.rhythm.bpm",
        "seed=None, bpm=song.rhythm.bpm"),
    Bug("bpm not in the prompt", "remixer/pipeline.py", "seed=request.seed, bpm=song.rhythm.bpm",
        "seed=request.seed, bpm=None"),
    Bug("chords on the vocals only", "remixer/pipeline.py", "recognizer.recognize(stems.drumless",
        "recognizer.recognize(stems.vocals"),
    Bug("another stem mixed as vocals", "remixer/pipeline.py", "song_rhythm, segments, change, stems.vocals)",
        "song_rhythm, segments, change, stems['other'])"),
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
    Bug("guidance not passed", "remixer/pipeline.py", "                                       request.classifier_free_guidance)",
        "                                       0)"),
    Bug("instrumental not the synced one", "remixer/pipeline.py", "level = audio.normalize(instrumental, rate,",
        "level = audio.normalize(chosen.generated.audio, rate,"),
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
    # Tests that catch II (2026-11-29): one slip of each kind of wire that had no fast guard.
    Bug("encoder: the prompt without its bpm", "remixer/generation.py",
        "    text = build_prompt(prompt, bpm)\n", "    text = build_prompt(prompt, None)\n"),
    Bug("encoder: bpm written in another format", "remixer/generation.py",
        'f"{text}, bpm : {int(round(bpm))}"', 'f"{text} {int(round(bpm))} bpm"'),
    Bug("section: cut to the song's end, not end_time", "remixer/pipeline.py",
        "min(int(round(last * song.sample_rate)), song.samples.shape[1])", "song.samples.shape[1]"),
    Bug("section: analysis left on the part's timeline", "remixer/pipeline.py",
        "offset = song.offset * song.change.factor", "offset = 0.0"),
    Bug("section: chords not moved to the song's timeline", "remixer/pipeline.py",
        "chords=[replace(c, start=offset + c.start, end=offset + c.end) for c in song.chords]",
        "chords=list(song.chords)"),
    Bug("stems: drums and bass swapped after the sync", "remixer/pipeline.py",
        'band = {"drums": synced[channels:2 * channels], "bass": synced[2 * channels:]}',
        'band = {"drums": synced[2 * channels:], "bass": synced[channels:2 * channels]}'),
    Bug("stems: band returned unsynced", "remixer/pipeline.py",
        '        band = {"drums": synced[channels:2 * channels], "bass": synced[2 * channels:]}\n', ""),
    Bug("mix: normalization_strategy dropped", "remixer/pipeline.py",
        "remixed = mix.mix(instrumental, vocals, rate, strategy)", "remixed = mix.mix(instrumental, vocals, rate)"),
    Bug("mix: peak headroom in the wrong unit", "remixer/audio.py",
        "peak_limit = _db_to_gain(-PEAK_HEADROOM_DB)", "peak_limit = 1.0 - PEAK_HEADROOM_DB / 100"),
    Bug("chords: the last chord held instead of repeating", "remixer/chords.py",
        "labels[i % len(labels)]", "labels[min(i, len(labels) - 1)]"),
    Bug("download: every read of a range written at its start", "remixer/download.py",
        "os.pwrite(fd, chunk, start + written)", "os.pwrite(fd, chunk, start)"),
    Bug("download: ranges one chunk long whatever the size", "remixer/download.py",
        "min(start + settings.chunk_bytes, size)", "start + settings.chunk_bytes"),
    Bug("batch: done when any output is there", "remixer/batch.py",
        "and all((self.path.parent / p).is_file()", "and any((self.path.parent / p).is_file()"),
    Bug("batch: done when the output's name exists at all", "remixer/batch.py",
        "(self.path.parent / p).is_file() for p", "(self.path.parent / p).exists() for p"),
    # Tests that catch III (2026-12-03): what the mix receives as vocals, what the fidelity numbers mean.
    Bug("mix: the band mixed in as the vocals", "remixer/pipeline.py",
        "vocals = mix.prepare_vocals(song.vocals, separation.SAMPLE_RATE, rate,",
        "vocals = mix.prepare_vocals(instrumental, rate, rate,"),
    Bug("mix: the vocals left out", "remixer/pipeline.py",
        "remixed = mix.mix(instrumental, vocals, rate, strategy)", "remixed = mix.mix(instrumental, vocals * 0, rate, strategy)"),
    Bug("fidelity: chords compared without beat-sync's time map", "remixer/fidelity.py",
        "map_segments(generated_chords, time_map, duration)", "map_segments(generated_chords, identity, duration)"),
    Bug("fidelity: majmin and tetrads reported under each other's names", "remixer/fidelity.py",
        "    return scores[0], scores[1]\n", "    return scores[1], scores[0]\n"),
    Bug("decode: the static step reads the whole cache, not its bucket", "remixer/decoding/cache.py",
        "    return min(length, (index // bucket + 1) * bucket)", "    return length"),
    Bug("decode: the shared prefix of the condition half read by the null half too", "remixer/decoding/cache.py",
        "(keys[::takes, :, :, :length].clone(), values[::takes, :, :length].clone())",
        "(keys[:groups, :, :, :length].clone(), values[:groups, :, :length].clone())"),
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


def run_tests(tree: Path, files: list[str], select: str | None = None) -> tuple[bool, float]:
    present = [f"tests/{name}" for name in files if (tree / "tests" / name).exists()]
    start = time.perf_counter()
    # One thread per run: several runs (or a developer's own) share the machine without OpenMP spinning.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    chosen = ["-k", select] if select else []
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *chosen, *present],
                          cwd=tree, capture_output=True, text=True, env=env)
    # 5: no test was selected (a tree older than the tests named): nothing failed, the bug went through.
    return done.returncode in (0, 5), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", help="plant into this commit's code and tests instead of the working tree")
    parser.add_argument("--only", nargs="*", help="bug names (substring match)")
    parser.add_argument("--files", nargs="*", default=FAST_TESTS, help="test files to run (default: the fast ones)")
    parser.add_argument("--select", help="only the tests pytest -k selects in those files")
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
            passed, seconds = run_tests(tree, args.files, args.select)
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
