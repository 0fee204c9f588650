"""The finishing of a remix: the new band and the song's own parts at the output rate, balanced and mixed
(remixer.mix), and every output written from those very parts at their levels in the remix."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from remixer import audio, midi, mix
from remixer.analysis import SongAnalysis, render_png, write_json
from remixer.musicgen import SAMPLE_RATE as BAND_RATE  # what the new band is made at
from remixer.separation import SAMPLE_RATE as STEMS_RATE  # the song's vocals and kept parts (demucs')

STEM_OUTPUTS = ("drums", "bass", "other", "vocals")
KEPT_PREFIX = "song_"  # a returned stem of the song's own (keep): song_drums, song_bass, song_other


@dataclass(frozen=True)
class Held:
    """What a remix holds at the output rate, before the mix: the song's vocals, the new band's parts that
    play (summed), and the instrumental's parts by output name (the band's, or the song's kept ones)."""

    vocals: np.ndarray
    band: np.ndarray
    parts: dict[str, np.ndarray]  # drums, bass, other (the new band) or song_<part> (kept), in slot order

    @property
    def kept(self) -> np.ndarray | None:
        """The song's kept parts summed; None when nothing is kept."""
        kept = [part for name, part in self.parts.items() if name.startswith(KEPT_PREFIX)]
        return np.sum(kept, axis=0).astype(np.float32) if kept else None


def assemble(band: np.ndarray, band_parts: dict[str, np.ndarray] | None, vocals: np.ndarray,
             kept: dict[str, np.ndarray], rate: int) -> Held:
    """A take's new band ((channels, n) at 32 kHz, synced; `band_parts` its drums and bass, when separated)
    resampled once to `rate`, with the song's kept parts in place of its own and the song's vocals (both at
    demucs' 44.1 kHz), all sample-aligned and as long as the band at `rate`."""
    channels = band.shape[0]
    length = int(round(band.shape[1] * rate / BAND_RATE))

    def at_rate(samples: np.ndarray, source_rate: int) -> np.ndarray:
        return mix.conform(samples, source_rate, rate, channels, length)

    vocals = mix.prepare_vocals(vocals, STEMS_RATE, rate, channels, length)
    whole = at_rate(band, BAND_RATE)
    if band_parts is None:  # nothing kept and no stems asked: the whole new band
        return Held(vocals, whole, {})
    # The band's parts at the output rate; "other" is what drums and bass leave of the band, so the parts add
    # up to it exactly (as at 32 kHz), and without kept parts the new parts are the band itself.
    played = {name: at_rate(band_parts[name], BAND_RATE) for name in ("drums", "bass")}
    played["other"] = whole - played["drums"] - played["bass"]
    parts = {(KEPT_PREFIX + name if name in kept else name):
             (at_rate(kept[name], STEMS_RATE) if name in kept else played[name])
             for name in ("drums", "bass", "other")}
    playing = whole if not kept else np.sum([played[n] for n in played if n not in kept], axis=0)
    return Held(vocals, playing.astype(np.float32), parts)


def mix_held(held: Held, rate: int, strategy: str, balance: str, reference: mix.Reference | None) -> mix.Mixed:
    """The remix of what is held, at the balance asked for (remixer.mix)."""
    return mix.mix(held.band, held.vocals, rate, strategy, kept=held.kept, balance=balance, reference=reference)


FULL_SCALE = 0.999  # a returned part louder than this would clip in a 16-bit file


@dataclass(frozen=True)
class Finished:
    """The remix as written (before encoding), what made it, and the other parts to return (`returned`: the
    instrumental and stems asked for, each at its level in the remix, times `returned_gain`)."""

    mixed: mix.Mixed
    held: Held
    rate: int
    returned: dict[str, np.ndarray]
    returned_gain: float = 1.0

    @property
    def remixed(self) -> np.ndarray:
        return self.mixed.remix


def instrumental(mixed: mix.Mixed, held: Held) -> np.ndarray:
    """Everything but the vocals, at its level in the remix."""
    band, kept = mixed.levels.of_band(held.band), held.kept
    return band if kept is None else band + mixed.levels.of_kept(kept)


def stems(mixed: mix.Mixed, held: Held) -> dict[str, np.ndarray]:
    """The instrumental's parts and the vocals, each at its level in the remix (they add up to it before
    normalization), named by where they came from."""
    levels = mixed.levels
    out = {name: levels.of_kept(part) if name.startswith(KEPT_PREFIX) else levels.of_band(part)
           for name, part in held.parts.items()}
    return {**out, "vocals": levels.of_vocals(held.vocals)}


