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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from remixer import (audio, beatsync, chords, conversion, decoding, fidelity, generation, keytempo, mbd, mix, models,
                     musicgen, rhythm, separation, weights)
from remixer.analysis import SongAnalysis, render_png, write_json
from remixer.device import pick_device
from remixer.errors import RemixerError
from remixer.fidelity import Fidelity
from remixer.request import MIN_SECTION_S, RemixRequest, RequestError
from remixer.tiny_weights import MARKER as TINY_MARKER

log = logging.getLogger("remixer")


class OutOfGPUMemory(RemixerError):
    """A request larger than the GPU's memory; the next one runs as usual."""


Analysis = SongAnalysis  # what the song is made of, on its timeline (remixer.analysis)
STEM_OUTPUTS = ("drums", "bass", "other", "vocals")
# What a Remixer loads at setup; MusicGen-Chord (per model_version) and MBD load on first use.
SETUP_COMPONENTS = ["htdemucs", "allin1", "btc-large-voca", "btc-majmin", "t5", "encodec"]


@dataclass
class RemixResult:
    remix: Path
    instrumental: Path | None
    analysis: SongAnalysis
    seed: int
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)
    stems: dict[str, Path] = field(default_factory=dict)  # drums, bass, other (the new band), vocals (the song's)
    analysis_json: Path | None = None
    analysis_png: Path | None = None
    fidelity: Fidelity | None = None  # the returned remix's
    takes: list[TakeReport] = field(default_factory=list)  # every take, best first
    take_outputs: dict[str, Path] = field(default_factory=dict)  # take2 ... takeN (return_takes), best first

    @property
    def outputs(self) -> list[Path]:
        """In the predictor's order: remix, instrumental, stems, analysis.json, analysis.png, take2 .. takeN."""
        return list(self.named_outputs.values())

    @property
    def named_outputs(self) -> dict[str, Path]:
        """The outputs by name (remix, instrumental, drums, bass, other, vocals, analysis_json, analysis_png,
        take2 ... takeN), in the predictor's order; those not asked for are left out."""
        named = {"remix": self.remix, "instrumental": self.instrumental,
                 **{name: self.stems.get(name) for name in STEM_OUTPUTS},
                 "analysis_json": self.analysis_json, "analysis_png": self.analysis_png, **self.take_outputs}
        return {name: path for name, path in named.items() if path is not None}


@dataclass(frozen=True)
class TakeReport:
    """One take of a request: its place in the batched decode, its rank, its fidelity."""

    index: int  # 1-based position in the batched decode (with the seed, what reproduces it)
    rank: int  # 1 = the remix returned
    seed: int
    fidelity: Fidelity

    def as_dict(self) -> dict:
        return {"index": self.index, "rank": self.rank, "seed": self.seed, "chosen": self.rank == 1,
                **self.fidelity.as_dict()}


@dataclass
class _Take:
    """A take through the stages after generation."""

    index: int
    generated: generation.Generated
    instrumental: np.ndarray | None = None
    band: dict[str, np.ndarray] | None = None
    fidelity: Fidelity | None = None


ProgressCallback = Callable[[int, int], None]


