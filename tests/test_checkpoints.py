"""Every checkpoint we unpickle is read one safe way, and the published layouts load.

The published files are not plain tensors: MusicGen-Chord's `xp.cfg` and MBD's
band configs are pickled OmegaConf objects, BTC's statistics numpy scalars
(and a 2019 file predates torch's zip format). Each loader must read those and
refuse anything that would run code or needs a class outside the allow-list.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import btc
from remixer import checkpoints, chords, conversion, generation, mbd, rhythm, separation
from remixer.testing.musicgen import load_tiny
from remixer.testing.separation import checkpoint_in
from tests.conftest import SHARED

MUSICGEN = Path(__file__).parent / "fixtures" / "musicgen"
MBD = Path(__file__).parent / "fixtures" / "mbd"


class Payload:
    """A pickle that would create a file when unpickled with a plain torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Unexpected:
    """A harmless class that no published checkpoint holds."""


def _hostile(path: Path, marker: Path, legacy: bool = False) -> Path:
    torch.save({"model": Payload(marker), "xp.cfg": {}, "mean": 0.0, "std": 1.0, "n_bands": 1, "sample_rate": 1},
               path, _use_new_zipfile_serialization=not legacy)
    return path


LOADERS = {
    "musicgen": (lambda path, weights: load_tiny(path, "cpu", weights),
                 generation.GenerationError),
    "btc": (lambda path, weights: chords.read_recognizer(path), checkpoints.CheckpointError),
    "mbd": (lambda path, weights: mbd.load_mbd(path), mbd.MBDError),
    "demucs": (lambda path, weights: separation.read_model(path), checkpoints.CheckpointError),
    "allin1": (lambda path, weights: rhythm.read_fold(path, torch.device("cpu")), checkpoints.CheckpointError),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
@pytest.mark.parametrize("kind", list(LOADERS))
def test_hostile_pickle_is_refused_and_never_runs(kind, legacy, tmp_path, tiny_weights):
    load, error = LOADERS[kind]
    marker = tmp_path / "created-by-the-pickle"
    path = _hostile(tmp_path / "musicgen-chord.th", marker, legacy)
    with pytest.raises(error, match=r"not loaded: unpickling it would need posix\.system"):
        load(path, tiny_weights)
    assert not marker.exists()
    # The same file does run code with a plain unpickler: the refusal above is what protects users.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", list(LOADERS))
def test_a_class_outside_the_allow_list_is_refused_by_name(kind, tmp_path, tiny_weights):
    load, error = LOADERS[kind]
    path = tmp_path / "musicgen-chord.th"
    torch.save({"model": {}, "xp.cfg": Unexpected(), "mean": 0.0, "std": 1.0, "n_bands": 1, "sample_rate": 1}, path)
    with pytest.raises(error, match=rf"{path}.*tests\.test_checkpoints\.Unexpected.*fetch it again"):
        load(path, tiny_weights)


def test_each_family_admits_only_what_its_published_files_need():
    assert {"omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.AnyNode"} <= set(
        checkpoints.allowed_names(checkpoints.OMEGACONF))
    assert set(checkpoints.allowed_names(checkpoints.NUMPY)) >= {
        "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype"}
    assert set(checkpoints.allowed_names(checkpoints.DEMUCS)) == {
        "demucs.htdemucs.HTDemucs", "demucs_infer.htdemucs.HTDemucs", "fractions.Fraction"}
    assert {"allin1.config.Config", "allin1.config.HarmonixConfig", "typing.List",
            "omegaconf.dictconfig.DictConfig"} <= set(checkpoints.allowed_names(checkpoints.ALLIN1))
    # No family admits another's classes, and none admits anything that runs code.
    assert not set(checkpoints.allowed_names(checkpoints.DEMUCS)) & set(checkpoints.allowed_names(checkpoints.NUMPY))
    assert "demucs.htdemucs.HTDemucs" not in checkpoints.allowed_names(checkpoints.OMEGACONF)
    for family in checkpoints.FAMILIES:
        assert not any(name.startswith(("os.", "posix.", "subprocess.", "builtins.eval", "builtins.exec",
                                        "builtins.getattr", "builtins.__import__", "torch.nn"))
                       for name in checkpoints.allowed_names(family)), family


# --- MusicGen-Chord ------------------------------------------------------------------


def _plain_layout(source: Path, target: Path) -> Path:
    """The same weights with xp.cfg as a plain dict (the layout the old fixtures had)."""
    package = checkpoints.read(source, "MusicGen-Chord checkpoint", checkpoints.OMEGACONF)
    torch.save({"xp.cfg": checkpoints.plain(package["xp.cfg"]), "model": package["model"]}, target)
    return target


def test_published_musicgen_layout_holds_an_omegaconf_xp_cfg(tiny_weights):
    for path in (tiny_weights / "musicgen").glob("*.th"):
        package = checkpoints.read(path, "MusicGen-Chord checkpoint", checkpoints.OMEGACONF)
        assert OmegaConf.is_config(package["xp.cfg"]) and package["xp.cfg"].transformer_lm.n_q in (4, 8)
    fixture = checkpoints.read(MUSICGEN / "musicgen-tiny-stereo-chord.th", "MusicGen-Chord checkpoint",
                               checkpoints.OMEGACONF)
    assert OmegaConf.is_config(fixture["xp.cfg"])  # the parity fixtures are in the published layout too


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
def test_omegaconf_and_plain_layouts_convert_to_the_same_model(name, tmp_path):
    real = tmp_path / "real" / f"{name}.th"
    real.parent.mkdir()
    shutil.copy(MUSICGEN / f"{name}.th", real)
    plain = _plain_layout(real, tmp_path / f"{name}.th")
    cfg_real, state_real = conversion.read_converted(real)
    cfg_plain, state_plain = conversion.read_converted(plain)
    assert cfg_real == cfg_plain and isinstance(cfg_real["transformer_lm"]["dim"], int)
    assert state_real.keys() == state_plain.keys()
    assert all(torch.equal(state_real[k], state_plain[k]) for k in state_real)
    # The conversion cache keeps the config as plain JSON (a DictConfig would have become its string).
    cache = conversion.convert_checkpoint(real)
    cached = json.loads((cache / "decoder_config.json").read_text())["xp.cfg"]
    assert cached == cfg_real and cached["conditioners"]["self_wav"]["model"] == "chroma_chord"


def test_audiocraft_export_layout_and_extra_keys_load(tmp_path):
    package = checkpoints.read(MUSICGEN / "musicgen-tiny-chord.th", "MusicGen-Chord checkpoint", checkpoints.OMEGACONF)
    exported = tmp_path / "musicgen-chord.th"
    # audiocraft's export_lm: the config as YAML text and the state under best_state, plus bookkeeping keys.
    torch.save({"xp.cfg": OmegaConf.to_yaml(package["xp.cfg"]), "best_state": package["model"],
                "version": "1.3.0", "exported": True}, exported)
    cfg, state = conversion.read_converted(exported)
    _, reference = conversion.read_converted(MUSICGEN / "musicgen-tiny-chord.th")
    assert cfg["transformer_lm"]["n_q"] == 4 and all(torch.equal(state[k], reference[k]) for k in reference)


def test_musicgen_config_without_an_lm_is_refused(tmp_path):
    path = tmp_path / "musicgen-chord.th"
    torch.save({"xp.cfg": OmegaConf.create({"sample_rate": 32000}), "model": {}}, path)
    with pytest.raises(generation.GenerationError, match="no transformer_lm section"):
        conversion.read_converted(path)


# --- BTC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_btc_with_numpy_statistics_gives_the_same_logits(legacy, tmp_path):
    source = SHARED / "btc" / "btc_random_large_voca.pt"
    package = checkpoints.read(source, "BTC checkpoint", checkpoints.NUMPY)
    published = tmp_path / "btc_model_large_voca.pt"
    # As BTC's training code saves it: numpy float64 statistics (std from np.sqrt), optimizer state beside.
    torch.save({"model": package["model"], "mean": np.float64(package["mean"]),
                "std": np.sqrt(np.float64(package["std"]) ** 2), "optimizer": {"lr": 1e-4}, "epoch": 100},
               published, _use_new_zipfile_serialization=not legacy)
    features = np.load(SHARED / "btc" / "progression_logcqt.npy")
    ours = chords.read_recognizer(published)
    theirs = chords.read_recognizer(source)
    standalone = btc.load_model(published)  # btc's own loader (weights_only, numpy scalars) agrees
    assert (standalone.mean, standalone.std) == (ours.mean, ours.std)
    assert (ours.mean, ours.std) == pytest.approx((theirs.mean, theirs.std), abs=1e-12)
    # Same weights and statistics: bit-identical logits, and the reference's within its stated 1e-4.
    np.testing.assert_array_equal(ours.logits(features), theirs.logits(features))
    reference = np.load(SHARED / "btc" / "btc_random_large_voca_logits.npy")
    np.testing.assert_allclose(ours.logits(features), reference, atol=1e-4, rtol=0)


# --- MBD -----------------------------------------------------------------------------------


def test_mbd_published_layout_loads_without_running_code(tmp_path):
    # The audiocraft-written fixture pickles OmegaConf band configs: it loads with the allow-list only.
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(MBD / "mbd-tiny.th"))
    assert "omegaconf.dictconfig.DictConfig" in unsafe
    assert unsafe <= set(checkpoints.allowed_names(checkpoints.OMEGACONF))
    model = mbd.load_mbd(MBD / "mbd-tiny.th")
    assert len(model.bands) == 4 and model.sample_rate == 32000


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_btc_standalone_loader_never_runs_a_pickle_either(legacy, tmp_path):
    marker = tmp_path / "created-by-the-pickle"
    path = _hostile(tmp_path / "btc.pt", marker, legacy)
    with pytest.raises(btc.BTCFormatError, match="not a readable BTC checkpoint"):
        btc.load_model(path)
    assert not marker.exists()


