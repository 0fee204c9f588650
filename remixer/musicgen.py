"""MusicGen-Chord's facts: the model versions, rates, codebook size, what a checkpoint's config says, its error.

Everything that loads, converts or runs a MusicGen-Chord model reads these
from here, so loading (`conversion`, `models`) sits below generation with no
import circle. Facts from audiocraft's MusicGen (arXiv 2306.05284) and its
`musicgen_32khz` config: EnCodec at 32 kHz, 50 frames per second, codebooks
of 2048 entries, 4 codebooks (mono) or 8 interleaved (stereo).
"""

from __future__ import annotations

from dataclasses import dataclass

from remixer.errors import RemixerError

CHORD_VERSIONS = ("stereo-chord", "stereo-chord-large", "chord", "chord-large")
# MusiConGen (arXiv 2407.15060): MusicGen-Melody medium fine-tuned on chords and beats (remixer.conditions).
BEAT_VERSIONS = ("musicongen",)
MODEL_VERSIONS = CHORD_VERSIONS + BEAT_VERSIONS
SAMPLE_RATE = 32000
FRAME_RATE = 50  # EnCodec 32 kHz: 640 samples per token frame
CARD = 2048  # codebook size; also the special (BOS / padding) token of the delayed grid


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn, with the product's defaults (their one home; decoding, generation and the request
    table read them here). top_p > 0 means nucleus sampling, else top-k (0: the whole distribution)."""

    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    classifier_free_guidance: float = 3.0

    @property
    def guided(self) -> bool:
        """Whether the null condition is decoded too. audiocraft (models/lm.py) mixes
        null + (condition - null) * scale: a scale of 1 is the condition alone (one row, no null), 0 the
        unconditional model (the null row decides), anything else both."""
        return self.classifier_free_guidance is not None and self.classifier_free_guidance != 1


class GenerationError(RemixerError):
    """A MusicGen-Chord model or request the generator cannot serve, explained."""


def component_for(version: str) -> str:
    """The weights component (remixer.weights) of a model_version."""
    if version not in MODEL_VERSIONS:
        raise GenerationError(f"unknown model_version {version!r}; choose one of {', '.join(MODEL_VERSIONS)}")
    return version if version in BEAT_VERSIONS else f"musicgen-{version}"


def version_of(path) -> str:
    """The model_version of a checkpoint file by the manifest's names: musicgen-<version>.th, or
    <version>/state_dict.bin (the layout MusiConGen publishes)."""
    from pathlib import Path

    path = Path(path)
    if path.name == "state_dict.bin":
        return path.parent.name
    return path.stem.removeprefix("musicgen-")


@dataclass(frozen=True)
class ModelFacts:
    """What a model_version is, read from its checkpoint's xp.cfg."""

    version: str
    channels: int
    codebooks: int
    hidden_size: int
    layers: int
    heads: int
    in_attention: tuple[int, ...] = ()  # layers the chord + beat sum is added before (MusiConGen)

    @property
    def plays_on_beats(self) -> bool:
        """Conditioned on chord and beat frames (MusiConGen), not on a chord chroma."""
        return bool(self.in_attention) or self.version in BEAT_VERSIONS

    @property
    def max_delay(self) -> int:
        """Codebook delay of the last codebook (frames): 3 for mono and for interleaved stereo."""
        return self.codebooks // self.channels - 1


def lm_shape(cfg: dict) -> dict:
    """The language model's shape from audiocraft's `transformer_lm` config section."""
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
    """The model version's facts (channels, codebooks, width, layers, heads) from its xp.cfg."""
    shape = lm_shape(cfg)
    stereo = int(cfg.get("channels", 1)) == 2 or bool(cfg.get("interleave_stereo_codebooks", {}).get("use"))
    # MusiConGen's fuser (its conditioner config chord2music_inattn): in_attn adds the summed chord and beat
    # embeddings again before the layers with idx % 4 == 0, 0 < idx < 36 (its modules/transformer.py).
    fuser = cfg.get("fuser") or {}
    in_attention = tuple(i for i in range(shape["layers"]) if i % 4 == 0 and 0 < i < 36) \
        if fuser.get("in_attn") else ()
    return ModelFacts(version, 2 if stereo else 1, shape["n_q"], shape["dim"], shape["layers"], shape["heads"],
                      in_attention)
