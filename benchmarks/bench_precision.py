"""The CPU decoder's precisions against float32: how far their logits move, how often greedy's choice does.

    .venv/bin/python benchmarks/bench_precision.py [--steps 1500] [--threads 1]

Two sets of weights (real MusicGen weights cannot be had here):
- a medium-proportioned random model (medium's width 1536 and 24 heads, 4 layers: the products' shapes and
  the quantization's per-channel statistics of medium), teacher-forced over a whole 30 s window (1500 steps)
  under classifier-free guidance 3 on float32's greedy tokens (remixer.testing.precision);
- the parity fixtures (tests/fixtures/musicgen: tiny random models with audiocraft's own logits for a token
  sequence): each precision's teacher-forced logits against audiocraft's float32 ones.
Figures: the mean and worst relative error of the guided logits per step, and the share of (step, codebook)
argmaxes that agree with float32's (with audiocraft's, for the fixtures).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remixer import decoding, generation, models
from remixer.testing import musicgen as musicgen_writers
from remixer.testing import precision as quality

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "musicgen"
MEDIUM_PROPORTIONED = {"dim": 1536, "num_heads": 24, "num_layers": 4, "hidden_scale": 4}
LOW = ["bfloat16", "int8"]


def random_model(root: Path):
    encoders = models.load_encoders(musicgen_writers.write_random_t5(root / "t5")[0].parent,
                                    musicgen_writers.write_random_encodec(root / "encodec")[0].parent, "cpu")
    torch.manual_seed(0)
    model = models.assemble(musicgen_writers.xp_cfg("chord", **MEDIUM_PROPORTIONED), encoders, version="chord")
    return models.prepare(model, torch.device("cpu"), "float32")


def window_rows(steps: int) -> list[tuple[str, str, quality.Agreement]]:
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model(Path(tmp))
        chroma = np.zeros((235, 12), np.float32)
        chroma[:, [0, 4, 7]] = 1
        prefix = generation.condition_prefix(model, generation.encode_text(model, "jazz, bpm : 120"), chroma,
                                             guided=True)
        found = quality.against_float32(model, prefix, steps, LOW)
    return [("medium-proportioned random, guided, " f"{steps} steps", precision, agreement)
            for precision, agreement in found.items()]


def fixture_rows() -> list[tuple[str, str, quality.Agreement]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        musicgen_writers.write_random_t5(root / "t5")
        musicgen_writers.write_random_encodec(root / "encodec")
        for name in ("musicgen-tiny-chord", "musicgen-tiny-stereo-chord"):
            th = root / f"{name}.th"
            shutil.copy(FIXTURES / f"{name}.th", th)
            reference = torch.load(FIXTURES / f"{name}.reference.pt", weights_only=True)
            embedding = reference["text_embedding"]
            ones = torch.ones(embedding.shape[:2], dtype=torch.long)
            for precision in ["float32", *LOW]:
                model = musicgen_writers.load_tiny(th, "cpu", root, "float32")
                prefix = generation.condition_prefix(model, generation.EncodedText(ones, embedding, ones),
                                                     reference["chroma"][0].numpy(), guided=False)
                tokens = reference["tokens"][0]  # (K, S), BOS first
                decoder = decoding.Decoder(model, precision=precision)
                got, _ = quality.forced_logits(decoder, prefix, tokens.shape[1], columns=tokens[:, 1:])
                expected = reference["logits"][0].permute(1, 0, 2)  # (S, K, card)
                rows.append((f"{name} (audiocraft's logits)", precision, quality.compare(expected, got)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="the window's positions (1500: 30 s)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = fixture_rows() + window_rows(args.steps)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {time.perf_counter() - start:.0f} s")
    print("| weights | precision | logits' relative error, mean (worst step) | greedy choices agreeing |")
    print("|---|---|---|---|")
    for weights, precision, found in rows:
        print(f"| {weights} | {precision} | {found.relative_error:.2e} ({found.worst_error:.2e}) "
              f"| {100 * found.greedy_agreement:.2f}% |")


if __name__ == "__main__":
    main()
