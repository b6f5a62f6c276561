"""Reading model files from users without ever running their code.

Accepted: safetensors, and PyTorch files that `torch.load(weights_only=True)` can read (a
state_dict, or a dict holding one under "state_dict"/"model"). Anything that would need full
unpickling (a whole pickled model, custom classes) is refused before any of its code runs.
"""

from __future__ import annotations

import io
import pickle
import stat

from dataclasses import dataclass

import torch
from torch import nn

from lenscape.models.architectures import ArchSpec, build_model, check_io
from lenscape.errors import InvalidInputError
from lenscape.models.paths import cache_dir, user_path

MAX_BYTES = 1 << 30  # a bound on what we read at all; the app's upload limit is lower


def read_state_dict(raw: bytes, filename: str = "upload") -> dict[str, torch.Tensor]:
    """Parse bytes into a flat {name: tensor} dict, or raise InvalidInputError saying why not."""
    _check_size(len(raw), filename)
    if len(raw) < 8:
        raise InvalidInputError(f"{filename} is {len(raw)} bytes long: not a model file")
    if filename.lower().endswith(".pt2") or _is_export_archive(raw):
        raise InvalidInputError(
            f"{filename} is a torch.export archive (.pt2). Lenscape does not load these: torch.export.load "
            "unpickles parts of the archive and can run code in it. Save the weights "
            "(model.state_dict(), or safetensors) and pick the architecture; for your own architecture, "
            "ask whoever runs the server to add it (lenscape.add_model or lenscape app --model)"
        )
    state = _read_safetensors(raw, filename) if _looks_like_safetensors(raw) else _read_torch(raw, filename)
    state = _flatten(state, filename)
    check_finite_state(state, filename)
    return state


def read_model_file(text: str, what: str = "the model file") -> bytes:
    """The bytes of a model file named by a page user: refused outside the allowed roots (saying
    nothing about the file), sized with a stat before a byte is read, read bounded."""
    path = user_path(text, what)
    try:
        info = path.stat()
    except OSError:
        raise InvalidInputError(f"{what} {text!r} does not exist (or cannot be reached)") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"{what} {text!r} is not a regular file")
    _check_size(info.st_size, path.name)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # a bound even where the stat said less (/proc files say 0)
    except OSError as exc:
        raise InvalidInputError(f"{what} {text!r} cannot be read ({exc.strerror or type(exc).__name__})") from None
    _check_size(len(raw), path.name)
    return raw


def _is_export_archive(raw: bytes) -> bool:
    """A zip holding an `archive_format` record: what torch.export.save (PT2 archives) writes."""
    if raw[:2] != b"PK":
        return False
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return any(n == "archive_format" or n.endswith("/archive_format") for n in z.namelist())
    except Exception:  # noqa: BLE001 - a damaged zip raises anything (NotImplementedError for odd versions)
        return False


def _check_size(n: int, filename: str) -> None:
    if n > MAX_BYTES:
        raise InvalidInputError(f"{filename} is {n / 2**20:,.0f} MiB; the limit is {MAX_BYTES >> 20} MiB")


def check_finite_state(state: dict[str, torch.Tensor], filename: str) -> None:
    """Refuse weights holding NaN or Inf (every view of such a model would show NaN maps), naming
    the first tensors that do."""
    bad = [name for name, t in state.items() if _has_non_finite(t)]
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise InvalidInputError(
            f"{filename}: {len(bad)} tensor{'s' if len(bad) > 1 else ''} hold NaN or Inf "
            f"values ({shown}); expected finite weights (was the model saved after its "
            "training diverged?)"
        )


def _has_non_finite(t: torch.Tensor) -> bool:
    return (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())


def _looks_like_safetensors(raw: bytes) -> bool:
    n = int.from_bytes(raw[:8], "little")
    return 0 < n < len(raw) and raw[8:9] == b"{"


def _read_safetensors(raw: bytes, filename: str) -> dict:
    from safetensors.torch import load

    try:
        return load(raw)
    except Exception as exc:  # safetensors raises its own error types for every corruption
        raise InvalidInputError(
            f"{filename} looks like safetensors but cannot be read (truncated or corrupted?): {exc}"
        ) from None


