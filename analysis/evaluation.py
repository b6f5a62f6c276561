"""One batched evaluation for every view: loss, accuracy, predictions, probabilities and layer
activations of a model in eval mode, over images in chunks.

- Images are uint8 (converted to [0, 1] per chunk) or float in [0, 1], on any device: a chunk is
  moved to the model's device (a no-op where the caller already put the data there).
- A CUDA out-of-memory halves the chunk and retries it (`in_chunks`, also used by saliency).
- Progress is reported as `progress(fraction, message)`, the signature of `JobContext.progress`
  and of training's callbacks (raising from it stops the work).
- Random subsets come from a `torch.Generator` (`random_subset`), never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.hooks import recording
from lenscape.analysis.hooks import conv_to_matrix
from lenscape.errors import InvalidInputError

Progress = Callable[[float, str], None]
T = TypeVar("T")
CONV_MODES = ("pool", "flatten", "positions")


def _no_progress(fraction: float, message: str) -> None:
    return None


def in_chunks(
    n: int, batch_size: int, step: Callable[[int, int], T], progress: Progress = _no_progress, what: str = "examples"
) -> list[T]:
    """[step(start, stop) for consecutive chunks covering range(n)]. A CUDA out-of-memory error
    halves the chunk size and retries the chunk (down to one example, then it is raised)."""
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be at least 1; got {batch_size}")
    out, start, size = [], 0, batch_size
    while start < n:
        stop = min(start + size, n)
        try:
            out.append(step(start, stop))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            continue
        start = stop
        progress(start / n, f"{start:,}/{n:,} {what}")
    return out


def serial_map(fn: Callable, items: list[tuple]) -> list:
    """`[fn(*item) for item in items]`: the default `map` of the functions whose independent pieces the
    app's jobs run elsewhere (a Ray cluster)."""
    return [fn(*item) for item in items]


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, no parameter requires grad (input gradients then skip every weight gradient); each
    parameter's flag is restored afterwards, also on errors."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def random_subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices of range(n) drawn with `generator`, in increasing order (all of them
    when k is 0 or at least n)."""
    if not k or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:k].sort().values


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    loss: float  # mean cross-entropy (NaN without labels)
    accuracy: float  # fraction correct (NaN without labels)
    predictions: torch.Tensor  # (N,) int64
    probabilities: torch.Tensor | None = None  # (N, C) softmax, when asked for
    activations: dict[str, torch.Tensor] = field(default_factory=dict)  # {layer: (N, D)}, when asked for


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 1000,
    probabilities: bool = False,
    layers: Sequence[str] = (),
    conv_mode: str = "pool",
    progress: Progress = _no_progress,
) -> Evaluation:
    """Run `model` in eval mode over `images` (N, C, H, W) and collect what was asked for; results
    are on the CPU. Convolutional activations become (N, C) by average pooling ("pool"),
    (N, C·H·W) ("flatten") or (N·H·W, C) with positions as data points ("positions").

    Args:
        model: the classifier; run in eval mode, its mode restored afterwards.
        images: (N, C, H, W) floats in [0, 1], or uint8 (divided by 255 chunk by chunk); any device.
        labels: (N,) true classes, or None (loss and accuracy are then NaN).
        batch_size: images per forward pass; bounds memory, not the answer.
        probabilities: also return the softmax probabilities.
        layers: ``named_modules()`` paths whose outputs to return as matrices.
        conv_mode: "pool" (default), "flatten" or "positions", for convolutional outputs.
        progress: ``progress(fraction, message)``, called after each chunk.

    Returns:
        An Evaluation: mean cross-entropy, accuracy, predictions (N,), probabilities (N, classes) when
        asked for (else None), and {layer: (N, D)} activations.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from torch import nn
        >>> from lenscape.analysis import evaluate
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        >>> images, labels = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
        >>> ev = evaluate(net, images, labels, layers=["1"])
        >>> abs(ev.loss - F.cross_entropy(net(images), labels).item()) < 1e-6, ev.activations["1"].shape
        (True, torch.Size([6, 4]))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.zero_(), net[1].bias.zero_()     # every logit 0: chance
        >>> ev = evaluate(net, images, labels, probabilities=True)
        >>> round(ev.loss, 4), ev.probabilities[0]                # ln 4 = 1.3863, uniform probabilities
        (1.3863, tensor([0.2500, 0.2500, 0.2500, 0.2500]))
    """
    if conv_mode not in CONV_MODES:
        raise InvalidInputError(f"conv_mode must be one of {CONV_MODES}; got {conv_mode!r}")
    if labels is not None and len(labels) != len(images):
        raise InvalidInputError(f"{len(images)} images but {len(labels)} labels")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per chunk
    correct = torch.zeros((), dtype=torch.long, device=device)
    preds: list[torch.Tensor] = []
    probs: list[torch.Tensor] = []
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    try:
        with recording(model, layers) as rec:

            def step(start: int, stop: int) -> None:
                nonlocal total, correct
                x = images[start:stop].to(device, non_blocking=True)
                x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                logits = model(x)
                pred = logits.argmax(1)
                if labels is not None:
                    y = labels[start:stop].to(device, non_blocking=True)
                    total = total + F.cross_entropy(logits.float(), y, reduction="sum").double()
                    correct = correct + (pred == y).sum()
                preds.append(pred.cpu())
                if probabilities:
                    probs.append(torch.softmax(logits.float(), dim=1).cpu())
                for n in layers:
                    acts[n].append(_as_matrix(rec[n], conv_mode).float().cpu())

            in_chunks(len(images), batch_size, step, progress)
    finally:
        model.train(was_training)
    n = len(images)
    nan = float("nan")
    return Evaluation(
        loss=float(total) / n if labels is not None and n else nan,
        accuracy=float(correct) / n if labels is not None and n else nan,
        predictions=torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long),
        probabilities=(torch.cat(probs) if probs else torch.zeros(0)) if probabilities else None,
        activations={k: torch.cat(v) for k, v in acts.items() if v},
    )


def _as_matrix(a: torch.Tensor, conv_mode: str) -> torch.Tensor:
    return conv_to_matrix(a, conv_mode) if a.ndim == 4 and conv_mode != "flatten" else a.flatten(1)
