"""Published MusicGen-Chord (and MusiConGen) checkpoints -> transformers' MusicGen-Melody layout, converted once
and cached.

A published `.th` holds `xp.cfg` (audiocraft's config, a pickled OmegaConf
DictConfig) and `model` (the LM state dict). The config carries the model's
facts (`ModelFacts`); the state is renamed to transformers' keys (fused
attention projections split) and cached beside the source as safetensors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from remixer import checkpoints
from remixer.musicgen import GenerationError, facts_from_cfg, lm_shape

log = logging.getLogger(__name__)

_CONVERTED = "converted"
STATE_FILE = "model.safetensors"
CONFIG_FILE = "decoder_config.json"
_SOURCE_FILE = "source.json"


def decoder_config(cfg: dict):
    """transformers' MusicgenMelodyDecoderConfig for an audiocraft `xp.cfg` (dim, layers, heads, n_q)."""
    from transformers import MusicgenMelodyDecoderConfig

    shape = lm_shape(cfg)
    facts = facts_from_cfg(cfg, "")
    return MusicgenMelodyDecoderConfig(
        vocab_size=shape["card"], hidden_size=shape["dim"], ffn_dim=int(shape["hidden_scale"] * shape["dim"]),
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"], num_codebooks=shape["n_q"],
        audio_channels=facts.channels, dropout=0.0, pad_token_id=shape["card"], bos_token_id=shape["card"],
    )


BEAT_PROJECTION = "beat_proj"
# audiocraft LM name -> transformers name (facts from both layouts).
_RENAMES = (
    ("condition_provider.conditioners.description.output_proj", "enc_to_dec_proj"),
    ("condition_provider.conditioners.self_wav.output_proj", "audio_enc_to_dec_proj"),
    # MusiConGen: its chord projection (12 -> dim, with bias) has the chroma projection's shape and role in
    # the prefix; its beat projection (1 -> dim) has no transformers counterpart and keeps its own name.
    ("condition_provider.conditioners.chord.output_proj", "audio_enc_to_dec_proj"),
    ("condition_provider.conditioners.beat.output_proj", BEAT_PROJECTION),
    ("emb.", "decoder.model.decoder.embed_tokens."),
    ("transformer.layers.", "decoder.model.decoder.layers."),
    ("out_norm.", "decoder.model.decoder.layer_norm."),
    ("linears.", "decoder.lm_heads."),
    (".linear1.", ".fc1."),
    (".linear2.", ".fc2."),
    (".norm1.", ".self_attn_layer_norm."),
    (".norm2.", ".final_layer_norm."),
)


_KEPT = tuple(old for old, _ in _RENAMES[:4]) + ("emb.", "transformer.", "out_norm.", "linears.")


def convert_state_dict(lm_state: dict[str, torch.Tensor], hidden_size: int) -> dict[str, torch.Tensor]:
    """audiocraft LM state dict -> transformers MusicGen-Melody names (decoder and projections)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in lm_state.items():
        if not name.startswith(_KEPT):
            continue  # conditioner internals (chroma extractor buffers) have no transformers counterpart
        for old, new in _RENAMES:
            name = name.replace(old, new)
        if name.endswith("self_attn.in_proj_weight"):
            base = name[: -len("in_proj_weight")]
            q, k, v = tensor.split(hidden_size, dim=0)
            out[base + "q_proj.weight"], out[base + "k_proj.weight"], out[base + "v_proj.weight"] = q, k, v
        else:
            out[name] = tensor
    # float32 in the cache (MusiConGen publishes float16): the CPU decodes in float32, CUDA casts to 16 bits.
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()}


def _source_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def converted_dir(th_path: Path) -> Path:
    """Where a .th checkpoint's converted safetensors live: beside it, `<name>.converted/`."""
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
    # A folder of this process's own: processes sharing a weights folder (batch workers on a cluster,
    # several predictors) may convert the same file at once.
    work = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_file(state, str(work / STATE_FILE))
    (work / CONFIG_FILE).write_text(json.dumps({"xp.cfg": cfg}, indent=1))
    (work / _SOURCE_FILE).write_text(json.dumps(stamp))
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(work, target)
    except OSError:  # another process finished first: its copy is the same conversion
        shutil.rmtree(work, ignore_errors=True)
        if not (source_file.is_file() and json.loads(source_file.read_text()) == stamp):
            raise
    return target


def read_converted(th_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A published .th file's xp.cfg and its LM state in the transformers layout, in memory."""
    try:
        package = checkpoints.read(th_path, "MusicGen-Chord checkpoint", checkpoints.OMEGACONF)
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
    return cfg, convert_state_dict(package.pop(state_key), lm_shape(cfg)["dim"])
