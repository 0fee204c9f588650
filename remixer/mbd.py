"""Multi-Band Diffusion (arXiv 2308.02560): decode EnCodec tokens with diffusion instead of the EnCodec decoder.

Our own inference implementation for the published `mbd_musicgen_32khz.th`
(one diffusion U-Net per frequency band, each with its band processor and
noise schedule). Each band's U-Net denoises from Gaussian noise conditioned
on the EnCodec latent of the tokens; the bands are summed and equalised to
the EnCodec decoding. Module names follow the checkpoint's state dicts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from remixer import checkpoints
from remixer.errors import RemixerError

log = logging.getLogger(__name__)

COMPONENT = "mbd"
DEFAULT_STEPS = list(range(1000))[::-50] + [0]  # 20 denoising steps out of the 1000-step schedule
EQ_BANDS = 32


class MBDError(RemixerError):
    """An MBD checkpoint we cannot use, explained."""


# --- the per-band U-Net ---------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, channels: int, norm_groups: int, dilation: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, 1, dilation, dilation=dilation)
        self.norm2 = nn.GroupNorm(norm_groups, channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, 1, dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples) -> the same shape, plus the residual."""
        h = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(h)))


def _res_blocks(channels: int, norm_groups: int, count: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, norm_groups, 2 ** i) for i in range(count)])


class EncoderLayer(nn.Module):
    def __init__(self, chin: int, chout: int, kernel: int, stride: int, norm_groups: int, res_blocks: int):
        super().__init__()
        self.conv = nn.Conv1d(chin, chout, kernel, stride, (kernel - stride) // 2, bias=False)
        self.norm = nn.GroupNorm(norm_groups, chout)
        self.res_blocks = _res_blocks(chout, norm_groups, res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, channels * 2, samples / stride)."""
        stride = self.conv.stride[0]
        x = F.pad(x, (0, (stride - x.shape[-1] % stride) % stride))
        return self.res_blocks(F.relu(self.norm(self.conv(x))))


class DecoderLayer(nn.Module):
    def __init__(self, chin: int, chout: int, kernel: int, stride: int, norm_groups: int, res_blocks: int):
        super().__init__()
        self.res_blocks = _res_blocks(chin, norm_groups, res_blocks)
        self.norm = nn.GroupNorm(norm_groups, chin)
        self.convtr = nn.ConvTranspose1d(chin, chout, kernel, stride, (kernel - stride) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples), skip -> (batch, channels / 2, samples * stride)."""
        return self.convtr(F.relu(self.norm(self.res_blocks(x))))


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, width) -> (batch, time, width)."""
        return self.mha(x, x, x, need_weights=False)[0]


class TransformerLayer(nn.Module):
    """Post-norm encoder layer (ReLU feed-forward of 2048, no biases in attention or feed-forward)."""

    def __init__(self, dim: int, heads: int = 8, ffn: int = 2048):
        super().__init__()
        self.self_attn = _SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn, bias=False)
        self.linear2 = nn.Linear(ffn, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, width) -> (batch, time, width), pre-norm, residual."""
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class Transformer(nn.Module):
    def __init__(self, dim: int, layers: int = 6):
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(dim) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, width, time) -> (batch, width, time), with a sinusoidal position signal."""
        positions = torch.arange(x.shape[1], device=x.device, dtype=x.dtype).view(1, -1, 1)
        half = x.shape[-1] // 2
        scale = torch.full([], 10_000.0, device=x.device, dtype=x.dtype) ** (
            torch.arange(half, device=x.device, dtype=x.dtype).view(1, 1, -1) / (half - 1))
        phase = positions / scale
        x = x + torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
        for layer in self.layers:
            x = layer(x)
        return x


class BLSTM(nn.Module):
    def __init__(self, dim: int, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, width, time) -> (batch, width, time), bidirectional LSTM, projected back."""
        return self.linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)


