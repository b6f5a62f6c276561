"""Level-set jobs: Level Set Traversal from one source test image toward several targets, the
star (confidence along the straight lines from the source to each output) and the triangles."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from lenscape.analysis.level_sets import LSTConfig, LSTResult, Triangle, level_set_traversal, triangle
from lenscape.backend.jobs import JobContext, ModelRef, job_kind
from lenscape.models.data import load_data
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import load_model


@dataclass(frozen=True, kw_only=True)
class TraversalConfig:
    model: ModelRef
    source: int  # test-set index of the source image
    targets: tuple[int, ...]  # test-set indices of the targets (other classes)
    lst: LSTConfig = LSTConfig()
    line_points: int = 11  # points on each source → output line (the star)
    data: str = ""  # DataSpec.key() of the test set the indices refer to ("" = the model's)
    pairs: str = "all"  # triangles of every pair of outputs (the paper's table: 10 for 5 targets),
    # or "consecutive" ones only

    def __post_init__(self) -> None:
        if not self.targets:
            raise InvalidInputError("choose at least one target image")
        if self.source in self.targets or len(set(self.targets)) != len(self.targets):
            raise InvalidInputError("the targets must be distinct images, other than the source")
        if min(self.source, *self.targets) < 0 or self.line_points < 2:
            raise InvalidInputError(f"indices are 0 or more and a line has 2 points or more; got {self}")
        if self.pairs not in ("all", "consecutive"):
            raise InvalidInputError(f"pairs is 'all' or 'consecutive'; got {self.pairs!r}")


@dataclass(frozen=True, kw_only=True)
class TraversalResult:
    source: int
    targets: list[int]
    label: int  # the source's class c
    source_image: np.ndarray  # (C, H, W)
    target_images: np.ndarray  # (K, C, H, W)
    target_labels: np.ndarray  # (K,)
    lst: LSTResult
    star: np.ndarray  # (K, line_points) p(c) along source → output k
    triangles: list[Triangle]  # one per pair of outputs in `triangle_pairs`
    delta: float  # the δ the walk kept to
    triangle_pairs: list = field(default_factory=list)  # [(i, j)] the outputs of each triangle


@job_kind("level_set_traversal")
def traversal_job(ctx: JobContext, cfg: TraversalConfig) -> TraversalResult:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached")
    if cfg.data and lm.data.key() != cfg.data:
        raise InvalidInputError(
            f"{lm.name} was trained on {lm.data.label}, not on the data set the source and "
            "targets were picked from: compare models of the same data set"
        )
    test = load_data(lm.data, "test")
    if max(cfg.source, *cfg.targets) >= len(test):
        raise InvalidInputError(
            f"{lm.data.label} has {len(test):,} test images; got index {max(cfg.source, *cfg.targets)}"
        )
    c = int(test.labels[cfg.source])
    same = [t for t in cfg.targets if int(test.labels[t]) == c]
    if same:
        raise InvalidInputError(
            f"targets {same} are of the source's class ({lm.classes[c]}): choose targets of other classes"
        )
    k = len(cfg.targets)
    xs = test.x([cfg.source] * k)
    xt = test.x(list(cfg.targets))
    res = level_set_traversal(
        lm.model, xs, torch.full((k,), c), xt, cfg.lst, progress=lambda f, m: ctx.progress(0.9 * f, m)
    )
    ctx.progress(0.9, "star and triangles")
    out = torch.from_numpy(res.output)
    ts = torch.linspace(0, 1, cfg.line_points).view(-1, 1, 1, 1)
    device = next(lm.model.parameters()).device
    star = []
    with torch.no_grad():
        for i in range(k):
            line = ((1 - ts) * xs[0] + ts * out[i]).to(device)
            star.append(torch.softmax(lm.model(line), 1)[:, c].cpu().numpy())
    pairs = list(combinations(range(k), 2)) if cfg.pairs == "all" else [(i, i + 1) for i in range(k - 1)]
    tris = [triangle(lm.model, xs[0], out[i], out[j], c) for i, j in pairs]
    return TraversalResult(
        source=cfg.source,
        targets=list(cfg.targets),
        label=c,
        source_image=xs[0].numpy(),
        target_images=xt.numpy(),
        target_labels=test.labels[list(cfg.targets)].numpy(),
        lst=res,
        star=np.stack(star),
        triangles=tris,
        delta=cfg.lst.delta,
        triangle_pairs=[list(p) for p in pairs],
    )
