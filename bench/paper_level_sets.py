"""Level Set Traversal at MNIST scale (ALGORITHMS.md section 2, "Results to check"): a standard and a
PGD-trained small CNN, the same sources and targets for both, and the paper's measurements.

    python bench/paper_level_sets.py [--device cuda] [--sources 8] [--train 20000] [--epochs 3]

Trains both models (the standard one in seconds, the robust one in a few minutes on 2 CPU cores; ℓ∞
PGD, ε 0.2, 7 steps), then for each source (a correctly classified test image, correct for both
models) walks to targets of other classes (the first test image of each class that both models
classify correctly with p > 0.6, as in the paper) with the argparse defaults (η 0.05, T 100, δ 0.05)
and prints, per model: the final RMS distance to the target over the initial one, SSIM to the target,
the share of outputs still predicted as the source class, the mean confidence over the triangles
and the shares of their points with p > p_src − Δ, and the minimum along the star's lines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.level_sets import LSTConfig, level_set_traversal, triangle  # noqa: E402
from lenscape.models.attacks import PGDConfig  # noqa: E402
from lenscape.models.data import DataSpec, load_data  # noqa: E402
from lenscape.models.training import preset  # noqa: E402
from timing import trained_model  # noqa: E402


def trained(folder: Path, device: str, **overrides):
    return trained_model(preset("mnist-cnn", **overrides), folder, device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--preset",
        choices=("argparse", "paper"),
        default="argparse",
        help="argparse: η 0.05, T 100, δ 0.05; paper: the ImageNet run's η 0.01, T 400, δ 0.2",
    )
    args = parser.parse_args()
    # a finished run in the folder is reused: a second invocation skips the training
    tmp = Path(tempfile.gettempdir()) / f"lenscape-bench-lst-{args.train}-{args.epochs}"
    models = {
        "standard": trained(tmp / "standard", args.device, train_subset=args.train, epochs=args.epochs),
        "robust (PGD ℓ∞ 0.2)": trained(
            tmp / "robust",
            args.device,
            train_subset=args.train,
            epochs=args.epochs,
            adversarial=PGDConfig(norm="linf", eps=0.2, steps=7),
        ),
    }
    test = load_data(DataSpec(name="mnist"), "test")
    x, y = test.x()[:2000].to(args.device), test.labels[:2000].to(args.device)
    with torch.no_grad():
        probs = [torch.softmax(m(x), 1) for m in models.values()]
    good = torch.stack([p.gather(1, y[:, None])[:, 0] > 0.6 for p in probs]).all(0)
    targets = {k: int(torch.nonzero(good & (y == k))[0]) for k in range(10)}
    sources = [int(i) for i in torch.nonzero(good)[:, 0] if int(i) not in targets.values()][: args.sources]
    cfg = LSTConfig() if args.preset == "argparse" else LSTConfig(eta=0.01, steps=400, delta=0.2, eps_adv=2e-3)
    print(f"{len(sources)} sources × 9 targets each, η {cfg.eta}, T {cfg.steps}, δ {cfg.delta}")
    for name, model in models.items():
        ratio, sim, kept, tri_mean, frac, star_min = [], [], [], [], {d: [] for d in (0.0, 0.1, 0.2, 0.3)}, []
        start = time.perf_counter()
        for s in sources:
            c = int(y[s])
            tg = [targets[k] for k in range(10) if k != c]
            xs = x[[s] * len(tg)]
            res = level_set_traversal(model, xs, y[[s] * len(tg)], x[tg], cfg)
            ratio += list(res.dist_l2[-1] / res.dist_l2[0])
            sim += list(res.ssim[-1])
            kept += list(res.predictions == c)
            out = torch.from_numpy(res.output).to(args.device)
            for i in range(len(tg) - 1):
                t = triangle(model, xs[0], out[i], out[i + 1], c)
                tri_mean.append(t.mean)
                star_min.append(t.edge_min)
                for d in frac:
                    frac[d].append(t.fraction_above[d])
        print(f"\n{name} ({time.perf_counter() - start:.0f} s)")
        print(
            f"  final / initial RMS distance to the target: median {np.median(ratio):.3f} "
            f"(range {np.min(ratio):.3f}-{np.max(ratio):.3f})"
        )
        print(
            f"  SSIM output vs target: median {np.median(sim):.3f}; outputs still in the source class: "
            f"{np.mean(kept):.0%}"
        )
        print(
            f"  triangles: mean p(c) {np.mean(tri_mean):.3f}; share of points with p > p_src - Δ: "
            + ", ".join(f"Δ={d}: {np.mean(v):.2f}" for d, v in frac.items())
            + f"; min along the edges of p - p_src: {np.min(star_min):.3f}"
        )


if __name__ == "__main__":
    main()
