"""A safe on-disk format for job results: one .npz file, arrays stored natively and everything
else as JSON in a `__meta__` entry. Reading never unpickles; dataclasses are rebuilt only for
types defined in Lenscape's own packages."""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import zipfile
from typing import Any

import numpy as np
import torch

OWN_PACKAGES = ("lenscape.analysis", "lenscape.models", "lenscape.backend")
# Results and bundles stored before Lenscape became one package name their types `analysis.x:T`:
# they are read as `lenscape.analysis.x:T` (issue 24: an old workspace keeps working).
LEGACY_PACKAGES = ("analysis", "models", "backend")


def own_module(module: str) -> bool:
    """True for a module of Lenscape's own packages whose types may be rebuilt from storage."""
    return any(module == p or module.startswith(p + ".") for p in OWN_PACKAGES)


def current_name(module: str) -> str:
    """A stored module name as it is called now: `analysis.saliency` → `lenscape.analysis.saliency`."""
    return f"lenscape.{module}" if module.split(".")[0] in LEGACY_PACKAGES else module


def encode(obj: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_enc(obj, arrays)).encode()
    buf = io.BytesIO()
    entries: dict[str, Any] = {"__meta__": np.frombuffer(meta, dtype=np.uint8), **arrays}
    np.savez(buf, **entries)
    return buf.getvalue()


def decode(raw: bytes) -> Any:
    _check_sizes(raw)
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if any(a.dtype.itemsize == 0 for a in arrays.values()):  # empty-item arrays: any shape, no bytes
        raise ValueError("the result holds arrays of a zero-size type")
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    return _dec(meta, arrays)


def _check_sizes(raw: bytes) -> None:
    """encode writes arrays uncompressed, so a result holds about as many bytes as its file: one
    whose entries claim to inflate beyond that (a crafted zip bomb) is refused before reading."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        infos = z.infolist()
        if len(infos) > 100_000 or sum(i.file_size for i in infos) > len(raw) + (1 << 20):
            raise ValueError("the result's entries claim more bytes than its file holds")


def to_jsonable(obj: Any) -> Any:
    """Canonical JSON-able form of a config (for job keys): dataclasses carry their type name."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__type__": f"{type(obj).__module__}:{type(obj).__qualname__}", **fields}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot use a {type(obj).__name__} in a job config")


def _enc(obj: Any, arrays: dict) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        kind = "pt" if isinstance(obj, torch.Tensor) else "nd"
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        if arr.dtype == object:
            raise TypeError("object arrays cannot be stored safely")
        key = f"a{len(arrays)}"
        arrays[key] = arr
        return {"__t__": kind, "key": key}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _enc(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)}
        return {"__t__": "dc", "type": f"{type(obj).__module__}:{type(obj).__qualname__}", "fields": fields}
    if isinstance(obj, dict):
        return {"__t__": "dict", "items": [[_enc(k, arrays), _enc(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__t__": type(obj).__name__, "items": [_enc(v, arrays) for v in obj]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a job result")


def _dec(node: Any, arrays: dict) -> Any:
    if not isinstance(node, dict):
        return node
    t = node["__t__"]
    if t == "nd":
        return arrays[node["key"]]
    if t == "pt":
        return torch.from_numpy(arrays[node["key"]])
    if t == "dict":
        return {_dec(k, arrays): _dec(v, arrays) for k, v in node["items"]}
    if t in ("list", "tuple"):
        items = [_dec(v, arrays) for v in node["items"]]
        return items if t == "list" else tuple(items)
    if t == "dc":
        cls = _own_dataclass(node["type"])
        fields = {k: _dec(v, arrays) for k, v in node["fields"].items()}
        init = {f.name: fields[f.name] for f in dataclasses.fields(cls) if f.init and f.name in fields}
        return cls(**init)
    raise ValueError(f"unknown stored node type {t!r}")


def _own_dataclass(path: str) -> type:
    module, _, qualname = path.partition(":")
    module = current_name(module)
    if not own_module(module):
        raise ValueError(f"refusing to rebuild {path}: not a Lenscape type")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{path} is not a dataclass")
    if not own_module(cls.__module__):  # reached through an import of one of ours
        raise ValueError(f"refusing to rebuild {path}: {cls.__module__}.{cls.__qualname__} is not a Lenscape type")
    return cls
