"""The whole remix at full model sizes (random weights), next to the original design's structure, in one run.

    .venv/bin/python benchmarks/bench_pipeline.py [--song-seconds 30] [--generate-seconds 2] [--device cpu]
                                                  [--gpu-speedup 30] [--gpu-token-ms 20]

Full size: htdemucs (26.9 M), All-In-One 8 folds, BTC (170 classes), the
MusicGen-Chord medium decoder (1.4 B; a 5.6 GB random checkpoint in the
published format), T5-base's encoder and the 32 kHz EnCodec's shape.

Two structures run on the same song, built from the same components:
- ours, warm: models loaded at setup; the song separated once, analysed once,
  its chords recognised once and sliced per generation window;
- the original's: every model loaded in the request (MusicGen-Chord from its
  .th file); demucs three times: for vocal removal, inside All-In-One's
  analysis, and for the chord condition of every 30 s generation window; BTC
  per window; one WSOLA call for beat-sync. Conservative for the original: the
  song is decoded once and nothing goes through files.
Both then separate and analyse the generated instrumental for beat-sync.

Generation is the same code in both. At the medium shape on a CPU it takes
about a second per token, so it runs once for --generate-seconds and is
extrapolated to the song (prefill time per condition position, time per
token, EnCodec time per second of audio): the table says so.

The GPU estimate keeps every measured second outside the models' forward
passes (decoding, features, peak picking, WSOLA, mixing, model loading from
disk) and divides the forward passes by --gpu-speedup; a token step takes
--gpu-token-ms. Both are assumptions, stated with the result.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytsmod
import soundfile as sf
import torch

from remixer import audio, beatsync, chords, conversion, generation, mix, models, musicgen, rhythm, separation, weights
from remixer.device import pick_device
from remixer.pipeline import Remixer
from remixer.testing import musicgen as musicgen_writers
from remixer.testing import separation as separation_writers
from remixer.testing.rhythm import folds_in
from remixer.testing.separation import checkpoint_in
from remixer.tiny_weights import write_all

SONG_RATE = 44100
PROMPT = "benchmark"
HBM_BYTES_PER_S = 1.5e12  # an A100 40 GB


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_full_weights(root: Path) -> Path:
    write_all(root, components=["btc", "allin1", "musicgen", "madmom"])  # BTC and All-In-One at full size; madmom real
    separation_writers.write_random_checkpoint(root, full_size=True)
    musicgen_writers.write_random_t5(root / "t5", full_size=True)
    musicgen_writers.write_random_encodec(root / "encodec", full_size=True)
    cfg = musicgen_writers.xp_cfg("chord", dim=1536, num_heads=24, num_layers=48)
    (file,) = weights.files_of(["musicgen-chord"])
    musicgen_writers.save_published_layout(root / file.name, cfg, musicgen_writers.random_lm_state(cfg))
    return root / file.name


class ForwardClock:
    """Seconds spent inside the forward passes of some modules: the part a GPU speeds up."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._start = 0.0

    def watch(self, module: torch.nn.Module) -> None:
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._leave)

    def _enter(self, *_) -> None:
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self, *_) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


@dataclass
class Row:
    stage: str
    seconds: float
    forward: float  # of which inside model forward passes
    note: str = ""
    gpu: float | None = None  # set where the GPU estimate is not (seconds - forward) + forward / speedup

    def on_gpu(self, speedup: float) -> float:
        return self.gpu if self.gpu is not None else self.seconds - self.forward + self.forward / speedup


class Structure:
    """The rows of one request."""

    def __init__(self, name: str, clock: ForwardClock):
        self.name = name
        self.clock = clock
        self.rows: list[Row] = []

    @contextmanager
    def stage(self, name: str, note: str = "") -> Iterator[None]:
        self.clock.take()
        start = time.perf_counter()
        yield
        self.rows.append(Row(name, time.perf_counter() - start, self.clock.take(), note))
        print(f"  {self.name}: {name} {self.rows[-1].seconds:.1f} s", flush=True)

    def total(self, speedup: float | None = None, generation_too: bool = True) -> float:
        rows = [r for r in self.rows if generation_too or not r.stage.startswith("generate")]
        return sum(r.seconds if speedup is None else r.on_gpu(speedup) for r in rows)