def _read_torch(raw: bytes, filename: str) -> dict:
    if not (raw[:2] == b"PK" or raw[:1] == b"\x80"):
        raise InvalidInputError(
            f"{filename} is neither a safetensors file nor a PyTorch file (it starts with {raw[:8]!r})"
        )
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InvalidInputError(
            f"{filename} was refused: it holds pickled Python objects beyond plain tensors "
            f"(for example a whole model saved with torch.save(model)), and loading it could run "
            f"arbitrary code. Save model.state_dict() instead, or use safetensors. "
            f"Detail: {str(exc).splitlines()[-1][:200]}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - damaged files raise anything (KeyError, struct.error, ...)
        raise InvalidInputError(
            f"{filename} cannot be read as a PyTorch file (truncated or corrupted?): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def _flatten(obj, filename: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise InvalidInputError(f"{filename} holds a {type(obj).__name__}, not a state_dict of tensors")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise InvalidInputError(f"{filename}: entries that are not named tensors: {bad[:5]}")
    prefix = "module."  # saved from DataParallel / DistributedDataParallel
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return dict(obj)


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], arch_label: str) -> None:
    """Load `state` into `model`, or raise listing every name and shape that does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        lines = [f"the weights do not fit the {arch_label} architecture:"]
        for title, items in (
            ("missing in the file", missing),
            ("not in the model", unexpected),
            ("shape mismatch", wrong),
        ):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise InvalidInputError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def suggest_architecture(
    state: dict[str, torch.Tensor], in_shape: tuple[int, int, int], num_classes: int
) -> dict | None:
    """The built-in or torchvision architecture (as ArchSpec fields: name and, where they vary,
    widths, channels, batchnorm, torchvision_name) whose state_dict has exactly the keys and shapes
    of `state` for these inputs, or None. Candidates are built on the meta device (shapes only, no
    memory); of torchvision's, only the family `state`'s keys point to."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    c = in_shape[0]
    for fields in [*_candidates(state), *_torchvision_candidates(state)]:
        try:
            with torch.device("meta"):
                model = build_model(
                    ArchSpec(**fields, in_shape=in_shape, num_classes=num_classes, mean=(0.0,) * c, std=(1.0,) * c)
                )
        except (InvalidInputError, RuntimeError):
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return fields
    return None


# A key that only one family of torchvision classifiers has in its state_dict → the names of that
# family start with these (tests/models check it against torchvision). RegNets are left out: they
# cannot be built on the meta device, and some are too large to build to compare shapes.
TORCHVISION_FAMILIES = {
    "features.0.weight": ("alexnet", "squeezenet", "vgg"),
    "features.1.0.layer_scale": ("convnext",),
    "features.1.0.block.0.0.weight": ("efficientnet",),
    "features.1.conv.0.0.weight": ("mobilenet_v2",),
    "features.1.block.0.0.weight": ("mobilenet_v3",),
    "features.1.0.norm1.weight": ("swin",),
    "features.conv0.weight": ("densenet",),
    "conv1.conv.weight": ("googlenet",),
    "Conv2d_1a_3x3.conv.weight": ("inception",),
    "stem.0.0.weight": ("maxvit",),
    "layers.0.weight": ("mnasnet",),
    "layer1.0.conv1.weight": ("resnet", "resnext", "wide_resnet"),
    "conv1.0.weight": ("shufflenet",),
    "class_token": ("vit",),
}


def torchvision_names() -> list[str]:
    """torchvision's classifiers, by name."""
    import torchvision

    return sorted(torchvision.models.list_models(torchvision.models))


def _torchvision_candidates(state: dict[str, torch.Tensor]) -> list[dict]:
    prefixes = tuple(p for key, family in TORCHVISION_FAMILIES.items() if key in state for p in family)
    return (
        [{"name": "torchvision", "torchvision_name": n} for n in torchvision_names() if n.startswith(prefixes)]
        if prefixes
        else []
    )


def _candidates(state: dict[str, torch.Tensor]) -> list[dict]:
    out: list[dict] = [{"name": "lenet"}]
    if "conv1.weight" in state and "conv2.weight" in state:
        channels = (state["conv1.weight"].shape[0], state["conv2.weight"].shape[0])
        out += [{"name": "cnn", "channels": channels, "batchnorm": bn} for bn in (False, True)]
    widths, i = [], 1
    while f"fc{i}.weight" in state:
        widths.append(state[f"fc{i}.weight"].shape[0])
        i += 1
    if widths and "out.weight" in state:
        out.append({"name": "mlp", "widths": tuple(widths)})
    return out + [{"name": "resnet9"}, {"name": "resnet18"}]