# --- demucs ---------------------------------------------------------------------------------


def test_demucs_published_layout_loads_with_the_allow_list_only(tiny_weights):
    path = checkpoint_in(tiny_weights)
    # Written as demucs' serialize_model writes it: the class by reference under its published name.
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) == {
        "demucs.htdemucs.HTDemucs", "fractions.Fraction"}
    model = separation.read_model(path)
    assert model.segment == Fraction(39, 5) and list(model.sources) == list(separation.STEM_NAMES)
    # The same weights as demucs-infer's own (unsafe) loader builds from the file.
    from demucs_infer.states import load_model

    theirs = load_model(str(path))
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.state_dict().items())


def test_demucs_file_naming_another_model_class_is_refused(tiny_weights, tmp_path):
    package = checkpoints.read(checkpoint_in(tiny_weights), "demucs checkpoint", checkpoints.DEMUCS)
    other = tmp_path / "other.th"
    torch.save({**package, "klass": Fraction}, other)  # an allowed class, but not a model
    with pytest.raises(separation.SeparationError, match="not an htdemucs model"):
        separation.read_model(other)
    torch.save({"state": package["state"]}, other)
    with pytest.raises(separation.SeparationError, match="holds 'klass', 'args', 'kwargs' and 'state'"):
        separation.read_model(other)


