"""Decoding, resampling, normalization and encoding (remixer.audio)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from remixer import audio
from remixer.audio import AudioError, load_audio, normalize, write_audio
from tests.conftest import dominant_frequency, ffmpeg, tone

pytestmark = pytest.mark.usefixtures("require_ffmpeg")

# Encoded formats: (file name, ffmpeg codec args, sample rate the decoder gives back).
ENCODED = [
    ("song.flac", [], 44100),
    ("song.ogg", ["-c:a", "libvorbis"], 44100),
    ("song.opus", ["-c:a", "libopus"], 48000),
    ("song.mp3", ["-c:a", "libmp3lame"], 44100),
    ("song.m4a", ["-c:a", "aac"], 44100),
    ("song.aiff", [], 44100),
]


@pytest.mark.parametrize("name,codec,expected_sr", ENCODED)
def test_decodes_every_common_format(tmp_path, source_wav, name, codec, expected_sr):
    path = tmp_path / name
    ffmpeg("-i", str(source_wav), *codec, str(path))
    samples, sr = load_audio(path)
    assert sr == expected_sr
    assert samples.dtype == np.float32 and samples.shape[0] == 1
    # Lossy codecs add priming samples; the length is right within 60 ms.
    assert abs(samples.shape[1] / sr - 2.0) < 0.06
    assert abs(dominant_frequency(samples, sr) - 440) < 2


@pytest.mark.parametrize("subtype,tolerance", [
    ("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-6), ("FLOAT", 0), ("DOUBLE", 1e-7),
])
def test_wav_bit_depths_decode_to_the_same_samples(tmp_path, subtype, tolerance):
    original = tone(seconds=0.5, channels=2)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, original.T, 44100, subtype=subtype)
    samples, sr = load_audio(path)
    assert sr == 44100 and samples.shape == original.shape
    assert np.max(np.abs(samples - original)) <= tolerance


@pytest.mark.parametrize("name", ["upload", "upload.wav", "upload.txt"])
def test_content_decides_not_the_extension(tmp_path, source_wav, name):
    mp3 = tmp_path / "real.mp3"
    ffmpeg("-i", str(source_wav), str(mp3))
    path = tmp_path / name
    path.write_bytes(mp3.read_bytes())
    samples, sr = load_audio(path)
    assert sr == 44100 and abs(dominant_frequency(samples, sr) - 440) < 2


def test_video_with_audio_track_decodes_the_audio(tmp_path, source_wav):
    video = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=2:s=64x64", "-i", str(source_wav),
           "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(video))
    samples, sr = load_audio(video)
    assert abs(samples.shape[1] / sr - 2.0) < 0.06
    assert abs(dominant_frequency(samples, sr) - 440) < 2


def test_first_of_two_audio_streams_is_used(tmp_path, source_wav):
    other = tmp_path / "other.wav"
    sf.write(other, tone(freq=1000, channels=1).T, 44100)
    both = tmp_path / "two.mkv"
    ffmpeg("-i", str(source_wav), "-i", str(other), "-map", "0:a", "-map", "1:a", "-c:a", "flac", str(both))
    samples, sr = load_audio(both)
    assert abs(dominant_frequency(samples, sr) - 440) < 2


def test_resample_and_channel_conversion_on_load(source_wav):
    samples, sr = load_audio(source_wav, sample_rate=32000, channels=2)
    assert sr == 32000 and samples.shape == (2, 64000)
    assert np.array_equal(samples[0], samples[1])
    assert abs(dominant_frequency(samples, sr) - 440) < 2
    # A band-limited resampler keeps the tone's level (no droop, no aliasing energy).
    rms = np.sqrt(np.mean(samples[0, 3200:-3200] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_six_channels_are_downmixed_to_stereo(tmp_path):
    six = np.stack([np.full(44100, 0.1 * (c + 1), dtype=np.float32) for c in range(6)])
    path = tmp_path / "surround.wav"
    sf.write(path, six.T, 44100, subtype="FLOAT")
    samples, sr = load_audio(path)
    assert samples.shape == (2, 44100)
    assert np.all(np.isfinite(samples)) and np.abs(samples).max() <= 1.0
    mono, _ = load_audio(path, channels=1)
    assert mono.shape == (1, 44100)


def test_convert_channels_rules():
    stereo = tone(seconds=0.1)
    assert np.allclose(audio.convert_channels(stereo, 1)[0], stereo.mean(axis=0))
    assert audio.convert_channels(stereo[:1], 2).shape == (2, stereo.shape[1])
    four = np.stack([np.full(10, v, np.float32) for v in (0.1, 0.2, 0.3, 0.4)])
    assert np.allclose(audio.convert_channels(four, 2), [[0.2] * 10, [0.3] * 10])


# --- bad input ---------------------------------------------------------------

def _expect_error(path: Path, pattern: str, **kwargs) -> None:
    with pytest.raises(AudioError, match=pattern) as caught:
        load_audio(path, **kwargs)
    assert isinstance(caught.value, ValueError)
    assert path.name in str(caught.value)
    # The user's file by its name: for an upload its folder is the server's temporary one.
    assert str(path.parent) not in str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    _expect_error(path, "empty")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my lyrics, not a song\n" * 20)
    _expect_error(path, "not a readable audio file.*Accepted: wav")


def test_truncated_mp3(tmp_path, source_wav):
    mp3 = tmp_path / "full.mp3"
    ffmpeg("-i", str(source_wav), str(mp3))
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    _expect_error(cut, "truncated")


def test_wav_header_without_data(tmp_path):
    path = tmp_path / "header.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44100)
    _expect_error(path, "no audio|zero length|not a readable")


def test_file_without_audio_stream(tmp_path):
    video = tmp_path / "silent_film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=64x64", "-c:v", "mpeg4", str(video))
    _expect_error(video, "no audio stream")


def test_duration_limit(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((44100 * 5, 1), np.float32), 44100)
    _expect_error(path, r"5 s long; the limit is 3 s", max_duration=3)
    samples, _ = load_audio(path, max_duration=10)
    assert samples.shape == (1, 44100 * 5)


def test_huge_declared_length_is_caught_without_decoding_it(tmp_path):
    path = tmp_path / "liar.wav"
    sf.write(path, tone(seconds=0.5, channels=1).T, 44100, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    samples, sr = load_audio(path)  # ffmpeg reads what is there: 0.5 s, not hours
    assert samples.shape[1] == 22050


def test_a_few_nonfinite_samples_are_zeroed(tmp_path):
    samples = tone(seconds=1.0, channels=1)
    samples[0, 100] = np.nan
    samples[0, 200] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, samples.T, 44100, subtype="FLOAT")
    decoded, _ = load_audio(path)
    assert np.all(np.isfinite(decoded))
    assert decoded[0, 100] == 0 and decoded[0, 200] == 0
    assert decoded[0, 101] == samples[0, 101]


def test_mostly_nonfinite_audio_is_rejected(tmp_path):
    samples = np.full((1, 44100), np.nan, np.float32)
    path = tmp_path / "nan.wav"
    sf.write(path, samples.T, 44100, subtype="FLOAT")
    _expect_error(path, "NaN or infinite")


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.mp3", "no such file")


def test_soundfile_fallback_without_ffmpeg(tmp_path, source_wav, monkeypatch):
    m4a = tmp_path / "song.m4a"
    ffmpeg("-i", str(source_wav), "-c:a", "aac", str(m4a))
    monkeypatch.setattr(audio, "ffmpeg_available", lambda: False)
    samples, sr = load_audio(source_wav)
    assert sr == 44100 and abs(dominant_frequency(samples, sr) - 440) < 2
    _expect_error(m4a, "ffmpeg is not installed.*install ffmpeg")


# --- normalization -----------------------------------------------------------

def _ebur128_lufs(samples: np.ndarray, sample_rate: int, tmp_path: Path) -> float:
    """Integrated loudness measured by ffmpeg's own EBU R128 meter (independent of pyloudnorm)."""
    path = tmp_path / "measure.wav"
    sf.write(path, samples.T, sample_rate, subtype="FLOAT")
    out = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), "-af", "ebur128",
                          "-f", "null", "-"], capture_output=True, text=True).stderr
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", out)[-1])