class Remixer:
    """Holds every model, loaded once; `remix()` serves one request at a time.

    The one owner of loaded models: the file paths are resolved here once (downloaded when missing), every
    loader gets a path and the Remixer's device, and MusicGen-Chord versions are kept in its `ModelCache`.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str | None = None,
                 offline: bool | None = None):
        self.weights_dir = weights.weights_dir(weights_dir)
        self.device = pick_device(device)  # decided once; every model is loaded onto it
        self.offline = offline
        self.setup_timings: dict[str, float] = {}
        with _stage("download", self.setup_timings, quiet=True):  # every missing file at once, in ranges
            weights.ensure(SETUP_COMPONENTS, self.weights_dir, offline=offline)
        if (self.weights_dir / TINY_MARKER).exists():
            log.warning("the weights in %s are small random test weights: remixes made with them are noise",
                        self.weights_dir)
        with _stage("demucs", self.setup_timings, quiet=True):
            (path,) = self._paths(separation.COMPONENT)
            self.separator = separation.load_separator(path, self.device)
        with _stage("All-In-One", self.setup_timings, quiet=True):
            self.analyzer = rhythm.load_analyzer(self._paths(rhythm.COMPONENT), self.device)
        with _stage("BTC", self.setup_timings, quiet=True):
            self.recognizers = {large: chords.read_recognizer(self._paths(chords.recognizer_component(large))[0],
                                                              str(self.device))
                                for large in (True, False)}
        with _stage("T5 + EnCodec", self.setup_timings, quiet=True):
            self.encoders = models.load_encoders(self._folder("t5"), self._folder("encodec"), self.device)
        self.musicgen = models.ModelCache()
        self._mbd: mbd.MultiBandDiffusion | None = None

    def _paths(self, component: str) -> list[Path]:
        return weights.paths_of(component, self.weights_dir, self.offline)

    def _folder(self, component: str) -> Path:
        return self._paths(component)[0].parent

    @staticmethod
    def prefetch(versions: list[str], with_mbd: bool, weights_dir: str | Path | None = None,
                 offline: bool | None = None) -> None:
        """Fetch (and convert) every file that remixes with these model versions need, without loading a
        model: a batch driver does this once before its workers each set up a Remixer."""
        components = SETUP_COMPONENTS + [musicgen.component_for(v) for v in versions]
        if with_mbd:
            components.append(mbd.COMPONENT)
        weights.ensure(components, weights_dir, offline=offline)
        for version in versions:
            (path,) = weights.paths_of(musicgen.component_for(version), weights_dir, offline)
            conversion.convert_checkpoint(path)

    def log_setup(self) -> None:
        """One table of what setup spent where (download, then read + build + move per model)."""
        rows = "\n".join(f"  {name:<32} {seconds:7.1f} s" for name, seconds in self.setup_timings.items())
        log.info("setup:\n%s\n  %-32s %7.1f s", rows, "total", sum(self.setup_timings.values()))

    def load_version(self, version: str) -> models.ChordModel:
        """The MusicGen-Chord model of a model_version, loaded (and timed) on first use."""
        component = musicgen.component_for(version)
        (file,) = weights.files_of([component])
        path = self.weights_dir / file.name
        if weights.missing([file], self.weights_dir):
            with _stage(f"download {version}", self.setup_timings, quiet=True):
                self._paths(component)
        # Timed only when it loads: a cached model costs nothing and adds no setup row.
        loading = (path, self.device) not in self.musicgen
        with _stage(f"MusicGen-Chord {version}", self.setup_timings if loading else {}, quiet=True):
            return self.musicgen.get(path, self.device, self.encoders)

    def load_mbd(self) -> mbd.MultiBandDiffusion:
        """Multi-Band Diffusion, loaded on the first request that asks for it."""
        if self._mbd is None:
            (path,) = self._paths(mbd.COMPONENT)
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
                song, offset = _section(audio.decode(request.music_input), request.start_time, request.end_time)
            duration = song.duration
            with _stage("separate", timings):
                stems = self.separator.separate(song.samples, song.sample_rate)
            with _stage("rhythm", timings):
                song_rhythm = self.analyzer.analyze(stems)
            with _stage("chords", timings):
                if request.chords:  # the user's chords, one per bar, instead of recognition
                    bars = chords.bar_starts(song_rhythm.downbeats, song_rhythm.beats, song_rhythm.bpm, duration)
                    segments = chords.lay_on_bars(chords.parse_progression(request.chords), bars, duration)
                else:
                    recognizer = self.recognizers[request.large_chord_voca]
                    segments = recognizer.recognize(stems.drumless, separation.SAMPLE_RATE)
            # From here on the song is in the asked key and on the asked tempo's timeline.
            change = keytempo.plan(request.transpose, request.tempo, song_rhythm.bpm)
            song_vocals = stems.vocals
            if change.changes_key or change.changes_tempo:
                with _stage("key/tempo", timings):
                    song_rhythm, segments, duration = keytempo.apply(change, song_rhythm, segments, duration)
                    song_vocals = keytempo.retune(stems.vocals, separation.SAMPLE_RATE, change)
            with _stage("chroma", timings):
                chroma = chords.segments_to_chroma(segments, duration, request.chroma_coefficient)
            with _stage("load model", timings):
                model = self.load_version(request.model_version)
                diffusion = self.load_mbd() if request.multi_band_diffusion else None
            check_memory(model, request.takes, duration)
            with _stage("generate", timings):
                generated = generation.generate_takes(
                    model, request.prompt, chroma, duration,
                    generation.Sampling(request.top_k, request.top_p, request.temperature,
                                        request.classifier_free_guidance),
                    seed=request.seed, bpm=song_rhythm.bpm, progress=progress, takes=request.takes,
                )
            takes = [_Take(index, result) for index, result in enumerate(generated, start=1)]
            for take in takes:
                take.instrumental = take.generated.audio
                if diffusion is not None:
                    with _stage("MBD", timings):
                        take.instrumental = mbd.decode_tokens(model, diffusion, take.generated.tokens,
                                                              take.instrumental, take.generated.seed)
                with _stage("beat-sync", timings):
                    synced = self._beat_sync(take.instrumental, song_rhythm, request.beat_sync_threshold,
                                             request.return_stems)
                    take.instrumental, take.band = synced.instrumental, synced.band
                with _stage("fidelity", timings):
                    take.fidelity = self._fidelity(synced, song_rhythm, segments, duration,
                                                   request.large_chord_voca)
                log.info("fidelity%s: %s", f" of take {take.index}" if len(takes) > 1 else "",
                         take.fidelity.summary())
            # Best first; equal scores keep decode order (one take: itself).
            ranked = sorted(takes, key=lambda t: -t.fidelity.score)
            reports = [TakeReport(t.index, rank, t.generated.seed, t.fidelity) for rank, t in enumerate(ranked, 1)]
            if len(takes) > 1:
                log.info("takes ranked by fidelity score: %s; returning take %d",
                         ", ".join(f"take {r.index} {r.fidelity.score:.2f}" for r in reports), ranked[0].index)
            chosen = ranked[0]
            instrumental, band = chosen.instrumental, chosen.band
            with _stage("mix", timings):
                vocals = mix.prepare_vocals(song_vocals, separation.SAMPLE_RATE, musicgen.SAMPLE_RATE,
                                            instrumental.shape[0], instrumental.shape[1])
                remixed = mix.mix(instrumental, vocals, musicgen.SAMPLE_RATE, request.normalization_strategy)
            with _stage("encode", timings):
                suffix = request.output_format
                rate = musicgen.SAMPLE_RATE
                written = {"remix": audio.write_audio(remixed, rate, work / f"remix.{suffix}", suffix)}
                if request.return_instrumental or band is not None:
                    level = audio.normalize(instrumental, rate, request.normalization_strategy,
                                            loudness_compressor=True)
                if request.return_instrumental:
                    written["instrumental"] = audio.write_audio(level, rate, work / f"instrumental.{suffix}", suffix)
                if band is not None:
                    # The band's parts at the instrumental's output level; they add up to it (demucs' residual
                    # is in "other"), the vocals at their level in the remix.
                    for name, part in band.items():
                        written[name] = audio.write_audio(mix.level_like(part, instrumental, level), rate,
                                                          work / f"{name}.{suffix}", suffix)
                    written["vocals"] = audio.write_audio(mix.vocals_as_mixed(instrumental, vocals, remixed),
                                                          rate, work / f"vocals.{suffix}", suffix)
            analysis = _song_analysis(song_rhythm, segments, duration, offset * change.factor, request,
                                      chosen.generated.seed, timings)
            analysis.key_tempo = change.as_dict()
            analysis.fidelity = chosen.fidelity.as_dict()
            analysis.takes = [report.as_dict() for report in reports]
            if request.return_analysis:
                with _stage("analysis", timings):
                    analysis.timings = dict(timings)
                    written["analysis_json"] = write_json(analysis, work / "analysis.json")
                    # On a new tempo the song's audio is not on the analysis' timeline; the remix is.
                    drawn = (song.samples, song.sample_rate) if not change.changes_tempo else (remixed, rate)
                    written["analysis_png"] = render_png(analysis, *drawn, work / "analysis.png")
            if request.return_takes:
                with _stage("other takes", timings):
                    for rank, take in enumerate(ranked[1:], start=2):
                        other = mix.mix(take.instrumental, vocals, rate, request.normalization_strategy)
                        written[f"take{rank}"] = audio.write_audio(other, rate, work / f"take{rank}.{suffix}", suffix)
            moved = {name: _move(path, output_dir) for name, path in written.items()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("remix done in %.1f s (seed %d)", sum(timings.values()), chosen.generated.seed)
        return RemixResult(moved["remix"], moved.get("instrumental"), analysis, chosen.generated.seed,
                           musicgen.SAMPLE_RATE, timings,
                           stems={name: moved[name] for name in STEM_OUTPUTS if name in moved},
                           analysis_json=moved.get("analysis_json"), analysis_png=moved.get("analysis_png"),
                           fidelity=chosen.fidelity, takes=reports,
                           take_outputs={name: path for name, path in moved.items() if name.startswith("take")})

    def _beat_sync(self, instrumental: np.ndarray, song: rhythm.Rhythm, threshold: float | None,
                   want_band: bool = False) -> "_Synced":
        """The instrumental synced to the song's downbeats, and (asked) its drums, bass and other parts
        synced with the very same time map. The instrumental is separated at most once; its stems and
        rhythm are kept for the fidelity measure."""
        separated = generated = None
        why_not = ""
        if len(song.downbeats) >= 2:
            # All-In-One reads demucs stems, so the new instrumental is separated too
            # (see remixer.rhythm); it has no vocals, the song's are mixed in later.
            separated = self.separator.separate(instrumental, musicgen.SAMPLE_RATE)
            generated = self.analyzer.analyze(separated)
            if len(generated.downbeats) < 2:
                log.info("beat-sync skipped: no downbeats found in the generated music")
        else:
            log.info("beat-sync skipped: no downbeats found in the song")
            why_not = "no downbeats were found in the song, so the new music was not synced nor analysed"
        band = None
        if want_band:
            if separated is None:
                separated = self.separator.separate(instrumental, musicgen.SAMPLE_RATE)
            band = {name: mix.conform(separated[name], separation.SAMPLE_RATE, musicgen.SAMPLE_RATE,
                                      *instrumental.shape) for name in ("drums", "bass")}
        if generated is None or len(generated.downbeats) < 2:
            return _Synced(instrumental, _with_other(instrumental, band), None, separated, generated, why_not)
        plan = beatsync.plan_sync(generated.downbeats, song.downbeats, threshold, song.bpm)
        if band is None:
            synced = beatsync.sync_to_downbeats(instrumental, musicgen.SAMPLE_RATE, generated.downbeats,
                                                song.downbeats, threshold=threshold, bpm=song.bpm)
            return _Synced(synced, None, plan, separated, generated)
        channels = instrumental.shape[0]
        stacked = np.concatenate([instrumental, band["drums"], band["bass"]])
        synced = beatsync.sync_to_downbeats(stacked, musicgen.SAMPLE_RATE, generated.downbeats, song.downbeats,
                                            threshold=threshold, bpm=song.bpm, search_channels=channels)
        instrumental = synced[:channels]
        band = {"drums": synced[channels:2 * channels], "bass": synced[2 * channels:]}
        return _Synced(instrumental, _with_other(instrumental, band), plan, separated, generated)

    def _fidelity(self, synced: "_Synced", song: rhythm.Rhythm, song_chords, duration: float,
                  large_vocabulary: bool) -> Fidelity:
        """The synced take against the song: BTC on the stems beat-sync already separated, the beats its
        rhythm pass found, both through the sync's time map (nothing is separated or analysed again)."""
        if synced.separated is None or synced.rhythm is None:
            return fidelity.measure(song_chords, song.beats, None, None, fidelity.identity, duration,
                                    why_not=synced.why_not or "the new music was not analysed")
        recognizer = self.recognizers[large_vocabulary]
        generated_chords = recognizer.recognize(synced.separated.drumless, separation.SAMPLE_RATE)
        time_map = synced.plan.map_time if synced.plan is not None else fidelity.identity
        return fidelity.measure(song_chords, song.beats, generated_chords, synced.rhythm.beats, time_map, duration)


