"""MusicGen-Chord: convert the published checkpoints, load them once, generate a whole song.

The backbone is transformers' MusicGen-Melody (T5 text encoder, EnCodec 32 kHz,
a decoder over 4 codebooks, or 8 interleaved for stereo). The published
MusicGen-Chord files are audiocraft LM state dicts (`xp.cfg` + `model`); they
are converted to the transformers layout once and cached beside the source.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from remixer import checkpoints, decoding, weights
from remixer.chords import WINDOW_SECONDS, window_chroma
from remixer.device import pick_device
from remixer.errors import RemixerError

log = logging.getLogger(__name__)

MODEL_VERSIONS = ("stereo-chord", "stereo-chord-large", "chord", "chord-large")
SAMPLE_RATE = 32000
FRAME_RATE = 50  # EnCodec 32 kHz: 640 samples per token frame
CARD = 2048
EXTEND_STRIDE_S = 18.0  # each window after the first adds 18 s ...
PROMPT_S = WINDOW_SECONDS - EXTEND_STRIDE_S  # ... prompted with the last 12 s
MAX_PROMPT_TOKENS = 512  # T5's trained length; longer prompts are truncated with a warning

_CONVERTED = "converted"
_STATE_FILE = "model.safetensors"
_CONFIG_FILE = "decoder_config.json"
_SOURCE_FILE = "source.json"


class GenerationError(RemixerError):
    """A request the generator cannot serve, explained."""


@dataclass(frozen=True)
class ModelFacts:
    """What a model_version is, read from its checkpoint's xp.cfg."""

    version: str
    channels: int
    codebooks: int
    hidden_size: int
    layers: int
    heads: int

    @property
    def max_delay(self) -> int:
        """Codebook delay of the last codebook (frames): 3 for mono and for interleaved stereo."""
        return self.codebooks // self.channels - 1


def component_for(version: str) -> str:
    if version not in MODEL_VERSIONS:
        raise GenerationError(f"unknown model_version {version!r}; choose one of {', '.join(MODEL_VERSIONS)}")
    return f"musicgen-{version}"


# --- conversion ---------------------------------------------------------------

def _lm_shape(cfg: dict) -> dict:
    lm = cfg["transformer_lm"]
    return {
        "dim": int(lm["dim"]),
        "layers": int(lm["num_layers"]),
        "heads": int(lm["num_heads"]),
        "n_q": int(lm["n_q"]),
        "card": int(lm["card"]),
        "hidden_scale": float(lm.get("hidden_scale", 4)),
    }


def facts_from_cfg(cfg: dict, version: str) -> ModelFacts:
    shape = _lm_shape(cfg)
    stereo = int(cfg.get("channels", 1)) == 2 or bool(cfg.get("interleave_stereo_codebooks", {}).get("use"))
    return ModelFacts(version, 2 if stereo else 1, shape["n_q"], shape["dim"], shape["layers"], shape["heads"])


def decoder_config(cfg: dict):
    from transformers import MusicgenMelodyDecoderConfig

    shape = _lm_shape(cfg)
    facts = facts_from_cfg(cfg, "")
    return MusicgenMelodyDecoderConfig(
        vocab_size=shape["card"], hidden_size=shape["dim"], ffn_dim=int(shape["hidden_scale"] * shape["dim"]),
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"], num_codebooks=shape["n_q"],
        audio_channels=facts.channels, dropout=0.0, pad_token_id=shape["card"], bos_token_id=shape["card"],
    )


# audiocraft LM name -> transformers name (facts from both layouts).
_RENAMES = (
    ("condition_provider.conditioners.description.output_proj", "enc_to_dec_proj"),
    ("condition_provider.conditioners.self_wav.output_proj", "audio_enc_to_dec_proj"),
    ("emb.", "decoder.model.decoder.embed_tokens."),
    ("transformer.layers.", "decoder.model.decoder.layers."),
    ("out_norm.", "decoder.model.decoder.layer_norm."),
    ("linears.", "decoder.lm_heads."),
    (".linear1.", ".fc1."),
    (".linear2.", ".fc2."),
    (".norm1.", ".self_attn_layer_norm."),
    (".norm2.", ".final_layer_norm."),
)


