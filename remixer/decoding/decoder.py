"""The decoder stack of a converted MusicGen-Chord model (its own tensors, q/k/v fused once) and its forwards:
the prefill and the static step as one batched forward, the CPU's eager step with as few operations as possible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from remixer.decoding import precision as precisions

if TYPE_CHECKING:
    from remixer.decoding.cache import KVCache


class Decoder:
    """The decoder stack of a converted MusicGen-Chord model, run step by step over a static cache."""

    def __init__(self, model, dtype: torch.dtype | None = None, precision: str = "float32"):
        """precision (CPU only): the linear layers' weights in float32 (the model's own tensors), bfloat16 or
        int8 (copies; `precision` module); activations, norms and heads stay in float32 under both."""
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.device = model.device
        self.precision = precisions.check(precision)
        low = precision in precisions.LOW_PRECISIONS
        if low and self.device.type != "cpu":
            raise ValueError(f"the {precision} decoder is the CPU's; on {self.device.type} set the dtype instead")
        self.dtype = torch.float32 if low else (dtype or next(decoder.parameters()).dtype)
        self.cache_dtype = precisions.CACHE_DTYPE if low else self.dtype
        self.codebooks = config.num_codebooks
        self.channels = config.audio_channels
        self.heads = config.num_attention_heads
        self.width = config.hidden_size
        self.head_dim = self.width // self.heads
        # All codebooks' embedding tables in one (a small copy): one lookup per step, offsets per codebook.
        self.embedding_table = torch.cat([embedding.weight for embedding in decoder.embed_tokens])
        self.embedding_offsets = torch.arange(self.codebooks, device=self.device)[:, None] * (
            decoder.embed_tokens[0].weight.shape[0])
        self.heads_out = torch.stack([head.weight for head in model.decoder.lm_heads])  # (K, card, D)
        self.heads_flat_t = self.heads_out.flatten(0, 1).t()  # every head in one product: (D, K * card)
        self.layers = [_LowLayer.of(_fused(layer), precision) if low else _fused(layer) for layer in decoder.layers]
        self.final_norm = (decoder.layer_norm.weight, decoder.layer_norm.bias)
        self.norm_eps = decoder.layer_norm.eps  # every layer norm's (transformers builds them all alike)
        self.positions = decoder.embed_positions
        if config.activation_function != "gelu":
            raise ValueError(f"the decode loop implements the GELU decoder, not {config.activation_function}")
        self.activation = F.gelu  # MusicGen's exact (erf) GELU, without a module call per layer
        # MusiConGen: the layers before which the step's chord + beat sum is added again (none for the chord
        # models), as its transformer does for "in-attention" conditioning.
        facts = getattr(model, "facts", None)
        self.in_attention = frozenset(facts.in_attention if facts is not None else ())

    @property
    def precision_name(self) -> str:
        """What the weights are held in: the CPU's precision (float32, bfloat16, int8) or the CUDA dtype."""
        return self.precision if self.device.type == "cpu" else str(self.dtype).removeprefix("torch.")

    def describe(self) -> dict:
        """What analysis.json, the log and the CLI say of the decoder: its weights' precision, bits, device."""
        bits = {"int8": 8, "bfloat16": 16, "float16": 16}.get(self.precision_name, 32)
        return {"precision": self.precision_name, "bits": bits, "device": self.device.type}

    @property
    def delays(self) -> list[int]:
        """Each codebook's delay in frames ([0, 1, 2, 3] mono; stereo interleaves two such sets)."""
        return [k // self.channels for k in range(self.codebooks)]

    def positional(self, length: int) -> torch.Tensor:
        """The sinusoidal position table, (positions, width), in the decoder's dtype."""
        table = self.positions.get_embedding(length, self.width)
        return table.to(self.device, self.dtype)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(rows, K, T) tokens -> (rows, T, D): the sum of the codebooks' embeddings."""
        looked_up = F.embedding(tokens + self.embedding_offsets, self.embedding_table)  # (rows, K, T, D)
        return looked_up.sum(dim=1)

    def forward(self, hidden: torch.Tensor, start: int | torch.Tensor, cache: "KVCache",
                causal: bool, condition: torch.Tensor | None = None, span: int | None = None) -> torch.Tensor:
        """Run `hidden` (rows, T, D) at absolute positions start.. start+T-1, writing keys/values to `cache`.

        causal=True: the prefill, a block from position 0 (`start` an int)
        attending causally within itself. causal=False: a CUDA-graph step, T == 1
        at a device-tensor position, attending to the cache's first `span`
        positions (default: all; `span_for` gives the position's bucket) through
        a mask, so that shapes never change within a bucket. (Eager steps use
        `step_eager`.) condition (rows, C, D): MusiConGen's per-step sum, added
        to the last C positions (the token steps) before each in-attention layer.
        """
        rows, length, _ = hidden.shape
        eager = isinstance(start, int)
        span = cache.length if span is None else span
        if not eager:
            index = start + torch.arange(length, device=hidden.device)
            # Positions after `start` are blocked: computed once per step, shared by every layer.
            after = 0 if causal or cache.shared is None else cache.shared_length  # the shared prefix is never blocked
            blocked = None if causal else (torch.arange(after, span, device=hidden.device) > start)[None, None, None]
        scale = self.head_dim ** -0.5
        for number, (layer, (keys_t, values)) in enumerate(zip(self.layers, cache.layers)):
            if condition is not None and number in self.in_attention:
                hidden = _add_to_last(hidden, condition)
            normed = F.layer_norm(hidden, (self.width,), layer.norm1_w, layer.norm1_b)
            qkv = layer.linear("qkv", normed).view(rows, length, 3, self.heads, self.head_dim).transpose(1, 3)
            q, k, v = qkv.unbind(2)  # each (rows, heads, T, head_dim)
            if eager:
                keys_t[:, :, :, start:start + length] = k.transpose(2, 3)
                values[:, :, start:start + length] = v
            else:
                keys_t.index_copy_(3, index, k.transpose(2, 3).to(keys_t.dtype))
                values.index_copy_(2, index, v.to(values.dtype))
            if causal:
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif cache.shared is not None:
                attended = shared_attention(q.to(keys_t.dtype), keys_t, values, cache.shared[number], span, blocked,
                                            scale)
            else:  # one query against the cache up to the bucket's end, later positions masked
                scores = torch.matmul(q.to(keys_t.dtype), keys_t[..., :span]).float().mul_(scale).masked_fill_(
                    blocked, float("-inf"))
                attended = torch.matmul(scores.softmax(dim=-1).to(values.dtype), values[:, :, :span])
            hidden = hidden + layer.linear("out", attended.transpose(1, 2).reshape(rows, length, self.width))
            normed = F.layer_norm(hidden, (self.width,), layer.norm2_w, layer.norm2_b)
            hidden = hidden + layer.linear("fc2", self.activation(layer.linear("fc1", normed)))
        return F.layer_norm(hidden, (self.width,), *self.final_norm)

    def step_eager(self, hidden: torch.Tensor, position: int, cache: "KVCache",
                   condition: torch.Tensor | None = None) -> torch.Tensor:
        """One position through every layer, (rows, D) -> (rows, D), with as few operations as possible:
        on the CPU each operation costs host time, and this runs once per layer per token. condition (rows, D):
        MusiConGen's sum for this step, added again before each in-attention layer."""
        rows = hidden.shape[0]
        batch = rows * self.heads
        scale = self.head_dim ** -0.5
        width = (self.width,)
        keys_live, values_live, scratch = cache.live(position + 1)
        for number, (layer, (keys_t, values), keys3, values3) in enumerate(
                zip(self.layers, cache.layers, keys_live, values_live)):
            if condition is not None and number in self.in_attention:
                hidden = hidden + condition
            # torch.layer_norm, not F.layer_norm: the same operation without the Python wrapper's checks.
            normed = torch.layer_norm(hidden, width, layer.norm1_w, layer.norm1_b, self.norm_eps)
            q, k, v = layer.qkv_step(normed).view(rows, 3, self.heads, self.head_dim).unbind(1)
            keys_t.select(3, position).copy_(k)
            values.select(2, position).copy_(v)
            # Plain attention for one query as batched products over keys stored transposed: on the
            # host, a third of the fused kernel's cost at these sizes, and no copy of the cache.
            scores = torch.baddbmm(scratch, q.reshape(batch, 1, self.head_dim), keys3, beta=0, alpha=scale)
            attended = torch.bmm(scores.softmax(dim=-1), values3)
            hidden = layer.out_step(hidden, attended.view(rows, self.width))
            normed = torch.layer_norm(hidden, width, layer.norm2_w, layer.norm2_b, self.norm_eps)
            hidden = layer.mlp_step(hidden, normed)
        return F.layer_norm(hidden, width, *self.final_norm)

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """(rows, D) -> (rows, K, card) float32."""
        rows, (codebooks, card, _) = hidden_last.shape[0], self.heads_out.shape
        return torch.mm(hidden_last, self.heads_flat_t).view(rows, codebooks, card).float()


def shared_attention(q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor,
                      shared: tuple[torch.Tensor, torch.Tensor], span: int, blocked: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """One query per row (rows, heads, 1, hd) against its group's shared prefix (read once per group, all
    the group's rows in one product) and its own positions from the prefix's end up to `span`, one softmax
    over both: the same attention as over each row's whole cache, summed in another order."""
    prefix_keys, prefix_values = shared  # (groups, heads, hd, C), (groups, heads, C, hd)
    groups, heads, head_dim, length = prefix_keys.shape
    rows = q.shape[0]
    takes = rows // groups
    grouped = q.view(groups, takes, heads, head_dim).transpose(1, 2)  # (groups, heads, takes, hd)
    prefix_scores = torch.matmul(grouped, prefix_keys).transpose(1, 2).reshape(rows, heads, 1, length)
    own_scores = torch.matmul(q, keys_t[..., length:span])
    scores = torch.cat([prefix_scores, own_scores], dim=-1).float().mul_(scale)
    scores[..., length:].masked_fill_(blocked, float("-inf"))
    probs = scores.softmax(dim=-1).to(values.dtype)
    prefix_probs = probs[..., :length].reshape(groups, takes, heads, length).transpose(1, 2)
    from_prefix = torch.matmul(prefix_probs, prefix_values).transpose(1, 2).reshape(rows, heads, 1, head_dim)
    return from_prefix + torch.matmul(probs[..., length:], values[:, :, length:span])


def _add_to_last(hidden: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """hidden (rows, T, D) with condition (rows, C, D) added to its last C positions."""
    count = condition.shape[1]
    if count == hidden.shape[1]:
        return hidden + condition
    return torch.cat([hidden[:, :-count], hidden[:, -count:] + condition], dim=1)


@dataclass
class _Layer:
    norm1_w: torch.Tensor
    norm1_b: torch.Tensor
    qkv: torch.Tensor
    out: torch.Tensor
    norm2_w: torch.Tensor
    norm2_b: torch.Tensor
    fc1: torch.Tensor
    fc2: torch.Tensor

    def __post_init__(self):
        # Transposed views for the step's matrix products, made once (a view per call costs host time).
        self.qkv_t, self.out_t, self.fc1_t, self.fc2_t = self.qkv.t(), self.out.t(), self.fc1.t(), self.fc2.t()

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, getattr(self, name))

    # The eager step's three products, each one operation (the residual add fused into addmm).
    def qkv_step(self, normed: torch.Tensor) -> torch.Tensor:
        return torch.mm(normed, self.qkv_t)

    def out_step(self, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return torch.addmm(hidden, attended, self.out_t)

    def mlp_step(self, hidden: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        return torch.addmm(hidden, F.gelu(torch.mm(normed, self.fc1_t)), self.fc2_t)


@dataclass
class _LowLayer:
    """A layer with its four products in a low precision (`precision.Linear`); norms in float32. Its q, k and v
    come out in the cache's dtype, what the attention reads."""

    norm1_w: torch.Tensor
    norm1_b: torch.Tensor
    projections: dict[str, precisions.Linear]
    norm2_w: torch.Tensor
    norm2_b: torch.Tensor

    @classmethod
    def of(cls, layer: _Layer, precision: str) -> "_LowLayer":
        return cls(layer.norm1_w, layer.norm1_b,
                   {name: precisions.Linear(getattr(layer, name), precision) for name in ("qkv", "out", "fc1", "fc2")},
                   layer.norm2_w, layer.norm2_b)

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.projections[name](x)

    def qkv_step(self, normed: torch.Tensor) -> torch.Tensor:
        return self.projections["qkv"](normed).to(precisions.CACHE_DTYPE)

    def out_step(self, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return hidden + self.projections["out"](attended)

    def mlp_step(self, hidden: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        return hidden + self.projections["fc2"](F.gelu(self.projections["fc1"](normed)))

    @property
    def bytes(self) -> int:
        return sum(linear.bytes for linear in self.projections.values())


def _fused(layer) -> _Layer:
    """One (3D, D) projection for q, k and v; the transformers layer then reads views of it (one copy)."""
    attention = layer.self_attn
    fused = getattr(attention, "fused_qkv", None)
    if fused is None:
        q, k, v = (proj.weight.detach() for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        fused = torch.cat([q, k, v])
        width = q.shape[0]
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.split(width)):
            getattr(attention, name).weight = torch.nn.Parameter(part, requires_grad=False)
        attention.fused_qkv = fused
    return _Layer(layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias, fused,
                  attention.out_proj.weight, layer.final_layer_norm.weight, layer.final_layer_norm.bias,
                  layer.fc1.weight, layer.fc2.weight)


