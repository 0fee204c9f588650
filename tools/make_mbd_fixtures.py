"""Build the Multi-Band Diffusion parity fixture with Meta's reference implementation (audiocraft).

Runs in the same side environment as tools/make_musicgen_fixtures.py (see there):

    /tmp/side/bin/python tools/make_mbd_fixtures.py tests/fixtures/mbd

It builds a small random MBD with audiocraft's own classes (DiffusionUnet,
MultiBandProcessor, NoiseSchedule, MultiBandDiffusion.re_eq), saves it in the
layout of the published `mbd_musicgen_32khz.th` (sample_rate, n_bands, and per
band: cfg, model_state, processor_state) and records, for a given EnCodec
latent, given initial noise and a given random seed for the sampler, the
reference output of every band and of the whole decode with the final
equalisation against a given EnCodec waveform. Also: one band sampled with
audiocraft's default step list (what the product uses when none is given),
and the token -> latent path (audiocraft's residual vector quantizer decoding
given codes with given codebooks: the condition MBD reads).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from audiocraft.models.builders import get_diffusion_model, get_processor
from audiocraft.models.multibanddiffusion import DiffusionProcess, MultiBandDiffusion
from audiocraft.modules.diffusion_schedule import NoiseSchedule
from audiocraft.quantization.vq import ResidualVectorQuantizer
from omegaconf import OmegaConf

SAMPLE_RATE = 32000
HOP = 640  # EnCodec 32 kHz frames
CODEC_DIM = 128
BANDS = 4
FRAMES = 10
CODEBOOK_SEED = 31


def band_cfg(band: int, transformer: bool):
    """A small version of the published per-band training config (same keys)."""
    return OmegaConf.create({
        "sample_rate": SAMPLE_RATE, "channels": 1, "n_q": 4,
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "diffusion_unet": {"hidden": 4, "depth": 4, "res_blocks": 1, "norm_groups": 4, "kernel": 8, "stride": 4,
                           "growth": 2, "max_channels": 10_000, "dropout": 0.0, "emb_all_layers": True,
                           "bilstm": False, "codec_dim": CODEC_DIM, "transformer": transformer,
                           "cross_attention": False},
        "processor": {"name": "multi_band_processor", "use": True, "n_bands": 8, "num_samples": 10_000,
                      "power_std": 0.75},
        "schedule": {"repartition": "power", "variable_step_batch": True, "beta_t0": 1.0e-5, "beta_t1": 2.9e-2,
                     "beta_exp": 7.5, "num_steps": 1000, "variance": "beta", "clip": 5.0, "rescale": 1.0,
                     "n_bands": None, "noise_scale": 1.0},
        "filter": {"use": True, "n_bands": BANDS, "idx_band": band, "cutoffs": None},
    })


def build(seed: int):
    torch.manual_seed(seed)
    package = {"sample_rate": SAMPLE_RATE, "n_bands": BANDS}
    processes = []
    for band in range(BANDS):
        cfg = band_cfg(band, transformer=band == 1)  # both bottleneck kinds are exercised
        model = get_diffusion_model(cfg).eval()
        processor = get_processor(cfg.processor, sample_rate=SAMPLE_RATE)
        # Give the processor statistics as training leaves them (otherwise it divides zeros).
        processor.counts.fill_(10_000)
        processor.sum_x.copy_(torch.randn(8) * 1e-3 * 10_000)
        processor.sum_x2.copy_((torch.rand(8) * 0.01 + 1e-4) * 10_000)
        processor.sum_target_x2.copy_((torch.rand(8) * 0.2 + 0.05) * 10_000)
        package[band] = {"cfg": cfg, "model_state": model.state_dict(), "processor_state": processor.state_dict()}
        schedule = NoiseSchedule(**cfg.schedule, sample_processor=processor, device="cpu")
        processes.append(DiffusionProcess(model=model, noise_schedule=schedule))
    return package, processes


class _Codec(torch.nn.Module):
    """What MultiBandDiffusion needs of the codec here: its sample rate (for re_eq) and a device."""

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE // HOP
    channels = 1

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))


@torch.no_grad()
def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mbd")
    out_dir.mkdir(parents=True, exist_ok=True)
    package, processes = build(seed=21)
    torch.save(package, out_dir / "mbd-tiny.th")

    generator = torch.Generator().manual_seed(5)
    latent = torch.randn(1, CODEC_DIM, FRAMES, generator=generator)
    encodec_wav = 0.1 * torch.randn(1, 1, FRAMES * HOP, generator=generator)
    noises = [torch.randn(1, 1, FRAMES * HOP, generator=generator) for _ in range(BANDS)]
    steps = [999, 949, 899, 799, 599, 399, 199, 0]  # a short subsampled chain keeps the fixture quick

    bands = []
    for index, process in enumerate(processes):
        torch.manual_seed(100 + index)  # the sampler draws fresh noise at each step
        bands.append(process.generate(condition=latent, initial_noise=noises[index], step_list=steps))
    mbd = MultiBandDiffusion(DPs=processes, codec_model=_Codec())
    summed = torch.stack(bands).sum(dim=0)
    equalised = mbd.re_eq(wav=summed, ref=encodec_wav, n_bands=32)
    torch.manual_seed(200)
    default_steps_band0 = processes[0].generate(condition=latent, initial_noise=noises[0], step_list=None)

    # The 32 kHz codec's quantizer: 4 codebooks of 2048 entries, 128 wide, no projection.
    rvq = ResidualVectorQuantizer(dimension=CODEC_DIM, n_q=4, bins=2048).eval()
    # Regenerated from its seed by the test (4 MB not committed); randn on the CPU is reproducible.
    codebooks = torch.randn(4, 2048, CODEC_DIM, generator=torch.Generator().manual_seed(CODEBOOK_SEED))
    for layer, codebook in zip(rvq.vq.layers, codebooks):
        layer._codebook.embed.copy_(codebook)
    codes = torch.randint(0, 2048, (1, 4, FRAMES), generator=generator)
    codes_latent = rvq.decode(codes)  # (1, 128, frames), as MultiBandDiffusion.get_condition's decode_latent
    torch.save({"latent": latent, "encodec_wav": encodec_wav, "noises": noises, "steps": steps,
                "seeds": [100 + i for i in range(BANDS)], "bands": bands, "output": equalised,
                "default_steps_seed": 200, "default_steps_band0": default_steps_band0,
                "codebook_seed": CODEBOOK_SEED, "codes": codes, "codes_latent": codes_latent},
               out_dir / "mbd-tiny.reference.pt")
    print(f"mbd-tiny: {BANDS} bands, output {tuple(equalised.shape)}")


if __name__ == "__main__":
    main()