class DiffusionUnet(nn.Module):
    """Predicts the noise in a band's waveform at a diffusion step, given the codec latent."""

    def __init__(self, chin: int, num_steps: int, hidden: int, depth: int, growth: float, max_channels: int,
                 kernel: int, stride: int, norm_groups: int, res_blocks: int, emb_all_layers: bool,
                 bilstm: bool, transformer: bool, codec_dim: int | None, cross_attention: bool = False):
        super().__init__()
        if cross_attention:
            raise MBDError("MBD U-Nets with cross-attention conditioning are not supported")
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.embedding = nn.Embedding(num_steps, hidden)
        self.embeddings = nn.ModuleList() if emb_all_layers else None
        layer = dict(kernel=kernel, stride=stride, norm_groups=norm_groups, res_blocks=res_blocks)
        for d in range(depth):
            self.encoders.append(EncoderLayer(chin, hidden, **layer))
            self.decoders.insert(0, DecoderLayer(hidden, chin, **layer))
            if emb_all_layers and d > 0:
                self.embeddings.append(nn.Embedding(num_steps, hidden))
            chin, hidden = hidden, min(int(hidden * growth), max_channels)
        self.bilstm = BLSTM(chin) if bilstm else None
        self.transformer = Transformer(chin) if transformer else None
        self.conv_codec = nn.Conv1d(codec_dim, chin, 1) if codec_dim is not None else None

    def forward(self, x: torch.Tensor, step: int, condition: torch.Tensor | None) -> torch.Tensor:
        """Noisy band (batch, 1, samples), the step, the condition (batch, latent, frames) -> the
        predicted noise, (batch, 1, samples)."""
        batch = x.shape[0]
        steps = torch.full((batch,), step, device=x.device, dtype=torch.long)
        skips, z = [], x
        for index, encoder in enumerate(self.encoders):
            z = encoder(z)
            if index == 0:
                z = z + self.embedding(steps).view(batch, -1, 1)
            elif self.embeddings is not None:
                z = z + self.embeddings[index - 1](steps).view(batch, -1, 1)
            skips.append(z)
        if self.conv_codec is not None:
            # The latent (50 frames/s) is stretched onto the bottleneck's time grid.
            z = z + F.interpolate(self.conv_codec(condition), z.shape[-1])
            # The reference adds the condition in place, so the deepest skip carries it too.
            skips[-1] = z
        if self.transformer is not None:
            z = self.transformer(z.permute(0, 2, 1)).permute(0, 2, 1)
        elif self.bilstm is not None:
            z = self.bilstm(z)
        else:
            z = torch.zeros_like(z)
        for decoder in self.decoders:
            skip = skips.pop()
            z = decoder(z[:, :, :skip.shape[2]] + skip)
        return z[:, :, :x.shape[2]]


# --- band processor and noise schedule -------------------------------------------

class BandProcessor(nn.Module):
    """Maps a band's waveform to and from a noise-like scale, per mel band, with statistics learnt in training."""

    def __init__(self, sample_rate: int, n_bands: int = 8, power_std: float | list[float] = 1.0, **_):
        super().__init__()
        import julius

        self.split_bands = julius.SplitBands(sample_rate, n_bands=n_bands)
        self.power_std = torch.tensor(power_std) if isinstance(power_std, (list, tuple)) else power_std
        for name in ("counts", "sum_x", "sum_x2", "sum_target_x2"):
            self.register_buffer(name, torch.zeros(1 if name == "counts" else n_bands))

    def return_sample(self, x: torch.Tensor) -> torch.Tensor:
        """The band's processing undone (the identity for MusicGen's MBD)."""
        mean = self.sum_x / self.counts
        std = (self.sum_x2 / self.counts - mean ** 2).clamp(min=0).sqrt()
        target_std = self.sum_target_x2 / self.counts
        rescale = (std / target_std) ** self.power_std
        bands = self.split_bands(x) * rescale.view(-1, 1, 1, 1) + mean.view(-1, 1, 1, 1)
        return bands.sum(dim=0)


