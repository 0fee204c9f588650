"""Build the MusicGen-Chord parity fixtures with Meta's reference implementation (audiocraft).

Runs in a side environment, never in the product. One way to make it (the main
.venv provides torch 2.9.1; audiocraft 1.3.0 pins an old torch, hence --no-deps):

    python3 -m venv /tmp/side
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/side/lib/python3.11/site-packages/zz_main.pth
    /tmp/side/bin/pip install --no-deps audiocraft==1.3.0 xformers==0.0.33.post1
    /tmp/side/bin/pip install einops julius num2words sentencepiece flashy av spacy torchmetrics
    /tmp/side/bin/python tools/make_musicgen_fixtures.py tests/fixtures/musicgen

For a mono (4 codebooks) and a stereo (8 interleaved) model it builds a small
random audiocraft LM with the published conditioning layout (chroma condition
and T5 description condition, both prepended; delay pattern), saves it in the
published file format (`xp.cfg` + `model`), and records the reference outputs:
logits for given tokens and given condition tensors, and greedy tokens with
and without classifier-free guidance. The text condition is given as a fixed
embedding (T5 is bypassed: no hub needed); the chord chroma as a fixed
multi-hot tensor; the unconditional chroma is what audiocraft's own chroma
extractor gives for the nullified (silent) condition.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from audiocraft.models.lm import LMModel
from audiocraft.modules.chroma import ChromaExtractor
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
from audiocraft.modules.conditioners import (
    ConditionFuser,
    ConditioningAttributes,
    ConditioningProvider,
    TextConditioner,
    WavCondition,
    WaveformConditioner,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for the checkpoint layout
from remixer.generation import CARD, SAMPLE_RATE, xp_cfg  # noqa: E402

TEXT_DIM = 768
CHROMA_FRAMES = 235
SHAPE = {"dim": 16, "num_heads": 2, "num_layers": 2, "hidden_scale": 4}
LOGIT_STEPS = 6
GREEDY_FRAMES = 12


class FixedTextConditioner(TextConditioner):
    """Stands in for T5: maps the description to a fixed embedding; masks it out when nullified."""

    def __init__(self, embedding: torch.Tensor, output_dim: int):
        super().__init__(TEXT_DIM, output_dim)
        self.embedding = embedding  # (1, tokens, 768)

    def tokenize(self, texts):
        present = torch.tensor([[1 if text else 0] for text in texts], dtype=torch.int)
        return present

    def forward(self, present):
        batch = present.shape[0]
        embeds = self.output_proj(self.embedding.expand(batch, -1, -1))
        mask = present.expand(-1, self.embedding.shape[1]).contiguous()
        # As audiocraft's T5 conditioner: masked positions become exact zeros.
        return embeds * mask.unsqueeze(-1), mask


class FixedChromaConditioner(WaveformConditioner):
    """Stands in for the chroma conditioner: the given chord chroma, or for a
    nullified condition what audiocraft's ChromaExtractor makes of silence."""

    def __init__(self, chroma: torch.Tensor, output_dim: int):
        super().__init__(12, output_dim, "cpu")
        self.chroma = chroma  # (1, 235, 12)
        self.extractor = ChromaExtractor(SAMPLE_RATE, n_chroma=12, radix2_exp=14, argmax=True)

    def tokenize(self, wav: WavCondition):
        return wav

    def forward(self, wav: WavCondition):
        # Rows nullified for classifier-free guidance have length 0 (their
        # samples are zero padding in a batch): they get the chroma of silence.
        silence = self.extractor(torch.zeros(1, 1, int(SAMPLE_RATE * 30)))[:, :CHROMA_FRAMES]
        rows = [self.chroma if int(length) > 0 else silence for length in wav.length]
        embeds = self.output_proj(torch.cat(rows, dim=0))
        return embeds, torch.ones_like(embeds[..., 0]).int()


def build(version: str, seed: int):
    torch.manual_seed(seed)
    cfg = xp_cfg(version, **SHAPE)
    lm_cfg = cfg["transformer_lm"]
    text = torch.randn(1, 5, TEXT_DIM)
    chroma = torch.zeros(1, CHROMA_FRAMES, 12)
    for frame in range(CHROMA_FRAMES):  # C major, then A minor, then F major
        chroma[0, frame, [[0, 4, 7], [9, 0, 4], [5, 9, 0]][frame * 3 // CHROMA_FRAMES]] = 1.0
    provider = ConditioningProvider({
        "description": FixedTextConditioner(text, lm_cfg["dim"]),
        "self_wav": FixedChromaConditioner(chroma, lm_cfg["dim"]),
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


def attributes(batch: int = 1) -> list[ConditioningAttributes]:
    wav = WavCondition(wav=torch.zeros(1, 1, SAMPLE_RATE * 30), length=torch.tensor([SAMPLE_RATE * 30]),
                       sample_rate=[SAMPLE_RATE], path=[None], seek_time=[0.0])
    return [ConditioningAttributes(text={"description": "a song"}, wav={"self_wav": wav}) for _ in range(batch)]


@torch.no_grad()
def record(version: str, seed: int, out_dir: Path) -> None:
    cfg, lm, text, chroma = build(version, seed)
    n_q = cfg["transformer_lm"]["n_q"]
    name = f"musicgen-tiny-{version}"
    torch.save({"xp.cfg": cfg, "model": lm.state_dict()}, out_dir / f"{name}.th")

    tokens = torch.randint(0, CARD, (1, n_q, LOGIT_STEPS), generator=torch.Generator().manual_seed(seed))
    tokens[:, :, 0] = CARD  # the sequence starts with the special token, as in generation
    condition_tensors = lm.condition_provider(lm.condition_provider.tokenize(attributes()))
    assert list(condition_tensors) == ["description", "self_wav"], condition_tensors.keys()
    logits = lm(tokens, [], condition_tensors)  # [B, K, S, card]

    greedy = {}
    for cfg_coef in (1.0, 3.0):
        greedy[cfg_coef] = lm.generate(conditions=attributes(), max_gen_len=GREEDY_FRAMES, use_sampling=False,
                                       cfg_coef=cfg_coef, two_step_cfg=False)
    torch.save({
        "text_embedding": text, "chroma": chroma, "tokens": tokens, "logits": logits,
        "greedy_no_cfg": greedy[1.0], "greedy_cfg3": greedy[3.0],
    }, out_dir / f"{name}.reference.pt")
    print(f"{name}: logits {tuple(logits.shape)}, greedy {tuple(greedy[3.0].shape)}")


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/musicgen")
    out_dir.mkdir(parents=True, exist_ok=True)
    record("chord", 11, out_dir)
    record("stereo-chord", 12, out_dir)


if __name__ == "__main__":
    main()
