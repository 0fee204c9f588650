"""Loaded MusicGen-Chord models: one typed model object per checkpoint and device, cached within a budget.

`ChordModel` is transformers' MusicGen-Melody with the facts of its checkpoint
(`facts`: channels, codebooks, version), the T5 tokenizer, and our decode
loop over its own decoder weights (`decoder_for`). T5 and EnCodec
(`Encoders`) are shared by all versions: the Remixer loads them once and
hands them to every model it loads. Loaders take resolved paths and a device;
the Remixer owns the cache (`ModelCache`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from transformers import MusicgenMelodyForConditionalGeneration

from remixer import decoding
from remixer.conversion import BEAT_PROJECTION, CONFIG_FILE, STATE_FILE, convert_checkpoint, decoder_config
from remixer.device import system_memory
from remixer.musicgen import CARD, GenerationError, ModelFacts, facts_from_cfg, version_of

log = logging.getLogger(__name__)

ENCODEC_32KHZ = "facebook/encodec_32khz"  # the codec of every MusicGen-Chord and MusiConGen checkpoint


class ChordModel(MusicgenMelodyForConditionalGeneration):
    """MusicGen-Melody weights of a MusicGen-Chord (or MusiConGen) checkpoint, with that checkpoint's facts."""

    facts: ModelFacts
    tokenizer: object = None  # T5's tokenizer (transformers), from the shared Encoders
    fast_decoder: decoding.Decoder | None = None
    # MusiConGen's models also hold `beat_proj`, Linear(1, width), registered as a submodule (so that it moves
    # with the model); not declared here: a class attribute would shadow the registered module.

    precision: str = "float32"  # the CPU decoder's (set by `prepare`; CUDA's dtype is the decoder's own)

    def decoder_for(self) -> decoding.Decoder:
        """Our decode loop over this model's own decoder weights (or, in a low CPU precision, their copies),
        built once."""
        if self.fast_decoder is None:
            self.fast_decoder = decoding.Decoder(self, precision=self.precision)
        return self.fast_decoder


@dataclass(frozen=True)
class Encoders:
    """T5 (text encoder and tokenizer) and EnCodec: the same for all four versions, loaded once per device."""

    text: torch.nn.Module
    audio: torch.nn.Module
    tokenizer: object


def load_encoders(t5_dir: str | Path, encodec_dir: str | Path, device: str | torch.device) -> Encoders:
    """T5 and EnCodec from their transformers folders (config.json, model.safetensors, tokenizer.json)."""
    from transformers import AutoTokenizer, EncodecModel, T5EncoderModel

    device = torch.device(device)
    for folder in (t5_dir, encodec_dir):
        if not (Path(folder) / "config.json").is_file():
            raise GenerationError(f"no model in {folder} (config.json missing)")
    with quiet_transformers():
        return Encoders(T5EncoderModel.from_pretrained(str(t5_dir)).to(device).eval(),
                        EncodecModel.from_pretrained(str(encodec_dir)).to(device).eval(),
                        AutoTokenizer.from_pretrained(str(t5_dir)))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own "Loading weights" bars and config notes kept out of our stage lines while we load.

    The notes say that the pad/BOS token 2048 lies outside the 2048-entry codebooks: by design (the delay
    pattern's special token, as in audiocraft), so they tell a user nothing."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_musicgen_chord(th_path: str | Path, device: str | torch.device, encoders: Encoders,
                        precision: str | None = None) -> ChordModel:
    """The transformers model for a MusicGen-Chord checkpoint (converted once, cached beside it).

    Its facts (channels, codebooks, version) are at `model.facts`; on the CPU its decoder takes `precision`
    (default: REMIXER_DECODER_DTYPE, else the CPU's default; see `prepare`).
    """
    from safetensors.torch import load_file

    th_path = Path(th_path)
    if not th_path.is_file():
        raise GenerationError(f"MusicGen-Chord checkpoint not found: {th_path}")
    chosen = torch.device(device)
    cache = convert_checkpoint(th_path)
    cfg = json.loads((cache / CONFIG_FILE).read_text())["xp.cfg"]
    version = version_of(th_path)
    # Cast on the host, then move: the GPU never holds a float32 and a 16-bit copy of the decoder at once.
    state = load_file(str(cache / STATE_FILE), device="cpu")
    if chosen.type == "cuda":
        dtype = _cuda_decoder_dtype()
        state = {k: (v.to(dtype) if k.startswith("decoder.") else v).to(chosen) for k, v in state.items()}
    with quiet_transformers():
        return prepare(assemble(cfg, encoders, state, version, th_path.name), chosen, precision)


