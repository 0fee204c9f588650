"""Read and write BTC checkpoints in the official format.

A checkpoint is a torch pickle: {"model": state dict, "mean": number, "std": number};
the official files store the statistics as numpy scalars.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .model import BTC


class BTCFormatError(ValueError):
    """A file that is not a BTC checkpoint."""


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[BTC, float, float]:
    """A BTC checkpoint file -> (model, mean, std). Unpickles tensors, numbers and numpy scalars only
    (the official files store std as a numpy float64), never code."""
    path = Path(path)
    import numpy.dtypes
    from numpy._core import multiarray

    allowed = [(multiarray.scalar, "numpy.core.multiarray.scalar"), multiarray.scalar, np.dtype,
               numpy.dtypes.Float64DType, numpy.dtypes.Float32DType]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BTCFormatError(f"BTC checkpoint not found: {path}") from None
    except Exception as error:  # noqa: BLE001 - any failure to unpickle: not a readable checkpoint
        raise BTCFormatError(f"{path} is not a readable BTC checkpoint ({str(error).splitlines()[0]})") from None
    return from_package(data, path, device)


def from_package(data, source: str | Path, device: str | torch.device = "cpu") -> tuple[BTC, float, float]:
    """An unpickled BTC checkpoint ({"model", "mean", "std"}) -> (model, mean, std)."""
    if not isinstance(data, dict) or not {"model", "mean", "std"} <= set(data):
        raise BTCFormatError(f"{source}: a BTC checkpoint holds 'model', 'mean' and 'std'")
    state = data["model"]
    head = state.get("output_layer.output_projection.weight") if isinstance(state, dict) else None
    if head is None:
        raise BTCFormatError(f"{source}: no output layer in the state dict; not a BTC checkpoint")
    model = BTC(classes=head.shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BTCFormatError(f"{source}: state dict does not match the BTC layout: {error}") from None
    return model.to(device).eval(), _number(data["mean"]), _number(data["std"])


def _number(value) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def write_checkpoint(path: str | Path, model: BTC, mean: float, std: float) -> Path:
    """A checkpoint as BTC's training code stored the published ones (2019, numpy 1.x): numpy float64 statistics
    (std comes from np.sqrt), pickled under numpy 1's module names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "mean": np.float64(mean), "std": np.float64(std)}, path,
               pickle_module=_Numpy1Pickle)
    return path


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy 2's `numpy._core` globals under numpy 1's `numpy.core` (numpy 2 still reads both)."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core', 1)}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _Numpy1Pickle:
    """The pickle module torch.save is given: its Pickler writes numpy 1's names."""

    Pickler = _Numpy1Pickler
    __name__ = "pickle"
