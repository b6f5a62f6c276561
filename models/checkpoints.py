"""Checkpoints: safetensors files plus one JSON sidecar per run (run.json).

A run folder holds epoch_000.safetensors (the initialization), epoch_001.safetensors, ... and
run.json with the architecture, data set, normalization, seed, full training config, per-epoch
metrics and the label-noise record. Each safetensors file also carries the architecture in its
metadata, so a single file is self-describing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of names, dtypes, shapes and bytes: equal weights give equal fingerprints."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """The state_dict and every buffer, the non-persistent ones too: the input normalization lives in
    such buffers, and the same weights under another mean/std are another model (and must not share
    cached results)."""
    buffers = {f"{k} (buffer)": v for k, v in model.named_buffers()}
    custom = model.__dict__.get("_lenscape_input_norm")  # a custom model's normalization (models.resnets)
    if custom is not None:
        buffers.update({f"input_norm.{k} (buffer)": v for k, v in custom.named_buffers()})
    return state_fingerprint({**model.state_dict(), **buffers})


def save_checkpoint(path: Path, model: nn.Module, meta: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"lenscape": json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("lenscape", "{}"))
    return load_file(str(path)), meta


def write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