def assemble(cfg: dict, encoders: Encoders, state: dict[str, torch.Tensor] | None = None,
             version: str = "chord", name: str = "model") -> ChordModel:
    """A ChordModel with the decoder shape of `cfg`: converted weights, or random when `state` is None."""
    from transformers import MusicgenMelodyConfig, MusicgenMelodyForCausalLM

    facts = facts_from_cfg(cfg, version)
    if state is None:
        decoder = MusicgenMelodyForCausalLM(decoder_config(cfg))
        model = ChordModel(text_encoder=encoders.text, audio_encoder=encoders.audio, decoder=decoder)
        model.facts, model.tokenizer = facts, encoders.tokenizer
        return model
    # Build on the meta device and take the converted tensors as they are: no random init, no copy.
    with torch.device("meta"):
        decoder = MusicgenMelodyForCausalLM(decoder_config(cfg))
        config = MusicgenMelodyConfig(text_encoder=encoders.text.config, audio_encoder=encoders.audio.config,
                                      decoder=decoder.config)
        model = ChordModel(config=config)
    beat = {key.split(".")[-1]: state.pop(key) for key in list(state) if key.startswith(BEAT_PROJECTION + ".")}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(("text_encoder.", "audio_encoder."))
               and "embed_positions" not in k]
    if missing or unexpected:
        raise GenerationError(f"{name}: converted weights do not fit the model "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.text_encoder = encoders.text
    model.audio_encoder = encoders.audio
    if facts.plays_on_beats:
        model.beat_proj = _beat_projection(beat, name, facts.hidden_size)
    _materialise_buffers(model)
    model.facts, model.tokenizer = facts, encoders.tokenizer
    return model


def _beat_projection(state: dict[str, torch.Tensor], name: str, width: int) -> torch.nn.Linear:
    """MusiConGen's beat projection, Linear(1, width) with bias, from its converted tensors."""
    if set(state) != {"weight", "bias"} or tuple(state["weight"].shape) != (width, 1):
        raise GenerationError(f"{name}: a MusiConGen checkpoint holds the beat conditioner's output_proj "
                              f"(weight ({width}, 1) and bias); found {sorted(state)}")
    projection = torch.nn.Linear(1, width)
    projection.weight = torch.nn.Parameter(state["weight"], requires_grad=False)
    projection.bias = torch.nn.Parameter(state["bias"], requires_grad=False)
    return projection


def check_codec_pointer(path: Path) -> None:
    """MusiConGen's compression_state_dict.bin names the codec its tokens are for (its export's pointer:
    {'pretrained': 'facebook/encodec_32khz', 'exported': True, ...}); we decode with EnCodec 32 kHz, so any
    other codec is refused. Read with the safe loader: plain data only."""
    from remixer import checkpoints

    try:
        pointer = checkpoints.read(path, "MusiConGen compression pointer", checkpoints.OMEGACONF)
    except checkpoints.CheckpointError as error:
        raise GenerationError(str(error)) from None
    if pointer.get("pretrained") != ENCODEC_32KHZ:
        raise GenerationError(f"{path.name} points to the codec {pointer.get('pretrained')!r}; the remixer decodes "
                              f"MusiConGen's tokens with {ENCODEC_32KHZ} only")


def prepare(model: ChordModel, device: torch.device, precision: str | None = None) -> ChordModel:
    """The model on `device` in eval mode, its decoder ready for our decode loop. On the CPU the decoder's
    linear layers take `precision` (default: REMIXER_DECODER_DTYPE, else the CPU's default); in a low one
    their float32 weights are dropped once converted, so the model holds a quarter (int8) or half of them."""
    model.to(device).eval()
    if device.type == "cuda":
        # The decode loop reads every decoder weight once per step: half the bytes in 16 bits.
        model.decoder.to(_cuda_decoder_dtype())
    else:
        model.precision = decoding.precision.check(precision) if precision else cpu_decoder_precision()
        if model.precision in decoding.precision.LOW_PRECISIONS:
            model.decoder_for()
            _drop_float32_layers(model)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = CARD
    return model


def _drop_float32_layers(model: ChordModel) -> None:
    """Free the transformers decoder's linear weights once the low-precision decoder holds its own copies (our
    loop is the only one that decodes; transformers' own forward would fail on the empty weights)."""
    for layer in model.decoder.model.decoder.layers:
        attention = layer.self_attn
        for module in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj, layer.fc1,
                       layer.fc2):
            module.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        attention.fused_qkv = None