@dataclass
class _Synced:
    instrumental: np.ndarray
    band: dict[str, np.ndarray] | None
    plan: beatsync.SyncPlan | None  # generated time -> song time; None: not moved
    separated: separation.Stems | None  # the new music's stems, when beat-sync separated it
    rhythm: rhythm.Rhythm | None  # the new music's rhythm, when analysed
    why_not: str = ""


def check_memory(model: models.ChordModel, takes: int, duration: float) -> None:
    """Refuse, before decoding, a request whose takes' KV cache cannot fit the device, saying what fits."""
    need = decode_bytes(model, takes, duration)
    free = free_bytes(model.device)
    if free is None or need <= free:
        return
    fits = max(n for n in range(0, takes + 1) if n == 0 or decode_bytes(model, n, duration) <= free)
    advice = (f"ask for takes={fits}" if fits >= 1 else
              "use a smaller model_version or a shorter song (start_time/end_time)")
    raise RemixerError(f"{takes} take(s) of {model.facts.version} need about {need / 2**30:.1f} GiB of "
                       f"{model.device.type.upper()} memory for decoding, but {free / 2**30:.1f} GiB is free: "
                       f"{advice}")


def decode_bytes(model: models.ChordModel, takes: int, duration: float) -> int:
    """Memory one window's decode holds for `takes` takes: the KV cache of every row (guidance doubles the
    rows) over the window's positions, the step's logits and attention scores."""
    facts = model.facts
    decoder = model.decoder_for()
    rows = 2 * takes
    window = min(duration, chords.WINDOW_SECONDS)
    positions = model.config.chroma_length + generation.MAX_PROMPT_TOKENS + 1 + \
        int(window * musicgen.FRAME_RATE) + facts.max_delay
    value = torch.tensor([], dtype=decoder.dtype).element_size()
    cache = decoding.kv_cache_bytes(facts.layers, facts.hidden_size, rows, positions, value)
    step = rows * (facts.codebooks * musicgen.CARD * 4 + facts.heads * positions * 4 * 2)
    return cache + step


