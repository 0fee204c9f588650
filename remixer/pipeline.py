"""The remix, top to bottom.

decode -> separate once -> rhythm -> chords -> chroma -> generate (-> MBD)
-> beat-sync -> mix the song's vocals back -> normalize -> encode.
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from btc import ChordSegment
from remixer import audio, beatsync, chords, generation, mbd, mix, models, rhythm, separation, weights
from remixer.device import pick_device
from remixer.errors import RemixerError
from remixer.request import RemixRequest
from remixer.tiny_weights import MARKER as TINY_MARKER

log = logging.getLogger("remixer")


class OutOfGPUMemory(RemixerError):
    """A request larger than the GPU's memory; the next one runs as usual."""


@dataclass(frozen=True)
class Analysis:
    """What the song is made of, found once and used by every later stage."""

    duration: float
    bpm: float | None
    beats: list[float]
    downbeats: list[float]
    chords: list[ChordSegment]
    sections: list[rhythm.Section]


@dataclass
class RemixResult:
    remix: Path
    instrumental: Path | None
    analysis: Analysis
    seed: int
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def outputs(self) -> list[Path]:
        return [self.remix] + ([self.instrumental] if self.instrumental else [])


ProgressCallback = Callable[[int, int], None]


class Remixer:
    """Holds every model, loaded once; `remix()` serves one request at a time."""

    def __init__(self, weights_dir: str | Path | None = None, device: str | None = None,
                 offline: bool | None = None):
        self.weights_dir = weights.weights_dir(weights_dir)
        self.device = pick_device(device)  # decided once; every model is loaded onto it
        self.offline = offline
        self.setup_timings: dict[str, float] = {}
        components = ["htdemucs", "allin1", "btc-large-voca", "btc-majmin", "t5", "encodec"]
        with _stage("download", self.setup_timings, quiet=True):  # every missing file at once, in ranges
            weights.ensure(components, self.weights_dir, offline=offline)
        if (self.weights_dir / TINY_MARKER).exists():
            log.warning("the weights in %s are small random test weights: remixes made with them are noise",
                        self.weights_dir)
        with _stage("demucs", self.setup_timings, quiet=True):
            self.separator = separation.load_separator(self.weights_dir, self.device, offline=offline)
        with _stage("All-In-One", self.setup_timings, quiet=True):
            self.analyzer = rhythm.load_analyzer(self.weights_dir, self.device, offline=offline)
        with _stage("BTC", self.setup_timings, quiet=True):
            self.recognizers = {large: chords.load_recognizer(str(self.weights_dir), large, str(self.device), offline)
                                for large in (True, False)}
        self.musicgen = models.ModelCache()
        self._mbd: mbd.MultiBandDiffusion | None = None

    def log_setup(self) -> None:
        """One table of what setup spent where (download, then read + build + move per model)."""
        rows = "\n".join(f"  {name:<32} {seconds:7.1f} s" for name, seconds in self.setup_timings.items())
        log.info("setup:\n%s\n  %-32s %7.1f s", rows, "total", sum(self.setup_timings.values()))

    def load_version(self, version: str) -> models.ChordModel:
        """The MusicGen-Chord model of a model_version, loaded (and timed) on first use."""
        component = generation.component_for(version)
        (file,) = weights.files_of([component])
        path = self.weights_dir / file.name
        if weights.missing([file], self.weights_dir):
            with _stage(f"download {version}", self.setup_timings, quiet=True):
                weights.paths_of(component, self.weights_dir, self.offline)
        if (path, self.device) in self.musicgen:
            return self.musicgen.get(path, self.device, self.weights_dir, self.offline)
        with _stage(f"MusicGen-Chord {version}", self.setup_timings, quiet=True):
            return self.musicgen.get(path, self.device, self.weights_dir, self.offline)

    def load_mbd(self) -> mbd.MultiBandDiffusion:
        """Multi-Band Diffusion, loaded on the first request that asks for it."""
        if self._mbd is None:
            (path,) = weights.paths_of(mbd.COMPONENT, self.weights_dir, self.offline)
            self._mbd = mbd.load_mbd(path, self.device)
        return self._mbd

    def remix(self, request: RemixRequest, output_dir: str | Path,
              progress: ProgressCallback | None = None) -> RemixResult:
        try:
            return self._remix(request, output_dir, progress)
        except torch.cuda.OutOfMemoryError:
            # Free what the failed request held so the next one starts clean, and say what to do.
            gc.collect()
            torch.cuda.empty_cache()
            raise OutOfGPUMemory(
                f"the GPU ran out of memory remixing {Path(str(request.music_input)).name!r} "
                f"with {request.model_version}: try a shorter song, a smaller model_version (chord or "
                "stereo-chord instead of the large ones) or a GPU with more memory"
            ) from None

    def _remix(self, request: RemixRequest, output_dir: str | Path,
               progress: ProgressCallback | None = None) -> RemixResult:
        request.validate()
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        work = Path(tempfile.mkdtemp(prefix="remixer-"))
        try:
            with _stage("decode", timings):
                song = audio.decode(request.music_input)
            duration = song.duration
            with _stage("separate", timings):
                stems = self.separator.separate(song.samples, song.sample_rate)
            with _stage("rhythm", timings):
                song_rhythm = self.analyzer.analyze(stems)
            with _stage("chords", timings):
                recognizer = self.recognizers[request.large_chord_voca]
                segments = recognizer.recognize(stems.drumless, separation.SAMPLE_RATE)
            with _stage("chroma", timings):
                chroma = chords.segments_to_chroma(segments, duration, request.chroma_coefficient)
            with _stage("load model", timings):
                model = self.load_version(request.model_version)
                diffusion = self.load_mbd() if request.multi_band_diffusion else None
            with _stage("generate", timings):
                generated = generation.generate(
                    model, request.prompt, chroma, duration,
                    generation.Sampling(request.top_k, request.top_p, request.temperature,
                                        request.classifier_free_guidance),
                    seed=request.seed, bpm=song_rhythm.bpm, progress=progress,
                )
            instrumental = generated.audio
            if diffusion is not None:
                with _stage("MBD", timings):
                    instrumental = mbd.decode_tokens(model, diffusion, generated.tokens, instrumental,
                                                     generated.seed)
            with _stage("beat-sync", timings):
                instrumental = self._beat_sync(instrumental, song_rhythm, request.beat_sync_threshold)
            with _stage("mix", timings):
                vocals = mix.prepare_vocals(stems.vocals, separation.SAMPLE_RATE, generation.SAMPLE_RATE,
                                            instrumental.shape[0], instrumental.shape[1])
                remixed = mix.mix(instrumental, vocals, generation.SAMPLE_RATE, request.normalization_strategy)
            with _stage("encode", timings):
                suffix = request.output_format
                remix_path = audio.write_audio(remixed, generation.SAMPLE_RATE, work / f"remix.{suffix}", suffix)
                instrumental_path = None
                if request.return_instrumental:
                    level = audio.normalize(instrumental, generation.SAMPLE_RATE, request.normalization_strategy,
                                            loudness_compressor=True)
                    instrumental_path = audio.write_audio(level, generation.SAMPLE_RATE,
                                                          work / f"instrumental.{suffix}", suffix)
                remix_path = _move(remix_path, output_dir)
                instrumental_path = _move(instrumental_path, output_dir) if instrumental_path else None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        analysis = Analysis(duration, song_rhythm.bpm, song_rhythm.beats, song_rhythm.downbeats, segments,
                            song_rhythm.sections)
        log.info("remix done in %.1f s (seed %d)", sum(timings.values()), generated.seed)
        return RemixResult(remix_path, instrumental_path, analysis, generated.seed, generation.SAMPLE_RATE, timings)

    def _beat_sync(self, instrumental: np.ndarray, song: rhythm.Rhythm, threshold: float | None) -> np.ndarray:
        if len(song.downbeats) < 2:
            log.info("beat-sync skipped: no downbeats found in the song")
            return instrumental
        # All-In-One reads demucs stems, so the new instrumental is separated too
        # (see remixer.rhythm); it has no vocals, the song's are mixed in later.
        generated = self.analyzer.analyze(self.separator.separate(instrumental, generation.SAMPLE_RATE))
        if len(generated.downbeats) < 2:
            log.info("beat-sync skipped: no downbeats found in the generated music")
            return instrumental
        return beatsync.sync_to_downbeats(instrumental, generation.SAMPLE_RATE, generated.downbeats,
                                          song.downbeats, threshold=threshold, bpm=song.bpm)


@contextmanager
def _stage(name: str, timings: dict[str, float], quiet: bool = False) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    if not quiet:
        log.info("%-10s %6.1f s", name, timings[name])


def _move(path: Path, directory: Path) -> Path:
    target = directory / path.name
    shutil.move(str(path), target)
    return target