def finish(held: Held, rate: int, request, reference: mix.Reference | None) -> Finished:
    """The remix of what is held, at the balance and normalization asked for, and the parts asked for beside it.

    The parts returned are lowered together, by one gain, in the rare case one would pass full scale alone
    (the vocals can cancel a band's peak in the remix, never in the band alone): they still add up to the
    remix times that gain."""
    mixed = mix_held(held, rate, request.normalization_strategy, request.mix_balance, reference)
    returned = {**({"instrumental": instrumental(mixed, held)} if request.return_instrumental else {}),
                **(stems(mixed, held) if request.return_stems else {})}
    peak = max((float(np.abs(part).max(initial=0.0)) for part in returned.values()), default=0.0)
    gain = min(1.0, FULL_SCALE / peak) if peak > 0 else 1.0
    if gain < 1.0:
        returned = {name: (part * np.float32(gain)).astype(np.float32) for name, part in returned.items()}
    return Finished(mixed, held, rate, returned, gain)


def write_outputs(finished: Finished, request, work: Path) -> dict[str, Path]:
    """The remix, then the instrumental and stems when asked."""
    suffix, rate = request.output_format, finished.rate
    written = {"remix": audio.write_audio(finished.remixed, rate, work / f"remix.{suffix}", suffix)}
    for name, part in finished.returned.items():
        written[name] = audio.write_audio(part, rate, work / f"{name}.{suffix}", suffix)
    return written


def mix_report(finished: Finished, offset: float) -> dict:
    """analysis.json's mix: the balance applied; the envelope's bars on the song's timeline (`offset`: where
    the remixed part starts there); the one gain the returned parts were lowered by to stay within full scale."""
    report = dict(finished.mixed.report)
    envelope = report.get("envelope")
    if envelope:
        report["envelope"] = {**envelope, "bar_starts": [round(t + offset, 4) for t in envelope["bar_starts"]]}
    report["returned_parts_gain_db"] = round(20 * np.log10(finished.returned_gain), 2)
    return report


def write_other_takes(request, helds: list[Held], rate: int, reference: mix.Reference | None,
                      work: Path) -> dict[str, Path]:
    """take2 ... takeN, best first, each mixed as the remix is (the same vocals and kept parts, the same rate,
    the same balance)."""
    suffix = request.output_format
    written = {}
    for rank, held in enumerate(helds, start=2):
        other = mix_held(held, rate, request.normalization_strategy, request.mix_balance, reference)
        written[f"take{rank}"] = audio.write_audio(other.remix, rate, work / f"take{rank}.{suffix}", suffix)
    return written


def write_analysis(analysis: SongAnalysis, song: audio.Audio, changes_tempo: bool, finished: Finished,
                   work: Path) -> dict[str, Path]:
    """analysis.json and analysis.png; on a new tempo the song's audio is not on the analysis' timeline,
    so the picture draws the remix."""
    drawn = (song.samples, song.sample_rate) if not changes_tempo else (finished.remixed, finished.rate)
    return {"analysis_json": write_json(analysis, work / "analysis.json"),
            "analysis_png": render_png(analysis, *drawn, work / "analysis.png")}


def write_midi(analysis: SongAnalysis, work: Path) -> Path:
    """song.mid on the remix's own timeline (time 0 = its first sample): the analysis' times less the part's
    start, after tempo and transpose."""
    def shifted(times):
        return [t - analysis.offset for t in times]

    return midi.write_midi(work / "song.mid", shifted(analysis.beats), shifted(analysis.downbeats), analysis.meter,
                           [replace(c, start=c.start - analysis.offset, end=c.end - analysis.offset)
                            for c in analysis.chords],
                           [replace(s, start=s.start - analysis.offset, end=s.end - analysis.offset)
                            for s in analysis.sections], analysis.duration)


def output_rate(request, song_rate: int) -> int:
    """The outputs' sample rate: the upload's own between 32 and 48 kHz ('song'), or the one asked for."""
    if request.output_sample_rate == "song":
        return int(min(max(song_rate, BAND_RATE), 48000))
    return int(request.output_sample_rate)


def stem_names(available) -> list[str]:
    """The stems' output names in their slots' order, each named by where it came from (drums, or song_drums
    when the song's own drums were kept)."""
    return [name for part in STEM_OUTPUTS for name in (part, KEPT_PREFIX + part) if name in available]
