"""The BTC network (Park et al., ISMIR 2019), with the official state-dict layout.

Module and parameter names follow the published checkpoints exactly, so they
load unchanged with strict key checking.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WINDOW = 108
FEATURES = 144
HIDDEN = 128
LAYERS = 8
HEADS = 4


class LayerNorm(nn.Module):
    """BTC's layer norm: unbiased std, eps added to the std (not the variance)."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(size))
        self.beta = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class MultiHeadAttention(nn.Module):
    def __init__(self, size: int, heads: int, mask: torch.Tensor):
        super().__init__()
        self.heads = heads
        self.scale = (size // heads) ** -0.5
        self.query_linear = nn.Linear(size, size, bias=False)
        self.key_linear = nn.Linear(size, size, bias=False)
        self.value_linear = nn.Linear(size, size, bias=False)
        self.output_linear = nn.Linear(size, size, bias=False)
        self.register_buffer("mask", mask, persistent=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, size = x.shape
        return x.view(batch, length, self.heads, size // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split(self.query_linear(x)) * self.scale
        k = self._split(self.key_linear(x))
        v = self._split(self.value_linear(x))
        length = x.shape[1]
        scores = q @ k.transpose(-1, -2) + self.mask[:length, :length]
        context = torch.softmax(scores, dim=-1) @ v
        batch = x.shape[0]
        return self.output_linear(context.transpose(1, 2).reshape(batch, length, -1))


class Conv(nn.Module):
    """Width-3 convolution over time, zero padded on both sides."""

    def __init__(self, size: int):
        super().__init__()
        self.conv = nn.Conv1d(size, size, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class PositionwiseConvolution(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.layers = nn.ModuleList([Conv(size), Conv(size)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference applies ReLU after both convolutions, the last included.
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


class AttentionBlock(nn.Module):
    """Pre-norm self-attention and convolution, each with a residual."""

    def __init__(self, size: int, heads: int, mask: torch.Tensor):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(size, heads, mask)
        self.positionwise_convolution = PositionwiseConvolution(size)
        self.layer_norm_mha = LayerNorm(size)
        self.layer_norm_ffn = LayerNorm(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.multi_head_attention(self.layer_norm_mha(x))
        return x + self.positionwise_convolution(self.layer_norm_ffn(x))


class BidirectionalLayer(nn.Module):
    """A causal and an anti-causal attention block, merged by a linear layer."""

    def __init__(self, size: int, heads: int, length: int):
        super().__init__()
        future = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        self.attn_block = AttentionBlock(size, heads, future)
        self.backward_attn_block = AttentionBlock(size, heads, future.T.contiguous())
        self.linear = nn.Linear(2 * size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([self.attn_block(x), self.backward_attn_block(x)], dim=-1))


def timing_signal(length: int, channels: int) -> torch.Tensor:
    """Sinusoidal positions (sin half, cos half), timescales 1 to 1e4."""
    half = channels // 2
    increment = math.log(1.0e4) / (half - 1)
    inverse = torch.exp(torch.arange(half, dtype=torch.float64) * -increment)
    scaled = torch.arange(length, dtype=torch.float64)[:, None] * inverse[None, :]
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
    return nn.functional.pad(signal, (0, channels % 2)).float()


class Encoder(nn.Module):
    def __init__(self, features: int, size: int, layers: int, heads: int, length: int):
        super().__init__()
        self.embedding_proj = nn.Linear(features, size, bias=False)
        self.self_attn_layers = nn.Sequential(*[BidirectionalLayer(size, heads, length) for _ in range(layers)])
        self.layer_norm = LayerNorm(size)
        self.register_buffer("timing", timing_signal(length, size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embedding_proj(x) + self.timing[: x.shape[1]]
        return self.layer_norm(self.self_attn_layers(x))


class OutputLayer(nn.Module):
    def __init__(self, size: int, classes: int):
        super().__init__()
        self.output_projection = nn.Linear(size, classes)
        # Present in the official checkpoints but unused at inference; kept so
        # they load with strict key checking.
        self.lstm = nn.LSTM(size, size // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_projection(x)


class BTC(nn.Module):
    """Windows (batch, 108, 144) of normalised features -> logits (batch, 108, classes)."""

    def __init__(self, classes: int, features: int = FEATURES, size: int = HIDDEN,
                 layers: int = LAYERS, heads: int = HEADS, length: int = WINDOW):
        super().__init__()
        self.self_attn_layers = Encoder(features, size, layers, heads, length)
        self.output_layer = OutputLayer(size, classes)

    @property
    def classes(self) -> int:
        return self.output_layer.output_projection.out_features

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.self_attn_layers(windows))
