"""Beat-sync: move the generated instrumental's downbeats onto the song's, and every beat with them.

Matching follows the original remixer (nearest song downbeat within a
threshold, duplicates dropped, leading offset); on top of it the anchors are
kept strictly increasing, local stretch ratios stay within 0.8..1.25, and
half/double-time detections are reconciled.

Stretching is done bar by bar, each bar starting exactly at its anchor, with
our own WSOLA (`wsola`): windows centred on the time map, one shift for all
channels, and a small penalty on shifting so that only real similarity (a
bass line's phase) moves a window. PyTSMod's WSOLA, used before, takes the
first lag when similarity is flat (silence or a lone click between beats),
which put beats 2-4 of every bar 14-17 ms early (benchmarks/bench_beatsync.py).
Bars are joined with a 3 ms crossfade that ends exactly at the anchor, so the
downbeat itself is untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

# (segment (channels, n), input samples per output sample, output length) -> (channels, output length)
Stretcher = Callable[[np.ndarray, float, int], np.ndarray]

MIN_RATIO, MAX_RATIO = 0.8, 1.25
MIN_ANCHOR_GAP_S = 0.25
CROSSFADE_S = 0.003
DEFAULT_THRESHOLD_S = 0.75
THRESHOLD_BEATS = 1.1
WSOLA_WINDOW = 1024
WSOLA_TOLERANCE = 512
SHIFT_PENALTY = 0.1  # similarity given up per full tolerance of shift (see wsola)


def default_threshold(bpm: float | None) -> float:
    """1.1 beats at the song's tempo, or 0.75 s when the tempo is unknown."""
    if bpm is None or not np.isfinite(bpm) or bpm <= 0:
        return DEFAULT_THRESHOLD_S
    return THRESHOLD_BEATS * 60.0 / bpm


@dataclass(frozen=True)
class SyncPlan:
    """Anchors in seconds: row 0 generated time, row 1 where it lands in the output."""

    anchors: np.ndarray  # (2, k), strictly increasing rows

    def map_time(self, seconds: np.ndarray | float) -> np.ndarray:
        """Where generated time `seconds` ends up; slope 1 before the first and after the last anchor."""
        source, target = self.anchors
        t = np.asarray(seconds, dtype=np.float64)
        inside = np.interp(t, source, target)
        before = t + (target[0] - source[0])
        after = t + (target[-1] - source[-1])
        return np.where(t < source[0], before, np.where(t > source[-1], after, inside))


def _clean(times) -> np.ndarray:
    t = np.asarray(times if times is not None else [], dtype=np.float64).ravel()
    return np.unique(t[np.isfinite(t) & (t >= 0)])


def _phases(times: np.ndarray) -> list[np.ndarray]:
    return [times[0::2], times[1::2]]


