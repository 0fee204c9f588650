"""Multi-Band Diffusion: parity with audiocraft's reference on a small random MBD, and decoding in the product."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from remixer import checkpoints, mbd
from remixer.testing import mbd as mbd_writers

FIXTURES = Path(__file__).parent / "fixtures" / "mbd"


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURES / "mbd-tiny.reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def model():
    return mbd.load_mbd(FIXTURES / "mbd-tiny.th")


def test_every_band_matches_the_reference_sampler(model, reference):
    assert len(model.bands) == 4 and model.sample_rate == 32000
    for band, noise, seed, expected in zip(model.bands, reference["noises"], reference["seeds"], reference["bands"]):
        # The sampler's fresh noise at each step, drawn in the same order from the same seed.
        out = band.sample(reference["latent"], noise, reference["steps"], torch.Generator().manual_seed(seed))
        assert out.shape == expected.shape
        # float32, same operations: agreement to rounding.
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_equalised_output_matches_the_reference(model, reference):
    summed = torch.stack(reference["bands"]).sum(dim=0)
    out = model.equalise(summed, reference["encodec_wav"])
    torch.testing.assert_close(out, reference["output"], atol=1e-5, rtol=1e-4)


def test_decode_is_deterministic_for_a_seed(model, reference):
    runs = [model.decode(reference["latent"], reference["encodec_wav"], reference["steps"],
                         torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and torch.isfinite(runs[0]).all()
    assert not torch.equal(runs[0], runs[2])


def test_bad_checkpoints_are_explained(tmp_path):
    with pytest.raises(mbd.MBDError, match="not found"):
        mbd.load_mbd(tmp_path / "none.th")
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"junk")
    with pytest.raises(mbd.MBDError, match="not a readable MBD checkpoint"):
        mbd.load_mbd(junk)
    torch.save({"model": 1}, junk)
    with pytest.raises(mbd.MBDError, match="'n_bands'"):
        mbd.load_mbd(junk)


def test_tiny_writer_uses_the_published_layout(tmp_path):
    (path,) = mbd_writers.write_random_checkpoint(tmp_path)
    package = checkpoints.read(path, "MBD checkpoint", checkpoints.OMEGACONF)
    reference = checkpoints.read(FIXTURES / "mbd-tiny.th", "MBD checkpoint", checkpoints.OMEGACONF)
    assert set(package) == set(reference)
    for band in range(4):
        assert set(package[band]) == set(reference[band])
        assert set(package[band]["processor_state"]) == set(reference[band]["processor_state"])
        assert set(package[band]["model_state"]) == set(reference[0]["model_state"])  # band 0: no transformer
        assert type(package[band]["cfg"]).__name__ == "DictConfig"
    assert len(mbd.load_mbd(path).bands) == 4


def test_default_step_list_is_the_references(model, reference):
    """No step list given: audiocraft's default chain (every 50th of 1000 steps, then 0), same output."""
    band = model.bands[0]
    out = band.sample(reference["latent"], reference["noises"][0], None,
                      torch.Generator().manual_seed(reference["default_steps_seed"]))
    torch.testing.assert_close(out, reference["default_steps_band0"], atol=1e-4, rtol=1e-4)
    assert len(mbd.DEFAULT_STEPS) == 21 and mbd.DEFAULT_STEPS[0] == 999 and mbd.DEFAULT_STEPS[-1] == 0


def test_tokens_reach_mbd_as_the_reference_quantizer_latent(tiny_weights):
    """codec_latent (transformers' EnCodec quantizer) equals audiocraft's RVQ decoding of the same codes."""
    from transformers import EncodecModel

    reference = torch.load(FIXTURES / "mbd-tiny.reference.pt", weights_only=True)
    codec = EncodecModel.from_pretrained(str(tiny_weights / "encodec")).eval()
    codebooks = torch.randn(4, 2048, 128, generator=torch.Generator().manual_seed(reference["codebook_seed"]))
    with torch.no_grad():
        for layer, codebook in zip(codec.quantizer.layers, codebooks):
            layer.codebook.embed.copy_(codebook)

    class Model:  # what codec_latent reads of a MusicGen model: its audio encoder and device
        audio_encoder = codec
        device = torch.device("cpu")

    with torch.no_grad():
        latent = mbd.codec_latent(Model(), reference["codes"][0])
    torch.testing.assert_close(latent, reference["codes_latent"], atol=1e-5, rtol=0)
