"""Architectures from the user's own code: an importable reference `module:callable` plus JSON
keyword arguments, recorded in the run (ArchSpec name "custom"), so that jobs, later sessions and
Ray workers rebuild the same network from it and load the workspace's safetensors weights into it.

Naming code is a server operator's act, never a page user's: a reference is built only when it is
*trusted*, i.e. listed in

- LENSCAPE_CODE (references separated by commas or spaces), set by whoever starts the server, or
- the workspace's `trusted_code.json` (which also lists the image folders they gave), which only `lenscape.add_model(...)` and
  `lenscape app --model ...` write (no page, link or bundle import ever writes it).

A run record, a bundle or a link that names any other reference is refused before anything is
imported. The callable must return an `nn.Module` whose `state_dict()` the saved weights fit.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from pathlib import Path

from torch import nn

from lenscape.errors import InvalidInputError
from lenscape.models.paths import home_dir

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
REF = re.compile(rf"{_NAME}(?:\.{_NAME})*:{_NAME}(?:\.{_NAME})*")
MAX_KWARGS = 10_000  # characters of JSON
TRUSTED_FILE = "trusted_code.json"
_LOCK = threading.Lock()


def check_ref(ref: object) -> str:
    """`ref` if it reads `package.module:callable` (dotted names only), else InvalidInputError."""
    if not isinstance(ref, str) or len(ref) > 300 or not REF.fullmatch(ref):
        shown = str(ref)[:80]
        raise InvalidInputError(
            f"an architecture reference reads 'package.module:callable' (for example "
            f"'mypkg.nets:build_net'); got {shown!r}"
        )
    return ref


def canonical_kwargs(kwargs: object) -> str:
    """The keyword arguments as canonical JSON (sorted keys): plain JSON values only."""
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs or "{}")
        except ValueError as exc:
            raise InvalidInputError(f"the architecture's keyword arguments are not JSON: {exc}") from None
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidInputError(
            f"the architecture's keyword arguments must be a JSON object; got {type(kwargs).__name__}"
        )
    try:
        text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"the architecture's keyword arguments must be plain JSON values (numbers, strings, lists, dicts): {exc}"
        ) from None
    if len(text) > MAX_KWARGS:
        raise InvalidInputError(
            f"the architecture's keyword arguments are {len(text):,} characters; at most {MAX_KWARGS:,}"
        )
    return text


def _trusted_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / TRUSTED_FILE


def _env_refs() -> set[str]:
    return {r for r in re.split(r"[,\s]+", os.environ.get("LENSCAPE_CODE", "")) if r}


def _trust_file(home: Path | None = None) -> dict[str, list[str]]:
    path = _trusted_path(home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"code": [], "folders": []}
    except (OSError, ValueError):
        raise InvalidInputError(f"{path} cannot be read as JSON; fix or delete it") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object {{'code': [...], 'folders': [...]}}")
    return {k: [r for r in data.get(k, []) if isinstance(r, str)] for k in ("code", "folders")}


def trusted_refs(home: Path | None = None) -> set[str]:
    """The references this server may build: LENSCAPE_CODE and the workspace's trusted_code.json."""
    return _env_refs() | set(_trust_file(home)["code"])


def trusted_folders(home: Path | None = None) -> list[str]:
    """Image folders the person running the server gave to add_model or `lenscape app --data`."""
    return _trust_file(home)["folders"]


def trust(ref: str | None = None, folder: str | None = None, home: Path | None = None) -> None:
    """Let this workspace build `ref` and read `folder` from now on (the Python API and the command
    line only: nothing a page user does calls this)."""
    import fcntl

    lock_path = _trusted_path(home).with_suffix(".lock")
    with _LOCK, open(lock_path, "a") as lock:  # threads here, and other processes (a second notebook)
        fcntl.flock(lock, fcntl.LOCK_EX)  # read-modify-write under one lock: no reference is lost
        data = _trust_file(home)
        if ref is not None:
            data["code"] = sorted({*data["code"], check_ref(ref)})
        if folder is not None:
            data["folders"] = sorted({*data["folders"], os.path.realpath(folder)})
        path = _trusted_path(home)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def check_trusted(ref: str) -> None:
    check_ref(ref)
    if ref not in trusted_refs():
        raise InvalidInputError(
            f"this model's architecture is code ({ref!r}) that the person who started this server has "
            "not allowed. Only they can name code: with lenscape.add_model(...) in Python, "
            "`lenscape app --model module:callable`, or LENSCAPE_CODE; a page, a link or a bundle "
            "never can"
        )


def resolve(ref: str):
    """The callable `ref` names, imported (after check_trusted)."""
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise InvalidInputError(
            f"cannot import {module_name!r} for the architecture {ref!r} ({exc}). The module must be "
            "importable where Lenscape runs: installed (pip install -e .), or on PYTHONPATH; on a Ray "
            "cluster, installed on every worker or shipped with a runtime_env (py_modules)"
        ) from None
    except AttributeError:
        raise InvalidInputError(f"{module_name!r} has no {attr!r} (architecture {ref!r})") from None
    if not callable(obj):
        raise InvalidInputError(f"{ref!r} is not callable")
    return obj


def build_custom(ref: str, kwargs: str) -> nn.Module:
    """A fresh network from a trusted reference: `callable(**kwargs)`, which must be an nn.Module."""
    check_trusted(ref)
    fn = resolve(ref)
    model = fn(**json.loads(kwargs or "{}"))
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"{ref!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def ref_of(model: nn.Module) -> str:
    """The reference of the model's own class (`module:QualName`), if it can be imported as such."""
    cls = type(model)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise InvalidInputError(
            f"{cls.__qualname__} is defined in {'a notebook or script' if cls.__module__ == '__main__' else 'a function'}, "
            "where a later session or a job cannot import it. Move it into a module (e.g. mypkg/nets.py) "
            "and pass architecture='mypkg.nets:build_net' with kwargs={...}"
        )
    return f"{cls.__module__}:{cls.__qualname__}"
