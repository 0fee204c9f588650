"""Takes: the decode loop for 4 takes against 1 take, same run, same model shape.

    .venv/bin/python benchmarks/bench_takes.py                      # CPU, host-bound shape, 1 thread
    .venv/bin/python benchmarks/bench_takes.py --shape medium --shape large --device cuda   # on a GPU

One window of `--steps` steps with classifier-free guidance (2 rows per take),
top-k 250, random weights in the product's layout (benchmarks/bench_generation.py
builds them). "host" is the medium model's depth (48 layers) at width 64: the
per-step host cost eager decoding pays on any device. Only the replayed steps
are compared (prefill and capture timed apart by the decode loop). The goal:
4 takes cost at most 1.6x one take.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import bench_generation
from remixer import decoding, generation

GOAL = 1.6


def decode_seconds(model, prefix: torch.Tensor, takes: int, steps: int, device: torch.device) -> dict:
    decoder = model.decoder_for()
    plan = decoding.plan_window(torch.zeros((model.facts.codebooks, 0), dtype=torch.long),
                                steps - model.facts.max_delay, decoder.delays, device, takes=takes)
    settings = decoding.Sampling(top_k=250, classifier_free_guidance=3.0)
    window = decoding.WindowDecoder(decoder, strict=device.type == "cuda" or None, timed=True)
    for seed in (0, 1):  # the first run warms up (and captures, on CUDA)
        window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(seed))
    timed = window.timings[-1]
    return {"steps_s": timed["steps"], "prefill_s": timed["prefill"], "mode": window.modes[-1],
            "ms_per_step": 1000 * timed["steps"] / timed["step_count"]}


def run(shape: str, steps: int, device: torch.device, version: str = "chord") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = bench_generation.build(shape, version, device, Path(tmp))
        window = np.zeros((235, 12), np.float32)
        window[:, [0, 4, 7]] = 1
        encoded = generation.encode_text(model, "benchmark, bpm : 120")
        prefix = generation.condition_prefix(model, encoded, window, guided=True).to(model.decoder_for().dtype)
        one = decode_seconds(model, prefix, 1, steps, device)
        four = decode_seconds(model, prefix, 4, steps, device)
    return {"shape": shape, "version": version, "steps": steps, "mode": four["mode"],
            "one_ms": one["ms_per_step"], "four_ms": four["ms_per_step"],
            "ratio": four["steps_s"] / one["steps_s"], "goal": GOAL}


def print_rows(rows: list[dict]) -> None:
    print("| shape | version | decoded as | 1 take (ms/step) | 4 takes (ms/step) | 4 takes / 1 take | goal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['version']} | {r['mode']} | {r['one_ms']:.2f} | {r['four_ms']:.2f} "
              f"| {r['ratio']:.2f}x | <= {r['goal']}x {'met' if r['ratio'] <= r['goal'] else 'MISSED'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(bench_generation.SHAPES), action="append")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the host-bound case)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [run(shape, args.steps, device) for shape in (args.shape or ["host"])]
    print(f"{args.steps} steps, classifier-free guidance 3, top-k 250, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print_rows(rows)


if __name__ == "__main__":
    main()
