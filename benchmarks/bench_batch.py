"""Batch throughput: the same manifest on one worker and on N workers, in one run, on one local Ray instance.

    .venv/bin/python benchmarks/bench_batch.py [--rows 12] [--song-seconds 6] [--workers 2]

Tiny random weights on the CPU: this measures the harness (scheduling, per-row overhead, how rows spread
over workers), not the models; on GPUs each worker holds a GPU and the models dominate. Each run starts
its workers (setup included in the wall time) into a fresh output folder. Prints one table.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from remixer.batch import import_ray, run_batch
from remixer.manifest import read_manifest
from remixer.pipeline import Remixer
from remixer.testing.audio import write_song
from remixer.tiny_weights import write_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--song-seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="WARNING")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_all(root / "weights", seed=0)
            lines = ["music_input,prompt,seed"]
            for n in range(args.rows):
                song = write_song(root / f"song{n}.wav", args.song_seconds, low=180 + 7 * n)
                lines.append(f"{song},style {n},{n}")
            manifest = root / "manifest.csv"
            manifest.write_text("\n".join(lines) + "\n")
            start = time.perf_counter()  # the baseline: one process, no Ray, the rows one after another
            remixer = Remixer(root / "weights", "cpu", offline=True)
            setup = time.perf_counter() - start
            for row in read_manifest(manifest):
                remixer.remix(row.request, root / "direct" / row.id)
            rows.append(("no Ray, one process", os.cpu_count(), time.perf_counter() - start, setup))
            del remixer
            for workers in dict.fromkeys([1, args.workers]):
                summary = run_batch(manifest, root / f"out-{workers}", workers=workers,
                                    weights_dir=root / "weights", offline=True, progress=False)
                assert len(summary.ok) == args.rows, summary.failed
                setup = max(w["setup_s"] for w in summary.workers)
                rows.append((workers, summary.plan.cpus_per_worker, summary.seconds, setup))
    finally:
        ray.shutdown()
    base = rows[1][2]
    print(f"{args.rows} rows of {args.song_seconds:g} s songs, tiny weights, {os.cpu_count()} CPU cores\n")
    print("| workers | CPU per worker | wall (s) | worker setup (s) | rows per hour | vs 1 worker |")
    print("|--------:|---------------:|---------:|-----------------:|--------------:|------------:|")
    for workers, cpus, seconds, setup in rows:
        print(f"| {workers} | {cpus:g} | {seconds:.1f} | {setup:.1f} | {args.rows / seconds * 3600:.0f} | "
              f"{base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
