"""MusicGen-Chord decoding speed: our decode loop against transformers' own generate(), in one run.

    .venv/bin/python benchmarks/bench_generation.py                    # CPU: tiny and host shapes, 1 thread
    .venv/bin/python benchmarks/bench_generation.py --shape medium --shape large --device cuda   # on a GPU

Both decode the same model (random weights in the published layout's shapes,
built directly in the transformers layout), the same condition prefix, the
same number of steps, classifier-free guidance 3, top-k 250. "host" is the
medium model's depth (48 layers) at width 64: it measures the per-step host
cost that eager decoding pays on any device (audiocraft issue #192). On CUDA the
table also gives ms per step and its ratio to the bandwidth floor (reading the
decoder's weights once per step at 3.0 TB/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remixer import decoding, generation, models
from remixer.testing import musicgen as musicgen_writers

SHAPES = {
    "tiny": musicgen_writers.TINY_LM,
    "host": {"dim": 64, "num_heads": 2, "num_layers": 48, "hidden_scale": 4},
    "medium": {"dim": 1536, "num_heads": 24, "num_layers": 48, "hidden_scale": 4},
    "large": {"dim": 2048, "num_heads": 32, "num_layers": 48, "hidden_scale": 4},
}
BANDWIDTH = 3.0e12  # bytes/s a device-to-device copy on an H100 was measured to move


def build(shape: str, version: str, device: torch.device, root: Path):
    cfg = musicgen_writers.xp_cfg(version, **SHAPES[shape])
    t5 = musicgen_writers.write_random_t5(root / "t5")[0].parent
    encodec = musicgen_writers.write_random_encodec(root / "encodec")[0].parent
    encoders = models.load_encoders(t5, encodec, "cpu")
    with torch.device(device):  # random weights made where they run: seconds on a GPU for billions
        model = models.assemble(cfg, encoders, version=version)
    return models.prepare(model, device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(model, prefix, steps: int, device) -> float:
    decoder = model.decoder_for()
    plan = decoding.plan_window(torch.zeros((model.facts.codebooks, 0), dtype=torch.long),
                                steps - model.facts.max_delay, decoder.delays, device)
    settings = decoding.Sampling(top_k=250, classifier_free_guidance=3.0)
    window = decoding.WindowDecoder(decoder)
    window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(0))  # warm-up, capture
    synchronize(device)
    start = time.perf_counter()
    window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(1))
    synchronize(device)
    return time.perf_counter() - start


def theirs(model, encoded, prefix, steps: int, device) -> float:
    kwargs = dict(input_ids=encoded.ids, encoder_hidden_states=prefix, max_new_tokens=steps, do_sample=True,
                  top_k=250, guidance_scale=3.0)
    with torch.inference_mode():
        model.generate(**{**kwargs, "max_new_tokens": 8})  # warm-up
        synchronize(device)
        start = time.perf_counter()
        model.generate(**kwargs)
        synchronize(device)
    return time.perf_counter() - start


def run(shape: str, version: str, steps: int, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = build(shape, version, device, Path(tmp))
        encoded = generation.encode_text(model, "benchmark, bpm : 120")
        window = np.zeros((235, 12), np.float32)
        window[:, [0, 4, 7]] = 1
        prefix = generation.condition_prefix(model, encoded, window, guided=True)
        ours_s = ours(model, prefix.to(model.decoder_for().dtype), steps, device)
        theirs_s = theirs(model, encoded, prefix.to(model.decoder.dtype), steps, device)
        weights = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    row = {"shape": shape, "version": version, "steps": steps, "ours_tps": steps / ours_s,
           "theirs_tps": steps / theirs_s, "ratio": theirs_s / ours_s, "ours_ms": 1000 * ours_s / steps,
           "floor_ms": 1000 * weights / BANDWIDTH}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), action="append")
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the host-bound case)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    version = "stereo-chord" if args.stereo else "chord"
    rows = [run(shape, version, args.steps, device) for shape in (args.shape or ["tiny", "host"])]
    print(f"{args.steps} steps, classifier-free guidance 3, top-k 250, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print("| shape | version | ours (tokens/s) | transformers generate (tokens/s) | ratio | ours (ms/step) "
          "| bandwidth floor (ms/step) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['version']} | {r['ours_tps']:.1f} | {r['theirs_tps']:.1f} | {r['ratio']:.2f}x "
              f"| {r['ours_ms']:.2f} | {r['floor_ms']:.2f} |")
    large = SHAPES["large"]
    positions = 235 + 20 + 1 + 30 * generation.FRAME_RATE + 3  # condition, text, BOS, 30 s, delay
    cache = decoding.kv_cache_bytes(large["num_layers"], large["dim"], rows=2, positions=positions)
    print(f"KV cache of a 30 s window, large stereo model, CFG (2 rows), float16: {cache / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
