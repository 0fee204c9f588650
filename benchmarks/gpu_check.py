"""GPU readiness: one command that proves every stage on CUDA and measures a request, on an offline GPU machine.

On a development machine (network):   tools/gpu_wheels.sh            # -> .whl/, the packages the GPU lacks
On the GPU machine (offline: no registry, no hub; the wheels travel with the checkout):
    python3 benchmarks/gpu_check.py --wheels .whl --out "$OUT"
CPU dry run (a test in the suite runs it, so the script cannot rot between GPU runs):
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu-check

Steps: install the carried wheels offline (when given); run the CUDA tests
(tests marked cuda) and report each; time our decode loop against transformers'
generate() for the medium and large shapes, mono and stereo; 4 takes against
1 (mid-window steps over a whole window's cache, and a whole 30 s window end
to end, benchmarks/bench_takes.py); time a whole
request on a song (3 minutes by default) at full model sizes with random weights,
generation timed for --generate-seconds and extrapolated to the song (said so in
the table); peak GPU memory. Prints one table last; writes gpu_check.json
(everything) under --out. Sized to finish in about 7 minutes on an H100.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's own package, not an installed copy


def install_wheels(folder: Path, site: Path = Path("/tmp/site")) -> str:
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return f"{len(wheels)} wheels from {folder}"


def run_cuda_tests(out: Path, timeout: int) -> list[dict]:
    """The CUDA tests with a failed capture made an error (REMIXER_CUDA_GRAPHS=strict); pytest's whole
    output is kept in cuda_tests.log beside the report."""
    report = out / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider", "-m", "cuda",
               "tests/test_cuda.py", "tests/test_decoding.py", f"--junitxml={report}"]
    env = {**os.environ, "REMIXER_CUDA_GRAPHS": "strict"}
    try:
        done = subprocess.run(command, cwd=ROOT, timeout=timeout, capture_output=True, text=True, env=env)
        (out / "cuda_tests.log").write_text(done.stdout + done.stderr)
    except subprocess.TimeoutExpired as expired:
        output = f"{expired.stdout or ''}{expired.stderr or ''}"
        (out / "cuda_tests.log").write_text(f"{output}\ntimed out after {timeout} s")
        return [{"test": "cuda tests", "result": f"timed out after {timeout} s"}]
    if not report.exists():
        return [{"test": "cuda tests", "result": "no report (pytest did not run)"}]
    rows = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in {"failure", "error"}:
                outcome = f"FAILED: {(child.get('message') or '').splitlines()[0][:160]}"
            elif child.tag == "skipped":
                outcome = f"skipped ({child.get('message', '')[:60]})"
        rows.append({"test": case.get("name"), "result": outcome})
    return rows


def decode_speed(device, shapes: list[str], steps: int, budget: "Budget") -> list[dict]:
    import bench_generation

    bandwidth = bench_generation.copy_bandwidth(device) or None
    rows = []
    for shape in shapes:
        for version in ("chord", "stereo-chord"):
            if budget.left() < 30:
                rows.append({"shape": shape, "version": version, "skipped": "time budget spent"})
                continue
            rows.append(bench_generation.run(shape, version, steps, device, bandwidth))
    return rows


def takes_speed(device, shapes: list[str], steps: int, budget: "Budget") -> list[dict]:
    """4 takes against 1 per shape (benchmarks/bench_takes.py): mid-window steps of a whole window's cache,
    read three ways, and the whole 30 s window end to end."""
    import bench_takes

    rows = []
    for shape in shapes:
        if budget.left() < 30:
            rows.append({"shape": shape, "skipped": "time budget spent"})
            continue
        rows.append(bench_takes.run(shape, device, steps, window=True))
    return rows


class Budget:
    """The check's time box: each stage starts only with time left, so a short loan still returns figures."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def timed_request(device, quick: bool, song_seconds: float, generate_seconds: float, takes: int = 1) -> dict:
    import numpy as np
    import soundfile as sf
    import torch

    from remixer import generation
    from remixer.pipeline import Remixer
    from remixer.request import RemixRequest
    from remixer.tiny_weights import write_all

    carried = Path(__file__).resolve().parents[1] / ".whl" / "madmom_models"
    if carried.is_dir():  # madmom's networks carried loose (tools/gpu_wheels.sh): its wheel is cp311 only
        os.environ.setdefault("REMIXER_MADMOM_MODELS", str(carried))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "weights"
        start = time.perf_counter()
        if quick:
            write_all(root)
        else:
            from bench_pipeline import write_full_weights

            write_full_weights(root)
        written = time.perf_counter() - start
        song = Path(tmp) / "song.wav"
        t = np.arange(int(song_seconds * 44100)) / 44100
        music = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sign(np.sin(2 * np.pi * 2 * t)) * 0.3
        sf.write(song, np.stack([music, 0.8 * music]).T.astype(np.float32), 44100)

        start = time.perf_counter()
        remixer = Remixer(root, str(device), offline=True)
        remixer.load_version("chord")
        setup = time.perf_counter() - start
        measured = {}
        real_generate = generation.generate_takes

        def partial_generate(model, prompt, chroma, duration, *args, **kwargs):
            # Generation is the only stage timed on part of the song: it runs for `generate_seconds`
            # and its time is extrapolated per token step; its audio is tiled to the song's length.
            part = min(duration, generate_seconds)
            begin = time.perf_counter()
            made = real_generate(model, prompt, chroma, part, *args, **kwargs)
            measured["seconds"] = time.perf_counter() - begin
            steps = sum(n + model.facts.max_delay for n in generation.window_new_frames(part))
            full_steps = sum(n + model.facts.max_delay for n in generation.window_new_frames(duration))
            measured.update(steps=steps, full_steps=full_steps, decode_modes=list(made[0].decode_modes))
            repeats = int(np.ceil(duration / part))
            samples = int(round(duration * generation.SAMPLE_RATE))
            return [generation.Generated(result.tokens, np.tile(result.audio, (1, repeats))[:, :samples],
                                         result.sample_rate, result.seed, result.decode_modes) for result in made]

        generation.generate_takes = partial_generate
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            request = RemixRequest.from_inputs(prompt="bossa nova", music_input=song, model_version="chord", seed=1,
                                               takes=takes)
            result = remixer.remix(request, Path(tmp) / "out")
        finally:
            generation.generate_takes = real_generate
        timings = dict(result.timings)
        per_step = measured["seconds"] / measured["steps"]
        timings["generate"] = timings["generate"] - measured["seconds"] + per_step * measured["full_steps"]
        return {
            "song_seconds": song_seconds, "weights": "tiny" if quick else "full size (MusicGen-Chord medium)",
            "weights_written_s": written, "setup_s": setup,
            "setup_table": remixer.setup_timings, "timings_s": timings,
            "generation": {"timed_seconds_of_audio": min(song_seconds, generate_seconds),
                           "ms_per_step": 1000 * per_step, "steps_for_the_song": measured["full_steps"],
                           "decode_modes": measured["decode_modes"],
                           "extrapolated": song_seconds > generate_seconds},
            "total_s": sum(timings.values()),
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
            "gpu_free_gb_after": torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else None,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny weights and shapes, a few seconds of audio")
    parser.add_argument("--wheels", type=Path, help="install these wheels offline first")
    # Without --out or $OUT: a fresh temporary folder (named before the table), never the checkout.
    parser.add_argument("--out", type=Path, default=None, help="results folder (default $OUT, else a temp folder)")
    parser.add_argument("--song-seconds", type=float, default=None)
    parser.add_argument("--generate-seconds", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None, help="decode steps per speed measurement")
    parser.add_argument("--test-timeout", type=int, default=240)
    parser.add_argument("--budget-s", type=float, default=420, help="time box for all stages (default 7 min)")
    args = parser.parse_args()
    args.out = args.out or Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-"))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "wheels": install_wheels(args.wheels) if args.wheels else None}

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results["environment"] = {
        "python": sys.version.split()[0], "torch": torch.__version__, "device": str(device),
        "card": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30 if device.type == "cuda" else None,
    }
    quick = args.quick
    song_seconds = args.song_seconds or (4.0 if quick else 180.0)
    generate_seconds = args.generate_seconds or (2.0 if quick else 30.0)
    steps = args.steps or (20 if quick else 250)
    shapes = ["tiny"] if quick else ["medium", "large"]

    budget = Budget(args.budget_s)
    stage = time.perf_counter()
    results["cuda_tests"] = run_cuda_tests(args.out, int(min(args.test_timeout, max(budget.left() * 0.4, 30))))
    results["cuda_tests_s"] = time.perf_counter() - stage
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    results["decode_speed"] = decode_speed(device, shapes, steps, budget)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    if budget.left() > 20:
        results["request"] = timed_request(device, quick, song_seconds, generate_seconds)
    else:
        results["request"] = {"skipped": "time budget spent"}
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    results["takes_decode"] = takes_speed(device, shapes, 10 if quick else 40, budget)
    if budget.left() > 20 and "skipped" not in results["request"]:
        results["request_4_takes"] = timed_request(device, quick, song_seconds, generate_seconds, takes=4)
    else:
        results["request_4_takes"] = {"skipped": "time budget spent"}
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"results: {args.out / 'gpu_check.json'}")
    eager = []
    if device.type == "cuda":  # a measured request that fell back to eager decoding measured the wrong thing
        for name in ("request", "request_4_takes"):
            modes = results[name].get("generation", {}).get("decode_modes", [])
            if any(mode != "cuda-graph" for mode in modes):
                print(f"FAILED: the {name.replace('_', ' ')} decoded without the CUDA graph: {modes}")
                eager.append(name)
    print_table(results)
    failed = [row for row in results["cuda_tests"] if row["result"].startswith(("FAILED", "timed out", "no report"))]
    return 1 if failed or eager else 0


