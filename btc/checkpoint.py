"""Read and write BTC checkpoints in the official format.

A checkpoint is a torch pickle: {"model": state dict, "mean": number, "std": number};
the official files store the statistics as numpy scalars.
"""

from __future__ import annotations

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # As BTC's training code stores them: numpy scalars (std comes from np.sqrt).
    torch.save({"model": model.state_dict(), "mean": np.float64(mean), "std": np.float64(std)}, path)
    return path