def free_bytes(device: torch.device) -> int | None:
    """Memory a decode can still use on `device`: CUDA's free memory plus what the allocator holds unused;
    on the CPU the system's available memory; None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _with_other(instrumental: np.ndarray, band: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """'other' is what drums and bass leave of the instrumental, so the parts add up to it exactly."""
    if band is None:
        return None
    return {**band, "other": instrumental - band["drums"] - band["bass"]}


def _section(song: audio.Audio, start: float | None, end: float | None) -> tuple[audio.Audio, float]:
    """The part of the song to remix (checked against its length) and where it starts."""
    if start is None and end is None:
        return song, 0.0
    length = song.duration
    first = start or 0.0
    last = length if end is None else end
    if first >= length or last > length + 1e-3 or last - first < MIN_SECTION_S:
        raise RequestError(
            f"start_time/end_time must pick at least {MIN_SECTION_S:g} s inside the song, which is "
            f"{length:.2f} s long; got {first:g} .. {last:g}")
    a, b = int(round(first * song.sample_rate)), min(int(round(last * song.sample_rate)), song.samples.shape[1])
    return audio.Audio(song.samples[:, a:b], song.sample_rate), first


def _song_analysis(found: rhythm.Rhythm, segments, duration: float, offset: float, request: RemixRequest,
                   seed: int, timings: dict[str, float]) -> SongAnalysis:
    """The stages' findings on the song's timeline (shifted by the part's start)."""
    return SongAnalysis(
        duration=duration, offset=offset, bpm=found.bpm,
        beats=[offset + t for t in found.beats], downbeats=[offset + t for t in found.downbeats],
        sections=[replace(s, start=offset + s.start, end=offset + s.end) for s in found.sections],
        chords=[replace(c, start=offset + c.start, end=offset + c.end) for c in segments],
        chords_given=bool(request.chords), prompt_sent=generation.build_prompt(request.prompt, found.bpm),
        model_version=request.model_version, seed=seed, timings=dict(timings),
    )


@contextmanager
def _stage(name: str, timings: dict[str, float], quiet: bool = False) -> Iterator[None]:
    start = time.perf_counter()
    yield
    # Stages that run once per take add up.
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    if not quiet:
        log.info("%-10s %6.1f s", name, timings[name])


def _move(path: Path, directory: Path) -> Path:
    target = directory / path.name
    shutil.move(str(path), target)
    return target
