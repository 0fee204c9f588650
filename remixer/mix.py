"""Put the song's own vocals (and kept parts) back over the new band: at the song's own balance, the band
following the song's loud and quiet parts, or as the published predictor mixed them.

Loudness is ITU-R BS.1770 as pyloudnorm measures it (`audio.loudness_lufs`); a balance is a difference of
two loudnesses in LU. demucs' stems share one scale and add up to the song (its `apply_model` multiplies every
source back by the same std and mean), so the song's vocals and kept parts at one common gain are the song's
own parts in the song's own balance; the new band is set to the loudness of the song's parts it replaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from remixer.audio import convert_channels, loudness_lufs, normalize, resample

BALANCES = ("song", "published")  # mix_balance: the song's own balance (default), the published peak mix
INSTRUMENTAL_LEVEL = 0.5  # of full scale, after peak normalisation (the published predictor's levels)
VOCALS_LEVEL = 0.25

# Pop's lead vocal sits about 1 dB above the band (Gerdes and Siedenburg, JASA Express Letters 3, 043201,
# 2023, on separated stems): the band's level when the song has no band of its own to match.
POP_VOCALS_OVER_BAND_LU = 1.0
# The band's level follows the song's bar by bar, smoothed over a few bars (gain automation follows phrases;
# a gain that moves within a bar is heard as pumping) and bounded.
WINDOW_S = 3.0  # each bar's loudness is measured over at least this much (EBU R128's short-term window)
SMOOTHING = np.array([1.0, 2.0, 1.0])  # triangular weights over the bar and one either side
BOUND_DB = 12.0  # the most the envelope lifts or lowers a bar
MAX_STEP_DB = 6.0  # the most the gain moves from one bar's middle to the next (a fade over a bar, never a jump)
FLOOR_LU = 20.0  # a bar quieter than this below the whole counts as this quiet (silence has no loudness)
MIN_BAR_S = 0.1  # downbeats closer than this to the previous bound make no bar of their own
SHORT_TERM_HOP_S = 1.0


def prepare_vocals(vocals: np.ndarray, vocals_rate: int, sample_rate: int, channels: int, length: int) -> np.ndarray:
    """Vocals (demucs' 44.1 kHz) at the output's rate and the model's channel count, sample-aligned with the
    song and `length` long, resampled once (never through the model's 32 kHz).

    Stereo vocals stay stereo for stereo models (the original downmixed them).
    """
    return conform(vocals, vocals_rate, sample_rate, channels, length)


def conform(stem: np.ndarray, stem_rate: int, sample_rate: int, channels: int, length: int) -> np.ndarray:
    """A demucs stem on the model's rate and channel count, `length` samples from the same start."""
    converted = resample(convert_channels(stem, channels), stem_rate, sample_rate)
    out = np.zeros((channels, length), np.float32)
    count = min(length, converted.shape[1])
    out[:, :count] = converted[:, :count]
    return out


# --- the song's balance, measured once per song ---------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What the new band is levelled to: the loudness (LUFS, on the song's own scale) of the song's parts it
    replaces, over the whole song and per bar, and the song's vocal-to-band balance."""

    vocals_lufs: float
    band_lufs: float  # the song's accompaniment: every stem but the vocals
    replaced_lufs: float  # the parts the new band replaces (the accompaniment less the kept parts)
    bars: np.ndarray | None  # (n + 1,) bar bounds on the remix's timeline (s); None: no bars found
    bar_lufs: np.ndarray | None  # (n,) the replaced parts' loudness around each bar
    short_term: np.ndarray  # the replaced parts' 3 s loudness every second of the remix's timeline

    @property
    def song_balance_lu(self) -> float | None:
        """The song's vocals against its band, LU (positive: the singer is louder)."""
        return _difference(self.vocals_lufs, self.band_lufs)


def song_reference(vocals: np.ndarray, band: np.ndarray, replaced: np.ndarray, rate: int,
                   downbeats: list[float], duration: float, time_factor: float = 1.0,
                   channels: int = 2) -> Reference:
    """The song's balance from its stems ((channels, n) at `rate`, on the song's own timeline) as the remix's
    `channels` carry them (a mono remix hears the song's stems summed to mono, which moves a wide band against
    a centred singer by up to 3 LU), and the replaced parts' loudness per bar of the remix's timeline
    (`downbeats`, `duration`: after a tempo change, whose `time_factor` is remix seconds per song second)."""
    vocals, band, replaced = (convert_channels(stem, channels) for stem in (vocals, band, replaced))
    bars = bar_bounds(downbeats, duration)
    return Reference(
        vocals_lufs=loudness_lufs(vocals, rate), band_lufs=loudness_lufs(band, rate),
        replaced_lufs=loudness_lufs(replaced, rate), bars=bars,
        bar_lufs=None if bars is None else window_loudness(replaced, rate, bars / time_factor),
        short_term=short_term_loudness(replaced, rate, duration / time_factor))


def bar_bounds(downbeats: list[float], duration: float) -> np.ndarray | None:
    """0, the downbeats inside the song, its end: the bars (a pickup before the first downbeat counts as one);
    None with fewer than two downbeats (no bar to follow)."""
    if len(downbeats) < 2 or duration <= 0:
        return None
    bounds = [0.0]
    for t in sorted(downbeats):
        if bounds[-1] + MIN_BAR_S <= t <= duration - MIN_BAR_S:
            bounds.append(float(t))
    bounds.append(float(duration))
    return np.asarray(bounds)


def window_loudness(samples: np.ndarray, rate: int, bounds: np.ndarray) -> np.ndarray:
    """The loudness (LUFS, -inf for silence) around each span between consecutive `bounds` (s): the span,
    widened about its middle to WINDOW_S where it is shorter, within the signal."""
    length = samples.shape[-1]
    out = np.empty(len(bounds) - 1)
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        middle, half = (start + end) / 2, max((end - start) / 2, WINDOW_S / 2)
        a, b = max(0, int((middle - half) * rate)), min(length, int(math.ceil((middle + half) * rate)))
        out[i] = loudness_lufs(samples[:, a:b], rate) if b > a else -math.inf
    return out


def short_term_loudness(samples: np.ndarray, rate: int, duration: float | None = None) -> np.ndarray:
    """Loudness of 3 s windows (EBU R128's short-term), one every second from the start, LUFS (-inf: silent)."""
    seconds = samples.shape[-1] / rate if duration is None else duration
    middles = np.arange(SHORT_TERM_HOP_S / 2, max(seconds, SHORT_TERM_HOP_S), SHORT_TERM_HOP_S)
    bounds = np.concatenate([middles - SHORT_TERM_HOP_S / 2, [middles[-1] + SHORT_TERM_HOP_S / 2]])
    return window_loudness(samples, rate, bounds)


def dynamics_correlation(band: np.ndarray, rate: int, reference: Reference) -> float | None:
    """Pearson correlation of the band's 3 s loudness with the replaced parts' (silence floored 20 LU below
    each whole), second by second on the remix's timeline; None when either is flat or too short."""
    mine = short_term_loudness(band, rate)
    count = min(len(mine), len(reference.short_term))
    if count < 3:
        return None
    a, b = (_floored(values[:count]) for values in (mine, reference.short_term))
    if a.std() < 1e-6 or b.std() < 1e-6:
        return None
    return float(np.corrcoef(a, b)[0, 1])


# --- the mix --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Levels:
    """The gains that made a remix from its parts: `vocals` and `kept` on the song's stems (one gain, equal,
    for the song's balance), `band` on the new band's parts (a per-sample envelope, or one number), and
    `output` for the normalization of the whole (the least-squares gain it applied to their sum)."""

    vocals: float
    kept: float
    band: np.ndarray | float
    output: float

    def of_vocals(self, vocals: np.ndarray) -> np.ndarray:
        return (vocals * (self.vocals * self.output)).astype(np.float32)

    def of_kept(self, part: np.ndarray) -> np.ndarray:
        return (part * (self.kept * self.output)).astype(np.float32)

    def of_band(self, part: np.ndarray) -> np.ndarray:
        return (part * (np.asarray(self.band, np.float32) * np.float32(self.output))).astype(np.float32)


@dataclass(frozen=True)
class Mixed:
    """A remix (channels, n) within +-1 and how it was made."""

    remix: np.ndarray
    levels: Levels
    report: dict  # analysis.json's mix: the balance asked for, the song's and the remix's, the gains


def mix(band: np.ndarray, vocals: np.ndarray, sample_rate: int, strategy: str = "loudness",
        kept: np.ndarray | None = None, balance: str = "song", reference: Reference | None = None) -> Mixed:
    """The song's vocals and kept parts (summed) over the new band (its parts that play), each (channels, n) at
    `sample_rate`, mixed at the `balance` asked for, then normalized by `strategy`.

    song: the vocals and kept parts at their own (the song's) scale, the band at the loudness of the song's parts
    it replaces, following them bar by bar (`reference`; without one, or when the song has no such parts, 1 LU
    under the vocals, pop's typical balance). published: the band (kept parts included) peak-scaled
    to 0.5 and the vocals to 0.25, summed and peak-scaled (the published predictor's mix)."""
    kept = np.zeros_like(band) if kept is None else kept
    if not (vocals.shape == band.shape == kept.shape):
        raise ValueError(f"band {band.shape}, vocals {vocals.shape} and kept parts {kept.shape} differ in shape")
    if balance not in BALANCES:
        raise ValueError(f"unknown mix balance {balance!r}; choose one of {', '.join(BALANCES)}")
    if balance == "published":
        levels, report = _published_levels(vocals, band, kept), {"balance": balance}
    else:
        levels, report = _song_levels(vocals, band, kept, sample_rate, reference)
    summed = vocals * levels.vocals + kept * levels.kept + band * np.asarray(levels.band, np.float32)
    # The tanh compressor keeps loudness normalization from clipping.
    remix = normalize(summed, sample_rate, strategy, loudness_compressor=True)
    levels = Levels(levels.vocals, levels.kept, levels.band, _gain_between(summed, remix))
    return Mixed(remix, levels, {**report, **_measured(levels, vocals, band, kept, sample_rate, reference)})


def _measured(levels: Levels, vocals: np.ndarray, band: np.ndarray, kept: np.ndarray, rate: int,
              reference: Reference | None) -> dict:
    """What analysis.json reports of a mix: the song's balance and the remix's, the gains in the output, how
    closely the band's loudness follows the replaced parts'."""
    placed = levels.of_band(band)
    return {
        "song_vocals_to_band_lu": _rounded(reference.song_balance_lu) if reference is not None else None,
        "remix_vocals_to_band_lu": _rounded(_difference(loudness_lufs(levels.of_vocals(vocals), rate),
                                                        loudness_lufs(levels.of_kept(kept) + placed, rate))),
        "vocals_gain_db": _rounded(_db(levels.vocals * levels.output)),
        "kept_gain_db": _rounded(_db(levels.kept * levels.output)) if kept.any() else None,
        "band_gain_db": _rounded(_db(levels.output * _typical(levels.band))),
        "dynamics_correlation": _rounded(dynamics_correlation(placed, rate, reference))
        if reference is not None else None,
    }


def _typical(gain: np.ndarray | float) -> float:
    """A gain curve's geometric mean (its level in dB, averaged)."""
    return float(np.exp(np.mean(np.log(np.maximum(np.asarray(gain, np.float64), 1e-12)))))


def _published_levels(vocals: np.ndarray, band: np.ndarray, kept: np.ndarray) -> Levels:
    instrumental = band + kept
    band_gain, vocals_gain = _peak_gain(instrumental, INSTRUMENTAL_LEVEL), _peak_gain(vocals, VOCALS_LEVEL)
    whole = _peak_gain(instrumental * band_gain + vocals * vocals_gain, 1.0)
    return Levels(vocals_gain * whole, band_gain * whole, band_gain * whole, 1.0)


def _song_levels(vocals: np.ndarray, band: np.ndarray, kept: np.ndarray, rate: int,
                 reference: Reference | None) -> tuple[Levels, dict]:
    """The song's stems at gain 1, the band at the replaced parts' loudness, following their bars."""
    band_lufs = loudness_lufs(band, rate)
    target, source = _band_target(reference, vocals, kept, rate)
    if not (math.isfinite(band_lufs) and math.isfinite(target)):
        # Nothing to level (a silent band, or a song with no part to measure): the band as made.
        report = {"balance": "song", "band_reference": "none: " + ("the new band is silent"
                  if not math.isfinite(band_lufs) else "the song has neither band nor vocals to measure")}
        return Levels(1.0, 1.0, 1.0, 1.0), report
    flat = 10 ** ((target - band_lufs) / 20)
    envelope = _bar_envelope(band * flat, rate, reference) if source == "song" else None
    gain: np.ndarray | float = flat
    if envelope is not None:
        curve = envelope_curve(envelope, band.shape[-1], rate)
        # The envelope shapes the band; its whole is set back onto the target.
        shaped = loudness_lufs(band * (flat * curve), rate)
        gain = (flat * 10 ** ((target - shaped) / 20) * curve).astype(np.float32)
    report = {
        "balance": "song", "band_reference": source,
        "envelope": None if envelope is None else {
            "bar_starts": [round(float(t), 4) for t in reference.bars[:-1]],
            "gain_db": [round(float(g), 2) for g in envelope[1]]},
    }
    return Levels(1.0, 1.0, gain, 1.0), report


def _band_target(reference: Reference | None, vocals: np.ndarray, kept: np.ndarray, rate: int
                 ) -> tuple[float, str]:
    """The loudness (LUFS) the new band is set to and what it follows: the song's replaced parts, else (a song
    with no such parts, or none measured) a pop balance with the vocals, else with the kept parts."""
    if reference is not None and math.isfinite(reference.replaced_lufs):
        return reference.replaced_lufs, "song"
    vocals_lufs = loudness_lufs(vocals, rate)
    if math.isfinite(vocals_lufs):
        return vocals_lufs - POP_VOCALS_OVER_BAND_LU, "vocals (the song has no band to match)"
    return loudness_lufs(kept, rate), "kept parts (the song has neither band nor vocals to match)"


def _bar_envelope(band: np.ndarray, rate: int, reference: Reference) -> tuple[np.ndarray, np.ndarray] | None:
    """(bar middles s, gain dB) that make the band's loudness move from bar to bar as the replaced parts'
    did, smoothed over three bars, bounded and step-limited; None without bars or loudness to follow."""
    if reference.bars is None or reference.bar_lufs is None or len(reference.bars) < 3:
        return None
    wanted = _relative(reference.bar_lufs, reference.replaced_lufs)
    played = _relative(window_loudness(band, rate, reference.bars), loudness_lufs(band, rate))
    gains = limit_steps(np.clip(smooth_bars(wanted - played), -BOUND_DB, BOUND_DB))
    return (reference.bars[:-1] + reference.bars[1:]) / 2, gains


def smooth_bars(values: np.ndarray) -> np.ndarray:
    """A triangular moving average over bars (SMOOTHING: the bar and one either side), weights renormalised at
    the ends."""
    half = len(SMOOTHING) // 2
    padded = np.pad(values, half)
    weights = np.pad(np.ones_like(values), half)
    total = np.convolve(padded, SMOOTHING, mode="valid")
    return total / np.convolve(weights, SMOOTHING, mode="valid")


def limit_steps(gains: np.ndarray, step: float = MAX_STEP_DB) -> np.ndarray:
    """Gains (dB) moved, bar by bar from the first, to within `step` of the bar before."""
    out = np.array(gains, dtype=np.float64)
    for i in range(1, len(out)):
        out[i] = np.clip(out[i], out[i - 1] - step, out[i - 1] + step)
    return out


def envelope_curve(envelope: tuple[np.ndarray, np.ndarray], length: int, rate: int) -> np.ndarray:
    """The per-sample gain of a bar envelope: linear in dB between bar middles, flat before the first and after
    the last."""
    middles, gains_db = envelope
    times = np.arange(length, dtype=np.float64) / rate
    return (10 ** (np.interp(times, middles, gains_db) / 20)).astype(np.float32)


def _relative(values: np.ndarray, whole: float) -> np.ndarray:
    """Loudness against the whole, LU, silence floored at FLOOR_LU below it."""
    return np.maximum(np.nan_to_num(values - whole, neginf=-FLOOR_LU), -FLOOR_LU)


def _floored(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 0.0
    return np.maximum(np.nan_to_num(values, neginf=top - FLOOR_LU), top - FLOOR_LU)


def describe(report: dict) -> str:
    """A mix report in one line: the balance, the singer against the band in the song and in the remix, how
    closely the band follows the song's loud and quiet parts."""
    def lu(value):
        return "-" if value is None else f"{value:+.1f} LU"

    follows = report.get("dynamics_correlation")
    return (f"{report['balance']} balance; vocals against the band: song {lu(report.get('song_vocals_to_band_lu'))}, "
            f"remix {lu(report.get('remix_vocals_to_band_lu'))}"
            + ("" if follows is None else f"; the band follows the song's loudness r={follows:.2f}"))


# --- small measures -------------------------------------------------------------------------------------


def _difference(a: float, b: float) -> float | None:
    return a - b if math.isfinite(a) and math.isfinite(b) else None


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 2)


def _db(gain: float) -> float:
    return 20 * math.log10(gain) if gain > 0 else -math.inf


def _peak_gain(audio: np.ndarray, level: float) -> float:
    peak = float(np.abs(audio).max(initial=0.0))
    return level / peak if peak > 0 else 1.0


def _gain_between(before: np.ndarray, after: np.ndarray) -> float:
    energy = float(np.sum(before.astype(np.float64) ** 2))
    return float(np.sum(before.astype(np.float64) * after)) / energy if energy > 0 else 0.0
