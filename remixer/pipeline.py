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
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from remixer import (
    audio,
    beatsync,
    chords,
    conditions,
    conversion,
    fidelity,
    finishing,
    generation,
    keytempo,
    mbd,
    mix,
    models,
    musicgen,
    rhythm,
    separation,
    weights,
)
from remixer.analysis import SongAnalysis
from remixer.device import pick_device
from remixer.errors import RemixerError
from remixer.fidelity import Fidelity
from remixer.request import MIN_SECTION_S, STEREO_VERSIONS, RemixRequest, RequestError, kept_parts
from remixer.tiny_weights import MARKER as TINY_MARKER

log = logging.getLogger("remixer")


class OutOfGPUMemory(RemixerError):
    """A request larger than the GPU's memory; the next one runs as usual."""


Analysis = SongAnalysis  # what the song is made of, on its timeline (remixer.analysis)
KEPT_PREFIX = finishing.KEPT_PREFIX  # a returned stem of the song's own (keep): song_drums, song_bass, song_other
# What a Remixer loads at setup; MusicGen-Chord (per model_version) and MBD load on first use.


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
    midi: Path | None = None  # the song's tempo map, bars and chords (return_midi)

    @property
    def outputs(self) -> list[Path]:
        """In the predictor's order: remix, instrumental, stems, analysis.json, analysis.png, take2 .. takeN."""
        return list(self.named_outputs.values())

    @property
    def named_outputs(self) -> dict[str, Path]:
        """The outputs by name (remix, instrumental, drums, bass, other, vocals, analysis_json, analysis_png,
        midi, take2 ... takeN), in the predictor's order; those not asked for are left out."""
        named = {"remix": self.remix, "instrumental": self.instrumental,
                 **{name: self.stems.get(name) for name in finishing.stem_names(self.stems)},
                 "analysis_json": self.analysis_json, "analysis_png": self.analysis_png, "midi": self.midi,
                 **self.take_outputs}
        return {name: path for name, path in named.items() if path is not None}


@dataclass(frozen=True)
class TakeReport:
    """One take of a request: its place in the batched decode, its rank, its fidelity."""

    index: int  # 1-based position in the batched decode (with the seed, what reproduces it)
    rank: int  # 1 = the remix returned
    seed: int
    fidelity: Fidelity

    def as_dict(self) -> dict:
        """analysis.json's entry for a take: index, rank, seed, chosen, its fidelity."""
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
    moved: dict | None = None  # how far beat-sync moved it (moved_by)


