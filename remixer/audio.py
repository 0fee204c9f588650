"""Audio in and out: decode uploads, resample, normalize, encode.

Every stage gets its samples from one decode of the upload, so beat times do
not shift between stages because of different decoders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from remixer.errors import RemixerError

log = logging.getLogger(__name__)

MAX_DURATION_S = float(os.environ.get("REMIXER_MAX_DURATION", 600))
MAX_UPLOAD_BYTES = int(os.environ.get("REMIXER_MAX_UPLOAD_MB", 200)) * 1024 * 1024
DECODE_TIMEOUT_S = float(os.environ.get("REMIXER_DECODE_TIMEOUT", 300))
ACCEPTED = "wav, flac, ogg/vorbis, opus, mp3, m4a/aac, aiff (or a video file with an audio track)"

# Demuxers ffmpeg may use on an upload. Playlist-style demuxers (hls, concat,
# dash, ...) are left out on purpose: they would make ffmpeg open other local
# files or URLs named inside the upload.
_DEMUXERS = (
    "wav,w64,flac,ogg,mp3,mov,mp4,m4a,3gp,3g2,mj2,aac,aiff,matroska,webm,"
    "caf,au,avi,asf,mpeg,mpegts,amr,ac3,eac3,wv,ape,tta,mpc,mpc8,dts,truehd"
)
_INPUT_SAFETY = ["-protocol_whitelist", "file,pipe", "-format_whitelist", _DEMUXERS]

# pyloudnorm measures over 400 ms blocks; shorter clips are tiled up to this.
_LOUDNESS_MIN_S = 0.5
# Share of non-finite samples above which a file is treated as corrupt
# rather than repaired.
_MAX_NONFINITE_SHARE = 0.01


class AudioError(RemixerError):
    """Bad or unreadable audio, with a message a user can act on."""


@dataclass(frozen=True)
class Audio:
    """Samples shaped (channels, n), float32, with their sample rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.samples.shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        """1 or 2."""
        return self.samples.shape[0]


@dataclass(frozen=True)
class _Probe:
    sample_rate: int
    channels: int
    duration: float | None
    audio_streams: int


def ffmpeg_available() -> bool:
    """Whether ffmpeg and ffprobe are on PATH (else soundfile reads wav, flac, ogg, mp3)."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    channels: int | None = None,
    max_duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, n); resample / convert channels when asked."""
    audio = decode(path, max_duration=max_duration)
    if channels is not None:
        audio = Audio(convert_channels(audio.samples, channels), audio.sample_rate)
    if sample_rate is not None:
        audio = Audio(resample(audio.samples, audio.sample_rate, sample_rate), sample_rate)
    return audio.samples, audio.sample_rate


