"""The one way we unpickle a checkpoint: tensors plus an explicit allow-list per family, never code.

Each published family pickles a few classes beside its tensors:
- MusicGen-Chord and MBD: OmegaConf configs (audiocraft pickles `xp.cfg` and
  the band configs as DictConfig);
- BTC: numpy scalars for its feature statistics (its training code takes std
  with `np.sqrt`);
- demucs: the model class by reference (`demucs.htdemucs.HTDemucs`) with its
  constructor arguments, `segment` a `fractions.Fraction` (demucs'
  `states.serialize_model`);
- All-In-One: the fold's `config`, a plain dict or an OmegaConf DictConfig of
  All-In-One's structured `Config` dataclasses (`allin1/config.py`).
`torch.load(weights_only=True)` refuses all of these by default; `read` admits
exactly the classes of the family asked for and names the file and the class
when anything else is asked for. Configs are turned into plain data (`plain`)
right after loading.
"""

from __future__ import annotations

import builtins
import collections
import fractions
import functools
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from remixer.errors import RemixerError

OMEGACONF = "omegaconf"
NUMPY = "numpy"
DEMUCS = "demucs"
ALLIN1 = "allin1"
MADMOM = "madmom"
FAMILIES = (OMEGACONF, NUMPY, DEMUCS, ALLIN1, MADMOM)


class CheckpointError(RemixerError):
    """A checkpoint that is missing, damaged, of the wrong kind or asks for a class we do not unpickle."""