# --- All-In-One ------------------------------------------------------------------------------


def test_all_in_one_config_as_dict_or_dictconfig_builds_the_same_fold(tmp_path):
    from remixer.testing import rhythm as rhythm_writers

    plain = rhythm_writers.write_random_checkpoints(tmp_path / "dict", seed=3)[2]
    dictconfig = rhythm_writers.write_random_checkpoints(tmp_path / "dictconfig", seed=3, config_as="dictconfig")[2]
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(dictconfig))
    # As All-In-One's training code would pickle it: its structured config under the original package's name.
    assert {"omegaconf.dictconfig.DictConfig", "allin1.config.Config", "allin1.config.HarmonixConfig"} <= unsafe
    assert unsafe <= set(checkpoints.allowed_names(checkpoints.ALLIN1))
    # torch's default (what allin1_infer's own loader uses) refuses the DictConfig file.
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(dictconfig, weights_only=True)
    cpu = torch.device("cpu")
    a, b = rhythm.read_fold(plain, cpu), rhythm.read_fold(dictconfig, cpu)
    assert a.cfg == b.cfg and a.cfg.fold == 2
    spectrogram = torch.randn(1, 4, 300, 81)
    with torch.inference_mode():
        out_a, out_b = a(spectrogram), b(spectrogram)
    assert torch.equal(out_a.logits_beat, out_b.logits_beat)


