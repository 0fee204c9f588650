"""MusiConGen's decode step against MusicGen-Chord's at the same shape (goal: at most 1.05x).

    .venv/bin/python benchmarks/bench_musicongen.py                 # the host-bound shape, CPU, 1 thread
    .venv/bin/python benchmarks/bench_musicongen.py --shape medium --device cuda

MusiConGen's step adds the fed position's chord + beat embedding, read from a
device buffer at the step's position, to the input and again before each
in-attention layer (8 of 48 layers at full depth: 4, 8, ..., 32). Both models are random, in
the published layouts, converted by the product; both decode the same window
(guidance 3, top-k 250) with the same eager loop; the steps are timed apart from
the prefill, best of --repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remixer import conditions, conversion, decoding, generation, models
from remixer.testing import musicgen as writers

SHAPES = {
    "host": {"dim": 64, "num_heads": 2, "num_layers": 48, "hidden_scale": 4},  # bench_generation's host shape
    "medium": {"dim": 1536, "num_heads": 24, "num_layers": 48, "hidden_scale": 4},
}


def build(cfg: dict, version: str, encoders, device: torch.device):
    state = conversion.convert_state_dict(writers.random_lm_state(cfg), cfg["transformer_lm"]["dim"])
    return models.prepare(models.assemble(cfg, encoders, state, version), device)


def step_seconds(model, steps: int, repeats: int, device: torch.device) -> float:
    """Seconds per decode step (the prefill excluded), best of `repeats`."""
    guided, settings = True, decoding.Sampling(top_k=250, classifier_free_guidance=3.0)
    text = generation.encode_text(model, "funk")
    frames = conditions.window(conditions.song_frames([], list(np.arange(0.25, 30, 0.5)), [], 30.0), 0.0)
    chroma = np.zeros((235, 12), np.float32)
    prefix = generation.condition_prefix(model, text, frames.prefix.astype(np.float32) if
                                         model.facts.plays_on_beats else chroma, guided)
    extra = generation.step_sums(model, frames, guided) if model.facts.plays_on_beats else None
    decoder = model.decoder_for()
    best = float("inf")
    for _ in range(repeats):
        window = decoding.WindowDecoder(decoder, use_cuda_graph=device.type == "cuda", timed=True)
        plan = decoding.plan_window(torch.zeros((4, 0), dtype=torch.long), steps, decoder.delays, device)
        window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(1), steps=extra)
        timing = window.timings[-1]
        best = min(best, timing["steps"] / timing["step_count"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="host")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        t5 = writers.write_random_t5(root / "t5")[0].parent
        encodec = writers.write_random_encodec(root / "encodec")[0].parent
        encoders = models.load_encoders(t5, encodec, device)
        shape = SHAPES[args.shape]
        chord = build(writers.xp_cfg("chord", **shape), "chord", encoders, device)
        started = time.perf_counter()
        seconds = {"chord": step_seconds(chord, args.steps, args.repeats, device)}
        beats = build(writers.musicongen_cfg(**shape), "musicongen", encoders, device)
        seconds["musicongen"] = step_seconds(beats, args.steps, args.repeats, device)
    print(f"\n{args.shape} shape {shape}, {args.steps} steps, best of {args.repeats}, {args.device}, "
          f"{args.threads} thread(s), {time.perf_counter() - started:.0f} s")
    print("| model | in-attention layers | ms per step | vs chord |")
    print("|---|---|---|---|")
    for name, model in (("chord", chord), ("musicongen", beats)):
        print(f"| {name} | {len(model.facts.in_attention)} | {seconds[name] * 1e3:.2f} | "
              f"{seconds[name] / seconds['chord']:.3f}x |")


if __name__ == "__main__":
    main()