def convert_state_dict(lm_state: dict[str, torch.Tensor], hidden_size: int) -> dict[str, torch.Tensor]:
    """audiocraft LM state dict -> transformers MusicGen-Melody names (decoder and projections)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in lm_state.items():
        if not name.startswith(("condition_provider.conditioners.description.output_proj",
                                "condition_provider.conditioners.self_wav.output_proj",
                                "emb.", "transformer.", "out_norm.", "linears.")):
            continue  # conditioner internals (chroma extractor buffers) have no transformers counterpart
        for old, new in _RENAMES:
            name = name.replace(old, new)
        if name.endswith("self_attn.in_proj_weight"):
            base = name[: -len("in_proj_weight")]
            q, k, v = tensor.split(hidden_size, dim=0)
            out[base + "q_proj.weight"], out[base + "k_proj.weight"], out[base + "v_proj.weight"] = q, k, v
        else:
            out[name] = tensor
    return {k: v.contiguous() for k, v in out.items()}


def _source_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def converted_dir(th_path: Path) -> Path:
    return th_path.with_name(f"{th_path.stem}.{_CONVERTED}")


def convert_checkpoint(th_path: str | Path) -> Path:
    """Convert once; later calls return the cache unless the source file changed."""
    from safetensors.torch import save_file

    th_path = Path(th_path)
    target = converted_dir(th_path)
    stamp = _source_stamp(th_path)
    source_file = target / _SOURCE_FILE
    if source_file.is_file() and json.loads(source_file.read_text()) == stamp:
        return target
    log.info("converting %s to the transformers layout (once)", th_path.name)
    cfg, state = read_converted(th_path)
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_file(state, str(work / _STATE_FILE))
    (work / _CONFIG_FILE).write_text(json.dumps({"xp.cfg": cfg}, indent=1))
    (work / _SOURCE_FILE).write_text(json.dumps(stamp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(work, target)
    return target


def read_converted(th_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A published .th file's xp.cfg and its LM state in the transformers layout, in memory."""
    try:
        package = checkpoints.read(th_path, "MusicGen-Chord checkpoint")
    except checkpoints.CheckpointError as error:
        raise GenerationError(str(error)) from None
    # The published files hold 'model'; audiocraft's own export names the same state 'best_state'.
    state_key = next((key for key in ("model", "best_state") if key in package), None)
    if "xp.cfg" not in package or state_key is None:
        raise GenerationError(f"{th_path}: a MusicGen-Chord checkpoint holds 'xp.cfg' and 'model'")
    # xp.cfg is a pickled OmegaConf DictConfig in the published files (a YAML text in audiocraft's
    # export): plain data from here on.
    cfg = package["xp.cfg"]
    if isinstance(cfg, str):
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(cfg)
    cfg = checkpoints.plain(cfg)
    if not isinstance(cfg, dict) or "transformer_lm" not in cfg:
        raise GenerationError(f"{th_path}: its xp.cfg has no transformer_lm section; not a MusicGen-Chord checkpoint")
    return cfg, convert_state_dict(package.pop(state_key), _lm_shape(cfg)["dim"])


# --- loading ------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: dict[tuple, torch.nn.Module] = {}


def _shared_encoder(kind: str, directory: Path, device: torch.device) -> torch.nn.Module:
    """T5 and EnCodec are the same for all four versions: load each once per device."""
    from transformers import EncodecModel, T5EncoderModel

    key = (kind, str(directory), str(device))
    with _shared_lock:
        if key not in _shared:
            cls = T5EncoderModel if kind == "t5" else EncodecModel
            _shared[key] = cls.from_pretrained(str(directory)).to(device).eval()
        return _shared[key]