def _reconcile_tempo_octave(generated: np.ndarray, target: np.ndarray, limit: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """If one side found twice as many downbeats (half/double time), keep every
    other one, in the phase that matches the other side best."""
    ratio = np.median(np.diff(generated)) / np.median(np.diff(target))
    if 1.7 < ratio < 2.35 and len(target) >= 4:
        options = [(generated, phase) for phase in _phases(target)]
    elif 1 / 2.35 < ratio < 1 / 1.7 and len(generated) >= 4:
        options = [(phase, target) for phase in _phases(generated)]
    else:
        return generated, target
    return max(options, key=lambda option: _match_quality(*option, limit))


def _match_quality(generated: np.ndarray, target: np.ndarray, limit: float) -> tuple[int, float]:
    pairs, _ = _pairs(generated, target, limit)
    distances = [d for d, _, _ in pairs.values()]
    return len(pairs), -float(np.mean(distances)) if distances else 0.0


def _pairs(generated: np.ndarray, target: np.ndarray, limit: float
           ) -> tuple[dict[int, tuple[float, float, float]], list[tuple[float, float]]]:
    """Matched pairs by song-downbeat index -> (distance, g, t), and unmatched generated downbeats."""
    pairs: dict[int, tuple[float, float, float]] = {}
    outliers = []
    for g, predicted in zip(generated, _predicted_targets(generated, target, limit)):
        j = int(np.abs(target - predicted).argmin())
        distance = abs(target[j] - predicted)
        if distance > limit:
            outliers.append((g, g))
        elif j not in pairs or distance < pairs[j][0]:  # two on one bar: keep the closer
            pairs[j] = (distance, g, target[j])
    return pairs, outliers


def match_downbeats(
    generated_downbeats,
    target_downbeats,
    threshold: float | None = None,
    bpm: float | None = None,
) -> np.ndarray:
    """Anchor pairs (2, k) in seconds: generated downbeat -> song downbeat.

    A generated downbeat with no song downbeat within `threshold` keeps its
    own time. Fewer than two downbeats on either side gives no anchors.
    """
    generated, target = _clean(generated_downbeats), _clean(target_downbeats)
    if len(generated) < 2 or len(target) < 2:
        return np.zeros((2, 0))
    limit = default_threshold(bpm) if threshold is None else float(threshold)  # > 0: the request checked it
    generated, target = _reconcile_tempo_octave(generated, target, limit)
    pairs, outliers = _pairs(generated, target, limit)
    candidates = sorted([(g, t, True) for _, g, t in pairs.values()] + [(g, t, False) for g, t in outliers])
    return _longest_consistent_chain(candidates)


def _predicted_targets(generated: np.ndarray, target: np.ndarray, limit: float) -> list[float]:
    """Where each generated downbeat should land, tracking the tempo ratio bar by bar.

    The original compared each generated downbeat with the song's directly, so
    a few percent of tempo difference drifted past the threshold within a
    minute. Here the expected position follows the last matched bar, scaled
    by the ratio of the two sides' bar lengths, so drift never accumulates.
    """
    ratio = float(np.median(np.diff(target)) / np.median(np.diff(generated)))
    predictions, last = [], None
    for g in generated:
        predicted = g if last is None else last[1] + (g - last[0]) * ratio
        predictions.append(predicted)
        j = int(np.abs(target - predicted).argmin())
        if abs(target[j] - predicted) <= limit:
            last = (g, target[j])
    return predictions


def _longest_consistent_chain(candidates: list[tuple[float, float, bool]]) -> np.ndarray:
    """Keep the best chain of anchors that increases on both axes with sane stretch ratios.

    Dynamic programming over the (few hundred at most) candidates; matched
    anchors count more than outliers kept in place.
    """
    n = len(candidates)
    if n == 0:
        return np.zeros((2, 0))
    score = np.array([1.0 if matched else 0.5 for _, _, matched in candidates])
    best = score.copy()
    previous = np.full(n, -1)
    for i, (gi, ti, _) in enumerate(candidates):
        for j in range(i):
            gj, tj, _ = candidates[j]
            dg, dt = gi - gj, ti - tj
            if dg < MIN_ANCHOR_GAP_S or dt < MIN_ANCHOR_GAP_S or not MIN_RATIO <= dt / dg <= MAX_RATIO:
                continue
            if best[j] + score[i] > best[i]:
                best[i], previous[i] = best[j] + score[i], j
    chain, i = [], int(best.argmax())
    while i >= 0:
        chain.append(candidates[i][:2])
        i = int(previous[i])
    return np.array(chain[::-1]).T


def plan_sync(generated_downbeats, target_downbeats, threshold: float | None = None,
              bpm: float | None = None) -> SyncPlan | None:
    """The time map from the generated music's downbeats to the song's (seconds), or None when
    fewer than two pairs match within the threshold."""
    anchors = match_downbeats(generated_downbeats, target_downbeats, threshold, bpm)
    return SyncPlan(anchors) if anchors.shape[1] > 0 else None


def sync_to_downbeats(
    audio: np.ndarray,
    sample_rate: int,
    generated_downbeats,
    target_downbeats,
    threshold: float | None = None,
    bpm: float | None = None,
    stretcher: Stretcher | None = None,
    search_channels: int | None = None,
) -> np.ndarray:
    """Time-warp `audio` (channels, n) at `sample_rate` so its downbeats (seconds) land on
    `target_downbeats` (seconds). `search_channels`: the first channels (the mix) choose each window's shift
    and the rest (stems stacked under it) follow it.

    Returns float32 of exactly the input's shape. Without usable downbeats the
    audio comes back unchanged. `stretcher`: how a bar is stretched (default
    our `wsola`; benchmarks compare others).
    """
    audio = np.nan_to_num(np.atleast_2d(np.asarray(audio, dtype=np.float32)))
    plan = plan_sync(generated_downbeats, target_downbeats, threshold, bpm)
    if plan is None:
        return audio.copy()
    if stretcher is None and search_channels is not None:
        # Parts stacked under the mix (stems) follow the mix's window shifts: one time map for all.
        stretcher = functools.partial(wsola, search_channels=search_channels)
    return render(audio, sample_rate, plan, stretcher)


def render(audio: np.ndarray, sample_rate: int, plan: SyncPlan, stretcher: Stretcher | None = None) -> np.ndarray:
    """Apply a plan: copy before the first and after the last anchor, WSOLA per bar between."""
    channels, length = audio.shape
    source = np.round(plan.anchors[0] * sample_rate).astype(int)
    target = np.round(plan.anchors[1] * sample_rate).astype(int)
    keep = (source < length) & (target < length)
    source, target = source[keep], target[keep]
    if len(source) == 0:
        return audio.copy()
    fade = max(1, int(CROSSFADE_S * sample_rate))
    out = np.zeros_like(audio)

    # Lead: shifted copy (silence where the song starts before the music).
    _place(out, _copy(audio, source[0] - target[0], target[0]), 0, fade_in=0, fade_out=fade)
    for k in range(len(source) - 1):
        bar = _stretch_bar(audio, source[k], source[k + 1], target[k + 1] - target[k], stretcher or wsola)
        lead_in = _copy(audio, source[k] - fade, fade)
        _place(out, np.concatenate([lead_in, bar], axis=1), target[k] - fade, fade_in=fade, fade_out=fade)
    # Tail: shifted copy to the end (silence if the music runs out).
    tail = _copy(audio, source[-1] - fade, length - target[-1] + fade)
    _place(out, tail, target[-1] - fade, fade_in=fade, fade_out=0)
    return out


def _copy(audio: np.ndarray, start: int, count: int) -> np.ndarray:
    """audio[:, start:start+count] with zeros outside the signal."""
    piece = np.zeros((audio.shape[0], max(count, 0)), np.float32)
    lo, hi = max(start, 0), min(start + count, audio.shape[1])
    if hi > lo:
        piece[:, lo - start:hi - start] = audio[:, lo:hi]
    return piece


def _stretch_bar(audio: np.ndarray, start: int, end: int, out_length: int, stretcher: Stretcher) -> np.ndarray:
    """Samples start..end stretched to out_length (+ a crossfade's worth beyond), first sample exact."""
    in_length = end - start
    if in_length == out_length:
        return _copy(audio, start, out_length)
    # The last windows read past the bar's end. Feeding them the bar's own end
    # mirrored (instead of the next bar) keeps the next downbeat's attack from
    # leaking in early, and avoids the level dip zeros would cause.
    bar = _copy(audio, start, in_length)
    context = min(WSOLA_WINDOW + 2 * WSOLA_TOLERANCE, in_length)
    segment = np.concatenate([bar, bar[:, ::-1][:, :context]], axis=1)
    return stretcher(segment, in_length / out_length, out_length)


def wsola(audio: np.ndarray, ratio: float, out_length: int, window: int = WSOLA_WINDOW,
          tolerance: int = WSOLA_TOLERANCE, penalty: float = SHIFT_PENALTY,
          search_channels: int | None = None) -> np.ndarray:
    """WSOLA time-stretch: output sample t reads input sample t * ratio, give or take each window's shift.

    Windows are centred on their positions (output t, input t * ratio), so a
    transient lands where the time map puts it. Each window's shift (within
    +-tolerance) maximises the normalised similarity with the previous window's
    natural continuation, minus `penalty` times the shift's share of the
    tolerance: periodic sound (bass) still locks its phase, while flat or
    absent similarity (silence, a lone click, noise) leaves the shift at zero
    instead of at the edge of the search, which is what put PyTSMod's beats
    14-17 ms early inside a bar. One shift for all channels: one time map.
    """
    channels, length = audio.shape
    half, hop = window // 2, window // 2
    pad = window + tolerance
    padded = np.pad(audio.astype(np.float32), ((0, 0), (pad, pad + int(np.ceil(ratio * hop)) + window)))
    mono = padded[:search_channels].mean(axis=0)  # the shifts are chosen on these channels, applied to all
    weights = np.hanning(window + 1)[:window].astype(np.float32)  # periodic Hann: sums to 1 at half overlap
    centres = np.arange(0, out_length + hop, hop)
    out = np.zeros((channels, out_length + 2 * window), np.float32)
    norm = np.zeros(out_length + 2 * window, np.float32)
    fft_size = 1 << int(np.ceil(np.log2(2 * window + 2 * tolerance)))
    lags = np.arange(2 * tolerance + 1)
    cost = penalty * np.abs(lags - tolerance) / max(tolerance, 1)
    shift, previous = 0, None
    for centre in centres:
        source = int(round(centre * ratio)) + pad  # the window's centre in padded input coordinates
        if previous is not None:
            shift = _best_shift(mono, previous + hop, source, half, tolerance, fft_size, lags, cost)
        begin = source + shift - half
        out[:, centre:centre + window] += padded[:, begin:begin + window] * weights
        norm[centre:centre + window] += weights
        previous = source + shift
    norm = np.maximum(norm, 1e-3)
    # Output coordinates were offset by half a window (centres at 0 write from -half).
    return (out[:, half:half + out_length] / norm[half:half + out_length]).astype(np.float32)


def _best_shift(mono: np.ndarray, natural: int, source: int, half: int, tolerance: int, fft_size: int,
                lags: np.ndarray, cost: np.ndarray) -> int:
    """The shift of the window centred at `source` most similar to the one centred at `natural`."""
    window = 2 * half
    reference = mono[natural - half:natural + half]
    region = mono[source - half - tolerance:source + half + tolerance]
    reference_energy = float(reference @ reference)
    if reference_energy < 1e-12:
        return 0
    spectrum = np.fft.rfft(region, fft_size) * np.conj(np.fft.rfft(reference, fft_size))
    correlation = np.fft.irfft(spectrum, fft_size)[:len(lags)]
    squares = np.concatenate([[0.0], np.cumsum(region.astype(np.float64) ** 2)])
    energy = squares[lags + window] - squares[lags]
    similarity = correlation / np.sqrt(np.maximum(energy, 1e-12) * reference_energy)
    similarity[energy < 1e-12] = 0.0
    return int(np.argmax(similarity - cost)) - tolerance


def _place(out: np.ndarray, piece: np.ndarray, at: int, fade_in: int, fade_out: int) -> None:
    """Add `piece` into `out` at sample `at` with linear fades (complementary at joins)."""
    size = piece.shape[1]
    gain = np.ones(size, np.float32)
    if fade_in:
        gain[:fade_in] = ((np.arange(fade_in) + 0.5) / fade_in)[:size]
    if fade_out and size:
        ramp = 1 - (np.arange(fade_out) + 0.5) / fade_out
        count = min(fade_out, size)  # a piece shorter than the fade takes the ramp's end
        gain[-count:] *= ramp[-count:]
    lo, hi = max(at, 0), min(at + piece.shape[1], out.shape[1])
    if hi > lo:
        out[:, lo:hi] += piece[:, lo - at:hi - at] * gain[lo - at:hi - at]