@dataclass
class GenerationCost:
    """Measured on a short run; extrapolated to a song of any length."""

    prefill_per_position: float
    per_token: float
    encodec_per_second: float

    def rows(self, duration: float, prefix: int, max_delay: int, gpu_token_s: float) -> list[Row]:
        windows = len(generation.window_starts(duration))
        prompt = int(generation.PROMPT_S * generation.FRAME_RATE)
        positions = windows * prefix + (windows - 1) * prompt  # later windows also read their 12 s prompt
        tokens = sum(n + max_delay for n in generation.window_new_frames(duration))
        prefill = positions * self.prefill_per_position
        steps = tokens * self.per_token
        decode = duration * self.encodec_per_second
        return [
            Row("generate: condition prefill", prefill, prefill,
                f"extrapolated: {windows} window{'s' * (windows > 1)}, {positions} positions x "
                f"{self.prefill_per_position * 1e3:.1f} ms"),
            Row("generate: tokens", steps, steps,
                f"extrapolated: {tokens} token steps x {self.per_token:.2f} s (CFG 3)",
                gpu=tokens * gpu_token_s),
            Row("generate: EnCodec decode", decode, decode,
                f"extrapolated: {self.encodec_per_second:.2f} s per second of audio"),
        ]


def measure_generation(model, chroma: np.ndarray, seconds: float) -> tuple[GenerationCost, int, np.ndarray]:
    """Per-position prefill, per-token and EnCodec costs from one short generation; also its audio."""
    steps: list[float] = []
    start = time.perf_counter()
    generated = generation.generate(model, PROMPT, chroma, seconds, seed=0,
                                    progress=lambda done, total: steps.append(time.perf_counter()))
    text = model.tokenizer(PROMPT)["input_ids"]
    prefix = chroma.shape[0] + len(text) + 1  # chroma and text conditions, then the start token
    decode_start = time.perf_counter()
    generation.decode_tokens(model, generated.tokens)
    decode = time.perf_counter() - decode_start
    cost = GenerationCost((steps[0] - start) / prefix, float(np.median(np.diff(steps))), decode / seconds)
    return cost, prefix, generated.audio


def gpu_token_seconds(model, chroma: np.ndarray) -> tuple[float, float]:
    """A token step on a GPU: the host time of the same 48-layer decoder at a tiny width, measured here (eager
    decoding is bound by it), plus reading the float16 decoder weights once at HBM_BYTES_PER_S."""
    cfg = musicgen_writers.xp_cfg("chord", dim=48, num_heads=2, num_layers=48)
    skeleton = models.assemble(cfg, models.Encoders(model.text_encoder, model.audio_encoder, model.tokenizer))
    skeleton.facts = musicgen.facts_from_cfg(cfg, "chord")
    host = measure_generation(models.prepare(skeleton, model.device), chroma, 4.0)[0].per_token
    weights_bytes = 2 * sum(p.numel() for p in model.decoder.parameters())
    return host + weights_bytes / HBM_BYTES_PER_S, host


def synthetic_song(path: Path, seconds: float) -> None:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal((int(seconds * SONG_RATE), 2))).astype(np.float32), SONG_RATE)


def tiled(piece: np.ndarray, seconds: float, rate: int) -> np.ndarray:
    """The short generated clip repeated to the song's length: the instrumental later stages work on."""
    return np.tile(piece, (1, math.ceil(seconds * rate / piece.shape[1])))[:, : int(seconds * rate)]


