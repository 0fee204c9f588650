"""A random Multi-Band Diffusion checkpoint in the published layout (tests and benchmarks only)."""

from __future__ import annotations

from pathlib import Path

import torch

from remixer.mbd import COMPONENT, BandProcessor, DiffusionUnet


def tiny_band_cfg(band: int) -> dict:
    """A small band config in the published layout."""
    return {
        "sample_rate": 32000, "channels": 1, "n_q": 4,
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "diffusion_unet": {"hidden": 4, "depth": 4, "res_blocks": 1, "norm_groups": 4, "kernel": 8, "stride": 4,
                           "growth": 2, "max_channels": 10_000, "dropout": 0.0, "emb_all_layers": True,
                           "bilstm": False, "codec_dim": 128, "transformer": False, "cross_attention": False},
        "processor": {"name": "multi_band_processor", "use": True, "n_bands": 8, "num_samples": 10_000,
                      "power_std": 0.75},
        "schedule": {"repartition": "power", "variable_step_batch": True, "beta_t0": 1.0e-5, "beta_t1": 2.9e-2,
                     "beta_exp": 7.5, "num_steps": 1000, "variance": "beta", "clip": 5.0, "rescale": 1.0,
                     "n_bands": None, "noise_scale": 1.0},
        "filter": {"use": True, "n_bands": 4, "idx_band": band, "cutoffs": None},
    }


def write_random_checkpoint(directory: str | Path, seed: int = 0) -> list[Path]:
    """A tiny random MBD (4 bands) in the published file format, configs as omegaconf objects."""
    from omegaconf import OmegaConf

    from remixer import weights

    torch.manual_seed(seed)
    package: dict = {"sample_rate": 32000, "n_bands": 4}
    for band in range(4):
        cfg = tiny_band_cfg(band)
        unet_cfg = {k: v for k, v in cfg["diffusion_unet"].items() if k != "dropout"}
        unet = DiffusionUnet(chin=1, num_steps=1000, **unet_cfg)
        processor = BandProcessor(32000, n_bands=8, power_std=0.75)
        processor.counts.fill_(10_000)
        processor.sum_x2.fill_(0.01 * 10_000)
        processor.sum_target_x2.fill_(0.1 * 10_000)
        package[band] = {"cfg": OmegaConf.create(cfg), "model_state": unet.state_dict(),
                         "processor_state": processor.state_dict()}
    (file,) = weights.files_of([COMPONENT])
    path = Path(directory) / file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(package, path)
    return [path]
