"""The CPU decoder's precision: its linear layers' weights in 32, 16 or 8 bits.

A CPU step reads every decoder weight once and is bound by how fast it moves them: float32 reads them at a third of
what the machine delivers, 16-bit and 8-bit weights move half and a quarter of the bytes and use the CPU's
dot-product instructions (AVX-512 BF16, VNNI; fbgemm's AVX2 kernels elsewhere). Layer norms, the residual stream,
embeddings, the output heads and sampling stay in float32; the KV cache is bfloat16 under both low precisions.

- float32: the decoder as loaded (the model's own tensors); exactly the path every earlier remix took.
- bfloat16: the weights in bfloat16, the activations cast to bfloat16 for each product (oneDNN).
- int8: int8 weights with one scale per output channel (symmetric), activations quantized per step on the fly
  (fbgemm's dynamic quantized linear, `torch.ops.quantized.linear_dynamic`: the op that
  `torch.ao.quantization.quantize_dynamic` builds its modules on; that API is deprecated, the op is not).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PRECISIONS = ("float32", "bfloat16", "int8")
LOW_PRECISIONS = ("bfloat16", "int8")
CACHE_DTYPE = torch.bfloat16  # the KV cache under a low precision: half the bytes a late step reads
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}  # per weight of a linear layer


class Linear:
    """A linear layer (no bias: MusicGen's decoder has none) in a low precision: float32 (or bfloat16) in,
    float32 out, for any leading shape."""

    def __init__(self, weight: torch.Tensor, precision: str):
        if precision not in LOW_PRECISIONS:
            raise ValueError(f"a low-precision linear is one of {', '.join(LOW_PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.shape = tuple(weight.shape)
        weight = weight.detach().float()
        if precision == "bfloat16":
            self.weight = weight.to(torch.bfloat16).contiguous()
            self.packed = None
        else:
            self.weight = None
            self.packed = torch.ops.quantized.linear_prepack(quantize_per_channel(weight), None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self.packed)
        return F.linear(x.to(torch.bfloat16), self.weight).float()

    @property
    def bytes(self) -> int:
        """The bytes its weights take (int8: one byte each plus a float scale per output channel)."""
        out, inp = self.shape
        return out * inp * WEIGHT_BYTES[self.precision] + (out * 4 if self.precision == "int8" else 0)


def quantize_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """int8 weights, symmetric, one scale per output channel (its largest magnitude over 127)."""
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    return torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)


def check(precision: str) -> str:
    """The precision itself, or ValueError naming the ones there are."""
    if precision not in PRECISIONS:
        raise ValueError(f"the CPU decoder's precision is one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision
