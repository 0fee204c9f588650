"""MusicGen-Chord decoding speed: our decode loop against transformers' own generate(), in one run; on the CPU,
each decoder precision against float32 in the same run.

    .venv/bin/python benchmarks/bench_generation.py                    # CPU: tiny and host shapes, 1 thread
    .venv/bin/python benchmarks/bench_generation.py --shape medium --shape large --device cuda   # on a GPU
    .venv/bin/python benchmarks/bench_generation.py --shape medium --precision float32 --precision bfloat16 \
        --precision int8 --threads 1 --steps 50       # the CPU decoder's precisions side by side

Both decode the same model (random weights in the published layout's shapes,
built directly in the transformers layout), the same condition prefix, the
same number of steps, classifier-free guidance 3, top-k 250. "host" is the
medium model's depth (48 layers) at width 64: it measures the per-step host
cost that eager decoding pays on any device (audiocraft issue #192). Our
steps are timed apart from the prefill and the CUDA-graph capture (shown in
their own columns); on CUDA the graph must be used (strict capture). The
floor is the decoder's weights read once per step at the device's copy
bandwidth, measured in the same run (on the CPU: the rate one sum over 1 GiB reads at, with the run's threads).
With --precision, every precision decodes the same model (its weights converted from the float32 ones) and
prints its ms per step, its ratio to float32's in the same run, and its floor (the decoder's weights in that
precision at the measured read rate); transformers' generate() runs for float32 only.
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
    # medium's proportions at 4 layers: weights against cache per step as on a GPU (benchmarks/bench_takes.py)
    "proxy": {"dim": 1536, "num_heads": 24, "num_layers": 4, "hidden_scale": 4},
    "large": {"dim": 2048, "num_heads": 32, "num_layers": 48, "hidden_scale": 4},
}
BANDWIDTH = 3.0e12  # bytes/s of an H100's memory, for the CPU table's floor column; GPUs measure their own


def build(shape: str, version: str, device: torch.device, root: Path):
    cfg = musicgen_writers.xp_cfg(version, **SHAPES[shape])
    t5 = musicgen_writers.write_random_t5(root / "t5")[0].parent
    encodec = musicgen_writers.write_random_encodec(root / "encodec")[0].parent
    encoders = models.load_encoders(t5, encodec, "cpu")
    with torch.device(device):  # random weights made where they run: seconds on a GPU for billions
        model = models.assemble(cfg, encoders, version=version)
    # float32 as loaded: transformers' generate() reads its weights, and each precision converts from them.
    return models.prepare(model, device, "float32" if device.type == "cpu" else None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(model, prefix, steps: int, device, decoder=None, repeat: int = 1) -> dict[str, float]:
    """Our window decode, its phases timed apart (prefill, capture, the replayed steps) after a warm-up run,
    the best of `repeat` runs (--repeat: this machine's noise is +-10% from run to run); on CUDA the graph
    must have been used (strict: a failed capture is an error, not a slower table)."""
    decoder = decoder or model.decoder_for()
    plan = decoding.plan_window(torch.zeros((model.facts.codebooks, 0), dtype=torch.long),
                                steps - model.facts.max_delay, decoder.delays, device)
    settings = decoding.Sampling(top_k=250, classifier_free_guidance=3.0)
    window = decoding.WindowDecoder(decoder, strict=device.type == "cuda" or None, timed=True)
    window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(0))  # warm-up
    for seed in range(1, repeat + 1):
        window.decode(prefix, plan, settings, torch.Generator(device=device).manual_seed(seed))
    expected = decoding.GRAPH if device.type == "cuda" else decoding.EAGER
    if window.modes != [expected] * (repeat + 1):
        raise RuntimeError(f"the decode benchmark expected {expected} windows, got {window.modes}")
    timed = min(window.timings[1:], key=lambda t: t["steps"])
    return {"total_s": timed["prefill"] + timed["capture"] + timed["steps"], "steps_s": timed["steps"],
            "prefill_s": timed["prefill"], "capture_s": timed["capture"], "step_count": timed["step_count"],
            "mode": window.modes[-1]}


def copy_bandwidth(device: torch.device, megabytes: int = 1024) -> float:
    """Bytes per second a device-to-device copy moves (read + write), measured here; 0 on the CPU."""
    if device.type != "cuda":
        return 0.0
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        target.copy_(source)
    torch.cuda.synchronize(device)
    return 2 * 10 * source.numel() / (time.perf_counter() - start)


def cpu_read_rate(megabytes: int = 1024) -> float:
    """Bytes per second one sum over `megabytes` of float32 reads on the CPU (best of 3, the run's threads)."""
    data = torch.ones(megabytes * 2**20 // 4)
    data.sum()
    best = min(_timed(data.sum) for _ in range(3))
    return data.numel() * 4 / best


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def decoder_bytes(decoder) -> int:
    """The bytes a step reads of the decoder's weights: its layers' products (in their precision), embeddings
    and output heads."""
    layers = sum(layer.bytes if hasattr(layer, "bytes") else
                 sum(t.numel() * t.element_size() for t in (layer.qkv, layer.out, layer.fc1, layer.fc2))
                 for layer in decoder.layers)
    return layers + decoder.heads_out.numel() * decoder.heads_out.element_size()


def run_precisions(shape: str, version: str, steps: int, precisions: list[str], repeat: int = 1) -> list[dict]:
    """One CPU model, each precision's decoder over the same weights, prefix and steps; ratios to float32's."""
    rate = cpu_read_rate()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build(shape, version, torch.device("cpu"), Path(tmp))
        encoded = generation.encode_text(model, "benchmark, bpm : 120")
        window = np.zeros((235, 12), np.float32)
        window[:, [0, 4, 7]] = 1
        prefix = generation.condition_prefix(model, encoded, window, guided=True)
        for precision in precisions:
            decoder = decoding.Decoder(model, precision=precision)
            mine = ours(model, prefix, steps, torch.device("cpu"), decoder, repeat)
            per_step = mine["steps_s"] / mine["step_count"]
            rows.append({"shape": shape, "precision": precision, "ms": 1000 * per_step,
                         "prefill_ms": 1000 * mine["prefill_s"], "weights_gb": decoder_bytes(decoder) / 1e9,
                         "floor_ms": 1000 * decoder_bytes(decoder) / rate, "rate_gbs": rate / 1e9})
            del decoder
    base = next((r["ms"] for r in rows if r["precision"] == "float32"), None)
    for row in rows:
        row["ratio"] = base / row["ms"] if base else float("nan")
    return rows


def print_precision_rows(rows: list[dict]) -> None:
    print_table(["shape", "precision", "ours (ms/step)", "speed-up over float32 (same run)", "prefill (ms)",
                 "decoder weights read per step (GB)", "floor (ms/step)"],
                [[r["shape"], r["precision"], f"{r['ms']:.1f}", f"{r['ratio']:.2f}x", f"{r['prefill_ms']:.0f}",
                  f"{r['weights_gb']:.2f}", f"{r['floor_ms']:.1f} (at {r['rate_gbs']:.1f} GB/s)"] for r in rows])


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


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


def run(shape: str, version: str, steps: int, device: torch.device, bandwidth: float | None = None,
        repeat: int = 1) -> dict:
    """One shape: our decode (steps timed apart from prefill and capture) against transformers' generate();
    the floor is the decoder's weights read once per step at `bandwidth` (measured copy bandwidth on a GPU)."""
    bandwidth = bandwidth or copy_bandwidth(device) or BANDWIDTH
    with tempfile.TemporaryDirectory() as tmp:
        model = build(shape, version, device, Path(tmp))
        encoded = generation.encode_text(model, "benchmark, bpm : 120")
        window = np.zeros((235, 12), np.float32)
        window[:, [0, 4, 7]] = 1
        prefix = generation.condition_prefix(model, encoded, window, guided=True)
        mine = ours(model, prefix.to(model.decoder_for().dtype), steps, device, repeat=repeat)
        theirs_s = theirs(model, encoded, prefix.to(model.decoder.dtype), steps, device)
        weights = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    per_step = mine["steps_s"] / mine["step_count"]
    return {"shape": shape, "version": version, "steps": steps, "mode": mine["mode"],
            "ours_tps": 1 / per_step, "theirs_tps": steps / theirs_s, "ratio": theirs_s / steps / per_step,
            "ours_ms": 1000 * per_step, "prefill_ms": 1000 * mine["prefill_s"], "capture_ms": 1000 * mine["capture_s"],
            "floor_ms": 1000 * weights / bandwidth, "bandwidth_gbs": bandwidth / 1e9}


def print_rows(rows: list[dict]) -> None:
    print_table(["shape", "version", "decoded as", "ours (tokens/s, replayed steps)",
                 "transformers generate (tokens/s)", "ratio", "ours (ms/step)", "prefill (ms)", "capture (ms)",
                 "bandwidth floor (ms/step)"],
                [[r["shape"], r["version"], r["mode"], f"{r['ours_tps']:.1f}", f"{r['theirs_tps']:.1f}",
                  f"{r['ratio']:.2f}x", f"{r['ours_ms']:.2f}", f"{r['prefill_ms']:.1f}", f"{r['capture_ms']:.1f}",
                  f"{r['floor_ms']:.2f} (at {r['bandwidth_gbs']:.0f} GB/s)"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), action="append")
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the host-bound case)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=1, help="timed windows of ours; the fastest is shown")
    parser.add_argument("--precision", choices=decoding.precision.PRECISIONS, action="append",
                        help="CPU decoder precisions to compare (repeat); float32 first gives the ratios")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    version = "stereo-chord" if args.stereo else "chord"
    if args.precision:
        rows = [row for shape in (args.shape or ["tiny", "host"])
                for row in run_precisions(shape, version, args.steps, args.precision, args.repeat)]
        print(f"{args.steps} steps, classifier-free guidance 3, top-k 250, CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}")
        print_precision_rows(rows)
        return
    rows = [run(shape, version, args.steps, device, repeat=args.repeat) for shape in (args.shape or ["tiny", "host"])]
    print(f"{args.steps} steps, classifier-free guidance 3, top-k 250, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print_rows(rows)
    large = SHAPES["large"]
    positions = 235 + 20 + 1 + 30 * generation.FRAME_RATE + 3  # condition, text, BOS, 30 s, delay
    cache = decoding.kv_cache_bytes(large["num_layers"], large["dim"], rows=2, positions=positions)
    print(f"KV cache of a 30 s window, large stereo model, CFG (2 rows), float16: {cache / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
