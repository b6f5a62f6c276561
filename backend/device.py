"""The compute device, chosen once: CUDA, then MPS, then CPU. LENSCAPE_DEVICE forces one."""

from __future__ import annotations

import os

import torch

from lenscape.errors import InvalidInputError


def choose_device(force: str | None = None) -> torch.device:
    wanted = (force or os.environ.get("LENSCAPE_DEVICE", "")).strip().lower()
    if wanted:
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInputError(f"device {wanted!r} was asked for but CUDA is not available here")
        if wanted == "mps" and not _mps():
            raise InvalidInputError("device 'mps' was asked for but MPS is not available here")
        if not (wanted == "cpu" or wanted == "mps" or wanted.startswith("cuda")):
            raise InvalidInputError(f"device must be cpu, cuda, cuda:N or mps; got {wanted!r}")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps():
        return torch.device("mps")
    return torch.device("cpu")


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def describe_device(device: torch.device) -> dict:
    """What the sidebar shows: kind, name and memory."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"kind": "CUDA", "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    if device.type == "mps":
        return {"kind": "MPS", "name": "Apple GPU", "memory_gb": None}
    return {
        "kind": "CPU",
        "name": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "memory_gb": None,
    }
