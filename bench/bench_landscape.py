"""A filter-normalized 2-D loss surface: Lenscape's `surface` against the `loss-landscapes` package.

    pip install loss-landscapes==3.0.6
    python bench/bench_landscape.py [--device cuda] [--steps 21] [--n 2000]

The small CNN on the first n MNIST test images (random images where MNIST is missing), a steps ×
steps grid. Both are timed in the same run. The package's `random_plane` draws uniform [0, 1]
directions (not the paper's method) and runs one full-batch forward per grid point; values are
therefore compared on Lenscape's own directions: the fast surface (chunked batches) against the
plain float32 one (one full batch per point). Prints seconds, grid points per second and the ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.landscape import DirectionConfig, random_directions, surface  # noqa: E402
from lenscape.models.architectures import ArchSpec, build_model  # noqa: E402
from timing import mnist_or_random, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    device = torch.device(args.device)
    test = mnist_or_random("test", args.n)
    images, labels = test.images, test.labels
    spec = ArchSpec(name="cnn", in_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,))
    model = build_model(spec, seed=0).to(device).eval()
    grid = np.linspace(-1, 1, args.steps)
    dirs = random_directions(model, 2, DirectionConfig(seed=123))
    points = args.steps**2

    fast, t_fast = timed(lambda: surface(model, dirs, grid, grid, images, labels))
    plain, t_plain = timed(lambda: surface(model, dirs, grid, grid, images, labels, batch_size=len(images), fast=False))
    diff = float(np.max(np.abs(fast.loss - plain.loss) / np.abs(plain.loss)))

    t_pkg = None
    try:
        import loss_landscapes
        import loss_landscapes.metrics

        x = images.to(device).float().div_(255.0)
        y = labels.to(device)
        metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
        with torch.no_grad():
            _, t_pkg = timed(
                lambda: loss_landscapes.random_plane(
                    model, metric, distance=1, steps=args.steps, normalization="filter", deepcopy_model=True
                )
            )
    except ImportError:
        print("loss-landscapes is not installed (pip install loss-landscapes==3.0.6): package timing skipped")

    print(f"{args.steps}x{args.steps} plane, {args.n} images, small CNN, {device}")
    print(f"  Lenscape fast (channels_last, chunks)      : {t_fast:7.1f} s  {points / t_fast:6.2f} points/s")
    print(f"  Lenscape plain float32 (one full batch):     {t_plain:7.1f} s  {points / t_plain:6.2f} points/s")
    if t_pkg is not None:
        print(f"  loss-landscapes random_plane:               {t_pkg:7.1f} s  {points / t_pkg:6.2f} points/s")
        print(f"  ratio loss-landscapes / Lenscape: {t_pkg / t_fast:.2f}x")
    print(f"  fast vs plain surface: max relative difference {diff:.2e}")


if __name__ == "__main__":
    main()
