"""What a bundle must be before any of it is written: a zip with the expected entries only, each of
a bounded size and read as a stream; a manifest whose every field has the expected type and form;
a result of the type its kind returns, made with the config the manifest names; and a job id that
follows from kind, code version, fingerprints, data and config.

Everything here treats the bundle as an attacker would send it: names are never trusted to be
paths, sizes in the zip's directory are checked before reading and again while reading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenscape.backend.codec import _own_dataclass, current_name, to_jsonable
from lenscape.backend.jobs import REGISTRY
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import RUN_ID

CHECKPOINT_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}\.safetensors")
FINGERPRINT = re.compile(r"[0-9a-f]{16}")
JOB_ID = re.compile(r"[0-9a-f]{24}")
CODE_VERSION = re.compile(r"[0-9a-f]{12}")

MAX_MODELS = 32
MAX_MANIFEST = 256 << 10  # bytes: a manifest is a few KB; whitespace padding is refused
MAX_RUN_JSON = 4 << 20  # a run record with per-epoch metrics and the noise indices of 60,000 examples
CHUNK = 1 << 20
MAX_TIME = 9e9  # seconds since 1970 (the year 2255): what pandas' timestamps hold


def max_bundle_bytes() -> int:
    """The most a bundle may inflate to, in all and per entry (LENSCAPE_MAX_BUNDLE_MB, default 1024);
    only whoever starts the server sets it."""
    try:
        mb = int(os.environ.get("LENSCAPE_MAX_BUNDLE_MB", "1024"))
    except ValueError:
        mb = 1024
    return max(mb, 1) << 20


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# The zip


class BundleZip:
    """The entries of a bundle zip, checked for duplicates, unexpected names and sizes on opening;
    `read` and `extract` stream an entry and stop at its limit whatever the directory claims."""

    def __init__(self, source) -> None:
        try:
            self.zip = zipfile.ZipFile(source)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise InvalidInputError(f"not a Lenscape bundle (not a readable zip: {type(exc).__name__})") from None
        if len(infos) > 2 + 2 * MAX_MODELS:
            raise InvalidInputError(f"the bundle has {len(infos)} entries; a bundle has at most {2 + 2 * MAX_MODELS}")
        dupes = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
        if dupes:
            raise InvalidInputError(f"the bundle holds entries twice ({', '.join(map(repr, dupes[:3]))}): refused")
        self.infos = {i.filename: i for i in infos}
        total, limit = sum(i.file_size for i in infos), max_bundle_bytes()
        if total > limit:
            raise InvalidInputError(
                f"the bundle inflates to {_mb(total)}; the limit is {_mb(limit)} "
                "(LENSCAPE_MAX_BUNDLE_MB, set by whoever runs the server)"
            )
        self.budget = limit

    def names(self) -> set[str]:
        return set(self.infos)

    def _stream(self, name: str, limit: int):
        info = self.infos.get(name)
        if info is None:
            raise InvalidInputError(f"the bundle has no {name!r}")
        if info.file_size > limit:
            raise InvalidInputError(f"{name} in the bundle is {_mb(info.file_size)}; the limit is {_mb(limit)}")
        seen = 0
        try:
            with self.zip.open(info) as f:
                while chunk := f.read(CHUNK):
                    seen += len(chunk)
                    self.budget -= len(chunk)
                    if seen > limit or self.budget < 0:
                        raise InvalidInputError(f"{name} in the bundle inflates beyond its limit ({_mb(limit)})")
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise InvalidInputError(f"{name} in the bundle is damaged ({type(exc).__name__}: {exc})") from None

    def read(self, name: str, limit: int) -> bytes:
        return b"".join(self._stream(name, limit))

    def extract(self, name: str, dest: Path, limit: int) -> str:
        """Write entry `name` to `dest` in chunks; its sha256."""
        h = hashlib.sha256()
        with open(dest, "xb") as out:
            for chunk in self._stream(name, limit):
                h.update(chunk)
                out.write(chunk)
        return h.hexdigest()

    def close(self) -> None:
        self.zip.close()


# ---------------------------------------------------------------------------------------------
# The manifest


def _need(ok: bool, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise InvalidInputError(f"the bundle's manifest has a bad {what}: {shown[:80]}{'…' if len(shown) > 80 else ''}")


def _text(d: dict, key: str, limit: int = 300, optional: bool = False) -> None:
    v = d.get(key)
    _need((optional and v is None) or (isinstance(v, str) and len(v) <= limit), key, v)


def _number(v: Any, allow_none: bool = False) -> bool:
    if v is None:
        return allow_none
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _id(pattern: re.Pattern, v: Any) -> bool:
    return isinstance(v, str) and pattern.fullmatch(v) is not None


def check_manifest(manifest: Any) -> dict:
    """The manifest, if every field has the form an exported one has; InvalidInputError naming the
    first that does not."""
    _need(isinstance(manifest, dict), "manifest", type(manifest).__name__)
    _need(_id(JOB_ID, manifest.get("job_id")), "job id", manifest.get("job_id"))
    _need(manifest.get("kind") in REGISTRY, "kind (not a job kind of this Lenscape)", manifest.get("kind"))
    _need(_id(CODE_VERSION, manifest.get("code_version")), "code version", manifest.get("code_version"))
    _text(manifest, "label")
    _text(manifest, "device")
    _need(isinstance(manifest.get("config"), dict), "config", manifest.get("config"))
    _need(manifest.get("data") is None or isinstance(manifest.get("data"), dict), "data", manifest.get("data"))
    fps = manifest.get("fingerprints")
    _need(
        isinstance(fps, list) and len(fps) <= MAX_MODELS and all(_id(FINGERPRINT, f) for f in fps), "fingerprints", fps
    )
    versions = manifest.get("versions")
    _need(
        isinstance(versions, dict)
        and len(versions) <= 32
        and all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 200 for k, v in versions.items()),
        "versions",
        versions,
    )
    _need(_number(manifest.get("created")) and manifest["created"] <= MAX_TIME, "created", manifest.get("created"))
    _need(
        _number(manifest.get("seconds"), allow_none=True) and (manifest["seconds"] or 0) <= MAX_TIME,
        "seconds",
        manifest.get("seconds"),
    )
    _need(
        isinstance(manifest.get("checksum"), str) and re.fullmatch(r"[0-9a-f]{64}", manifest["checksum"]) is not None,
        "checksum",
        manifest.get("checksum"),
    )
    models = manifest.get("models")
    _need(isinstance(models, list) and len(models) <= MAX_MODELS, "models", models)
    for m in models:
        _need(isinstance(m, dict), "model entry", m)
        _need(_id(RUN_ID, m.get("run_id")), "model run id", m.get("run_id"))
        _need(_id(CHECKPOINT_FILE, m.get("file")), "checkpoint file name", m.get("file"))
        _need(
            _id(FINGERPRINT, m.get("fingerprint")) and m["fingerprint"] in fps,
            "model fingerprint",
            m.get("fingerprint"),
        )
        _need(
            isinstance(m.get("epoch"), int) and not isinstance(m["epoch"], bool) and m["epoch"] >= 0,
            "model epoch",
            m.get("epoch"),
        )
        _text(m, "name")
    keys = [(m["run_id"], m["file"]) for m in models]
    _need(len(set(keys)) == len(keys), "models list (a checkpoint named twice)", keys)
    return manifest


def job_id_of(manifest: dict) -> str:
    """The job id the manifest's kind, code version, fingerprints, data and config make
    (backend.jobs.Job.key, with the exporting side's code version)."""
    payload = {
        "kind": manifest["kind"],
        "code": manifest["code_version"],
        "fingerprints": list(manifest["fingerprints"]),
        "data": manifest["data"],
        "config": manifest["config"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Config and result


def rebuild(node: Any) -> Any:
    """A config from its JSON form (to_jsonable's: dataclasses carry "__type__", tuples are lists),
    built through its own __post_init__ checks; only Lenscape's own dataclasses."""
    if isinstance(node, list):
        return tuple(rebuild(v) for v in node)
    if isinstance(node, dict):
        if "__type__" not in node:
            raise InvalidInputError("the bundle's config holds a mapping where a Lenscape config was expected")
        try:
            cls = _own_dataclass(node["__type__"])
        except (ValueError, ImportError, AttributeError) as exc:
            raise InvalidInputError(f"the bundle's config names an unknown type ({exc})") from None
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        extra = set(node) - fields - {"__type__"}
        if extra:
            raise InvalidInputError(f"the bundle's config has fields {sorted(extra)} that {cls.__name__} does not")
        try:
            return cls(**{k: rebuild(v) for k, v in node.items() if k != "__type__"})
        except InvalidInputError:
            raise
        except Exception as exc:  # a wrong type deep inside: the config's own checks said no
            raise InvalidInputError(
                f"the bundle's config does not make a {cls.__name__} ({type(exc).__name__}: {str(exc)[:160]})"
            ) from None
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise InvalidInputError(f"the bundle's config holds a {type(node).__name__}")


def check_config(manifest: dict) -> Any:
    """The manifest's config rebuilt as its kind's config type, equal to what the manifest says."""
    kind = REGISTRY[manifest["kind"]]
    config = rebuild(manifest["config"])
    if type(config) is not kind.config_type:
        raise InvalidInputError(
            f"the bundle's config is a {type(config).__name__}; a {kind.name} job takes a {kind.config_type.__name__}"
        )
    if json.dumps(_as_given(to_jsonable(config), manifest["config"]), sort_keys=True) != json.dumps(
        manifest["config"], sort_keys=True
    ):
        raise InvalidInputError("the bundle's config does not read back as written")
    return config


def _as_given(rebuilt: Any, given: Any) -> Any:
    """`rebuilt` without the dataclass fields that `given` lacks: a bundle exported before a config
    gained a field (rebuild gave it its default) still reads back as written. The job id is made
    from the manifest's own config, so it is unchanged."""
    if isinstance(rebuilt, dict) and isinstance(given, dict) and "__type__" in given:
        out = {k: _as_given(v, given[k]) for k, v in rebuilt.items() if k in given}
        module, _, name = str(given["__type__"]).partition(":")
        if out.get("__type__") == f"{current_name(module)}:{name}":  # exported before Lenscape was one package
            out["__type__"] = given["__type__"]
        return out
    if isinstance(rebuilt, list) and isinstance(given, list) and len(rebuilt) == len(given):
        return [_as_given(r, g) for r, g in zip(rebuilt, given)]
    return rebuilt


def conforms(value: Any, tp: Any) -> bool:
    """Whether `value` has type `tp` (a result annotation: scalars, arrays, containers, Lenscape
    dataclasses), checked all the way down."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (int, str, bool, np.ndarray, torch.Tensor, list, tuple, dict):
        return isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if type(value) is not tp:
            return False
        hints = typing.get_type_hints(tp)
        return all(conforms(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(tp))
    return False


def _nodes(node: Any) -> list:
    """Every dict node of a JSON tree."""
    out = []
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            out += _nodes(v)
    elif isinstance(node, list):
        for v in node:
            out += _nodes(v)
    return out


def _inner_configs(value: Any) -> list:
    """The `config` fields of every dataclass in a result."""
    out = []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.name == "config" and dataclasses.is_dataclass(v):
                out.append(v)
            out += _inner_configs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out += _inner_configs(v)
    elif isinstance(value, dict):
        for v in value.values():
            out += _inner_configs(v)
    return out


def _current_types(node: Any) -> Any:
    """A config's JSON with its types named as today (`analysis.x:T` → `lenscape.analysis.x:T`)."""
    if isinstance(node, list):
        return [_current_types(v) for v in node]
    if isinstance(node, dict):
        out = {k: _current_types(v) for k, v in node.items()}
        if isinstance(node.get("__type__"), str):
            module, _, name = node["__type__"].partition(":")
            out["__type__"] = f"{current_name(module)}:{name}"
        return out
    return node


def check_result(result: Any, manifest: dict) -> None:
    """The result is of the type its kind returns, and any config it carries is part of the manifest's."""
    kind = REGISTRY[manifest["kind"]]
    if not conforms(result, kind.result_type):
        raise InvalidInputError(
            f"the bundle's result is not what a {kind.name} job returns "
            f"(a {type(result).__name__}): kind and result do not match"
        )
    nodes = [json.dumps(_current_types(n), sort_keys=True) for n in _nodes(manifest["config"])]
    for inner in _inner_configs(result):
        if json.dumps(to_jsonable(inner), sort_keys=True) not in nodes:
            raise InvalidInputError(
                f"the bundle's result was computed with another {type(inner).__name__} than its manifest's config names"
            )


# ---------------------------------------------------------------------------------------------
# Run records


def _finite(v: Any, lo: float = 0.0, hi: float = math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _gradient_record(rec: Any) -> bool:
    """None, or the trainer's in-training gradient record: per epoch, one finite figure per parameter."""
    if rec is None:
        return True
    if not isinstance(rec, dict):
        return False
    names, numel, epochs = rec.get("names"), rec.get("numel"), rec.get("epochs")
    if not (
        isinstance(names, list)
        and 0 < len(names) <= 10_000
        and all(isinstance(n, str) and len(n) <= 300 for n in names)
        and isinstance(numel, list)
        and len(numel) == len(names)
        and all(isinstance(k, int) and not isinstance(k, bool) and 0 < k <= 10**12 for k in numel)
        and isinstance(epochs, list)
        and len(epochs) <= 100_000
        and all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs)
    ):
        return False
    for key, lo, hi in (("clean_norm", 0, math.inf), ("noisy_norm", 0, math.inf), ("cosine", -1.000001, 1.000001)):
        rows = rec.get(key)
        if not (
            isinstance(rows, list)
            and len(rows) == len(epochs)
            and all(isinstance(r, list) and len(r) == len(names) and all(_finite(v, lo, hi) for v in r) for r in rows)
        ):
            return False
    return True


def check_run_record(run: Any, run_id: str, entries: list[dict]) -> None:
    """A run.json with the form Lenscape writes, describing the checkpoints the manifest names: every
    field a page reads (name, created, metrics, classes, noise, gradients) of the type it reads, so that a
    crafted record cannot break the pages that list runs."""
    name = entries[0]["name"]

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InvalidInputError(f"the run record of {name!r} has a bad {what}")

    need(isinstance(run, dict) and run.get("run_id") == run_id and run.get("status") == "complete", "id or status")
    need(isinstance(run.get("name"), str) and len(run["name"]) <= 300, "name")
    need(_finite(run.get("created"), 0, MAX_TIME), "creation time")
    need(isinstance(run.get("arch"), dict), "architecture")
    ckpts = run.get("checkpoints")
    need(
        isinstance(ckpts, list)
        and len(ckpts) <= 10_000
        and all(
            isinstance(c, dict)
            and _id(CHECKPOINT_FILE, c.get("file"))
            and _id(FINGERPRINT, c.get("fingerprint"))
            and isinstance(c.get("epoch"), int)
            and not isinstance(c["epoch"], bool)
            and c["epoch"] >= 0
            for c in ckpts
        ),
        "checkpoint list",
    )
    for m in entries:
        need(
            [(c["epoch"], c["fingerprint"]) for c in ckpts if c["file"] == m["file"]]
            == [(m["epoch"], m["fingerprint"])],
            f"checkpoint list (it does not describe {m['file']} as the manifest does)",
        )
    metrics = run.get("metrics", [])
    need(
        isinstance(metrics, list)
        and len(metrics) <= 100_000
        and all(
            isinstance(r, dict)
            and all(isinstance(k, str) and (v is None or _finite(v, -math.inf)) for k, v in r.items())
            for r in metrics
        ),
        "metrics",
    )
    need(run.get("n_train") is None or (isinstance(run["n_train"], int) and 0 <= run["n_train"] <= 10**9), "n_train")
    classes = run.get("classes", [])
    need(
        isinstance(classes, list)
        and len(classes) <= 100_000
        and all(isinstance(c, str) and len(c) <= 200 for c in classes),
        "class names",
    )
    need(run.get("seed") is None or (isinstance(run["seed"], int) and not isinstance(run["seed"], bool)), "seed")
    noise = run.get("noise")
    need(
        noise is None
        or (
            isinstance(noise, dict)
            and all(
                isinstance(noise.get(k, []), list) and all(isinstance(i, int) and i >= 0 for i in noise.get(k, []))
                for k in ("indices", "original_labels", "noisy_labels")
            )
        ),
        "label-noise record",
    )
    if isinstance(noise, dict) and isinstance(classes, list):  # labels of its classes, one per index
        labels = [*noise.get("original_labels", []), *noise.get("noisy_labels", [])]
        need(all(i < len(classes) for i in labels), "label-noise record (labels beyond the classes)")
        need(len(noise.get("original_labels", [])) == len(noise.get("indices", [])), "label-noise record (lengths)")
    need(isinstance(run.get("source", ""), str), "source")
    need(_gradient_record(run.get("gradients")), "gradient record")
    try:
        from lenscape.models.data import DataSpec
        from lenscape.models.training import TrainConfig

        if run.get("data") is not None:
            DataSpec.from_dict(run["data"])
        if run.get("config") is not None:
            TrainConfig.from_dict(run["config"])
    except Exception as exc:  # noqa: BLE001 - whatever a crafted record makes the constructors raise
        raise InvalidInputError(
            f"the run record of {name!r} has a bad data set or recipe ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


RECIPE_FIELDS = ("widths", "channels", "batchnorm", "p_gen", "p_mem")


def check_run_id(run: dict, todo: list[dict]) -> None:
    """The run id is the one Lenscape derives from the content (`import-<fingerprint>` of an imported
    model's weights, `run-<hash>` of a trained run's recipe, with the architecture that recipe
    builds), so a bundle cannot take the id a later import or training will look for."""
    from lenscape.models.training import TrainConfig, run_id_for

    run_id, name = run["run_id"], todo[0]["name"]
    if run_id.startswith("import-"):
        first = min(run["checkpoints"], key=lambda c: c["epoch"])
        if run_id != f"import-{first['fingerprint']}" or len(run["checkpoints"]) != 1:
            raise InvalidInputError(
                f"{name!r}: run id {run_id} is not the one Lenscape gives these weights "
                f"(import-{first['fingerprint']}): another model's id cannot be taken"
            )
        return
    if run_id.startswith("run-") and isinstance(run.get("config"), dict):
        cfg = TrainConfig.from_dict(run["config"])
        if cfg.builder:  # a recipe naming code: the same trust as the architecture's, before anything else
            from lenscape.models.custom import check_trusted

            check_trusted(cfg.builder, cfg.builder_kwargs)
        arch = run["arch"]
        wanted = {"name": cfg.arch, **{k: getattr(cfg, k) for k in RECIPE_FIELDS}}
        if cfg.builder or arch.get("builder") or arch.get("builder_kwargs"):
            wanted.update(builder=cfg.builder, builder_kwargs=cfg.builder_kwargs)
        got = {k: tuple(arch.get(k)) if isinstance(arch.get(k), list) else arch.get(k) for k in wanted}
        if run_id_for(cfg) != run_id or got != wanted:
            raise InvalidInputError(
                f"{name!r}: run id {run_id} and architecture are not the ones its recipe makes "
                "(another model's id cannot be taken)"
            )
        return
    raise InvalidInputError(
        f"{name!r}: run id {run_id} is neither a trained run's (run-…, with its recipe) nor an "
        "imported model's (import-…)"
    )
