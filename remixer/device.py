"""Where models run: CUDA when present, else the CPU. Decided once, by the Remixer."""

from __future__ import annotations

from pathlib import Path

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


def system_memory(field: str = "MemAvailable") -> int | None:
    """A figure of /proc/meminfo in bytes ("MemAvailable", "MemTotal"); None where the system has none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_bytes(device: torch.device) -> int | None:
    """Memory a computation can still use on `device`: CUDA's free memory plus what the allocator holds
    unused; on the CPU the system's available memory; None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return system_memory("MemAvailable")