@dataclass(frozen=True)
class Schedule:
    betas: torch.Tensor
    clip: float
    rescale: float
    noise_scale: float

    @classmethod
    def from_cfg(cls, cfg: dict) -> "Schedule":
        """The noise schedule of a band's cfg (beta_t0, beta_t1, beta_exp, num_steps)."""
        if cfg.get("repartition", "power") != "power" or cfg.get("n_bands") is not None:
            raise MBDError("only the power noise schedule over the whole band is supported")
        exponent = float(cfg["beta_exp"])
        betas = torch.linspace(float(cfg["beta_t0"]) ** (1 / exponent), float(cfg["beta_t1"]) ** (1 / exponent),
                               int(cfg["num_steps"]), dtype=torch.float) ** exponent
        return cls(betas, float(cfg.get("clip", 5.0)), float(cfg.get("rescale", 1.0)),
                   float(cfg.get("noise_scale", 1.0)))

    def alpha_bar(self, step: int) -> torch.Tensor:
        """The product of (1 - beta) up to `step`."""
        return (1 - self.betas[:step + 1]).prod()


class Band:
    """One band: its U-Net, processor and schedule, sampled with a subsampled chain of steps."""

    def __init__(self, unet: DiffusionUnet, processor: BandProcessor, schedule: Schedule):
        self.unet = unet
        self.processor = processor
        self.schedule = schedule

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, initial_noise: torch.Tensor, steps: list[int] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One band's audio (batch, 1, samples) from noise, conditioned on the latent, over `steps`."""
        steps = steps or DEFAULT_STEPS
        schedule = self.schedule
        alpha_bar = schedule.alpha_bar(len(schedule.betas) - 1)
        chain_alpha_bars = (1 - schedule.betas).cumprod(dim=0)[list(reversed(steps))]
        # Betas of the subsampled chain, as 1 - alpha (kept in this form: it rounds like the reference).
        chain_betas = 1 - torch.cat([chain_alpha_bars[:1], chain_alpha_bars[1:] / chain_alpha_bars[:-1]])
        current = initial_noise * schedule.noise_scale
        for index, step in enumerate(steps[:-1]):
            estimate = self.unet(current, step, condition) * schedule.noise_scale
            alpha = 1 - chain_betas[-1 - index]
            previous = (current - (1 - alpha) / (1 - alpha_bar).sqrt() * estimate) / alpha.sqrt()
            if step == steps[-2]:
                sigma2, next_alpha_bar = 0.0, torch.tensor(1.0)
            else:
                next_alpha_bar = schedule.alpha_bar(steps[index + 1])
                sigma2 = (1 - next_alpha_bar) / (1 - alpha_bar) * (1 - alpha)
            if sigma2 > 0:
                noise = torch.randn(previous.shape, generator=generator, device=previous.device)
                previous = previous + sigma2 ** 0.5 * noise * schedule.noise_scale
            if schedule.clip:
                previous = previous.clamp(-schedule.clip, schedule.clip)
            current, alpha_bar = previous, next_alpha_bar
            if step == 0:
                previous = previous * schedule.rescale
        return self.processor.return_sample(previous)