def _program(seconds: float = 5.0, sample_rate: int = 32000) -> np.ndarray:
    rng = np.random.default_rng(0)
    music = tone(220, seconds, sample_rate, amplitude=0.05)
    return (music + 0.01 * rng.standard_normal(music.shape)).astype(np.float32)


def test_loudness_reaches_minus_14_lufs(tmp_path):
    out = normalize(_program(), 32000, "loudness")
    assert _ebur128_lufs(out, 32000, tmp_path) == pytest.approx(-14.0, abs=0.1)


def test_loudness_compressor_applies_tanh():
    samples = _program()
    plain = normalize(samples, 32000, "loudness")
    squashed = normalize(samples, 32000, "loudness", loudness_compressor=True)
    assert np.allclose(squashed, np.tanh(plain), atol=1e-6)


def test_loudness_leaves_near_silence_alone():
    quiet = tone(amplitude=1e-3, sample_rate=32000)
    assert np.array_equal(normalize(quiet, 32000, "loudness"), quiet)


def test_peak_lands_at_minus_1_dbfs():
    out = normalize(_program(), 32000, "peak")
    assert 20 * np.log10(np.abs(out).max()) == pytest.approx(-1.0, abs=0.01)


def test_clip_clamps_without_gain():
    loud = tone(amplitude=1.5, sample_rate=32000)
    out = normalize(loud, 32000, "clip")
    assert np.abs(out).max() == pytest.approx(10 ** (-1 / 20), abs=1e-6)
    quiet = tone(amplitude=0.2, sample_rate=32000)
    assert np.array_equal(normalize(quiet, 32000, "clip"), quiet)


