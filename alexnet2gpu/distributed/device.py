"""Devices, stated once: a device name parsed (or refused in one sentence), checked against this machine,
the default device, waiting for a device, and the mixed precision a run may ask for."""
from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {None: None, "": None, "bf16": torch.bfloat16}  # --amp / a benchmark row's amp -> autocast dtype


def default_device_type() -> str:
    """cuda when this machine has a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(name, hint: str = "use 'cpu', 'cuda', 'cuda:0', 'cuda:1', ...") -> torch.device:
    """`name` as a torch.device, or a ValueError naming it and what to pass instead."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}: {hint}.") from None


def check_device(name) -> torch.device:
    """Parse a device name and make sure this machine has it, or raise a clear error."""
    device = parse_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            raise ValueError(f"device {str(name)!r} is not on this machine, which has {count} CUDA GPU(s): pick another device.")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on `device` (a no-op on the CPU, which has no queue)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp):
    """Autocast on `device` to `amp` ("bf16", or a torch dtype), or nothing for fp32 (None or "")."""
    dtype = AMP_DTYPES[amp] if amp is None or isinstance(amp, str) else amp
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