class MultiBandDiffusion:
    def __init__(self, bands: list[Band], sample_rate: int):
        self.bands = bands
        self.sample_rate = sample_rate

    def to(self, device: torch.device) -> "MultiBandDiffusion":
        """Every band's network on `device`; returns self."""
        for band in self.bands:
            band.unet.to(device)
            band.processor.to(device)
        return self

    @torch.no_grad()
    def generate(self, latent: torch.Tensor, length: int, steps: list[int] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sum of the bands, each sampled from fresh noise: (batch, 1, length)."""
        out = torch.zeros(latent.shape[0], 1, length, device=latent.device)
        for band in self.bands:
            initial = torch.randn(out.shape, generator=generator, device=out.device)
            out += band.sample(latent, initial, steps, generator)
        return out

    def equalise(self, wav: torch.Tensor, reference: torch.Tensor, n_bands: int = EQ_BANDS) -> torch.Tensor:
        """Match each of `n_bands` bands' level to the reference (the EnCodec decoding)."""
        import julius

        split = julius.SplitBands(n_bands=n_bands, sample_rate=self.sample_rate).to(wav.device)
        bands, reference_bands = split(wav), split(reference)
        out = torch.zeros_like(reference)
        for band, ref in zip(bands, reference_bands):
            out += band * (ref.std() / band.std())
        return out

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, encodec_wav: torch.Tensor, steps: list[int] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Audio (batch, 1, samples) at 32 kHz from an EnCodec latent (batch, 128, frames), each band
        equalised to the EnCodec decoding `encodec_wav` (batch, 1, samples)."""
        return self.equalise(self.generate(latent, encodec_wav.shape[-1], steps, generator), encodec_wav)


def load_mbd(path: str | Path, device: str | torch.device = "cpu") -> MultiBandDiffusion:
    """Read an MBD checkpoint in the published format (sample_rate, n_bands, per band cfg and states)."""
    path = Path(path)
    if not path.is_file():
        raise MBDError(f"MBD checkpoint not found: {path}")
    try:
        # The published file pickles OmegaConf configs next to the tensors; nothing else is unpickled.
        package = checkpoints.read(path, "MBD checkpoint", checkpoints.OMEGACONF)
    except checkpoints.CheckpointError as error:
        raise MBDError(str(error)) from None
    if "n_bands" not in package or "sample_rate" not in package:
        raise MBDError(f"{path}: an MBD checkpoint holds 'sample_rate', 'n_bands' and one entry per band")
    sample_rate = int(package["sample_rate"])
    bands = []
    for index in range(int(package["n_bands"])):
        entry = package[index]
        cfg = checkpoints.plain(entry["cfg"])
        unet_cfg = {k: v for k, v in cfg["diffusion_unet"].items() if k != "dropout"}
        unet = DiffusionUnet(chin=int(cfg["channels"]), num_steps=int(cfg["schedule"]["num_steps"]), **unet_cfg)
        unet.load_state_dict(entry["model_state"])
        processor_cfg = {k: v for k, v in cfg["processor"].items() if k not in {"name", "use"}}
        if not cfg["processor"].get("use", False):
            raise MBDError(f"{path}: band {index} has no multi-band processor; not an MBD-for-MusicGen checkpoint")
        processor = BandProcessor(sample_rate, **processor_cfg)
        processor.load_state_dict(entry["processor_state"])
        bands.append(Band(unet.eval(), processor.eval(), Schedule.from_cfg(cfg["schedule"])))
    return MultiBandDiffusion(bands, sample_rate).to(torch.device(device))


def codec_latent(model, codes: torch.Tensor) -> torch.Tensor:
    """EnCodec latent (batch, dim, frames) of aligned codes (codebooks, frames) from transformers' EnCodec."""
    return model.audio_encoder.quantizer.decode(codes[:, None].to(model.device))


def decode_tokens(model, mbd: MultiBandDiffusion, codes: torch.Tensor, encodec_audio: np.ndarray,
                  seed: int) -> np.ndarray:
    """MBD decoding of a mono model's tokens, equalised to its EnCodec decoding; `seed` fixes its noise."""
    start = time.perf_counter()
    reference = torch.from_numpy(encodec_audio[None]).to(model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    out = mbd.decode(codec_latent(model, codes), reference, generator=generator)
    log.info("multi-band diffusion: %.1f s of audio in %.1f s", encodec_audio.shape[-1] / mbd.sample_rate,
             time.perf_counter() - start)
    return out[0].float().cpu().numpy()