def test_rms_reaches_minus_18_dbfs():
    out = normalize(_program(), 32000, "rms")
    rms = np.sqrt(np.mean(out.mean(axis=0) ** 2))
    assert 20 * np.log10(rms) == pytest.approx(-18.0, abs=0.1)
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("strategy", audio.STRATEGIES)
@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.3, 2.0])
def test_silence_and_short_clips_never_give_nan(strategy, seconds):
    silence = np.zeros((2, int(seconds * 32000)), np.float32)
    out = normalize(silence, 32000, strategy)
    assert out.shape == silence.shape and np.all(out == 0)
    short = tone(seconds=seconds, sample_rate=32000, amplitude=0.3)
    out = normalize(short, 32000, strategy, loudness_compressor=True)
    assert out.shape == short.shape and np.all(np.isfinite(out)) and np.abs(out).max(initial=0) <= 1


def test_short_clip_loudness_is_measured_by_tiling():
    clip = tone(seconds=0.2, sample_rate=32000, amplitude=0.1)
    out = normalize(clip, 32000, "loudness")
    assert audio.loudness_lufs(out, 32000) == pytest.approx(-14.0, abs=0.1)


def test_unknown_strategy():
    with pytest.raises(AudioError, match="loudness, clip, peak, rms"):
        normalize(tone(), 44100, "louder")


# --- encoding ----------------------------------------------------------------

def test_wav_round_trip(tmp_path):
    original = tone(seconds=1.0, sample_rate=32000)
    path = write_audio(original, 32000, tmp_path / "out.wav", "wav")
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (32000, 2, "PCM_16")
    samples, sr = load_audio(path)
    assert sr == 32000 and samples.shape == original.shape
    assert np.max(np.abs(samples - original)) < 1 / 32767 + 1e-6


def test_mp3_round_trip_is_320k_cbr_and_gapless(tmp_path):
    original = tone(seconds=3.0, sample_rate=32000)
    path = write_audio(original, 32000, tmp_path / "out.mp3", "mp3")
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=bit_rate,sample_rate",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True).stdout
    sample_rate, bit_rate = probe.strip().split(",")
    assert int(sample_rate) == 32000 and int(bit_rate) == 320000
    samples, sr = load_audio(path)
    assert sr == 32000 and samples.shape[0] == 2
    # Gapless: the LAME header carries encoder delay and padding, so the length
    # comes back within one mp3 granule (576 samples).
    assert abs(samples.shape[1] - original.shape[1]) <= 576
    assert abs(dominant_frequency(samples, sr) - 440) < 2


def test_write_clips_and_cleans_nan(tmp_path):
    wild = np.array([[2.0, -3.0, np.nan, 0.5]], np.float32)
    path = write_audio(wild, 8000, tmp_path / "wild.wav")
    data, _ = sf.read(path, dtype="float32")
    assert np.allclose(data, [1.0, -1.0, 0.0, 0.5], atol=1e-4)
    assert not list(tmp_path.glob("*.part"))


def test_unknown_output_format(tmp_path):
    with pytest.raises(AudioError, match="wav or mp3"):
        write_audio(tone(), 44100, tmp_path / "x.ogg", "ogg")


# --- hostile uploads -----------------------------------------------------------

def _listener():
    """A TCP listener on 127.0.0.1 that records whether anybody connected."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    hits = []

    def accept():
        while not getattr(server, "_closed", False):
            try:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
            except OSError:
                if server.fileno() == -1:
                    return

    threading.Thread(target=accept, daemon=True).start()
    return server, hits


@pytest.mark.parametrize("kind", ["hls", "concat"])
def test_playlists_cannot_make_the_server_read_files_or_urls(tmp_path, source_wav, kind):
    # A local file in a container the HLS demuxer accepts as a segment (measured:
    # without the demuxer whitelist, ffmpeg decodes it through the playlist).
    secret = tmp_path / "secret.ts"
    ffmpeg("-i", str(source_wav), "-c:a", "aac", str(secret))
    server, hits = _listener()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/stolen.ts"
    if kind == "hls":
        text = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{secret}\n#EXTINF:2.0,\n{url}\n#EXT-X-ENDLIST\n"
    else:
        text = f"ffconcat version 1.0\nfile '{secret}'\nfile '{url}'\n"
    try:
        for name in ("upload", "upload.m3u8"):  # uploads arrive without an extension, or with any
            upload = tmp_path / name
            upload.write_text(text)
            with pytest.raises(AudioError, match="not a readable audio file"):
                load_audio(upload)
    finally:
        import time

        time.sleep(0.3)
        server.close()
    assert hits == []
