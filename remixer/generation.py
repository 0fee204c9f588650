"""MusicGen-Chord (and MusiConGen) generation for a whole song: prompt, seed, 30 s windows, condition, decode,
EnCodec.

The model (`remixer.models`, converted by `remixer.conversion`) is
transformers' MusicGen-Melody (T5 text encoder, EnCodec 32 kHz, a decoder over
4 codebooks, or 8 interleaved for stereo); each window is decoded by our own
loop (`remixer.decoding`).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from remixer import decoding
from remixer.chords import WINDOW_SECONDS, window_chroma
from remixer.conditions import WINDOW_FRAMES, SongFrames, WindowFrames, window
from remixer.device import free_bytes
from remixer.errors import RemixerError
from remixer.musicgen import CARD, FRAME_RATE, SAMPLE_RATE, GenerationError, Sampling

if TYPE_CHECKING:  # the model type, without importing transformers' modelling code here
    from remixer.models import ChordModel

log = logging.getLogger(__name__)

EXTEND_STRIDE_S = 18.0  # each window after the first adds 18 s ...
PROMPT_S = WINDOW_SECONDS - EXTEND_STRIDE_S  # ... prompted with the last 12 s
MAX_PROMPT_TOKENS = 512  # T5's trained length; longer prompts are truncated with a warning


@dataclass(frozen=True)
class Generated:
    tokens: torch.Tensor  # (codebooks, frames), int64
    audio: np.ndarray  # (channels, samples) float32 at 32 kHz
    sample_rate: int
    seed: int
    decode_modes: tuple[str, ...] = ()  # per window: decoding.GRAPH, or eager (with why, if capture failed)


ProgressCallback = decoding.ProgressCallback  # (tokens done, tokens in all)


def build_prompt(prompt: str, bpm: float | None) -> str:
    """The text T5 reads: the prompt (never empty: the request checked it) and the song's tempo."""
    text = prompt.strip()
    return f"{text}, bpm : {int(round(bpm))}" if bpm else text


def choose_seed(seed: int | None) -> int:
    """None or -1: a fresh random seed (logged so the user can reproduce); 0 is a valid seed."""
    if seed is None or seed == -1:
        seed = random.SystemRandom().randrange(0, 2**31 - 1)
        log.info("seed %d (random; pass it back to reproduce this result)", seed)
    return int(seed)


def window_starts(duration: float) -> list[float]:
    """Start times of the 30 s windows: 0, 18, 36, ... until the song is covered."""
    starts = [0.0]
    while starts[-1] + WINDOW_SECONDS < duration:
        starts.append(starts[-1] + EXTEND_STRIDE_S)
    return starts


def window_new_frames(duration: float) -> list[int]:
    """Token frames each window adds: 30 s for the first, then what follows its 12 s prompt."""
    total = math.ceil(duration * FRAME_RATE)
    prompt = int(PROMPT_S * FRAME_RATE)
    starts = window_starts(duration)
    frames = [min(total, int(WINDOW_SECONDS * FRAME_RATE))]
    for start in starts[1:]:
        frames.append(min(total, int((start + WINDOW_SECONDS) * FRAME_RATE)) - int(start * FRAME_RATE) - prompt)
    return frames


@dataclass(frozen=True)
class EncodedText:
    """The prompt through T5, once per request: token ids, T5's output and its mask (batch 1)."""

    ids: torch.Tensor  # (1, tokens)
    states: torch.Tensor  # (1, tokens, T5 width)
    mask: torch.Tensor  # (1, tokens)


def encode_text(model: ChordModel, text: str) -> EncodedText:
    """The prompt through T5 once per request: ids and mask (1, tokens), states (1, tokens, T5 width),
    on the model's device; prompts past 512 tokens are cut with a warning."""
    tokenizer = model.tokenizer
    ids = tokenizer(text, return_tensors="pt")
    if ids["input_ids"].shape[1] > MAX_PROMPT_TOKENS:
        log.warning("prompt is %d tokens; T5 reads the first %d", ids["input_ids"].shape[1], MAX_PROMPT_TOKENS)
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_PROMPT_TOKENS)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    with torch.inference_mode():
        states = model.text_encoder(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    return EncodedText(ids["input_ids"], states, ids["attention_mask"])


@torch.inference_mode()
def condition_prefix(model: ChordModel, text: EncodedText, window: np.ndarray, guided: bool) -> torch.Tensor:
    """The decoder's prepended condition, (rows, 235 + text tokens, hidden): chroma then text.

    Row 0 is the condition. Under classifier-free guidance row 1 is the null
    condition as the chord models were trained with it: their chroma
    conditioner masks a nullified chroma to exact zeros (not transformers'
    one-hot bin-0 melody null), and the T5 conditioner masks the text to zeros.
    """
    if window.shape != (model.config.chroma_length, 12):
        raise GenerationError(f"a window's chroma must be {model.config.chroma_length} x 12, got {window.shape}")
    chroma = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None].to(model.device)
    states = text.states.to(model.device)
    if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size:
        states = model.enc_to_dec_proj(states)
    states = states * text.mask[..., None].to(states)
    condition = torch.cat([model.audio_enc_to_dec_proj(chroma), states.to(chroma.dtype)], dim=1)
    return torch.cat([condition, torch.zeros_like(condition)]) if guided else condition


