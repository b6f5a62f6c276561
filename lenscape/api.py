"""Your own model in Lenscape, from a notebook or a script:

    import lenscape
    run_id = lenscape.add_model(net, data="/data/imagenet-val", architecture="mypkg.nets:build_net",
                                kwargs={"depth": 18}, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    lenscape.show()          # or, in a shell: lenscape app

The architecture is recorded as a reference to your code (`module:callable` plus JSON keyword
arguments) and the weights as safetensors in the workspace; every job, later session and Ray worker
rebuilds the network from that reference, so the module must be importable wherever Lenscape runs.
Naming code here trusts it for this workspace (models.custom): a page user can never name code.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lenscape.errors import InvalidInputError


def add_model(
    net: nn.Module | None,
    data,
    *,
    name: str | None = None,
    architecture: str | None = None,
    kwargs: dict | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    classes: tuple[str, ...] | None = None,
    image_size: int = 0,
    clean_labels=None,
) -> str:
    """Add a trained network to the workspace, with the data it classifies; returns its model id.

    Args:
        net: the network (any ``nn.Module`` mapping a batch of images to logits), or None with
            ``weights`` given.
        data: an image-folder path (``root/<class>/<image>``, or ``root/{train,test}/<class>/...``), a
            ``torch.utils.data.Dataset`` of (image, label) with images in [0, 1] (C, H, W), or a
            (train, test) pair of them. Class names come from the data set's ``classes`` if it has them.
        name: shown in the app (default: the class name).
        architecture: ``"module:callable"`` that builds the network; default: the network's own class,
            called without arguments.
        kwargs: JSON-able keyword arguments for the callable.
        weights: a state_dict, instead of ``net``'s.
        mean, std: the normalization the network expects of its inputs (Lenscape feeds [0, 1] images
            and applies it first); default: none (the network takes [0, 1] images).
        classes: class names, overriding the data set's.
        image_size: an image folder's images are resized to this square size (0: keep; needed when
            they differ in size).
        clean_labels: for a network trained on noisy labels, the training split's true labels (the
            data set gives the labels it was trained on): the Memorization view then knows which
            examples were relabelled.

    Returns:
        The model id, e.g. ``import-1a2b...``; adding the same weights again returns the same id.
    """
    from lenscape.models.custom import canonical_kwargs, check_ref, pending, pending_folder, ref_of, trust

    if net is None and weights is None:
        raise InvalidInputError("give the network (net) or its weights (weights=state_dict)")
    ref = check_ref(architecture) if architecture else ref_of(net)
    kw = canonical_kwargs(kwargs)
    folder = _folder(data)
    # the code, its arguments and the folder are trusted for the workspace only once all of it has worked
    with pending(ref, kw), pending_folder(folder):
        run_id = _add(
            net,
            data,
            ref,
            kw,
            name=name,
            weights=weights,
            mean=mean,
            std=std,
            classes=classes,
            image_size=image_size,
            clean_labels=clean_labels,
        )
    trust(ref=ref, kwargs=kw)
    if folder is not None:
        trust(folder=folder)
    return run_id


def _folder(data) -> str | None:
    """The image folder `data` names (resolved), or None for a Dataset."""
    if not isinstance(data, (str, os.PathLike)):
        return None
    folder = Path(data).expanduser().resolve()
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    return str(folder)


def _add(net, data, ref: str, kw: str, *, name, weights, mean, std, classes, image_size, clean_labels) -> str:
    """add_model's work once the code is pending: build, check against `net`, import; returns the model id."""
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.loading import check_finite_state, fit_state_dict
    from lenscape.models.zoo import AlreadyImported, import_model

    spec_data, train, test = _data(data, image_size, classes)
    names = tuple(classes) if classes else test.classes
    c = train.input_shape[0]
    mean = _per_channel(mean, 0.0, c, "mean")
    std = _per_channel(std, 1.0, c, "std")
    if min(std) <= 0:
        raise InvalidInputError(f"std must be positive per channel; got {std}")
    arch = ArchSpec(
        name="custom",
        builder=ref,
        builder_kwargs=kw,
        in_shape=train.input_shape,
        num_classes=len(names),
        mean=mean,
        std=std,
    )
    model = build_model(arch)
    state = {k: v.detach().cpu() for k, v in (weights if weights is not None else net.state_dict()).items()}
    check_finite_state(state, name or ref)
    fit_state_dict(model, state, ref)
    model.eval()
    if net is not None:
        _same_outputs(net, model, arch)
    record_name = name or ref.rsplit(":", 1)[1]
    noise = None if clean_labels is None else _noise(train.labels, clean_labels, len(names))
    try:
        record = import_model(model, arch, record_name, spec_data, names, f"python: {ref}")
    except AlreadyImported as exc:
        return exc.record["run_id"]
    if noise is not None:
        from lenscape.models.checkpoints import write_json
        from lenscape.models.paths import runs_dir

        record["noise"] = noise
        write_json(runs_dir() / record["run_id"] / "run.json", record)
    return record["run_id"]