def test_all_in_one_file_without_its_keys_is_refused(tmp_path):
    path = tmp_path / "harmonix-fold0-0vra4ys2.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(rhythm.RhythmError, match="holds 'config' and 'state_dict'"):
        rhythm.read_fold(path, torch.device("cpu"))


# --- what each published file pickles, per its source -----------------------------------------------------


def _globals_in(path: Path) -> set[str]:
    """Every global a checkpoint's pickle names (torch's own safe ones included): a torch zip's data.pkl, or
    a plain pickle (madmom's), read by pickletools without running it."""
    import io
    import pickletools
    import zipfile

    if not zipfile.is_zipfile(path):
        return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "GLOBAL"}
    from torch._weights_only_unpickler import get_globals_in_pkl

    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        return set(get_globals_in_pkl(io.BytesIO(archive.read(name))))


def _with_one_class_more(path: Path, target: Path, family: str) -> Path:
    """The same file naming one class more (datetime.date): a torch file saved again with a date beside, or
    a plain pickle with a GLOBAL of it (then popped) before its STOP."""
    import datetime
    import pickle

    if family == checkpoints.MADMOM:
        data = path.read_bytes()
        assert data.endswith(pickle.STOP)
        target.write_bytes(data[:-1] + pickle.GLOBAL + b"datetime\ndate\n" + pickle.POP + pickle.STOP)
    else:
        package = checkpoints.read(path, path.name, family)
        torch.save({**package, "saved_on": datetime.date(2026, 12, 6)}, target)
    return target


def test_every_manifest_checkpoint_is_described_by_exactly_one_published_entry():
    import fnmatch

    from remixer import weights

    pickled = [f for f in weights.MANIFEST if f.name.endswith((".th", ".pt", ".pth", ".bin", ".pkl"))]
    for file in pickled:
        matches = [p for p in checkpoints.PUBLISHED if any(fnmatch.fnmatch(file.name, pattern) for pattern in p.files)]
        assert len(matches) == 1, file.name
    for entry in checkpoints.PUBLISHED:
        assert entry.source and any(fnmatch.fnmatch(f.name, entry.files[0]) for f in pickled), entry.files


@pytest.mark.parametrize("entry", checkpoints.PUBLISHED, ids=lambda e: e.files[0])
def test_a_file_with_exactly_the_published_classes_loads_and_one_class_more_is_refused(entry, tiny_weights,
                                                                                      tmp_path):
    """The tiny weights are written in the published layouts: each pickles exactly the globals its source
    states, and loads through its family's allow-list; the same file with one class more is refused by name."""
    import fnmatch

    from remixer import weights

    read = checkpoints.read_pickle if entry.family == checkpoints.MADMOM else checkpoints.read
    (file,) = [f for f in weights.MANIFEST if fnmatch.fnmatch(f.name, entry.files[0])][:1]
    path = tiny_weights / file.name
    assert _globals_in(path) == set(entry.names)
    assert read(path, file.name, entry.family) is not None
    extra = _with_one_class_more(path, tmp_path / path.name, entry.family)
    assert "datetime.date" in _globals_in(extra) - set(entry.names)  # (its bytes may add _codecs.encode, torch-safe)
    with pytest.raises(checkpoints.CheckpointError, match=r"not loaded: unpickling it would need .*datetime\.date"):
        read(extra, file.name, entry.family)


def test_musicongen_is_float16_on_disk_and_budgeted_as_the_float32_it_is_held_in(tiny_weights):
    from remixer import models

    path = tiny_weights / "musicongen" / "state_dict.bin"
    state = checkpoints.read(path, "MusiConGen", checkpoints.OMEGACONF)["best_state"]
    assert {t.dtype for t in state.values()} == {torch.float16}
    half_bytes = sum(t.numel() * t.element_size() for t in state.values())
    estimate = models.estimated_bytes(path, torch.device("cpu"))
    assert estimate == 2 * half_bytes  # every element held in float32 on a CPU
    from remixer.testing.musicgen import encoders_in

    model = models.load_musicgen_chord(path, "cpu", encoders_in(str(tiny_weights), "cpu"))
    held = sum(t.numel() * t.element_size() for name, t in model.state_dict().items()
               if not name.startswith(("text_encoder.", "audio_encoder.")))  # the shared T5 and EnCodec aside
    assert held == estimate
