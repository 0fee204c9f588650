"""Build the MusicGen-Chord parity fixtures with Meta's reference implementation (audiocraft).

Runs in a side environment, never in the product. One way to make it (the main
.venv provides torch 2.9.1; audiocraft 1.3.0 pins an old torch, hence --no-deps):

    python3 -m venv /tmp/side
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/side/lib/python3.11/site-packages/zz_main.pth
    /tmp/side/bin/pip install --no-deps audiocraft==1.3.0 xformers==0.0.33.post1
    /tmp/side/bin/pip install einops julius num2words sentencepiece flashy av spacy torchmetrics
    /tmp/side/bin/python tools/make_musicgen_fixtures.py tests/fixtures/musicgen

For a mono (4 codebooks) and a stereo (8 interleaved) model it builds a small
random audiocraft LM with the published conditioning layout (chord chroma
condition and T5 description condition, both prepended; delay pattern), saves
it in the published file format (`xp.cfg` as an OmegaConf DictConfig + `model`),
and records the reference outputs:

- logits for given tokens and given condition tensors;
- greedy tokens of one window, with and without classifier-free guidance;
- greedy tokens of whole songs, generated as the original does: 30 s windows
  advanced by 18 s, each prompted with the tokens after the stride and
  conditioned on the song's chroma at `positions % song length` (so past the
  song's end the chords start again, and a song shorter than 30 s is tiled).

The chord condition is modelled on the chord models' own conditioner
(ChromaChordConditioner of the original's audiocraft fork): the projected
chroma is multiplied by a mask built from the condition's length, so a
nullified (classifier-free guidance) row gives exact zeros. The text condition
is a fixed embedding (T5 is bypassed: no hub needed), zeros when nullified as
in audiocraft's T5 conditioner.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from audiocraft.models.lm import LMModel
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
from audiocraft.modules.conditioners import (
    ConditionFuser,
    ConditioningAttributes,
    ConditioningProvider,
    TextConditioner,
    WavCondition,
    WaveformConditioner,
)
from omegaconf import OmegaConf

CARD = 2048
SAMPLE_RATE = 32000
FRAME_RATE = 50
TEXT_DIM = 768
CHROMA_FRAMES = 235  # per 30 s window
BIN_SECONDS = 30 / CHROMA_FRAMES
SHAPE = {"dim": 16, "num_heads": 2, "num_layers": 2, "hidden_scale": 4}
LOGIT_STEPS = 6
GREEDY_FRAMES = 12
WINDOW_S, STRIDE_S = 30.0, 18.0
SONGS = {"long": 31.0, "short": 4.0}  # two windows (the second past the end), and one shorter than a window


def published_cfg(version: str) -> dict:
    """The parts of a published xp.cfg a loader reads (written here, independently of the product)."""
    stereo = version.startswith("stereo")
    return {
        "sample_rate": SAMPLE_RATE, "channels": 2 if stereo else 1,
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "dataset": {"segment_duration": 30},
        "transformer_lm": {"dim": SHAPE["dim"], "num_heads": SHAPE["num_heads"], "num_layers": SHAPE["num_layers"],
                           "n_q": 8 if stereo else 4, "card": CARD, "hidden_scale": SHAPE["hidden_scale"],
                           "norm": "layer_norm", "norm_first": True, "bias_proj": False, "bias_ff": False,
                           "bias_attn": False, "activation": "gelu", "positional_embedding": "sin"},
        "codebooks_pattern": {"modeling": "delay", "delay": {
            "delays": [0, 0, 1, 1, 2, 2, 3, 3] if stereo else [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0}},
        "conditioners": {
            "self_wav": {"model": "chroma_chord", "chroma_chord": {"n_chroma": 12, "radix2_exp": 14}},
            "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}},
        },
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [],
                  "prepend": ["self_wav", "description"], "cross": [], "input_interpolate": []},
    }


class FixedTextConditioner(TextConditioner):
    """Stands in for T5: maps the description to a fixed embedding; masks it out when nullified."""

    def __init__(self, embedding: torch.Tensor, output_dim: int):
        super().__init__(TEXT_DIM, output_dim)
        self.embedding = embedding  # (1, tokens, 768)

    def tokenize(self, texts):
        return torch.tensor([[1 if text else 0] for text in texts], dtype=torch.int)

    def forward(self, present):
        batch = present.shape[0]
        embeds = self.output_proj(self.embedding.expand(batch, -1, -1))
        mask = present.expand(-1, self.embedding.shape[1]).contiguous()
        # As audiocraft's T5 conditioner: masked positions become exact zeros.
        return embeds * mask.unsqueeze(-1), mask


class ChordChromaConditioner(WaveformConditioner):
    """The chord models' conditioner: the window's chord chroma projected, times a mask from the
    condition's length. Rows nullified for classifier-free guidance have length 0: exact zeros."""

    def __init__(self, output_dim: int):
        super().__init__(12, output_dim, "cpu")
        self.chroma = torch.zeros(1, CHROMA_FRAMES, 12)  # the current window's chroma, set by the caller

    def tokenize(self, wav: WavCondition):
        return wav

    def forward(self, wav: WavCondition):
        batch = len(wav.length)
        embeds = self.output_proj(self.chroma.expand(batch, -1, -1))
        mask = (wav.length > 0).int()[:, None].expand(-1, CHROMA_FRAMES).contiguous()
        return embeds * mask.unsqueeze(-1), mask