def _same_outputs(net: nn.Module, model: nn.Module, arch) -> None:
    """The rebuilt network computes what the live one does (the reference builds the same network)."""
    from lenscape.models.architectures import InputNorm

    x = torch.rand(2, *arch.in_shape, generator=torch.Generator().manual_seed(0))
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            want = net(InputNorm(arch.mean, arch.std)(x).to(device)).cpu()
            got = model(x)
    finally:
        net.train(was)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise InvalidInputError(
            f"{arch.builder} with kwargs {arch.builder_kwargs} builds a network that, given your weights, "
            "does not compute what yours does: pass the architecture and kwargs that build yours"
        )


def _data(data, image_size: int, classes):
    """(DataSpec, train ImageData, test ImageData) of what the user gave."""
    from lenscape.models.data import DataSpec, load_data
    from lenscape.models.saved_data import save_dataset

    if isinstance(data, (str, os.PathLike)):
        spec = DataSpec(name="imagefolder", folder=_folder(data), image_size=image_size)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        spec = DataSpec(name="saved", folder=save_dataset(data[0], data[1], classes))
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        spec = DataSpec(name="saved", folder=save_dataset(data, None, classes))
    else:
        raise InvalidInputError(
            f"data must be an image-folder path, a Dataset or a (train, test) pair; got {type(data).__name__}"
        )
    return spec, load_data(spec, "train"), load_data(spec, "test")


def _per_channel(values, default: float, channels: int, what: str) -> tuple[float, ...]:
    """A per-channel normalization value as finite floats (one value is repeated per channel)."""
    if values is None:
        return (default,) * channels
    try:
        out = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be numbers, one per channel; got {str(values)[:60]!r}") from None
    if len(out) == 1:
        out = out * channels
    if len(out) != channels or not all(math.isfinite(v) for v in out):
        raise InvalidInputError(f"{what} needs {channels} finite values, one per channel; got {out}")
    return out


def _noise(trained_on: torch.Tensor, clean, num_classes: int) -> dict:
    """The run record's label-noise entry: where the labels trained on differ from the true ones."""
    try:
        clean = torch.as_tensor(np.asarray(clean))
    except (TypeError, ValueError):
        raise InvalidInputError("clean_labels must be class indices, one per training example") from None
    if clean.shape != trained_on.shape:
        raise InvalidInputError(
            f"clean_labels has {tuple(clean.shape)} labels; the training split has {len(trained_on)}"
        )
    if clean.is_floating_point() or clean.is_complex() or clean.dtype == torch.bool:
        if not bool(torch.isfinite(clean).all()) or bool((clean != clean.round()).any()):
            raise InvalidInputError("clean_labels must be whole class indices (no NaN, no fractions)")
    clean = clean.long()
    if len(clean) and (int(clean.min()) < 0 or int(clean.max()) >= num_classes):
        raise InvalidInputError(f"clean_labels must be class indices 0 to {num_classes - 1}")
    idx = torch.nonzero(clean.long() != trained_on).flatten()
    return {
        "fraction": len(idx) / max(1, len(clean)),
        "seed": None,
        "indices": idx.tolist(),
        "original_labels": clean[idx].long().tolist(),
        "noisy_labels": trained_on[idx].tolist(),
    }


def show(port: int = 8501, wait: float = 60.0) -> str:
    """Start the app over this workspace in the background and return its address (open it in a
    browser). The server runs until this Python process ends."""
    import urllib.request

    cmd = [sys.executable, "-m", "lenscape", "app", "--server.port", str(port), "--server.headless", "true"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    _SERVERS.append(proc)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InvalidInputError(
                f"the app did not start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
            )
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            print(f"Lenscape is at {url}")
            return url
        except OSError:
            time.sleep(0.5)
    raise InvalidInputError(f"the app did not answer at {url} within {wait:.0f} s")


_SERVERS: list[subprocess.Popen] = []
