"""The whole remix at full model sizes (random weights) on this machine: seconds per stage for a 30 s song.

    .venv/bin/python benchmarks/bench_pipeline.py [--song-seconds 30] [--generate-seconds 2] [--device cpu]

Full size: htdemucs (26.9 M), All-In-One 8 folds, BTC (170 classes), the
MusicGen-Chord medium decoder (1.4 B; a 5.6 GB random checkpoint in the
published format, converted by the product like a real one). T5 and EnCodec
are the small test ones (one encode/decode each; EnCodec's full-size cost is
in bench_mbd.py). Generation at the medium shape on a CPU takes about a second
per token, so it runs for --generate-seconds and is extrapolated to the song
length from the measured first step (the condition prefix) and per-token time:
the table says which rows are extrapolated. Beat-sync runs on synthetic
downbeats (random weights find none), with the real separation and analysis
of the instrumental timed as well.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remixer import beatsync, chords, generation, mix, separation, weights
from remixer.audio import normalize, write_audio
from remixer.pipeline import Remixer
from remixer.tiny_weights import write_all


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_full_weights(root: Path) -> None:
    write_all(root, components=["btc", "allin1", "musicgen"])  # BTC and All-In-One are written at full size
    separation.write_random_checkpoint(root, full_size=True)
    cfg = generation.xp_cfg("chord", dim=1536, num_heads=24, num_layers=48)
    (file,) = weights.files_of(["musicgen-chord"])
    torch.save({"xp.cfg": cfg, "model": generation.random_lm_state(cfg)}, root / file.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--song-seconds", type=float, default=30.0)
    parser.add_argument("--generate-seconds", type=float, default=2.0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    rows: list[tuple[str, float, str]] = []

    def timed(name: str, note: str = ""):
        class Timer:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                rows.append((name, time.perf_counter() - self.start, note))
        return Timer()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with timed("write random full-size weights", "benchmark set-up"):
            write_full_weights(root)
        with timed("load models (setup)"):
            remixer = Remixer(root, args.device, offline=True)
        with timed("convert + load MusicGen-Chord medium", "once per checkpoint"):
            model = remixer.load_version("chord")
        rate = 44100
        rng = np.random.default_rng(0)
        song = (0.1 * rng.standard_normal((2, int(args.song_seconds * rate)))).astype(np.float32)
        with timed("separate"):
            stems = remixer.separator.separate(song, rate)
        with timed("rhythm"):
            song_rhythm = remixer.analyzer.analyze(stems)
        with timed("chords"):
            segments = remixer.recognizers[True].recognize(stems.drumless, separation.SAMPLE_RATE)
        with timed("chroma"):
            chroma = chords.segments_to_chroma(segments, args.song_seconds)
        steps: list[float] = []
        start = time.perf_counter()
        generated = generation.generate(model, "benchmark", chroma, args.generate_seconds, seed=0,
                                        progress=lambda done, total: steps.append(time.perf_counter()))
        first = steps[0] - start
        per_token = float(np.median(np.diff(steps)))
        total_tokens = sum(n + model.chord_facts.max_delay for n in generation.window_new_frames(args.song_seconds))
        windows = len(generation.window_starts(args.song_seconds))
        rows.append(("generate", windows * first + (total_tokens - windows) * per_token,
                     f"extrapolated: first step {first:.1f} s x {windows} windows + {total_tokens} tokens x "
                     f"{per_token:.2f} s"))
        instrumental = np.tile(generated.audio, (1, math.ceil(args.song_seconds / args.generate_seconds)))
        instrumental = instrumental[:, : int(args.song_seconds * generation.SAMPLE_RATE)]
        with timed("analyse instrumental (separate + rhythm)", "for beat-sync"):
            remixer.analyzer.analyze(remixer.separator.separate(instrumental, generation.SAMPLE_RATE))
        bars = np.arange(0.5, args.song_seconds - 1, 2.0)
        with timed("beat-sync (WSOLA)"):
            synced = beatsync.sync_to_downbeats(instrumental, generation.SAMPLE_RATE, bars, bars * 1.02 + 0.1,
                                                bpm=song_rhythm.bpm or 120)
        with timed("mix + normalize"):
            vocals = mix.prepare_vocals(stems.vocals, separation.SAMPLE_RATE, generation.SAMPLE_RATE,
                                        synced.shape[0], synced.shape[1])
            out = mix.mix(synced, vocals, generation.SAMPLE_RATE)
        with timed("encode (wav)"):
            write_audio(normalize(out, generation.SAMPLE_RATE), generation.SAMPLE_RATE, root / "remix.wav")

    request_rows = [r for r in rows if r[2] not in {"benchmark set-up", "once per checkpoint"}
                    and not r[0].startswith("load")]
    total = sum(seconds for _, seconds, _ in request_rows)
    print(f"{args.song_seconds:g} s song, device {remixer.separator.device}, torch threads {torch.get_num_threads()}")
    print("| stage | seconds | note |")
    print("|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.1f} | {note} |")
    print(f"| **request total** | **{total:.1f}** | real-time factor {total / args.song_seconds:.1f} "
          f"(seconds per second of song) |")
    print(f"peak resident memory: {peak_gb():.1f} GB")


if __name__ == "__main__":
    main()