def generate(
    model: ChordModel,
    prompt: str,
    chroma: np.ndarray | SongFrames,
    duration: float,
    sampling: Sampling = Sampling(),
    seed: int | None = None,
    bpm: float | None = None,
    progress: ProgressCallback | None = None,
) -> Generated:
    """Generate `duration` seconds conditioned on the prompt and the song's whole condition (one take)."""
    return generate_takes(model, prompt, chroma, duration, sampling, seed=seed, bpm=bpm, progress=progress)[0]


def generate_takes(
    model: ChordModel,
    prompt: str,
    condition: np.ndarray | SongFrames,
    duration: float,
    sampling: Sampling = Sampling(),
    seed: int | None = None,
    bpm: float | None = None,
    progress: ProgressCallback | None = None,
    takes: int = 1,
) -> list[Generated]:
    """`takes` versions of the same request, decoded together as one batch (one T5 encoding, one decode
    per window for all of them, one CUDA graph on GPUs), each from its own draws of one seeded generator.
    One take draws exactly what a request without takes draws.

    condition: the chord models' chroma for the whole song, (frames, 12) on the 235-per-30-s grid; or
    MusiConGen's chord and beat frames for the whole song (remixer.conditions.SongFrames). Each window reads
    its own slice. Returns each take's tokens (codebooks, frames) and audio (channels, samples) at 32 kHz."""
    facts = model.facts
    _check_condition(facts, condition, duration)
    text = build_prompt(prompt, bpm)
    seed = choose_seed(seed)
    total_frames = math.ceil(duration * FRAME_RATE)
    starts = window_starts(duration)
    prompt_frames = int(PROMPT_S * FRAME_RATE)
    new_per_window = window_new_frames(duration)
    total_steps = sum(n + facts.max_delay for n in new_per_window)
    done = 0

    def step_to(count: int) -> None:
        nonlocal done
        done = count
        if progress:
            progress(done, total_steps)

    encoded = encode_text(model, text)
    guided = sampling.guided
    decoder = model.decoder_for()
    # One cache for the request, sized for the first window (the largest): the windows share it and its graphs.
    window_decoder = decoding.WindowDecoder(decoder, capacity=1 + new_per_window[0] + facts.max_delay)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    codes = torch.zeros((takes, facts.codebooks, 0), dtype=torch.long)
    conditions = window_conditions(model, encoded, condition, starts, guided)
    for index, ((prefix, steps), new_frames) in enumerate(zip(conditions, new_per_window)):
        prompt = codes[:, :, -prompt_frames:] if index > 0 else codes
        plan = decoding.plan_window(prompt, new_frames, decoder.delays, model.device)
        window_codes = window_decoder.decode(prefix, plan, sampling, generator,
                                             progress=lambda chosen, _total, before=done: step_to(before + chosen),
                                             steps=steps)
        codes = torch.cat([codes, window_codes[:, :, prompt.shape[2]:].cpu()], dim=2)
        log.info("generation: window %d/%d done (%.0f s of %.0f s%s; %s)", index + 1, len(starts),
                 min(codes.shape[2] / FRAME_RATE, duration), duration, f", {takes} takes" if takes > 1 else "",
                 window_decoder.modes[-1])
    codes = codes[:, :, :total_frames]
    samples = int(round(duration * SAMPLE_RATE))
    modes = tuple(window_decoder.modes)
    return [Generated(take, _fit_length(decode_tokens(model, take), samples), SAMPLE_RATE, seed, modes)
            for take in codes]