def load_musicgen_chord(th_path: str | Path, device: str | None = "cpu", weights_dir: str | Path | None = None):
    """The transformers model for a MusicGen-Chord checkpoint (converted, cached).

    Its facts (channels, codebooks, version) are at `model.chord_facts`.
    """
    from safetensors.torch import load_file

    th_path = Path(th_path)
    if not th_path.is_file():
        raise GenerationError(f"MusicGen-Chord checkpoint not found: {th_path}")
    chosen = pick_device(device)
    root = weights.ensure(["t5", "encodec"], weights_dir)
    cache = convert_checkpoint(th_path)
    cfg = json.loads((cache / _CONFIG_FILE).read_text())["xp.cfg"]
    version = th_path.stem.removeprefix("musicgen-")
    facts = facts_from_cfg(cfg, version)

    text_encoder = _shared_encoder("t5", root / "t5", chosen)
    audio_encoder = _shared_encoder("encodec", root / "encodec", chosen)
    # Read straight onto the device, the decoder in the precision it runs in: one move, no second copy.
    state = load_file(str(cache / _STATE_FILE), device=str(chosen))
    if chosen.type == "cuda":
        dtype = _cuda_decoder_dtype()
        state = {k: v.to(dtype) if k.startswith("decoder.") else v for k, v in state.items()}
    model = assemble(cfg, text_encoder, audio_encoder, state, th_path.name)
    model.chord_facts = facts
    return _prepare(model, chosen)


