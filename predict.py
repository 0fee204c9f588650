"""Cog predictor: MusicGen Remixer on Replicate (web UI and HTTP API)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path as LocalPath
from typing import List, Optional

from cog import BasePredictor, Input, Path

from remixer.pipeline import Remixer
from remixer.request import SPECS, RemixRequest

OUTPUT_ROOT = LocalPath(tempfile.gettempdir()) / "remixer-outputs"


def _input(name: str):
    """cog.Input from the one table of inputs (remixer.request.INPUTS)."""
    spec = SPECS[name]
    return Input(
        default=spec.default, description=spec.description,
        choices=list(spec.choices) if spec.choices else None, ge=spec.ge, le=spec.le,
    )


class Predictor(BasePredictor):
    def setup(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        # Weights come from REMIXER_WEIGHTS_DIR (default ./weights), downloaded on first start.
        self.remixer = Remixer(os.environ.get("REMIXER_WEIGHTS_DIR"))
        # The default model is ready before the first request; others load on first use.
        self.remixer.load_version(SPECS["model_version"].default)
        self.remixer.log_setup()

    def predict(
        self,
        model_version: str = _input("model_version"),
        prompt: str = _input("prompt"),
        music_input: Path = _input("music_input"),
        multi_band_diffusion: bool = _input("multi_band_diffusion"),
        normalization_strategy: str = _input("normalization_strategy"),
        beat_sync_threshold: Optional[float] = _input("beat_sync_threshold"),
        large_chord_voca: bool = _input("large_chord_voca"),
        chroma_coefficient: float = _input("chroma_coefficient"),
        top_k: int = _input("top_k"),
        top_p: float = _input("top_p"),
        temperature: float = _input("temperature"),
        classifier_free_guidance: int = _input("classifier_free_guidance"),
        output_format: str = _input("output_format"),
        return_instrumental: bool = _input("return_instrumental"),
        seed: Optional[int] = _input("seed"),
        return_analysis: bool = _input("return_analysis"),
        return_stems: bool = _input("return_stems"),
        start_time: Optional[float] = _input("start_time"),
        end_time: Optional[float] = _input("end_time"),
        chords: Optional[str] = _input("chords"),
        takes: int = _input("takes"),
        return_takes: bool = _input("return_takes"),
        transpose: int = _input("transpose"),
        beat_tracker: str = _input("beat_tracker"),
        return_midi: bool = _input("return_midi"),
        keep: Optional[str] = _input("keep"),
        output_sample_rate: str = _input("output_sample_rate"),
        tempo: Optional[float] = _input("tempo"),
        mix_balance: str = _input("mix_balance"),
    ) -> List[Path]:
        values = {name: value for name, value in locals().items() if name in SPECS}
        # Called in-process, omitted arguments arrive as cog's FieldInfo: use their defaults.
        values = {name: getattr(value, "default", value) if type(value).__name__ == "FieldInfo" else value
                  for name, value in values.items()}
        request = RemixRequest.from_inputs(**values)
        # Outputs live until Cog has sent them; the previous request's are removed now.
        shutil.rmtree(OUTPUT_ROOT, ignore_errors=True)
        output_dir = OUTPUT_ROOT / uuid.uuid4().hex
        try:
            result = self.remixer.remix(request, output_dir, progress=_log_progress())
        except BaseException:
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        finally:
            release_memory()
        record = getattr(self, "record_metric", None)  # cog >= 0.17's metric API; older ones have none
        if record is not None:
            for key, value in metrics(result).items():
                record(key, value)
        return [Path(p) for p in result.outputs]


def metrics(result) -> dict[str, float | int]:
    """What Replicate shows beside a prediction: each stage's seconds, the remix's fidelity numbers, the seed.
    Keys follow Cog's rules (letters, digits, single underscores; a dot nests)."""
    found: dict[str, float | int] = {"seed": result.seed, "takes": len(result.takes)}
    if result.analysis.decoder:  # 32, 16 or 8: the decoder's weights (REMIXER_DECODER_DTYPE)
        found["decoder_bits"] = result.analysis.decoder["bits"]
    for stage, seconds in result.timings.items():
        found[f"stage_seconds.{metric_name(stage)}"] = round(seconds, 3)
    if result.fidelity is not None:
        for name, value in result.fidelity.as_dict().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[f"fidelity.{name}"] = value
    return found


def metric_name(stage: str) -> str:
    """'key/tempo' -> 'key_tempo', 'MBD' -> 'mbd', 'load model' -> 'load_model'."""
    return "_".join(part for part in "".join(c if c.isalnum() else " " for c in stage.lower()).split())


def release_memory() -> None:
    """Between requests: collect the request's cycles and hand freed heap pages back to the system.

    glibc keeps freed memory in per-thread arenas; over many requests of different sizes a long-lived
    worker's resident size creeps up by fragmentation alone (tens of MB) although nothing is kept.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def _log_progress():
    """Generation progress as log lines every 10%."""
    last = [-1]

    def report(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != last[0]:
            last[0] = tenth
            print(f"generating: {done}/{total} tokens ({tenth * 10}%)", file=sys.stderr, flush=True)

    return report