def _check_condition(facts, condition: np.ndarray | SongFrames, duration: float) -> None:
    if duration <= 0:
        raise GenerationError("nothing to generate: the song has no duration")
    if isinstance(condition, SongFrames) != facts.plays_on_beats:
        raise GenerationError(f"{facts.version} is conditioned on "
                              f"{'chord and beat frames' if facts.plays_on_beats else 'a chord chroma'}")


def window_conditions(model: ChordModel, text: EncodedText, condition: np.ndarray | SongFrames,
                      starts: list[float], guided: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each window's (prefix, steps): the chord models' chroma of the window's part of the song and no step
    condition; MusiConGen's chord prefix and its per-position chord + beat sums, from the window's frames."""
    if not isinstance(condition, SongFrames):
        for chroma in window_chroma(condition, starts):
            yield condition_prefix(model, text, chroma, guided), None
        return
    for start in starts:
        frames = window(condition, start)
        prefix = condition_prefix(model, text, frames.prefix.astype(np.float32), guided)
        yield prefix, step_sums(model, frames, guided)


@torch.inference_mode()
def step_sums(model: ChordModel, frames: WindowFrames, guided: bool) -> torch.Tensor:
    """MusiConGen's per-position condition, (1 or 2, 1 + 1500 + max delay, D): grid position s gets frame s's
    chord embedding + beat embedding (both projections with their bias, frames cast to float32 as the
    reference does), nothing past the window's 1500 frames; the null row (guidance) is zeros: its chord and
    beat are masked to exact zeros, bias included."""
    chord = torch.from_numpy(frames.chord.T.astype(np.float32)).to(model.device)  # (1500, 12)
    beat = torch.from_numpy(frames.beat.T.astype(np.float32)).to(model.device)  # (1500, 1)
    summed = model.audio_enc_to_dec_proj(chord) + model.beat_proj(beat)
    out = torch.zeros((1 + WINDOW_FRAMES + model.facts.max_delay, summed.shape[1]), device=model.device)
    out[:WINDOW_FRAMES] = summed
    return torch.stack([out, torch.zeros_like(out)]) if guided else out[None]


def decode_tokens(model: ChordModel, codes: torch.Tensor) -> np.ndarray:
    """EnCodec-decode aligned codes (codebooks, frames) -> (channels, samples) float32."""
    facts = model.facts
    groups = [codes] if facts.channels == 1 else [codes[0::2], codes[1::2]]
    channels = []
    with torch.inference_mode():
        for group in groups:
            decoded = model.audio_encoder.decode(group[None, None].to(model.device), [None]).audio_values
            channels.append(decoded[0, 0].float().cpu().numpy())
    audio = np.stack(channels)
    bad = ~np.isfinite(audio)
    if bad.any():
        log.warning("generated audio had %d NaN/inf samples; replaced with silence", int(bad.sum()))
        audio = np.where(bad, 0.0, audio)
    return audio.astype(np.float32)


def _fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))


def check_memory(model: ChordModel, takes: int, duration: float) -> None:
    """Refuse, before decoding, a request whose takes' KV cache cannot fit the device, saying what fits.

    Raises RemixerError naming the largest number of takes that fits (or a smaller model / shorter part)."""
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


def decode_bytes(model: ChordModel, takes: int, duration: float) -> int:
    """Memory one window's decode holds for `takes` takes: the KV cache of every row (guidance doubles the
    rows) over the window's positions (and with takes the shared prefix copy), the step's logits and
    attention scores."""
    facts = model.facts
    rows = 2 * takes
    window = min(duration, WINDOW_SECONDS)
    positions = model.config.chroma_length + MAX_PROMPT_TOKENS + 1 + int(window * FRAME_RATE) + facts.max_delay
    value = torch.tensor([], dtype=model.decoder_for().cache_dtype).element_size()
    cache = decoding.kv_cache_bytes(facts.layers, facts.hidden_size, rows, positions, value)
    if takes > 1:  # the condition prefix's one copy per guidance half, read by the steps
        cache += decoding.kv_cache_bytes(facts.layers, facts.hidden_size, 2, model.config.chroma_length
                                         + MAX_PROMPT_TOKENS, value)
    step = rows * (facts.codebooks * CARD * 4 + facts.heads * positions * 4 * 2)
    # MusiConGen's per-position condition buffer (remixer.decoding), in the decoder's precision.
    conditions = rows * positions * facts.hidden_size * value if facts.plays_on_beats else 0
    return cache + step + conditions