def decode(path: str | os.PathLike, max_duration: float | None = None) -> Audio:
    """Decode an upload: Audio (channels, samples) float32 at its own sample rate, 1 or 2 channels (more are
    downmixed). Raises AudioError, naming the file, for a missing, empty, too large, too long, truncated or
    unreadable one."""
    limit = MAX_DURATION_S if max_duration is None else max_duration
    file = _check_file(Path(path))
    if ffmpeg_available():
        audio = _decode_ffmpeg(file, limit)
    else:
        audio = _decode_soundfile(file, limit)
    samples = _repair_nonfinite(audio.samples, file.name)
    if samples.shape[-1] == 0:
        raise AudioError(f"{file.name}: the file holds no audio samples (zero length).")
    return Audio(samples, audio.sample_rate)


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise AudioError(f"{path.name}: no such file.")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path.name}: the file is empty. Upload an audio file ({ACCEPTED}).")
    if size > MAX_UPLOAD_BYTES:
        raise AudioError(
            f"{path.name}: the file is {size / 2**20:.0f} MB; the limit is "
            f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    return path.resolve()


def _run(args: list[str], what: str, name: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{name}: {what} took longer than {DECODE_TIMEOUT_S:.0f} s; giving up.") from None


def _not_audio(path: Path, detail: str = "") -> AudioError:
    detail = _named(path, detail)
    reason = f" ({detail})" if detail else ""
    return AudioError(f"{path.name}: not a readable audio file{reason}. Accepted: {ACCEPTED}.")


def _named(path: Path, detail: str) -> str:
    """A decoder's message with the user's file by its name: ffmpeg and libsndfile name the whole path, which
    for an upload is the server's temporary folder and means nothing to the user."""
    for where in sorted({str(path), str(path.resolve())}, key=len, reverse=True):
        detail = detail.replace(where, path.name)
    return detail


def _probe(path: Path) -> _Probe:
    result = _run(
        ["ffprobe", "-v", "error", *_INPUT_SAFETY, "-print_format", "json",
         "-show_format", "-show_streams", f"file:{path}"],
        "reading the file's header", path.name,
    )
    if result.returncode != 0:
        raise _not_audio(path, _last_line(result.stderr))
    info = json.loads(result.stdout or b"{}")
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(f"{path.name}: the file has no audio stream. Accepted: {ACCEPTED}.")
    first = streams[0]
    duration = _float_or_none(info.get("format", {}).get("duration"))
    if duration is None:
        duration = _float_or_none(first.get("duration"))
    sample_rate = int(first.get("sample_rate") or 0)
    channels = int(first.get("channels") or 0)
    if sample_rate <= 0 or channels <= 0:
        raise _not_audio(path, "the audio stream has no sample rate or channels")
    return _Probe(sample_rate, channels, duration, len(streams))


def _decode_ffmpeg(path: Path, limit: float) -> Audio:
    probe = _probe(path)
    if probe.duration is not None and probe.duration > limit + 1:
        raise _too_long(path.name, probe.duration, limit)
    out_channels = min(probe.channels, 2)
    if probe.audio_streams > 1:
        log.warning("%s has %d audio streams; using the first", path.name, probe.audio_streams)
    # -t caps the work even when a header lies about its length.
    args = [
        "ffmpeg", "-nostdin", "-v", "error", *_INPUT_SAFETY, "-i", f"file:{path}",
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-t", f"{limit + 1:.3f}",
        "-ac", str(out_channels), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]
    result = _run(args, "decoding", path.name)
    if result.returncode != 0:
        raise _not_audio(path, _last_line(result.stderr) or "decoder failed")
    data = np.frombuffer(result.stdout, dtype="<f4")
    data = data[: data.size - data.size % out_channels]
    samples = data.reshape(-1, out_channels).T.copy()
    decoded = samples.shape[-1] / probe.sample_rate
    if decoded > limit + 0.5:
        raise _too_long(path.name, decoded, limit)
    # Containers that declare their length (mp3 Xing header, mp4, flac, ogg)
    # reveal a cut-off upload: far fewer samples than the header promised.
    if probe.duration and decoded < 0.9 * min(probe.duration, limit) - 0.1:
        raise AudioError(
            f"{path.name}: the file is truncated or corrupt: it declares "
            f"{probe.duration:.1f} s but only {decoded:.1f} s could be decoded."
        )
    if result.stderr.strip():
        log.warning("%s: decoder reported: %s", path.name, _last_line(result.stderr))
    return Audio(samples, probe.sample_rate)


def _decode_soundfile(path: Path, limit: float) -> Audio:
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for unknown formats
        raise AudioError(
            f"{path.name}: ffmpeg is not installed and soundfile cannot read this file "
            f"({_named(path, str(error))}). Without ffmpeg only wav, flac, ogg and mp3 are read; install "
            "ffmpeg (apt-get install ffmpeg) for m4a/aac, opus, aiff and video files."
        ) from None
    if info.duration > limit + 1:
        raise _too_long(path.name, info.duration, limit)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise _not_audio(path, str(error)) from None
    return Audio(convert_channels(data.T, min(data.shape[1], 2)), sample_rate)


def _repair_nonfinite(samples: np.ndarray, name: str) -> np.ndarray:
    """Zero a few NaN/inf samples (logged); reject files made mostly of them."""
    bad = ~np.isfinite(samples)
    count = int(bad.sum())
    if count == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    if count > _MAX_NONFINITE_SHARE * samples.size:
        raise AudioError(
            f"{name}: {count} of {samples.size} samples are NaN or infinite; the file is corrupt."
        )
    log.warning("%s: replaced %d NaN/infinite samples with silence", name, count)
    return np.where(bad, 0.0, samples).astype(np.float32)


def _too_long(name: str, duration: float, limit: float) -> AudioError:
    return AudioError(
        f"{name}: the song is {duration:.0f} s long; the limit is {limit:.0f} s. "
        "Trim it and try again."
    )


def _float_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) along the last axis."""
    if orig_sr == target_sr:
        return samples.astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(samples.T), orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def convert_channels(samples: np.ndarray, channels: int) -> np.ndarray:
    """Mono <-> stereo; more channels are averaged down to what is asked."""
    samples = np.atleast_2d(samples).astype(np.float32, copy=False)
    have = samples.shape[0]
    if have == channels:
        return samples
    if channels == 1:
        return samples.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(samples, channels, axis=0)
    if channels == 2:
        # Odd channels to the left, even to the right: a neutral downmix for
        # layouts we know nothing about (ffmpeg downmixes known layouts itself).
        return np.stack([samples[0::2].mean(axis=0), samples[1::2].mean(axis=0)])
    raise AudioError(f"cannot convert {have} channels to {channels}")


# --- normalization (audiocraft's audiocraft/data/audio_utils.py normalize_audio) ---

PEAK_HEADROOM_DB = 1.0
RMS_HEADROOM_DB = 18.0
LOUDNESS_TARGET_LUFS = -14.0
STRATEGIES = ("loudness", "clip", "peak", "rms")


def _db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def loudness_lufs(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770); -inf for silence."""
    import pyloudnorm

    data = samples.T.astype(np.float64)
    minimum = int(_LOUDNESS_MIN_S * sample_rate)
    if data.shape[0] < minimum:
        data = np.tile(data, (int(np.ceil(minimum / max(data.shape[0], 1))), 1))
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(data))