def song_chroma(seconds: float) -> torch.Tensor:
    """A multi-hot chord chroma on the 235-per-30 s grid: C, Am, F, G, each for 2 s."""
    frames = int(torch.ceil(torch.tensor(seconds / BIN_SECONDS - 1e-6)))
    chords = [[0, 4, 7], [9, 0, 4], [5, 9, 0], [7, 11, 2]]
    chroma = torch.zeros(frames, 12)
    for frame in range(frames):
        chroma[frame, chords[int(frame * BIN_SECONDS // 2) % 4]] = 1.0
    return chroma


def window_of(song: torch.Tensor, start_s: float) -> torch.Tensor:
    """The window's chroma as the original conditions it: the song at positions % its length."""
    first = int(start_s / BIN_SECONDS + 0.5)
    return song[(first + torch.arange(CHROMA_FRAMES)) % song.shape[0]][None]


def build(version: str, seed: int):
    torch.manual_seed(seed)
    cfg = published_cfg(version)
    lm_cfg = cfg["transformer_lm"]
    text = torch.randn(1, 5, TEXT_DIM)
    chroma = torch.zeros(1, CHROMA_FRAMES, 12)
    for frame in range(CHROMA_FRAMES):  # C major, then A minor, then F major
        chroma[0, frame, [[0, 4, 7], [9, 0, 4], [5, 9, 0]][frame * 3 // CHROMA_FRAMES]] = 1.0
    provider = ConditioningProvider({
        "description": FixedTextConditioner(text, lm_cfg["dim"]),
        "self_wav": ChordChromaConditioner(lm_cfg["dim"]),
    })
    fuser = ConditionFuser(fuse2cond={"prepend": ["self_wav", "description"], "cross": [], "sum": [],
                                      "input_interpolate": []}, cross_attention_pos_emb=False)
    pattern = DelayedPatternProvider(lm_cfg["n_q"], delays=cfg["codebooks_pattern"]["delay"]["delays"])
    lm = LMModel(pattern, provider, fuser, n_q=lm_cfg["n_q"], card=CARD, dim=lm_cfg["dim"],
                 num_heads=lm_cfg["num_heads"], num_layers=lm_cfg["num_layers"], hidden_scale=lm_cfg["hidden_scale"],
                 norm="layer_norm", norm_first=True, bias_proj=False, bias_ff=False, bias_attn=False,
                 positional_embedding="sin", activation="gelu", dropout=0.0, custom=True,
                 memory_efficient=False, causal=True, cfg_coef=3.0).eval()
    # Default init leaves the output heads near-uniform; spread them so greedy choices are well separated.
    with torch.no_grad():
        for linear in lm.linears:
            linear.weight.normal_(0, 0.5)
    return cfg, lm, text, chroma


def attributes() -> list[ConditioningAttributes]:
    wav = WavCondition(wav=torch.zeros(1, 1, SAMPLE_RATE * 30), length=torch.tensor([SAMPLE_RATE * 30]),
                       sample_rate=[SAMPLE_RATE], path=[None], seek_time=[0.0])
    return [ConditioningAttributes(text={"description": "a song"}, wav={"self_wav": wav})]


def greedy_song(lm: LMModel, song: torch.Tensor, seconds: float, cfg_coef: float) -> torch.Tensor:
    """Whole-song greedy tokens with the original's long-form loop (audiocraft's _generate_tokens)."""
    total = int(seconds * FRAME_RATE)
    stride = int(STRIDE_S * FRAME_RATE)
    pieces, prompt, offset = [], None, 0
    while offset + (0 if prompt is None else prompt.shape[-1]) < total:
        lm.condition_provider.conditioners["self_wav"].chroma = window_of(song, offset / FRAME_RATE)
        length = int(min(seconds - offset / FRAME_RATE, WINDOW_S) * FRAME_RATE)
        tokens = lm.generate(prompt, attributes(), max_gen_len=length, use_sampling=False, cfg_coef=cfg_coef,
                             two_step_cfg=False)
        pieces.append(tokens if prompt is None else tokens[:, :, prompt.shape[-1]:])
        prompt = tokens[:, :, stride:]
        offset += stride
    return torch.cat(pieces, dim=-1).clone()


@torch.no_grad()
def record(version: str, seed: int, out_dir: Path) -> None:
    cfg, lm, text, chroma = build(version, seed)
    n_q = cfg["transformer_lm"]["n_q"]
    name = f"musicgen-tiny-{version}"
    torch.save({"xp.cfg": OmegaConf.create(cfg), "model": lm.state_dict()}, out_dir / f"{name}.th")

    lm.condition_provider.conditioners["self_wav"].chroma = chroma
    tokens = torch.randint(0, CARD, (1, n_q, LOGIT_STEPS), generator=torch.Generator().manual_seed(seed))
    tokens[:, :, 0] = CARD  # the sequence starts with the special token, as in generation
    condition_tensors = lm.condition_provider(lm.condition_provider.tokenize(attributes()))
    assert list(condition_tensors) == ["description", "self_wav"], condition_tensors.keys()
    logits = lm(tokens, [], condition_tensors)  # [B, K, S, card]

    greedy = {}
    for cfg_coef in (1.0, 3.0):
        greedy[cfg_coef] = lm.generate(conditions=attributes(), max_gen_len=GREEDY_FRAMES, use_sampling=False,
                                       cfg_coef=cfg_coef, two_step_cfg=False)
    songs = {}
    for song_name, seconds in SONGS.items():
        song = song_chroma(seconds)
        songs[song_name] = {"seconds": seconds, "chroma": song,
                            **{f"greedy_cfg{int(c)}": greedy_song(lm, song, seconds, c) for c in (1.0, 3.0)}}
    # Clones: views would save their whole underlying buffers.
    torch.save({
        "text_embedding": text.clone(), "chroma": chroma.clone(), "tokens": tokens.clone(), "logits": logits.clone(),
        "greedy_no_cfg": greedy[1.0].clone(), "greedy_cfg3": greedy[3.0].clone(), "songs": songs,
    }, out_dir / f"{name}.reference.pt")
    print(f"{name}: logits {tuple(logits.shape)}, greedy {tuple(greedy[3.0].shape)}, "
          + ", ".join(f"{k} song {tuple(v['greedy_cfg3'].shape)}" for k, v in songs.items()))


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/musicgen")
    out_dir.mkdir(parents=True, exist_ok=True)
    record("chord", 11, out_dir)
    record("stereo-chord", 12, out_dir)


if __name__ == "__main__":
    main()
