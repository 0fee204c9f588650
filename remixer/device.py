"""Where models run: CUDA when present, else the CPU. Decided once, by the Remixer."""

from __future__ import annotations

import torch

from remixer.errors import RemixerError


class DeviceError(RemixerError):
    """A device that was asked for and is not there."""


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` if given ("cpu", "cuda", "cuda:1"), else CUDA when available."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"unknown device {requested!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {requested!r} is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} was asked for but this machine has no usable CUDA GPU; "
                              "use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {requested!r} was asked for but this machine has {count} GPU(s): "
                              f"cuda:0 .. cuda:{count - 1}")
    return device