def normalize(
    samples: np.ndarray,
    sample_rate: int,
    strategy: str = "loudness",
    loudness_compressor: bool = False,
) -> np.ndarray:
    """Normalize (channels, n) float audio; never returns NaN/inf."""
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak_limit = _db_to_gain(-PEAK_HEADROOM_DB)
    if strategy == "clip":
        return np.clip(samples, -peak_limit, peak_limit)
    if strategy == "peak":
        peak = float(np.abs(samples).max(initial=0.0))
        return samples * (peak_limit / peak) if peak > 0 else samples
    if strategy == "rms":
        rms = float(np.sqrt(np.mean(samples.mean(axis=0) ** 2))) if samples.size else 0.0
        scaled = samples * (_db_to_gain(-RMS_HEADROOM_DB) / rms) if rms > 0 else samples
        return np.clip(scaled, -1.0, 1.0)
    if strategy == "loudness":
        return np.clip(_normalize_loudness(samples, sample_rate, loudness_compressor), -1.0, 1.0)
    raise AudioError(f"unknown normalization strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def _normalize_loudness(samples: np.ndarray, sample_rate: int, compressor: bool) -> np.ndarray:
    energy = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
    if energy < 2e-3:
        return samples
    measured = loudness_lufs(samples, sample_rate)
    if not np.isfinite(measured):
        return samples
    out = samples * _db_to_gain(LOUDNESS_TARGET_LUFS - measured)
    if compressor:
        out = np.tanh(out)
    return out.astype(np.float32)


# --- encoding -----------------------------------------------------------------

FORMATS = ("wav", "mp3")


def write_audio(samples: np.ndarray, sample_rate: int, path: str | os.PathLike, format: str = "wav") -> Path:
    """Write 16-bit PCM wav or 320 kbps CBR mp3; samples are clipped to +-1."""
    if format not in FORMATS:
        raise AudioError(f"unknown output format {format!r}; choose wav or mp3")
    path = Path(path)
    data = np.clip(np.nan_to_num(np.atleast_2d(samples)), -1.0, 1.0).T
    tmp = path.with_name(path.name + ".part")
    if format == "wav":
        sf.write(tmp, data, sample_rate, format="WAV", subtype="PCM_16")
    else:
        sf.write(
            tmp, data, sample_rate, format="MP3", subtype="MPEG_LAYER_III",
            bitrate_mode="CONSTANT", compression_level=0.0,
        )
    os.replace(tmp, path)
    return path