def assemble(cfg: dict, text_encoder, audio_encoder, state: dict[str, torch.Tensor] | None = None,
             name: str = "model"):
    """A MusicGen-Melody model with the decoder shape of `cfg`: converted weights, or random when `state` is None."""
    from transformers import MusicgenMelodyConfig, MusicgenMelodyForCausalLM, MusicgenMelodyForConditionalGeneration

    if state is None:
        decoder = MusicgenMelodyForCausalLM(decoder_config(cfg))
        return MusicgenMelodyForConditionalGeneration(text_encoder=text_encoder, audio_encoder=audio_encoder,
                                                      decoder=decoder)
    # Build on the meta device and take the converted tensors as they are: no random init, no copy.
    with torch.device("meta"):
        decoder = MusicgenMelodyForCausalLM(decoder_config(cfg))
        config = MusicgenMelodyConfig(text_encoder=text_encoder.config, audio_encoder=audio_encoder.config,
                                      decoder=decoder.config)
        model = MusicgenMelodyForConditionalGeneration(config=config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(("text_encoder.", "audio_encoder."))
               and "embed_positions" not in k]
    if missing or unexpected:
        raise GenerationError(f"{name}: converted weights do not fit the model "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.text_encoder = text_encoder
    model.audio_encoder = audio_encoder
    _materialise_buffers(model)
    return model


def _prepare(model, device: torch.device):
    model.to(device).eval()
    if device.type == "cuda":
        # The decode loop reads every decoder weight once per step: half the bytes in 16 bits.
        model.decoder.to(_cuda_decoder_dtype())
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = CARD
    return model


def _cuda_decoder_dtype() -> torch.dtype:
    """float16 by default (MusicGen was trained under float16 autocast); REMIXER_DECODER_DTYPE=bfloat16
    or float32 where a model's activations overflow float16."""
    name = os.environ.get("REMIXER_DECODER_DTYPE", "float16")
    choices = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in choices:
        raise GenerationError(f"REMIXER_DECODER_DTYPE must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]


def decoder_for(model) -> decoding.Decoder:
    """Our decode loop over the model's own decoder weights, built once per model."""
    decoder = getattr(model, "fast_decoder", None)
    if decoder is None:
        decoder = model.fast_decoder = decoding.Decoder(model)
    return decoder


def _materialise_buffers(model: torch.nn.Module) -> None:
    """Rebuild non-persistent buffers (sinusoidal positions) left on the meta device."""
    positions = model.decoder.model.decoder.embed_positions
    if positions.weights.is_meta:
        table = positions.get_embedding(positions.weights.shape[0], positions.embedding_dim)
        positions.weights = torch.nn.Buffer(table, persistent=False)
    leftovers = [name for name, tensor in model.state_dict(keep_vars=True).items() if tensor.is_meta]
    if leftovers:
        raise GenerationError(f"weights missing after loading: {leftovers[:5]}")


class ModelCache:
    """Loaded models per (checkpoint, device), least recently used evicted beyond a memory budget."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = budget_bytes if budget_bytes is not None else _default_budget()
        self._models: OrderedDict[tuple[str, str], tuple[torch.nn.Module, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, th_path: Path, device: str | None = None, weights_dir=None) -> torch.nn.Module:
        key = (str(th_path), str(pick_device(device)))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
            need = _estimated_bytes(th_path)
            while self._models and sum(size for _, size in self._models.values()) + need > self.budget:
                evicted, _ = self._models.popitem(last=False)
                log.info("unloading %s to make room", Path(evicted[0]).name)
            model = load_musicgen_chord(th_path, device, weights_dir)
            self._models[key] = (model, need)
            return model

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: tuple[Path, torch.device]) -> bool:
        path, device = key
        return (str(path), str(device)) in self._models


def _estimated_bytes(th_path: Path) -> int:
    return th_path.stat().st_size  # float32 on disk and in memory, within a few percent


def _default_budget() -> int:
    configured = os.environ.get("REMIXER_MODEL_CACHE_GB")
    if configured:
        return int(float(configured) * 2**30)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) * 1024 * 0.6)
    except OSError:
        pass
    return 16 * 2**30


# --- generation ---------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    classifier_free_guidance: float = 3.0


@dataclass(frozen=True)
class Generated:
    tokens: torch.Tensor  # (codebooks, frames), int64
    audio: np.ndarray  # (channels, samples) float32 at 32 kHz
    sample_rate: int
    seed: int


ProgressCallback = Callable[[int, int], None]


def build_prompt(prompt: str, bpm: float | None) -> str:
    text = (prompt or "").strip()
    if not text:
        raise GenerationError("the prompt is empty: describe the style, e.g. 'bossa nova with nylon guitar'")
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


def encode_text(model, text: str) -> EncodedText:
    tokenizer = _tokenizer(model.text_encoder.name_or_path)
    ids = tokenizer(text, return_tensors="pt")
    if ids["input_ids"].shape[1] > MAX_PROMPT_TOKENS:
        log.warning("prompt is %d tokens; T5 reads the first %d", ids["input_ids"].shape[1], MAX_PROMPT_TOKENS)
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_PROMPT_TOKENS)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    with torch.inference_mode():
        states = model.text_encoder(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    return EncodedText(ids["input_ids"], states, ids["attention_mask"])


@torch.inference_mode()
def condition_prefix(model, text: EncodedText, window: np.ndarray, guided: bool) -> torch.Tensor:
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


@functools.lru_cache(maxsize=4)
def _tokenizer(directory: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def generate(
    model,
    prompt: str,
    chroma: np.ndarray,
    duration: float,
    sampling: Sampling = Sampling(),
    seed: int | None = None,
    bpm: float | None = None,
    progress: ProgressCallback | None = None,
) -> Generated:
    """Generate `duration` seconds conditioned on the prompt and the song's whole chord chroma."""
    facts: ModelFacts = model.chord_facts
    if duration <= 0:
        raise GenerationError("nothing to generate: the song has no duration")
    text = build_prompt(prompt, bpm)
    seed = choose_seed(seed)
    total_frames = math.ceil(duration * FRAME_RATE)
    starts = window_starts(duration)
    windows = window_chroma(chroma, starts)
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
    guidance = sampling.classifier_free_guidance
    guided = guidance is not None and guidance > 1  # a scale of 1 is the condition alone
    settings = decoding.SamplingSettings(sampling.top_k, sampling.top_p, sampling.temperature,
                                         guidance if guided else None)
    decoder = decoder_for(model)
    window_decoder = decoding.WindowDecoder(decoder)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    codes = torch.zeros((facts.codebooks, 0), dtype=torch.long)
    for index, (window, new_frames) in enumerate(zip(windows, new_per_window)):
        prefix = condition_prefix(model, encoded, window, guided)
        prompt = codes[:, -prompt_frames:] if index > 0 else codes
        plan = decoding.plan_window(prompt, new_frames, decoder.delays, model.device)
        before = done
        window_codes = window_decoder.decode(prefix, plan, settings, generator,
                                             progress=lambda chosen: step_to(before + chosen))
        codes = torch.cat([codes, window_codes[:, prompt.shape[1]:].cpu()], dim=1)
        log.info("generation: window %d/%d done (%.0f s of %.0f s)", index + 1, len(starts),
                 min(codes.shape[1] / FRAME_RATE, duration), duration)
    codes = codes[:, :total_frames]
    audio = decode_tokens(model, codes)
    samples = int(round(duration * SAMPLE_RATE))
    audio = _fit_length(audio, samples)
    return Generated(codes, audio, SAMPLE_RATE, seed)


def decode_tokens(model, codes: torch.Tensor) -> np.ndarray:
    """EnCodec-decode aligned codes (codebooks, frames) -> (channels, samples) float32."""
    facts: ModelFacts = model.chord_facts
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


# --- tiny weights ---------------------------------------------------------------

TINY_LM = {"dim": 32, "num_heads": 2, "num_layers": 2, "hidden_scale": 4}


def xp_cfg(version: str, dim: int, num_heads: int, num_layers: int, hidden_scale: float = 4) -> dict:
    """An xp.cfg in the published checkpoints' layout (the parts the product reads)."""
    stereo = version.startswith("stereo")
    n_q = 8 if stereo else 4
    delays = [d for d in range(4) for _ in range(2)] if stereo else list(range(4))
    return {
        "sample_rate": SAMPLE_RATE,
        "channels": 2 if stereo else 1,
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "dataset": {"segment_duration": 30},
        "transformer_lm": {"dim": dim, "num_heads": num_heads, "num_layers": num_layers, "n_q": n_q,
                           "card": CARD, "hidden_scale": hidden_scale, "norm": "layer_norm",
                           "norm_first": True, "bias_proj": False, "bias_ff": False, "bias_attn": False,
                           "activation": "gelu", "positional_embedding": "sin"},
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": delays, "flatten_first": 0,
                                                             "empty_initial": 0}},
        "conditioners": {
            "self_wav": {"model": "chroma_chord", "chroma_chord": {"n_chroma": 12, "radix2_exp": 14}},
            "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}},
        },
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [],
                  "prepend": ["self_wav", "description"], "cross": [], "input_interpolate": []},
    }