def model_from_state(spec: ArchSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(spec)
    fit_state_dict(model, state, spec.label)
    check_io(model, spec)
    return model.eval()


def torchvision_pretrained(name: str) -> dict[str, torch.Tensor]:
    """Download torchvision's default weights for `name`; a clear message where there is no network."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        # kept in the workspace's cache, not torch's (~/.cache/torch): every write stays in the workspace
        return weights.get_state_dict(progress=False, model_dir=str(cache_dir("torchvision")))
    except Exception as exc:  # no network, unknown name, hub errors
        raise InvalidInputError(
            f"could not get torchvision's weights for {name!r} ({type(exc).__name__}: "
            f"{str(exc)[:160]}). Without a network, upload a weights file "
            f"(state_dict or safetensors) and pick the architecture."
        ) from None


@dataclass(frozen=True)
class Recipe:
    """What a published model was trained with, from its weights' metadata (no download needed)."""

    weights: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    classes: tuple[str, ...]  # the names of its outputs, in order (ImageNet's 1,000 for most)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int  # the crop the model saw
    resize: int  # the size images were resized to before the crop


def torchvision_recipe(name: str) -> Recipe:
    """The recipe of torchvision's default weights for the classifier `name`: class names
    (`meta["categories"]`), input normalization, crop and resize (the weights' `transforms()`). Read from
    torchvision's code, so it needs no network. An unknown name, or weights without a classification
    recipe, is an InvalidInputError."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        tf = weights.transforms()
        crop, resize = tf.crop_size, tf.resize_size
        return Recipe(
            weights=str(weights),
            classes=tuple(str(c) for c in weights.meta["categories"]),
            mean=tuple(float(v) for v in tf.mean),
            std=tuple(float(v) for v in tf.std),
            image_size=int(crop[0] if isinstance(crop, (list, tuple)) else crop),
            resize=int(resize[0] if isinstance(resize, (list, tuple)) else resize),
        )
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InvalidInputError(
            f"torchvision has no classification recipe for {name!r} ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


# timm (an optional extra: pip install "lenscape[timm]"): its classifiers by name, as torchvision's are.


def has_timm() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def timm_names() -> list[str]:
    """timm's classifiers, by name (empty where timm is not installed)."""
    if not has_timm():
        return []
    import timm

    return sorted(timm.list_models())


TIMM_NAME = r"[a-z0-9_]{1,100}"  # a registry name: no "hf-hub:" or "local-dir:" source, no ".tag"


def check_timm_name(name: str) -> str:
    """`name` if it is one of timm's registered classifiers, checked before timm sees it: timm reads a
    prefixed name as a source ("local-dir:/path" reads a folder of this machine, "hf-hub:owner/repo" any
    repository), which only the person who starts the server may name."""
    import re

    if not isinstance(name, str) or not re.fullmatch(TIMM_NAME, name):
        raise InvalidInputError(
            f"{str(name)[:80]!r} is not a timm model name (letters, digits and _ only, e.g. 'resnet50'; no "
            "source prefix or weights tag)"
        )
    names = timm_names()
    if not names:
        raise InvalidInputError('timm is not installed here: pip install "lenscape[timm]"')
    if name not in names:
        raise InvalidInputError(f"timm has no classifier {name!r}; some it has: {', '.join(names[:12])}, ...")
    return name


def max_model_params() -> int:
    """The most parameters a library classifier picked by name on a page may have (LENSCAPE_MAX_MODEL_PARAMS,
    set by whoever starts the server): timm's registry holds networks of billions."""
    from lenscape.models.image_folders import _env_int

    return _env_int("LENSCAPE_MAX_MODEL_PARAMS", 1_000_000_000)


def check_timm_size(name: str, **kwargs) -> None:
    """Count the parameters of timm's `name` without allocating them (on the meta device); refuse it over
    max_model_params()."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    n, cap = sum(p.numel() for p in model.parameters()), max_model_params()
    if n > cap:
        raise InvalidInputError(
            f"timm's {name} has {n:,} parameters, over this server's limit of {cap:,} (the person who starts it "
            "can raise LENSCAPE_MAX_MODEL_PARAMS)"
        )


def timm_recipe(name: str) -> Recipe:
    """The recipe of timm's default pretrained weights for `name` (its `pretrained_cfg`): input size,
    normalization, crop fraction, and ImageNet's class names where the weights are ImageNet's. Read from
    timm's code, so it needs no network. An unknown name is an InvalidInputError."""
    check_timm_name(name)
    import timm
    from timm.data import ImageNetInfo, infer_imagenet_subset

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise InvalidInputError(f"timm has no classifier {name!r} with a pretrained recipe")
    c, h, _ = cfg.input_size
    subset = infer_imagenet_subset(cfg)
    classes: tuple[str, ...] = ()
    if subset:
        info = ImageNetInfo(subset)
        classes = tuple(info.index_to_description(i) for i in range(info.num_classes()))
    tag = f".{cfg.tag}" if cfg.tag else ""
    return Recipe(
        weights=f"timm {cfg.architecture}{tag}",
        classes=classes,
        mean=tuple(float(v) for v in cfg.mean)[:c],
        std=tuple(float(v) for v in cfg.std)[:c],
        image_size=int(h),
        resize=int(round(h / (cfg.crop_pct or 1.0))),
    )


def timm_pretrained(name: str) -> dict[str, torch.Tensor]:
    """timm's default pretrained weights for `name` (from the Hugging Face hub, kept in the workspace's
    cache); a clear message where there is no network."""
    from lenscape.models.paths import offline

    check_timm_name(name)  # before timm sees it: a prefixed name is a source, not a model
    if offline():
        raise InvalidInputError(
            f"could not get timm's weights for {name!r}: downloads are off here (LENSCAPE_OFFLINE). Upload a "
            "weights file (state_dict or safetensors) instead."
        )
    import timm

    check_timm_size(name)
    try:
        model = timm.create_model(name, pretrained=True, cache_dir=str(cache_dir("timm")))
        return {k: v.detach() for k, v in model.state_dict().items()}
    except Exception as exc:  # no network, unknown name, hub errors
        raise InvalidInputError(
            f"could not get timm's weights for {name!r} ({type(exc).__name__}: {str(exc)[:160]}). Without a "
            "network, upload a weights file (state_dict or safetensors) and pick the architecture."
        ) from None