# The CPU decoder's precision when REMIXER_DECODER_DTYPE is unset: the fastest whose error was measured small
# (docs/performance.md: guided logits within 2% of float32's and 97% of greedy's choices agreeing over a 30 s
# window of a medium-proportioned random model; bfloat16 1.4% and 97.6%, int8 4.4% and 92.6%). Measured faster than
# float32 with AVX-512 and with AVX2 only; on other CPUs (none measured) the exact float32 path stays.
CPU_DEFAULT_PRECISION = "bfloat16"
MEASURED_CAPABILITIES = ("AVX512", "AVX2")  # torch.backends.cpu.get_cpu_capability() where the default was timed


def cpu_decoder_precision() -> str:
    """REMIXER_DECODER_DTYPE on the CPU: float32, bfloat16 or int8; unset, CPU_DEFAULT_PRECISION where it was
    measured faster than float32, float32 elsewhere."""
    name = os.environ.get("REMIXER_DECODER_DTYPE") or (
        CPU_DEFAULT_PRECISION if torch.backends.cpu.get_cpu_capability() in MEASURED_CAPABILITIES else "float32")
    if name not in decoding.precision.PRECISIONS:
        raise GenerationError(f"REMIXER_DECODER_DTYPE must be one of {', '.join(decoding.precision.PRECISIONS)} "
                              f"on the CPU, got {name!r}")
    return name


def _cuda_decoder_dtype() -> torch.dtype:
    """float16 by default (MusicGen was trained under float16 autocast); REMIXER_DECODER_DTYPE=bfloat16
    or float32 where a model's activations overflow float16."""
    name = os.environ.get("REMIXER_DECODER_DTYPE") or "float16"
    choices = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in choices:
        raise GenerationError(f"REMIXER_DECODER_DTYPE must be one of {', '.join(choices)} on CUDA, got {name!r}"
                              + (" (int8 is the CPU decoder's)" if name == "int8" else ""))
    return choices[name]


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

    def get(self, th_path: Path, device: torch.device, encoders: Encoders) -> ChordModel:
        """The model of a checkpoint on a device, loaded on first use; least recently used ones
        are unloaded to stay within the memory budget. Raises GenerationError (not a MusicGen-Chord checkpoint)."""
        key = (str(th_path), str(device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
            need = estimated_bytes(th_path, torch.device(device))
            while self._models and sum(size for _, size in self._models.values()) + need > self.budget:
                evicted, _ = self._models.popitem(last=False)
                log.info("unloading %s to make room", Path(evicted[0]).name)
            model = load_musicgen_chord(th_path, device, encoders)
            self._models[key] = (model, need)
            return model

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: tuple[Path, torch.device]) -> bool:
        path, device = key
        return (str(path), str(device)) in self._models


def estimated_bytes(th_path: Path, device: torch.device) -> int:
    """The bytes a checkpoint's weights take once loaded on `device`: every tensor's elements times the size
    of the dtype it is held in (float32; the decoder in 16 bits on CUDA), not the file's size (MusiConGen's
    file is float16 and is held as float32: twice its size on a CPU). Read from the converted file's header."""
    from safetensors import safe_open

    cache = convert_checkpoint(th_path)
    cuda_bytes = torch.empty((), dtype=_cuda_decoder_dtype()).element_size() if device.type == "cuda" else 4
    cpu_linear = decoding.precision.WEIGHT_BYTES[cpu_decoder_precision()] if device.type != "cuda" else 4
    total = 0
    with safe_open(str(cache / STATE_FILE), framework="pt") as tensors:
        for name in tensors.keys():
            elements = math.prod(tensors.get_slice(name).get_shape())
            if device.type == "cuda":
                total += elements * (cuda_bytes if name.startswith("decoder.") else 4)
            else:
                total += elements * (cpu_linear if _is_layer_linear(name) else 4)
    return total


def _is_layer_linear(name: str) -> bool:
    """A decoder layer's linear weight: what a low CPU precision converts (embeddings, norms, heads stay)."""
    return name.startswith("decoder.model.decoder.layers.") and name.endswith(
        ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight"))


def _default_budget() -> int:
    configured = os.environ.get("REMIXER_MODEL_CACHE_GB")
    if configured:
        return int(float(configured) * 2**30)
    total = system_memory("MemTotal")
    return int(total * 0.6) if total is not None else 16 * 2**30
