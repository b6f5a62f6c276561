"""Stale BatchNorm statistics on a loss surface (ALGORITHMS.md section 5, "Mode"; issue 22, 4).

    python bench/paper_bn_statistics.py [--device cuda] [--epochs 5] [--subset 512]

Trains the digits small CNN with BatchNorm (preset "digits-cnn", a few seconds on 2 CPU cores), draws
two filter-normalized random directions (seed 123, biases and BatchNorm left out, as the paper), and
prints the mean training-set loss at (0, 0), (0.5, 0) and (1, 1) with θ*'s running statistics (the
official code) and with statistics recomputed at each point from a fixed, seeded subset of training
examples (a train-mode pass, then eval), their ratio, and the time of both against the stored-only
surface measured in the same run. Then the same for the interpolation between two seeds at α = 0.5
(the barrier) and at α = 1.5, where linear running variances would have gone negative.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.evaluation import random_subset  # noqa: E402
from lenscape.analysis.landscape import DirectionConfig, interpolation, random_directions, surface  # noqa: E402
from lenscape.models.training import prepare_data, preset  # noqa: E402
from timing import timed, trained_model  # noqa: E402

POINTS = ((0.0, 0.0), (0.5, 0.0), (1.0, 1.0))


def trained(folder: Path, device: str, epochs: int, seed: int):
    return trained_model(preset("digits-cnn", batchnorm=True, epochs=epochs, seed=seed), folder, device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=512)
    args = parser.parse_args()
    train = prepare_data(preset("digits-cnn")).train
    subset = train.images[random_subset(len(train), args.subset, torch.Generator().manual_seed(0))]
    with tempfile.TemporaryDirectory() as tmp:
        model = trained(Path(tmp) / "a", args.device, args.epochs, 0)
        other = trained(Path(tmp) / "b", args.device, args.epochs, 1)
    dirs = random_directions(model, 2, DirectionConfig(seed=123))
    stored, t_stored = timed(lambda: [surface(model, dirs, [x], [y], train.images, train.labels) for x, y in POINTS])
    both, t_both = timed(
        lambda: [surface(model, dirs, [x], [y], train.images, train.labels, bn_examples=subset) for x, y in POINTS]
    )
    print(
        f"\nmean training loss ({len(train)} examples), BatchNorm statistics stored vs recomputed "
        f"({args.subset} examples, seed 0):"
    )
    for (x, y), s, b in zip(POINTS, stored, both):
        assert s.loss[0, 0] == b.loss[0, 0]
        print(
            f"  ({x:3.1f}, {y:3.1f}): stored {s.loss[0, 0]:8.3f}   recomputed {b.loss_recomputed[0, 0]:8.3f}   "
            f"ratio {s.loss[0, 0] / b.loss_recomputed[0, 0]:6.2f}x   accuracy {s.accuracy[0, 0]:.3f} vs "
            f"{b.accuracy_recomputed[0, 0]:.3f}"
        )
    print(f"  time: stored only {t_stored:.2f} s, both {t_both:.2f} s: ratio {t_both / t_stored:.2f}x")
    ends = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model, other)]  # not the live tensors
    curve = interpolation(model, *ends, [0.0, 0.5, 1.0, 1.5], train.images, train.labels, bn_examples=subset)
    print("\ninterpolation seed 0 → seed 1 (training loss), stored (interpolated) vs recomputed statistics:")
    for a, s, r in zip(curve.alphas, curve.loss, curve.loss_recomputed):
        print(f"  α = {a:3.1f}: stored {s:8.3f}   recomputed {r:8.3f}")


if __name__ == "__main__":
    main()
