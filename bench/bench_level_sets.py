"""Level Set Traversal: Lenscape's batched traversal against the bare cost of the passes it makes.

    python bench/bench_level_sets.py [--device cuda] [--pairs 16] [--steps 100]

The small CNN on MNIST (random images where MNIST is missing; the cost does not depend on the
pixels). Each iteration of the traversal costs one forward+backward pass for the input gradient and
one forward pass for the acceptance test. The bare baseline is exactly those passes written directly
in PyTorch on the same batch, with nothing else: no projection, no bookkeeping, no distances. Both
are timed in the same run (median of 3); prints iterations per second, images per second
(pairs × iterations / s) and the ratio, whose target is at most 1.3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.level_sets import LSTConfig, level_set_traversal  # noqa: E402
from lenscape.models.architectures import ArchSpec, build_model  # noqa: E402
from timing import median_seconds, mnist_or_random  # noqa: E402


def bare(model, xs, c, steps):
    """T × (forward+backward for ∇ₓ CE, forward at the proposal): the least any implementation does."""
    x = xs.clone()
    for _ in range(steps):
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), c, reduction="sum"), xr)
        with torch.no_grad():
            x = (x - 1e-3 * g).clamp(0, 1)
            model(x)
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = mnist_or_random("test", 2 * args.pairs)
    images = data.images.float().div(255).to(device)
    spec = ArchSpec(name="cnn", in_shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,))
    model = build_model(spec, seed=0).to(device).eval()
    for p in model.parameters():  # the bare loop as one would write it: no weight gradients
        p.requires_grad_(False)
    xs, xt = images[: args.pairs], images[args.pairs :]
    with torch.no_grad():
        c = model(xs).argmax(1)  # the model's own classes: every source is "correct"
    cfg = LSTConfig(steps=args.steps, log_every=max(1, args.steps // 8))
    t_lst = median_seconds(lambda: level_set_traversal(model, xs, c, xt, cfg), repeats=3, device=device)
    t_bare = median_seconds(lambda: bare(model, xs, c, args.steps), repeats=3, device=device)
    print(f"device {device} · {args.pairs} pairs · {args.steps} iterations · torch {torch.__version__}")
    for name, t in (("Lenscape LST", t_lst), ("bare passes", t_bare)):
        print(
            f"{name:14s} {t:7.3f} s   {args.steps / t:8.1f} iterations/s   {args.pairs * args.steps / t:9.0f} images/s"
        )
    print(f"ratio LST / bare: {t_lst / t_bare:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
