"""Device choice, written once: what ``auto`` (the default of every command and API) means."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> this process's CUDA device when CUDA is available, else CPU; otherwise as given.

    In a distributed run ``auto`` and ``cuda`` mean the device of this process's rank.

    Raises:
        ValueError: for a string torch does not read as a device, naming it.
    """
    if isinstance(spec, torch.device):
        return spec
    # Ignite only when a process group is up: importing it costs a second, and prediction needs none
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        import ignite.distributed as idist

        distributed = idist.get_world_size() > 1
    if spec in (None, "auto"):
        return idist.device() if distributed else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and distributed:
        return idist.device()
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device '{spec}' is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{spec}' was asked for, but CUDA is not available here: use auto or cpu")
    return device