def synthetic_downbeats(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Random weights find no downbeats: bars every 2 s, the song's 2% slower and 0.1 s late."""
    generated = np.arange(0.5, seconds - 1, 2.0)
    target = generated * 1.02 + 0.1
    inside = target < seconds - 0.5
    return generated[inside], target[inside]


def run_ours(remixer: Remixer, song_path: Path, clip: np.ndarray, gen_rows: list[Row],
             clock: ForwardClock) -> Structure:
    ours = Structure("ours", clock)
    with ours.stage("decode"):
        song = audio.decode(song_path)
    with ours.stage("separate", "once per song"):
        stems = remixer.separator.separate(song.samples, song.sample_rate)
    with ours.stage("rhythm", "All-In-One on our stems"):
        song_rhythm = remixer.analyzer.analyze(stems)
    with ours.stage("chords", "BTC once per song"):
        segments = remixer.recognizers[True].recognize(stems.drumless, separation.SAMPLE_RATE)
        chords.window_chroma(chords.segments_to_chroma(segments, song.duration),
                             generation.window_starts(song.duration))
    ours.rows += gen_rows
    finish(ours, remixer.separator, remixer.analyzer, clip, song.duration, stems.vocals,
           lambda music, generated, target: beatsync.sync_to_downbeats(
               music, generation.SAMPLE_RATE, generated, target, bpm=song_rhythm.bpm or 120), "WSOLA bar by bar")
    return ours


def run_original(root: Path, th_path: Path, device: str | None, song_path: Path, clip: np.ndarray,
                 gen_rows: list[Row], clock: ForwardClock) -> Structure:
    original = Structure("original", clock)
    with original.stage("load models", "every request: demucs, All-In-One, BTC, MusicGen-Chord from .th"):
        chosen = pick_device(device)
        separator = separation.load_separator(checkpoint_in(root), chosen)
        analyzer = rhythm.load_analyzer(folds_in(root), chosen)
        recognizer = chords.read_recognizer(root / "btc" / "btc_model_large_voca.pt", str(chosen))
        model = load_from_th(th_path, root)
    for module in (separator.model, analyzer.model, recognizer.model):
        clock.watch(module)
    with original.stage("decode"):
        song = audio.decode(song_path)
    with original.stage("separate", "vocal removal"):
        stems = separator.separate(song.samples, song.sample_rate)
    with original.stage("rhythm", "All-In-One separates again"):
        analyzer.analyze(separator.separate(song.samples, song.sample_rate))
    starts = generation.window_starts(song.duration)
    with original.stage("chords", f"demucs + BTC for each of {len(starts)} window{'s' * (len(starts) > 1)}"):
        for start in starts:
            piece = song.samples[:, int(start * song.sample_rate): int((start + 30) * song.sample_rate)]
            piece_stems = separator.separate(piece, song.sample_rate)
            segments = recognizer.recognize(piece_stems.drumless, separation.SAMPLE_RATE)
            chords.segments_to_chroma(segments, piece.shape[1] / song.sample_rate)
    original.rows += gen_rows

    def one_wsola_call(music: np.ndarray, generated: np.ndarray, target: np.ndarray) -> np.ndarray:
        n = music.shape[1]
        rate = generation.SAMPLE_RATE
        anchors = np.concatenate([[[0], [0]], np.round(np.stack([generated, target]) * rate), [[n - 1], [n - 1]]],
                                 axis=1)
        return np.atleast_2d(pytsmod.wsola(music, anchors))[:, :n]

    finish(original, separator, analyzer, clip, song.duration, stems.vocals, one_wsola_call, "one WSOLA call")
    del model
    return original


def load_from_th(th_path: Path, root: Path):
    """What loading MusicGen-Chord costs without a converted cache: read the .th, map the keys, build."""
    cfg, state = conversion.read_converted(th_path)
    return models.assemble(cfg, models.load_encoders(root / "t5", root / "encodec", "cpu"), state)


def finish(structure: Structure, separator: separation.Separator, analyzer: rhythm.RhythmAnalyzer,
           clip: np.ndarray, duration: float, vocals: np.ndarray,
           sync: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], sync_note: str) -> None:
    """The stages after generation, the same in both structures but for the beat-sync method."""
    rate = generation.SAMPLE_RATE
    music = tiled(clip, duration, rate)
    with structure.stage("analyse instrumental", "separate + rhythm, for beat-sync"):
        analyzer.analyze(separator.separate(music, rate))
    generated, target = synthetic_downbeats(duration)
    with structure.stage("beat-sync", sync_note):
        synced = sync(music, generated, target)
    with structure.stage("mix, normalize, encode"):
        voice = mix.prepare_vocals(vocals, separation.SAMPLE_RATE, rate, synced.shape[0], synced.shape[1])
        with tempfile.TemporaryDirectory() as out:
            audio.write_audio(mix.mix(synced, voice, rate), rate, Path(out) / "remix.wav")


