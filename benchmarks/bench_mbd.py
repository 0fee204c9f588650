"""Multi-Band Diffusion decoding speed next to plain EnCodec decoding, full size, random weights.

    .venv/bin/python benchmarks/bench_mbd.py [--seconds 5] [--device cpu]

MBD: 4 bands, each U-Net with the published training config's shape (hidden 48,
depth 4, growth 4, step embeddings at every level, EnCodec-latent conditioning
of 128 channels), 20 denoising steps as in inference. EnCodec: the 32 kHz
codec's shape (64 filters, ratios 8-5-4-4, 2 LSTM layers, 2048 codes x 4).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import EncodecModel

from remixer import mbd
from remixer.testing import mbd as mbd_writers
from remixer.testing import musicgen as musicgen_writers

FULL_UNET = {"hidden": 48, "depth": 4, "res_blocks": 1, "norm_groups": 4, "kernel": 8, "stride": 4, "growth": 4,
             "max_channels": 10_000, "emb_all_layers": True, "bilstm": False, "codec_dim": 128,
             "transformer": False, "cross_attention": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    codec = EncodecModel(musicgen_writers.encodec_config(full_size=True)).to(device).eval()
    schedule = mbd.Schedule.from_cfg(mbd_writers.tiny_band_cfg(0)["schedule"])
    bands = []
    for _ in range(4):
        processor = mbd.BandProcessor(32000, n_bands=8, power_std=0.75)
        processor.counts.fill_(1.0)
        processor.sum_x2.fill_(0.01)
        processor.sum_target_x2.fill_(0.1)
        bands.append(mbd.Band(mbd.DiffusionUnet(chin=1, num_steps=1000, **FULL_UNET).eval(), processor, schedule))
    diffusion = mbd.MultiBandDiffusion(bands, 32000).to(device)
    params = sum(p.numel() for b in bands for p in b.unet.parameters()) / 1e6
    frames = int(args.seconds * 50)
    codes = torch.randint(0, 2048, (1, 1, 4, frames), device=device)
    with torch.inference_mode():
        start = time.perf_counter()
        wav = codec.decode(codes, [None]).audio_values
        t_codec = time.perf_counter() - start
        latent = codec.quantizer.decode(codes[0].transpose(0, 1))
        start = time.perf_counter()
        diffusion.decode(latent, wav, generator=torch.Generator(device=device).manual_seed(0))
        t_mbd = time.perf_counter() - start
    print(f"{args.seconds:g} s of 32 kHz audio, device {device}, torch threads {torch.get_num_threads()}; "
          f"MBD U-Nets {params:.1f} M parameters in all")
    print("| decoder | seconds | seconds per second of audio |")
    print("|---|---|---|")
    for name, seconds in (("EnCodec", t_codec), ("MBD (4 bands x 20 steps)", t_mbd)):
        print(f"| {name} | {seconds:.2f} | {seconds / args.seconds:.2f} |")


if __name__ == "__main__":
    main()