def random_lm_state(cfg: dict, text_dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random audiocraft LM state dict with the published key names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    shape = _lm_shape(cfg)
    dim, ffn = shape["dim"], int(shape["hidden_scale"] * shape["dim"])

    def rand(*size: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*size, generator=generator) * scale

    state: dict[str, torch.Tensor] = {}
    prefix = "condition_provider.conditioners"
    state[f"{prefix}.description.output_proj.weight"] = rand(dim, text_dim)
    state[f"{prefix}.description.output_proj.bias"] = rand(dim)
    state[f"{prefix}.self_wav.output_proj.weight"] = rand(dim, 12)
    state[f"{prefix}.self_wav.output_proj.bias"] = rand(dim)
    for k in range(shape["n_q"]):
        state[f"emb.{k}.weight"] = rand(shape["card"] + 1, dim, scale=1.0)
    for i in range(shape["layers"]):
        layer = f"transformer.layers.{i}"
        state[f"{layer}.self_attn.in_proj_weight"] = rand(3 * dim, dim)
        state[f"{layer}.self_attn.out_proj.weight"] = rand(dim, dim)
        state[f"{layer}.linear1.weight"] = rand(ffn, dim)
        state[f"{layer}.linear2.weight"] = rand(dim, ffn)
        for norm in ("norm1", "norm2"):
            state[f"{layer}.{norm}.weight"] = 1 + rand(dim)
            state[f"{layer}.{norm}.bias"] = rand(dim)
    state["out_norm.weight"] = 1 + rand(dim)
    state["out_norm.bias"] = rand(dim)
    for k in range(shape["n_q"]):
        state[f"linears.{k}.weight"] = rand(shape["card"], dim)
    return state


# T5-base's encoder (what the published checkpoints condition on) and a tiny one for tests.
T5_BASE = dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
T5_TINY = dict(d_model=768, d_kv=8, d_ff=64, num_layers=1, num_heads=2)


def write_random_t5(directory: Path, seed: int = 0, full_size: bool = False) -> list[Path]:
    """A random T5 encoder (tiny, or T5-base's shape) and a small trained tokenizer, in the transformers layout."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    corpus = ["bossa nova with nylon guitar and brushed drums, bpm : 120", "80s synthwave with analog pads",
              "heavy metal, distorted guitars, double bass drum", "lofi hip hop, dusty piano, vinyl crackle",
              "orchestral film score with strings and horns", "reggae, offbeat guitar, deep bass"] * 10
    tokenizer.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=256, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    # T5-base's 32128-entry embedding; the small tokenizer uses its first ids.
    vocab = 32128 if full_size else tokenizer.get_vocab_size()
    config = T5Config(vocab_size=vocab, **(T5_BASE if full_size else T5_TINY), pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(str(directory))
    return [directory / "config.json", directory / "model.safetensors", directory / "tokenizer.json"]


def encodec_config(full_size: bool = False):
    """The 32 kHz codec's interface (2048 codes, 4 codebooks, 50 Hz); its full shape, or a small one for tests."""
    from transformers import EncodecConfig

    return EncodecConfig(sampling_rate=SAMPLE_RATE, audio_channels=1, codebook_size=CARD,
                         upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=64 if full_size else 4,
                         hidden_size=128, codebook_dim=128, num_lstm_layers=2 if full_size else 1,
                         use_causal_conv=False, norm_type="weight_norm", pad_mode="reflect", normalize=False)


def write_random_encodec(directory: Path, seed: int = 0, full_size: bool = False) -> list[Path]:
    """A random EnCodec (small, or the 32 kHz codec's shape) in the transformers layout."""
    from transformers import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(encodec_config(full_size))
    # transformers leaves the codebooks zero (training fills them): every code would decode alike,
    # and a test could not tell one token, or one stereo channel, from another.
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
    model.save_pretrained(str(directory))
    return [directory / "config.json", directory / "model.safetensors"]


def save_published_layout(path: Path, cfg: dict, lm_state: dict[str, torch.Tensor]) -> Path:
    """A .th as the published files are: xp.cfg pickled as an OmegaConf DictConfig, the LM state under 'model'."""
    from omegaconf import OmegaConf

    torch.save({"xp.cfg": OmegaConf.create(cfg), "model": lm_state, "version": "1.0"}, path)
    return path


def write_random_checkpoints(directory: str | Path, seed: int = 0) -> list[Path]:
    """Tiny musicgen-*.th files (all four versions) plus tiny T5 and EnCodec, in the real formats."""
    root = Path(directory)
    written = write_random_t5(root / "t5", seed) + write_random_encodec(root / "encodec", seed)
    for index, version in enumerate(MODEL_VERSIONS):
        cfg = xp_cfg(version, **TINY_LM)
        (file,) = weights.files_of([component_for(version)])
        path = root / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_published_layout(path, cfg, random_lm_state(cfg, seed=seed + index))
        written.append(path)
    return written
