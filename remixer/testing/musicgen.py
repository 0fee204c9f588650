"""Random MusicGen-Chord, T5 and EnCodec checkpoints in the published layouts (tests and benchmarks only)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from remixer import weights
from remixer.musicgen import CARD, CHORD_VERSIONS, SAMPLE_RATE, component_for, lm_shape

TINY_LM = {"dim": 32, "num_heads": 2, "num_layers": 2, "hidden_scale": 4}
# Five layers: MusiConGen's in-attention reaches layer 4 (idx % 4 == 0, 0 < idx < 36).
TINY_MUSICONGEN = {"dim": 32, "num_heads": 2, "num_layers": 5, "hidden_scale": 4}


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


def musicongen_cfg(dim: int, num_heads: int, num_layers: int, hidden_scale: float = 4) -> dict:
    """MusiConGen's xp.cfg (the parts the product reads): a mono MusicGen LM with its chord2music_inattn
    conditioner config (chord and beat summed and, with the description, prepended; in-attention on)."""
    cfg = xp_cfg("chord", dim, num_heads, num_layers, hidden_scale)
    cfg.pop("interleave_stereo_codebooks")
    cfg["conditioners"] = {"description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}},
                           "chord": {"model": "chord", "chord": {"name": "chord"}},
                           "beat": {"model": "beat", "beat": {"name": "beat"}}}
    cfg["fuser"] = {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "in_attn": True,
                    "sum": ["chord", "beat"], "prepend": ["chord", "description"], "cross": [],
                    "input_interpolate": []}
    return cfg


def random_lm_state(cfg: dict, text_dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random audiocraft LM state dict with the published key names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    shape = lm_shape(cfg)
    dim, ffn = shape["dim"], int(shape["hidden_scale"] * shape["dim"])

    def rand(*size: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*size, generator=generator) * scale

    state: dict[str, torch.Tensor] = {}
    prefix = "condition_provider.conditioners"
    state[f"{prefix}.description.output_proj.weight"] = rand(dim, text_dim)
    state[f"{prefix}.description.output_proj.bias"] = rand(dim)
    chords = "chord" if "chord" in cfg["conditioners"] else "self_wav"  # MusiConGen's, or the chroma's
    state[f"{prefix}.{chords}.output_proj.weight"] = rand(dim, 12)
    state[f"{prefix}.{chords}.output_proj.bias"] = rand(dim)
    if "beat" in cfg["conditioners"]:
        state[f"{prefix}.beat.output_proj.weight"] = rand(dim, 1)
        state[f"{prefix}.beat.output_proj.bias"] = rand(dim)
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
    """A random T5 encoder (tiny, or T5-base's shape) and a small tokenizer, in the transformers layout.

    The tokenizer is a Unigram model with a fixed vocabulary (whole words of a few style prompts, and
    every character), the same file on every run: trained tokenizers differ from process to process
    (the trainer's hash maps), which would change the tokens a seed gives.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    corpus = ["bossa nova with nylon guitar and brushed drums, bpm : 120", "80s synthwave with analog pads",
              "heavy metal, distorted guitars, double bass drum", "lofi hip hop, dusty piano, vinyl crackle",
              "orchestral film score with strings and horns", "reggae, offbeat guitar, deep bass"]
    words = sorted({"\u2581" + word for line in corpus for word in line.split()})
    characters = sorted({"\u2581", *"".join(corpus), *"abcdefghijklmnopqrstuvwxyz0123456789,:."} - {" "})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(word, -2.0) for word in words] + [(char, -8.0) for char in characters if char not in words]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    # T5-base's 32128-entry embedding; the small tokenizer uses its first ids.
    vocab_size = 32128 if full_size else tokenizer.get_vocab_size()
    config = T5Config(vocab_size=vocab_size, **(T5_BASE if full_size else T5_TINY), pad_token_id=0, eos_token_id=1,
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


def save_export_layout(model_path: Path, pointer_path: Path, cfg: dict,
                       lm_state: dict[str, torch.Tensor]) -> list[Path]:
    """MusiConGen's published pair as its export writes them: state_dict.bin {'best_state', 'xp.cfg' (YAML
    text), 'version', 'exported'} and compression_state_dict.bin, a pointer to EnCodec 32 kHz."""
    from omegaconf import OmegaConf

    # float16, as the published file is (the hub's pickle scan: HalfStorage).
    lm_state = {k: v.half() if v.is_floating_point() else v for k, v in lm_state.items()}
    torch.save({"best_state": lm_state, "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(cfg)), "version": "1.0.0",
                "exported": True}, model_path)
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.0.0"}, pointer_path)
    return [model_path, pointer_path]


def write_random_checkpoints(directory: str | Path, seed: int = 0) -> list[Path]:
    """Tiny musicgen-*.th files (the four chord versions), a tiny MusiConGen pair, and tiny T5 and EnCodec,
    in the real formats."""
    root = Path(directory)
    written = write_random_t5(root / "t5", seed) + write_random_encodec(root / "encodec", seed)
    model_file, pointer_file = weights.files_of([component_for("musicongen")])
    (root / model_file.name).parent.mkdir(parents=True, exist_ok=True)
    cfg = musicongen_cfg(**TINY_MUSICONGEN)
    written += save_export_layout(root / model_file.name, root / pointer_file.name, cfg,
                                  random_lm_state(cfg, seed=seed + len(CHORD_VERSIONS)))
    for index, version in enumerate(CHORD_VERSIONS):
        cfg = xp_cfg(version, **TINY_LM)
        (file,) = weights.files_of([component_for(version)])
        path = root / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_published_layout(path, cfg, random_lm_state(cfg, seed=seed + index))
        written.append(path)
    return written


@functools.lru_cache(maxsize=4)
def encoders_in(weights_dir: str | Path, device: str = "cpu"):
    """The T5 and EnCodec of a weights folder, loaded once per test session (the Remixer loads its own)."""
    from remixer import models

    root = Path(weights_dir)
    return models.load_encoders(root / "t5", root / "encodec", device)


def load_tiny(th_path: str | Path, device: str, weights_dir: str | Path, precision: str | None = None):
    """A MusicGen-Chord checkpoint with the encoders of `weights_dir`, as the Remixer would load it (the CPU
    decoder in `precision`, default REMIXER_DECODER_DTYPE's)."""
    from remixer import models

    return models.load_musicgen_chord(th_path, device, encoders_in(str(weights_dir), device), precision)
