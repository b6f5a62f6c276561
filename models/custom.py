"""Architectures from the user's own code: an importable reference `module:callable` plus JSON
keyword arguments, recorded in the run (ArchSpec name "custom"), so that jobs, later sessions and
Ray workers rebuild the same network from it and load the workspace's safetensors weights into it.

Naming code is a server operator's act, never a page user's: a reference is built only when it is
*trusted*, i.e.

- named in LENSCAPE_CODE (references separated by commas or spaces), set by whoever starts the server:
  that reference with any keyword arguments; or
- listed, together with its exact keyword arguments, in the workspace's `trusted_code.json` (which also
  lists the image folders they gave). Only `lenscape.add_model(...)`, `lenscape app --model ...` and
  `lenscape train --model ...` write it, and only once the network they name has been built and checked
  (no page, link or bundle import ever writes it).

A run record, a bundle or a link that names any other reference, or a trusted reference with other
arguments, is refused before anything is imported or called: a record cannot choose what a trusted
function is called with (`torchvision.models:get_model` with another name would download, a generic
factory could do worse). The callable must return an `nn.Module` whose `state_dict()` the saved weights fit.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from contextlib import contextmanager
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
    """`ref` if it reads `package.module:callable` (dotted names only, not `__main__`), else InvalidInputError."""
    if not isinstance(ref, str) or len(ref) > 300 or not REF.fullmatch(ref):
        shown = str(ref)[:80]
        raise InvalidInputError(
            f"an architecture reference reads 'package.module:callable' (for example "
            f"'mypkg.nets:build_net'); got {shown!r}"
        )
    if ref.split(":", 1)[0] == "__main__":
        raise InvalidInputError(
            f"{ref!r} is in a notebook or script (__main__), where a later session or a job cannot import it: "
            "move it into a module (e.g. mypkg/nets.py) and name that"
        )
    return ref


def canonical_kwargs(kwargs: object) -> str:
    """The keyword arguments as canonical JSON (sorted keys): plain JSON values only."""
    if isinstance(kwargs, str):
        if len(kwargs) > MAX_KWARGS:
            raise InvalidInputError(f"the architecture's keyword arguments are over {MAX_KWARGS:,} characters")
        try:
            kwargs = json.loads(kwargs or "{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidInputError(f"the architecture's keyword arguments are not JSON: {str(exc)[:120]}") from None
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidInputError(
            f"the architecture's keyword arguments must be a JSON object; got {type(kwargs).__name__}"
        )
    try:
        text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except RecursionError:
        raise InvalidInputError("the architecture's keyword arguments are nested too deeply") from None
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


def _trust_file(home: Path | None = None) -> dict[str, list]:
    path = _trusted_path(home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"builds": [], "folders": []}
    except (OSError, ValueError):
        raise InvalidInputError(f"{path} cannot be read as JSON; fix or delete it") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object {{'builds': [...], 'folders': [...]}}")
    builds = [
        [b[0], b[1]]
        for b in data.get("builds", [])
        if isinstance(b, list) and len(b) == 2 and all(isinstance(x, str) for x in b)
    ]
    # a file from before builds were trusted with their arguments ({"code": [names]}) trusts nothing, not
    # even its folders (then trusted before add_model's checks): its models are added again (add_model)
    if "builds" not in data:
        return {"builds": [], "folders": []}
    return {"builds": builds, "folders": [r for r in data.get("folders", []) if isinstance(r, str)]}


def trusted_refs(home: Path | None = None) -> set[str]:
    """The references this server may build with some arguments: LENSCAPE_CODE's and trusted_code.json's."""
    return _env_refs() | {ref for ref, _ in _trust_file(home)["builds"]}


def trusted_folders(home: Path | None = None) -> list[str]:
    """Image folders the person running the server gave to add_model or `lenscape app --data`."""
    return _trust_file(home)["folders"] + sorted(_PENDING_FOLDERS)


_PENDING_FOLDERS: set[str] = set()  # a folder add_model is reading in this process, not yet trusted


@contextmanager
def pending_folder(folder: str | None):
    """Inside: this process may read `folder` (None: nothing) while add_model checks it; nothing is written."""
    if folder is None:
        yield
        return
    real = os.path.realpath(folder)
    with _LOCK:
        _PENDING_FOLDERS.add(real)
    try:
        yield
    finally:
        with _LOCK:
            _PENDING_FOLDERS.discard(real)


_PENDING: set[tuple[str, str]] = set()  # builds named by the operator in this process, not yet checked


@contextmanager
def pending(ref: str, kwargs: object):
    """Inside: this process may build `ref(**kwargs)`, named by the operator (add_model, the command
    line), while it is checked; nothing is written. The caller calls trust() once the check passed."""
    key = (check_ref(ref), canonical_kwargs(kwargs))
    with _LOCK:
        _PENDING.add(key)
    try:
        yield
    finally:
        with _LOCK:
            _PENDING.discard(key)


def trust(ref: str | None = None, folder: str | None = None, home: Path | None = None, kwargs: object = None) -> None:
    """Let this workspace build `ref(**kwargs)` (those arguments only) and read `folder` from now on (the
    Python API and the command line only: nothing a page user does calls this). A trusted folder can be
    read by the workspace's page users too, as the data folders LENSCAPE_DATA names are."""
    import fcntl

    lock_path = _trusted_path(home).with_suffix(".lock")
    with _LOCK, open(lock_path, "a") as lock:  # threads here, and other processes (a second notebook)
        fcntl.flock(lock, fcntl.LOCK_EX)  # read-modify-write under one lock: no reference is lost
        data = _trust_file(home)
        if ref is not None:
            build = [check_ref(ref), canonical_kwargs(kwargs)]
            data["builds"] = sorted({tuple(b) for b in data["builds"]} | {tuple(build)})
        if folder is not None:
            data["folders"] = sorted({*data["folders"], os.path.realpath(folder)})
        path = _trusted_path(home)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"builds": [list(b) for b in data["builds"]], "folders": data["folders"]}, indent=1))
        os.replace(tmp, path)


def check_trusted(ref: str, kwargs: object = None) -> None:
    """Refuse, before any import, a build the person who started this server has not named: `ref` must be
    in LENSCAPE_CODE, or `ref` with exactly these `kwargs` in the workspace's trusted_code.json."""
    check_ref(ref)
    key = (ref, canonical_kwargs(kwargs))
    if ref in _env_refs() or key in _PENDING or list(key) in _trust_file()["builds"]:
        return
    raise InvalidInputError(
        f"this model's architecture is code ({ref!r} with {key[1][:200]}) that the person who started this "
        "server has not allowed with these arguments. Only they can name code: with lenscape.add_model(...) "
        "in Python, `lenscape app --model module:callable`, or LENSCAPE_CODE; a page, a link or a bundle "
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
    check_trusted(ref, kwargs)
    fn = resolve(ref)
    try:
        model = fn(**json.loads(kwargs or "{}"))
    except TypeError as exc:  # arguments it does not take
        raise InvalidInputError(f"{ref!r} cannot be called with {kwargs[:200]}: {str(exc)[:200]}") from None
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