ProgressCallback = generation.ProgressCallback


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
            weights.ensure(weights.SETUP_COMPONENTS, self.weights_dir, offline=offline)
        if (self.weights_dir / TINY_MARKER).exists():
            log.warning("the weights in %s are small random test weights: remixes made with them are noise",
                        self.weights_dir)
        with _stage("demucs", self.setup_timings, quiet=True):
            (path,) = self._paths(separation.COMPONENT)
            self.separator = separation.load_separator(path, self.device)
        with _stage("All-In-One", self.setup_timings, quiet=True):
            self.analyzer = rhythm.load_analyzer(self._paths(rhythm.COMPONENT), self.device)
        with _stage("madmom", self.setup_timings, quiet=True):
            self.tracker = rhythm.load_tracker(self._paths(rhythm.MADMOM_COMPONENT))
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
        weights.ensure(weights.components_for(versions, with_mbd), weights_dir, offline=offline)
        for version in versions:
            path = weights.paths_of(musicgen.component_for(version), weights_dir, offline)[0]
            conversion.convert_checkpoint(path)

    def log_setup(self) -> None:
        """One table of what setup spent where (download, then read + build + move per model)."""
        rows = "\n".join(f"  {name:<32} {seconds:7.1f} s" for name, seconds in self.setup_timings.items())
        log.info("setup:\n%s\n  %-32s %7.1f s", rows, "total", sum(self.setup_timings.values()))

    def load_version(self, version: str) -> models.ChordModel:
        """The model of a model_version (MusicGen-Chord or MusiConGen), loaded (and timed) on first use."""
        component = musicgen.component_for(version)
        files = weights.files_of([component])  # the model file first; MusiConGen adds its codec pointer
        path = self.weights_dir / files[0].name
        if weights.missing(files, self.weights_dir):
            with _stage(f"download {version}", self.setup_timings, quiet=True):
                self._paths(component)
        if len(files) > 1:
            models.check_codec_pointer(self.weights_dir / files[1].name)
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
        """Remix the request's song into `output_dir` (created when missing): the remix first, then what the
        request asks for (RemixResult.named_outputs). `progress(done, total)` follows generation's tokens.

        Raises RemixerError (a subclass names the stage) for anything the user can fix: an unreadable song,
        a part or tempo the song cannot take, a request larger than the device's memory (OutOfGPUMemory).
        Nothing is left in temporary folders, and the next request runs as usual."""
        try:
            return self._remix(request, Path(output_dir), progress)
        except torch.cuda.OutOfMemoryError:
            # Free what the failed request held so the next one starts clean, and say what to do.
            gc.collect()
            torch.cuda.empty_cache()
            raise OutOfGPUMemory(
                f"the GPU ran out of memory remixing {Path(str(request.music_input)).name!r} "
                f"with {request.model_version}: try a shorter song, a smaller model_version (chord or "
                "stereo-chord instead of the large ones) or a GPU with more memory"
            ) from None

    def _remix(self, request: RemixRequest, output_dir: Path, progress: ProgressCallback | None) -> RemixResult:
        output_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        work = Path(tempfile.mkdtemp(prefix="remixer-"))
        try:
            song = self._song(request, timings)
            model, takes = self._generate_takes(request, song, timings, progress)
            diffusion = self.load_mbd() if request.multi_band_diffusion else None
            for take in takes:
                self._finish_take(take, model, diffusion, request, song, timings)
            ranked = rank_takes(takes)
            rate = finishing.output_rate(request, song.part.sample_rate)
            with _stage("mix", timings):
                finished = finishing.finish(self._held(ranked[0], song, rate), rate, request, song.reference)
            with _stage("encode", timings):
                written = finishing.write_outputs(finished, request, work)
            analysis = self._analysis(request, song, ranked, timings)
            analysis.mix = finishing.mix_report(finished, analysis.offset)
            analysis.decoder = model.decoder_for().describe()
            log.info("mix: %s", mix.describe(analysis.mix))
            if request.return_analysis:
                with _stage("analysis", timings):
                    analysis.timings = dict(timings)
                    written.update(finishing.write_analysis(analysis, song.part, song.change.changes_tempo,
                                                            finished, work))
            if request.return_midi:
                with _stage("midi", timings):
                    written["midi"] = finishing.write_midi(analysis, work)
            if request.return_takes:
                with _stage("other takes", timings):
                    written.update(finishing.write_other_takes(
                        request, [self._held(take, song, rate) for take in ranked[1:]], rate, song.reference,
                        work))
            moved = {name: _move(path, output_dir) for name, path in written.items()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("remix done in %.1f s (seed %d)", sum(timings.values()), ranked[0].generated.seed)
        return _result(moved, analysis, ranked, timings, rate)

    # -- the song: decode, section, separation, rhythm, chords, key/tempo --------------------------------

    def _song(self, request: RemixRequest, timings: dict[str, float]) -> Song:
        """The part of the upload to remix, separated once, its rhythm and chords found, moved to the asked
        key and tempo. Raises AudioError (unreadable upload), RequestError (a part outside the song),
        KeyTempoError (a tempo the song cannot take)."""
        with _stage("decode", timings):
            part, offset = _section(audio.decode(request.music_input), request.start_time, request.end_time)
        with _stage("separate", timings):
            stems = self.separator.separate(part.samples, part.sample_rate)
        with _stage("rhythm", timings):
            song_rhythm = self._rhythm(request.beat_tracker, stems, part.samples, part.sample_rate)
        with _stage("chords", timings):
            segments = self._chords(request, stems, song_rhythm, part.duration)
        # From here on the song is in the asked key and on the asked tempo's timeline.
        change = keytempo.plan(request.transpose, request.tempo, song_rhythm.bpm)
        kept = {name: stems[name] for name in kept_parts(request.keep)}
        song = Song(part, offset, part.duration, song_rhythm, segments, change, stems.vocals, kept)
        if change.changes_key or change.changes_tempo:
            with _stage("key/tempo", timings):
                song.rhythm, song.chords, song.duration = keytempo.apply(change, song_rhythm, segments,
                                                                         part.duration)
                song.vocals = keytempo.retune(stems.vocals, separation.SAMPLE_RATE, change)
                # Kept pitched parts move like the vocals; kept drums are only stretched (no pitch to move).
                song.kept = {name: keytempo.retune(stem, separation.SAMPLE_RATE,
                                                   replace(change, transpose=0) if name == "drums" else change)
                             for name, stem in kept.items()}
        with _stage("balance", timings):
            song.reference = song_balance(stems, kept, song, 2 if request.model_version in STEREO_VERSIONS else 1)
        return song

    def _rhythm(self, tracker: str, stems: Mapping[str, np.ndarray], whole: np.ndarray, sample_rate: int
                ) -> rhythm.Rhythm:
        """The chosen tracker's beats and bars: All-In-One on the stems, madmom on the whole mix (what each was
        trained on)."""
        if tracker == "madmom":
            return self.tracker.analyze_mix(whole, sample_rate)
        return self.analyzer.analyze(stems)

    def _chords(self, request: RemixRequest, stems: separation.Stems, song_rhythm: rhythm.Rhythm,
                duration: float) -> list[chords.Segment]:
        """The user's chords laid one per bar, or BTC's on the drumless stems."""
        if request.chords:
            bars = chords.bar_starts(song_rhythm.downbeats, song_rhythm.beats, song_rhythm.bpm, duration)
            return chords.lay_on_bars(chords.parse_progression(request.chords), bars, duration)
        recognizer = self.recognizers[request.large_chord_voca]
        return recognizer.recognize(stems.drumless, separation.SAMPLE_RATE)

    # -- generation of every take at once ------------------------------------------------------------------

    def _generate_takes(self, request: RemixRequest, song: Song, timings: dict[str, float],
                        progress: ProgressCallback | None) -> tuple[models.ChordModel, list[_Take]]:
        """The model version loaded, the memory checked, all takes decoded in one batch."""
        plays_on_beats = request.model_version in musicgen.BEAT_VERSIONS
        with _stage("conditions" if plays_on_beats else "chroma", timings):
            condition = song_condition(request, song)
        with _stage("load model", timings):
            model = self.load_version(request.model_version)
            if request.multi_band_diffusion:
                self.load_mbd()  # before decoding: a missing MBD file fails the request early
        described = model.decoder_for().describe()
        log.info("decoder: %s weights on the %s%s", described["precision"], described["device"].upper(),
                 " (REMIXER_DECODER_DTYPE chooses)" if described["device"] == "cpu" else "")
        generation.check_memory(model, request.takes, song.duration)
        sampling = generation.Sampling(request.top_k, request.top_p, request.temperature,
                                       request.classifier_free_guidance)
        with _stage("generate", timings):
            generated = generation.generate_takes(model, request.prompt, condition, song.duration, sampling,
                                                  seed=request.seed, bpm=prompt_bpm(request, song),
                                                  progress=progress, takes=request.takes)
        return model, [_Take(index, result) for index, result in enumerate(generated, start=1)]

    # -- each take's finishing: MBD, beat-sync, fidelity ---------------------------------------------------

    def _finish_take(self, take: _Take, model: models.ChordModel, diffusion: mbd.MultiBandDiffusion | None,
                     request: RemixRequest, song: Song, timings: dict[str, float]) -> None:
        take.instrumental = take.generated.audio
        if diffusion is not None:
            with _stage("MBD", timings):
                take.instrumental = mbd.decode_tokens(model, diffusion, take.generated.tokens, take.instrumental,
                                                      take.generated.seed)
        with _stage("beat-sync", timings):
            threshold = sync_threshold(request, song.rhythm.bpm)
            synced = self._beat_sync(take.instrumental, song.rhythm, threshold,
                                     request.return_stems or bool(song.kept), request.beat_tracker)
            take.instrumental, take.band = synced.instrumental, synced.band
            take.moved = {**moved_by(synced.plan),
                          "threshold_s": round(beatsync.default_threshold(song.rhythm.bpm)
                                               if threshold is None else threshold, 4)}
        with _stage("fidelity", timings):
            take.fidelity = self._fidelity(synced, song, request.large_chord_voca)
        log.info("fidelity%s: %s", f" of take {take.index}" if request.takes > 1 else "", take.fidelity.summary())

    def _beat_sync(self, instrumental: np.ndarray, song: rhythm.Rhythm, threshold: float | None,
                   want_band: bool = False, tracker: str = rhythm.TRACKERS[0]) -> "_Synced":
        """The instrumental (channels, samples) at 32 kHz synced to the song's downbeats, and (asked) its drums,
        bass and other parts synced with the very same time map.

        The new music is separated once, whatever happens: its stems give the fidelity's chords even when
        nothing can be synced (a song with no beat found), and the parts. Its rhythm is analysed when the
        song has beats to compare it with."""
        # All-In-One reads demucs stems, so the new instrumental is separated too (see remixer.rhythm); it has
        # no vocals, the song's are mixed in later.
        separated = self.separator.separate(instrumental, musicgen.SAMPLE_RATE)
        generated = (self._rhythm(tracker, separated, instrumental, musicgen.SAMPLE_RATE)
                     if song.beats or song.downbeats else None)
        band = None
        if want_band:
            band = {name: mix.conform(separated[name], separation.SAMPLE_RATE, musicgen.SAMPLE_RATE,
                                      *instrumental.shape) for name in ("drums", "bass")}
        if len(song.downbeats) < 2 or generated is None or len(generated.downbeats) < 2:
            where = "the song" if len(song.downbeats) < 2 else "the generated music"
            log.info("beat-sync skipped: no downbeats found in %s", where)
            return _Synced(instrumental, _with_other(instrumental, band), None, separated, generated)
        plan = beatsync.plan_sync(generated.downbeats, song.downbeats, threshold, song.bpm)
        parts = [instrumental] + ([band["drums"], band["bass"]] if band is not None else [])
        channels = instrumental.shape[0]
        synced = beatsync.sync_to_downbeats(np.concatenate(parts), musicgen.SAMPLE_RATE, generated.downbeats,
                                            song.downbeats, threshold=threshold, bpm=song.bpm,
                                            search_channels=channels if band is not None else None)
        instrumental = synced[:channels]
        if band is not None:
            band = {"drums": synced[channels:2 * channels], "bass": synced[2 * channels:]}
        return _Synced(instrumental, _with_other(instrumental, band), plan, separated, generated)

    def _fidelity(self, synced: "_Synced", song: Song, large_vocabulary: bool) -> Fidelity:
        """The synced take against the song: BTC on the stems beat-sync already separated, the beats its
        rhythm pass found, both through the sync's time map (the identity when nothing was moved: the new
        music is on the song's timeline already). Nothing is separated or analysed again."""
        recognizer = self.recognizers[large_vocabulary]
        generated_chords = recognizer.recognize(synced.separated.drumless, separation.SAMPLE_RATE)
        time_map = synced.plan.map_time if synced.plan is not None else fidelity.identity
        generated_beats = synced.rhythm.beats if synced.rhythm is not None else None
        return fidelity.measure(song.chords, song.rhythm.beats, generated_chords, generated_beats, time_map,
                                song.duration, why_not="no beats were found in the song")

    # -- the outputs -------------------------------------------------------------------------------------

    @staticmethod
    def _held(take: _Take, song: Song, rate: int) -> finishing.Held:
        """A take's band with the song's vocals and kept parts, at the output rate (remixer.finishing)."""
        return finishing.assemble(take.instrumental, take.band, song.vocals, song.kept, rate)

    @staticmethod
    def _analysis(request: RemixRequest, song: Song, ranked: list[_Take],
                  timings: dict[str, float]) -> SongAnalysis:
        """The stages' findings on the song's timeline (shifted by the part's start), the takes' numbers."""
        offset = song.offset * song.change.factor
        found, chosen = song.rhythm, ranked[0]
        return SongAnalysis(
            duration=song.duration, offset=offset, bpm=found.bpm,
            beats=[offset + t for t in found.beats], downbeats=[offset + t for t in found.downbeats],
            sections=[replace(s, start=offset + s.start, end=offset + s.end) for s in found.sections],
            chords=[replace(c, start=offset + c.start, end=offset + c.end) for c in song.chords],
            chords_given=bool(request.chords),
            prompt_sent=generation.build_prompt(request.prompt, prompt_bpm(request, song)),
            model_version=request.model_version, seed=chosen.generated.seed, timings=dict(timings),
            fidelity=chosen.fidelity.as_dict(), key_tempo=song.change.as_dict(),
            takes=[report.as_dict() for report in take_reports(ranked)], beat_sync=chosen.moved,
            beat_tracker=request.beat_tracker, kept=list(song.kept),
        )


@dataclass
class Song:
    """The song as the new band will play it: the part asked for, in the asked key, on the asked tempo's
    timeline (times in seconds from the part's start)."""

    part: audio.Audio  # the part as decoded, (channels, samples) at the upload's rate
    offset: float  # where the part starts in the upload, seconds
    duration: float  # seconds, on the output's timeline
    rhythm: rhythm.Rhythm
    chords: list[chords.Segment]
    change: keytempo.KeyTempo
    vocals: np.ndarray  # (2, samples) float32 at separation.SAMPLE_RATE, moved with the key and tempo
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # the song's own parts to keep (keep), moved too
    reference: mix.Reference | None = None  # the song's balance and the replaced parts' loudness (remixer.mix)


def song_balance(stems: separation.Stems, kept: Mapping[str, np.ndarray], song: Song, channels: int
                 ) -> mix.Reference:
    """The song's vocal-to-band balance and the loudness of the parts the new band replaces (the accompaniment
    less the kept parts), whole and per bar of the remix's timeline; measured on the stems as separated (a
    tempo change maps the bars back onto them)."""
    replaced = stems.accompaniment - (np.sum(list(kept.values()), axis=0) if kept else 0.0)
    return mix.song_reference(stems.vocals, stems.accompaniment, replaced, separation.SAMPLE_RATE,
                              song.rhythm.downbeats, song.duration, song.change.factor, channels)



@dataclass
class _Synced:
    instrumental: np.ndarray
    band: dict[str, np.ndarray] | None
    plan: beatsync.SyncPlan | None  # generated time -> song time; None: not moved
    separated: separation.Stems  # the new music's stems
    rhythm: rhythm.Rhythm | None  # the new music's rhythm; None when the song has no beat to compare it with


def song_condition(request: RemixRequest, song: Song) -> np.ndarray | conditions.SongFrames:
    """What the band is conditioned on: the chord models' chroma x chroma_coefficient, or MusiConGen's chord
    and beat frames from the song's own chords and beat times (which it cannot do without: GenerationError)."""
    if request.model_version not in musicgen.BEAT_VERSIONS:
        return chords.segments_to_chroma(song.chords, song.duration, request.chroma_coefficient)
    if not song.rhythm.beats:
        chord_versions = ", ".join(musicgen.CHORD_VERSIONS)
        raise musicgen.GenerationError(
            f"{request.model_version} plays on the song's own beats, but no beat was found in "
            f"{Path(str(request.music_input)).name!r}"
            + (" by all-in-one: try beat_tracker=madmom, or" if request.beat_tracker == "all-in-one" else ":")
            + f" remix this song with a chord model_version ({chord_versions}), which need only its chords")
    return conditions.song_frames(song.chords, song.rhythm.beats, song.rhythm.downbeats, song.duration)


# MusiConGen plays on the song's beat frames, so its bars already sit on the song's: beat-sync only trims their
# timing, within a quarter of a beat. The chord models' 1.1 beats would let a bar misread in the new music (a
# downbeat found one beat off) move a take that was on the beat by a whole beat.
BEAT_VERSION_SYNC_BEATS = 0.25


def sync_threshold(request: RemixRequest, bpm: float | None) -> float | None:
    """The largest gap (s) beat-sync closes: the request's, else a quarter beat for MusiConGen, else None
    (beat-sync's own default: 1.1 beats, or 0.75 s without a tempo)."""
    if request.beat_sync_threshold is not None:
        return request.beat_sync_threshold
    if request.model_version in musicgen.BEAT_VERSIONS and bpm:
        return BEAT_VERSION_SYNC_BEATS * 60.0 / bpm
    return None


def prompt_bpm(request: RemixRequest, song: Song) -> float | None:
    """The bpm the prompt carries: the chord models read the song's tempo in their text (", bpm : N");
    MusiConGen hears the beats themselves and was given the description alone."""
    return None if request.model_version in musicgen.BEAT_VERSIONS else song.rhythm.bpm


def moved_by(plan: beatsync.SyncPlan | None) -> dict:
    """How far beat-sync moved a take's downbeats onto the song's (seconds): little for music that was
    generated on the song's beats."""
    if plan is None:
        return {"anchors": 0, "max_shift_s": 0.0, "median_shift_s": 0.0}
    shifts = np.abs(plan.anchors[1] - plan.anchors[0])
    return {"anchors": int(shifts.size), "max_shift_s": round(float(shifts.max()), 4),
            "median_shift_s": round(float(np.median(shifts)), 4)}


def rank_takes(takes: list[_Take]) -> list[_Take]:
    """Best fidelity score first; equal scores keep decode order (one take: itself)."""
    ranked = sorted(takes, key=lambda t: -t.fidelity.score)
    if len(takes) > 1:
        log.info("takes ranked by fidelity score: %s; returning take %d",
                 ", ".join(f"take {t.index} {t.fidelity.score:.2f}" for t in ranked), ranked[0].index)
    return ranked


def take_reports(ranked: list[_Take]) -> list[TakeReport]:
    """What each ranked take reports, best first."""
    return [TakeReport(t.index, rank, t.generated.seed, t.fidelity) for rank, t in enumerate(ranked, 1)]


def _result(moved: dict[str, Path], analysis: SongAnalysis, ranked: list[_Take],
            timings: dict[str, float], rate: int) -> RemixResult:
    chosen = ranked[0]
    return RemixResult(moved["remix"], moved.get("instrumental"), analysis, chosen.generated.seed,
                       rate, timings,
                       stems={name: moved[name] for name in finishing.stem_names(moved)},
                       analysis_json=moved.get("analysis_json"), analysis_png=moved.get("analysis_png"),
                       fidelity=chosen.fidelity, takes=take_reports(ranked),
                       take_outputs={name: path for name, path in moved.items() if name.startswith("take")},
                       midi=moved.get("midi"))


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
