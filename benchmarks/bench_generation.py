"""MusicGen-Chord generation speed and memory, random weights at the published shapes.

    .venv/bin/python benchmarks/bench_generation.py                      # tiny and medium, 2 s, CPU
    .venv/bin/python benchmarks/bench_generation.py --shape large --device cuda --seconds 30   # on a GPU

The decoder has the real shape read from a published-layout xp.cfg (medium:
1.5 B parameters, dim 1536, 48 layers; large: 3.3 B); it is built with random
weights directly in the transformers layout, so the 6 GB conversion step is
not part of the measurement. T5 and EnCodec are the tiny test ones (their cost
is a one-off encode and decode, small next to the decoder's per-token cost).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from remixer import generation
from remixer.chords import segments_to_chroma
from btc import ChordSegment

SHAPES = {
    "tiny": generation.TINY_LM,
    "medium": {"dim": 1536, "num_heads": 24, "num_layers": 48, "hidden_scale": 4},
    "large": {"dim": 2048, "num_heads": 32, "num_layers": 48, "hidden_scale": 4},
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(shape: str, seconds: float, device: str, stereo: bool) -> tuple:
    version = "stereo-chord" if stereo else "chord"
    cfg = generation.xp_cfg(version, **SHAPES[shape])
    with tempfile.TemporaryDirectory() as tmp:
        t5 = generation.write_random_t5(Path(tmp) / "t5")[0].parent
        encodec = generation.write_random_encodec(Path(tmp) / "encodec")[0].parent
        start = time.perf_counter()
        from transformers import EncodecModel, T5EncoderModel

        model = generation.assemble(cfg, T5EncoderModel.from_pretrained(str(t5)),
                                    EncodecModel.from_pretrained(str(encodec)))
        model.chord_facts = generation.facts_from_cfg(cfg, version)
        model = generation._prepare(model, torch.device(device))
        build = time.perf_counter() - start
        params = sum(p.numel() for p in model.decoder.parameters()) / 1e9
        chroma = segments_to_chroma([ChordSegment(0, seconds, "C")], seconds)
        start = time.perf_counter()
        result = generation.generate(model, "benchmark", chroma, seconds, seed=0)
        elapsed = time.perf_counter() - start
    steps = result.tokens.shape[1] + model.chord_facts.max_delay
    return shape, version, params, build, steps / elapsed, seconds / elapsed, peak_rss_gb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), action="append")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stereo", action="store_true")
    args = parser.parse_args()
    rows = [run(shape, args.seconds, args.device, args.stereo) for shape in (args.shape or ["tiny", "medium"])]
    print(f"{args.seconds:g} s of audio with classifier-free guidance 3, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print("| shape | version | decoder params (B) | build (s) | tokens/s | real-time factor | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|")
    for shape, version, params, build, rate, rtf, rss in rows:
        print(f"| {shape} | {version} | {params:.2f} | {build:.1f} | {rate:.2f} | {rtf:.3f} | {rss:.1f} |")


if __name__ == "__main__":
    main()