def print_report(args, ours: Structure, original: Structure, peaks: tuple[float, float], device: str,
                 gpu_token_s: float, host_step: float | None) -> None:
    speedup = args.gpu_speedup
    print(f"\n{args.song_seconds:g} s song, device {device}, torch threads {torch.get_num_threads()}; "
          f"peak resident memory {peaks[0]:.1f} GB (ours), {peaks[1]:.1f} GB (with the original's run)")
    print("| stage | ours (s) | original structure (s) | note |")
    print("|---|---|---|---|")
    for row in original.rows:
        mine = next((r for r in ours.rows if r.stage == row.stage), None)
        if mine is None:
            note, seconds = f"original: {row.note}" if row.note else "", "- (at setup)"
        else:
            seconds = f"{mine.seconds:.1f}"
            notes = (mine.note, row.note)
            note = notes[0] if len(set(notes)) == 1 else f"ours: {notes[0] or '-'}; original: {notes[1] or '-'}"
        print(f"| {row.stage} | {seconds} | {row.seconds:.1f} | {note} |")
    lines = [
        ("request total (here)", ours.total(), original.total()),
        ("everything but generation (here)", ours.total(generation_too=False), original.total(generation_too=False)),
        ("GPU estimate: request total", ours.total(speedup), original.total(speedup)),
        ("GPU estimate: everything but generation", ours.total(speedup, False), original.total(speedup, False)),
    ]
    print("\n| | ours (s) | original structure (s) | original / ours |")
    print("|---|---|---|---|")
    for name, mine, theirs in lines:
        print(f"| {name} | {mine:.1f} | {theirs:.1f} | {theirs / mine:.2f}x |")
    gen_gpu = ours.total(speedup) - ours.total(speedup, False)
    rest_gpu = ours.total(speedup, False)
    tokens_row = next(r for r in ours.rows if r.stage == "generate: tokens")
    tokens = tokens_row.gpu / gpu_token_s
    # the token step at which everything but generation would be exactly 10% of the request
    break_even = (9 * rest_gpu - (gen_gpu - tokens_row.gpu)) / tokens * 1000
    print(f"\nGPU estimate, ours: everything but generation {rest_gpu:.1f} s = "
          f"{100 * rest_gpu / (rest_gpu + gen_gpu):.1f}% of {rest_gpu + gen_gpu:.1f} s "
          f"(under 10% when a token step takes more than {break_even:.1f} ms)")
    step = (f"{gpu_token_s * 1000:.1f} ms: the host time per step of the 48-layer decoder at a tiny width, "
            f"measured here ({host_step * 1000:.1f} ms), plus reading the float16 weights at "
            f"{HBM_BYTES_PER_S / 1e12:g} TB/s" if host_step is not None else f"{gpu_token_s * 1000:g} ms (given)")
    print(f"Assumptions: model forward passes {speedup:g}x faster than measured here; a MusicGen-Chord medium "
          f"token step {step}; everything else (decoding, CQT and spectrogram features, peak picking, WSOLA, "
          "mixing, encoding, model loading from disk) as measured here.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--song-seconds", type=float, default=30.0)
    parser.add_argument("--generate-seconds", type=float, default=2.0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--gpu-speedup", type=float, default=30.0,
                        help="how much faster a GPU runs the models' forward passes than this machine")
    parser.add_argument("--gpu-token-ms", type=float, default=None,
                        help="milliseconds per MusicGen-Chord token step on the GPU (default: the host-bound "
                             "floor measured here, see gpu_token_seconds)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("writing random full-size weights ...", flush=True)
        th_path = write_full_weights(root)
        song_path = root / "song.wav"
        synthetic_song(song_path, args.song_seconds)
        clock = ForwardClock()

        remixer = Remixer(root, args.device, offline=True)
        model = remixer.load_version("chord")  # converted once here, cached for later requests
        for module in (remixer.separator.model, remixer.analyzer.model, remixer.recognizers[True].model):
            clock.watch(module)
        window = chords.segments_to_chroma([], generation.WINDOW_SECONDS)
        print(f"generating {args.generate_seconds:g} s at the medium shape ...", flush=True)
        cost, prefix, clip = measure_generation(model, window, args.generate_seconds)
        host_step = None
        if args.gpu_token_ms is None:
            gpu_token_s, host_step = gpu_token_seconds(model, window)
        else:
            gpu_token_s = args.gpu_token_ms / 1000
        gen_rows = cost.rows(args.song_seconds, prefix, model.facts.max_delay, gpu_token_s)
        device = str(remixer.separator.device)

        ours = run_ours(remixer, song_path, clip, gen_rows, clock)
        peak_ours = peak_gb()
        del model, remixer
        gc.collect()
        original = run_original(root, th_path, args.device, song_path, clip, gen_rows, clock)
        print_report(args, ours, original, (peak_ours, peak_gb()), device, gpu_token_s, host_step)


if __name__ == "__main__":
    main()