def print_table(results: dict) -> None:
    import bench_generation

    env = results["environment"]
    print(f"GPU check {results['date']}: {env['card']} ({env['device']}), torch {env['torch']}, "
          f"python {env['python']}")
    print("| CUDA test | result |")
    print("|---|---|")
    for row in results["cuda_tests"]:
        print(f"| {row['test']} | {row['result']} |")
    speed = [r for r in results["decode_speed"] if "skipped" not in r]
    bench_generation.print_rows(speed)
    for r in results["decode_speed"]:
        if "skipped" in r:
            print(f"| {r['shape']} | {r['version']} | skipped: {r['skipped']} |")
    import bench_takes

    bench_takes.print_rows([r for r in results["takes_decode"] if "skipped" not in r], lines=False)
    for r in results["takes_decode"]:
        if "skipped" in r:
            print(f"| {r['shape']} | takes | skipped: {r['skipped']} |")
    request = results["request"]
    if "skipped" in request:
        print(f"| whole request | skipped: {request['skipped']} |")
        print("setup: not measured (time budget spent)")
        return
    four = results["request_4_takes"]
    if "skipped" not in four:
        print(f"| request stage, 1 take vs 4 takes ({request['song_seconds']:g} s song) | 1 take (s) | 4 takes (s) |")
        print("|---|---|---|")
        for name in dict.fromkeys([*request["timings_s"], *four["timings_s"]]):
            print(f"| {name} | {request['timings_s'].get(name, 0):.1f} | {four['timings_s'].get(name, 0):.1f} |")
    note = " (extrapolated from {timed_seconds_of_audio:g} s)".format(**request["generation"]) \
        if request["generation"]["extrapolated"] else ""
    print(f"| request stage ({request['song_seconds']:g} s song, {request['weights']}) | seconds |")
    print("|---|---|")
    for name, seconds in request["timings_s"].items():
        print(f"| {name}{note if name == 'generate' else ''} | {seconds:.1f} |")
    print(f"| total | {request['total_s']:.1f} |")
    peak = request["peak_gpu_memory_gb"]
    memory = (f"; GPU memory peak {peak:.1f} GB allocated, {request['peak_gpu_reserved_gb']:.1f} GB reserved, "
              f"{request['gpu_free_gb_after']:.1f} GB free after" if peak is not None else "")
    print(f"setup {request['setup_s']:.1f} s; generation {request['generation']['ms_per_step']:.2f} ms per step"
          f"{memory}")


if __name__ == "__main__":
    sys.exit(main())