def _omegaconf() -> list[tuple[object, str]]:
    from omegaconf import base, dictconfig, listconfig, nodes

    return [
        # OmegaConf containers and the metadata and value nodes inside them.
        (dictconfig.DictConfig, "omegaconf.dictconfig.DictConfig"),
        (listconfig.ListConfig, "omegaconf.listconfig.ListConfig"),
        (base.ContainerMetadata, "omegaconf.base.ContainerMetadata"),
        (base.Metadata, "omegaconf.base.Metadata"),
        *((getattr(nodes, name), f"omegaconf.nodes.{name}")
          for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode")),
        # Types the metadata refers to (key, element and reference types).
        (typing.Any, "typing.Any"),
        (collections.defaultdict, "collections.defaultdict"),
        *((getattr(builtins, name), f"builtins.{name}")
          for name in ("dict", "list", "int", "float", "str", "bool", "object")),
    ]


def _numpy() -> list[tuple[object, str]]:
    import numpy as np
    from numpy._core import multiarray

    return [
        # numpy 2 pickles scalars from numpy._core, numpy 1 from numpy.core.
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (np.dtype, "numpy.dtype"),
        *((type(np.dtype(code)), f"numpy.dtypes.{type(np.dtype(code)).__name__}")
          for code in ("f2", "f4", "f8", "i4", "i8")),
    ]


def _demucs() -> list[tuple[object, str]]:
    from demucs_infer.htdemucs import HTDemucs

    # The published htdemucs file names the class under the original package; demucs-infer is its
    # inference-only copy. Only this class is admitted: a file naming any other class is refused.
    return [(HTDemucs, "demucs.htdemucs.HTDemucs"), (HTDemucs, "demucs_infer.htdemucs.HTDemucs"),
            (fractions.Fraction, "fractions.Fraction")]


def _allin1() -> list[tuple[object, str]]:
    from allin1_infer import config

    # A DictConfig made from All-In-One's structured config records its dataclasses as metadata,
    # under the original package's name (allin1) or the inference copy's (allin1_infer).
    classes = [(getattr(config, name), f"{package}.config.{name}")
               for name in ("Config", "DataConfig", "HarmonixConfig") for package in ("allin1", "allin1_infer")]
    return [*_omegaconf(), *classes, (typing.List, "typing.List")]


@dataclass(frozen=True)
class Published:
    """What a published checkpoint pickles beside its bytes, as its source states it: every global its pickle
    names (torch's own tensor rebuilders included), the family that reads it, and who says so."""

    files: tuple[str, ...]  # patterns (fnmatch) of the manifest's names (remixer.weights) it describes
    family: str
    names: frozenset[str]
    source: str


# torch pickles every tensor with _rebuild_tensor_v2 and an OrderedDict (its backward hooks), in any container.
_TENSORS = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2")
# OmegaConf 2.3 pickles a config built from YAML (audiocraft's xp.cfg, MBD's band cfg) as its containers, their
# metadata, AnyNode values and the types the metadata names (DictConfig.__getstate__ / ListConfig).
_OMEGACONF_PICKLE = ("omegaconf.dictconfig.DictConfig", "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata",
                     "omegaconf.nodes.AnyNode", "typing.Any", "builtins.dict", "collections.defaultdict")

PUBLISHED: tuple[Published, ...] = (
    Published(("musicgen/musicgen-*.th",), OMEGACONF,
              frozenset({*_TENSORS, *_OMEGACONF_PICKLE, "omegaconf.listconfig.ListConfig", "builtins.int",
                         "builtins.list", "torch.FloatStorage"}),
              "audiocraft's solver checkpoint: torch.save of {'xp.cfg': DictConfig, 'model': state_dict} (the "
              "original predictor reads cfg.lm_model as an attribute, so xp.cfg is a DictConfig, lists as "
              "ListConfig); float32 state"),
    Published(("musicongen/state_dict.bin",), OMEGACONF, frozenset({*_TENSORS, "torch.HalfStorage"}),
              "hub Cyan0731/MusiConGen, its pickle scan: HalfStorage, _rebuild_tensor_v2, OrderedDict (audiocraft's "
              "export_lm writes xp.cfg as YAML text, so no OmegaConf class)"),
    Published(("musicongen/compression_state_dict.bin",), OMEGACONF, frozenset(),
              "audiocraft's export_encodec pointer: plain strings and a bool (589 bytes on the hub)"),
    Published(("mbd/mbd_musicgen_32khz.th",), OMEGACONF,
              frozenset({*_TENSORS, *_OMEGACONF_PICKLE, "torch.FloatStorage"}),
              "audiocraft's MultiBandDiffusion.get_mbd_musicgen reads sample_rate, n_bands and per band an "
              "OmegaConf cfg with the model and processor states"),
    Published(("demucs/955717e8-8726e21a.th",), DEMUCS,
              frozenset({*_TENSORS, "torch.HalfStorage", "demucs.htdemucs.HTDemucs", "fractions.Fraction"}),
              "demucs states.py serialize_model: klass (the class by reference), args, kwargs (segment a "
              "Fraction), state as a plain dict of float16 tensors (half=True), training_args as plain data"),
    Published(("allin1/harmonix-fold?-*.pth",), ALLIN1, frozenset({*_TENSORS, "torch.FloatStorage"}),
              "hub taejunkim/allinone, its pickle scan: FloatStorage, OrderedDict; the config a plain dict"),
    Published(("btc/btc_model*.pt",), NUMPY,
              frozenset({*_TENSORS, "torch.FloatStorage", "numpy.core.multiarray.scalar", "numpy.dtype",
                         "_codecs.encode"}),
              "BTC-ISMIR19's training code: torch.save of {'model': state_dict, 'mean', 'std'} with numpy 1.x "
              "float64 statistics (np.mean, np.sqrt), pickled as numpy.core.multiarray.scalar with its dtype and "
              "bytes (_codecs.encode)"),
    Published(("madmom/downbeats/2016/downbeats_blstm_*.pkl",), MADMOM,
              frozenset({"madmom.ml.nn.NeuralNetwork", "madmom.ml.nn.layers.FeedForwardLayer",
                         "madmom.ml.nn.layers.BidirectionalLayer", "madmom.ml.nn.layers.LSTMLayer",
                         "madmom.ml.nn.layers.Gate", "madmom.ml.nn.layers.Cell", "madmom.ml.nn.activations.sigmoid",
                         "madmom.ml.nn.activations.tanh", "madmom.ml.nn.activations.softmax",
                         "numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}),
              "github CPJKU/madmom_models (plain pickles, protocol 2, written by madmom's Processor.dump); the "
              "classes are those pickletools lists for all eight files, as madmom-infer 0.2.0's unpickle.py "
              "documents"),
)


def _madmom() -> list[tuple[object, str]]:
    import numpy as np
    from madmom_infer.ml.nn import NeuralNetwork, activations, layers
    from numpy._core import multiarray

    # What the eight downbeats_blstm_[1-8].pkl pickle (pickletools over the published files; madmom-infer's
    # unpickle.py lists the same), mapped onto madmom-infer's numpy port of madmom's network classes.
    return [(NeuralNetwork, "madmom.ml.nn.NeuralNetwork"),
            *((getattr(layers, name), f"madmom.ml.nn.layers.{name}")
              for name in ("FeedForwardLayer", "BidirectionalLayer", "LSTMLayer", "Gate", "Cell")),
            *((getattr(activations, name), f"madmom.ml.nn.activations.{name}")
              for name in ("sigmoid", "tanh", "softmax")),
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"), (np.ndarray, "numpy.ndarray"),
            (np.dtype, "numpy.dtype")]


_BUILDERS = {OMEGACONF: _omegaconf, NUMPY: _numpy, DEMUCS: _demucs, ALLIN1: _allin1, MADMOM: _madmom}


@functools.lru_cache(maxsize=None)
def _allowed(family: str) -> tuple[tuple[object, str], ...]:
    """(object, pickled name) for each class a family's published files reference."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown checkpoint family {family!r}; known: {', '.join(FAMILIES)}")
    return tuple(_BUILDERS[family]())


def allowed_names(family: str) -> list[str]:
    """The fully qualified names a checkpoint family may unpickle (its allow-list)."""
    return sorted({name for _, name in _allowed(family)})


def read(path: str | Path, what: str, family: str) -> dict:
    """Unpickle `path` (a torch checkpoint holding a dict) with `family`'s allow-list; `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    unexpected = _unexpected_globals(path, family)
    if unexpected:
        raise _refusal(path, what, unexpected)
    try:
        with torch.serialization.safe_globals(list(_allowed(family))):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means an unreadable file
        named = re.findall(r"GLOBAL (\S+)", str(error))
        if named:  # legacy (non-zip) files are only checked while loading
            raise _refusal(path, what, named) from None
        raise CheckpointError(f"{path} is not a readable {what} ({_reason(error)}); "
                              f"the file may be damaged: {_fetch_again(path)}") from None
    if not isinstance(package, dict):
        raise CheckpointError(f"{path} is not a {what}: it holds a {type(package).__name__}, not a dict")
    return package


def read_pickle(path: str | Path, what: str, family: str):
    """Unpickle a plain (non-torch) pickle, such as madmom's networks, resolving only `family`'s allow-listed
    names: anything else is refused by name before it is called."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    allowed = {name: obj for obj, name in _allowed(family)}

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            qualified = f"{module}.{name}"
            if qualified not in allowed:
                raise _refusal(path, what, [qualified])
            return allowed[qualified]

    try:
        with open(path, "rb") as f:
            # madmom's files were written by Python 2: latin1 keeps their numpy buffers' bytes.
            return Restricted(f, encoding="latin1").load()
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - a truncated or damaged pickle
        raise CheckpointError(f"{path} is not a readable {what} ({error}); the file may be damaged: "
                              f"{_fetch_again(path)}") from None


def _unexpected_globals(path: Path, family: str) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: torch.load checks it while loading
        return []
    allowed = set(allowed_names(family))
    return [name for name in names if name not in allowed]


def _refusal(path: Path, what: str, names: list[str]) -> CheckpointError:
    return CheckpointError(
        f"{path} is not loaded: unpickling it would need {', '.join(sorted(set(names)))}, which no published "
        f"{what} holds (we unpickle only tensors, numbers and the few classes its published files need); "
        f"it is not the published file: {_fetch_again(path)}"
    )


def _fetch_again(path: Path) -> str:
    """How to replace a bad file: the command that fetches its component, when the manifest knows it."""
    from remixer import weights

    for file in weights.MANIFEST:
        if path.as_posix().endswith(file.name):
            return (f"delete it and fetch it again (`python -m remixer.weights download {file.component}`, "
                    f"from {file.url})")
    return "delete it and fetch it again"


def _reason(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    # torch prefixes its own reason with a paragraph about the weights_only default: show the reason.
    return lines[-1] if lines and not lines[-1].startswith("Check the documentation") else (
        lines[-2] if len(lines) > 1 else (lines[0] if lines else type(error).__name__))


def plain(value):
    """A config (OmegaConf, dict, list, numpy numbers) as JSON-able plain data."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation with a resolver we do not have: keep it as written
            value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    raise CheckpointError(f"unexpected {type(value).__name__} in a checkpoint's config")

