"""The GPU check's CPU dry run: the one command for the offline GPU machine cannot rot between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    # Neither --out nor $OUT: the results go to a temporary folder (here under tmp_path), not the checkout.
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"TMPDIR": str(tmp_path)}
    before = set(ROOT.iterdir())
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(ROOT.iterdir()) == before
    (out,) = tmp_path.glob("gpu-check-*")
    assert f"results: {out / 'gpu_check.json'}" in done.stdout
    results = json.loads((out / "gpu_check.json").read_text())
    assert "test_cuda_graph_replay_equals_the_eager_static_step_in_float16" in (out / "cuda_tests.log").read_text()
    # Every CUDA test was collected and reported (skipped on this CPU), none failed to run.
    names = {row["test"] for row in results["cuda_tests"]}
    assert {"test_separation_on_cuda_matches_the_cpu", "test_whole_remix_on_cuda_and_out_of_memory_then_recovery",
            "test_cuda_sampling_is_reproducible_for_a_seed"} <= names
    assert all(row["result"].startswith("skipped") for row in results["cuda_tests"])
    assert [(r["shape"], r["version"]) for r in results["decode_speed"]] == [("tiny", "chord"),
                                                                           ("tiny", "stereo-chord")]
    assert all(r["ours_tps"] > 0 and r["theirs_tps"] > 0 for r in results["decode_speed"])
    # Our steps timed apart from prefill and capture; the CPU decodes eagerly (a GPU must show cuda-graph).
    assert all(r["mode"] == "eager" and r["prefill_ms"] > 0 for r in results["decode_speed"])
    # 4 takes against 1: the decode on the same shape, and the whole request per stage.
    (takes,) = results["takes_decode"]
    assert takes["shape"] == "tiny" and [r["read"] for r in takes["rows"]] == ["full", "bucket",
                                                                             "bucket + shared prefix"]
    for row in takes["rows"]:
        assert row["1"]["ms"] > 0 and row["4"]["ms"] > 0 and row["ratio"] > 0
        assert row["1"]["gemm_ms"] > 0 and row["4"]["attention_ms"] > 0
    # The bytes a step reads, computed: the buckets read less than the whole cache, the shared prefix less again.
    full, bucket, shared = (row["4"]["mb"] for row in takes["rows"])
    assert full > bucket > shared
    assert takes["window"]["1"]["s"] > 0 and takes["window"]["4"]["s"] > 0
    assert takes["captures"]["before"] == 10 and 0 < takes["captures"]["after"] < 10
    assert results["request_4_takes"]["timings_s"]["beat-sync"] > 0
    request = results["request"]
    assert request["song_seconds"] == 4.0 and request["generation"]["extrapolated"] is True
    assert {"separate", "rhythm", "chords", "generate", "beat-sync", "mix"} <= set(request["timings_s"])
    lines = done.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GPU check"))
    table = lines[start:]
    assert all(line.startswith("|") for line in table[1:-1]) and table[-1].startswith("setup")  # the table last
