"""Neuron flipping for 32 examples: Lenscape's batched greedy loop against the bare cost of the passes
it makes, written directly in PyTorch, and against itself one example at a time.

    python bench/bench_flipping.py [--device cuda] [--examples 32] [--batch 256] [--cap 50]

The small CNN on MNIST (10 000 training images, 10% flipped labels, 2 epochs; random images where
MNIST is missing). Per example and step the loop makes one forward pass of n_eot = 5 noisy copies of
the example (the prediction) and one forward+backward pass of its batch (the scores). The bare
baseline makes exactly those passes, one example at a time, for the number of steps each example
took in Lenscape's run, with nothing else (no scoring, no bookkeeping). Prints seconds and ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.memorization import FlipConfig, _example_batch, flip_neurons  # noqa: E402
from lenscape.models.architectures import ArchSpec  # noqa: E402
from lenscape.models.checkpoints import load_checkpoint  # noqa: E402
from lenscape.models.loading import model_from_state  # noqa: E402
from lenscape.models.training import prepare_data, preset, train_run  # noqa: E402


def bare(model, x, y, examples, steps, cfg, device):
    """The passes of the greedy loop, one example at a time: (steps + 1) predictions of n_eot noisy
    copies and `steps` forward+backward passes of the example's batch."""
    params = [p for p in model.parameters()]
    for t, n in zip(examples, steps):
        batch = _example_batch(len(y), int(t), cfg.batch_size, cfg.seed)
        xb, yb = x[batch].to(device).float() / 255, y[batch].to(device)
        for s in range(int(n) + 1):
            with torch.no_grad():
                model(xb[:1] + 0.01 * torch.randn(cfg.n_eot, *xb.shape[1:], device=device))
            if s < n:
                losses = F.cross_entropy(model(xb), yb, reduction="none")
                objective = (losses[1:].sum() - len(yb) * losses[0]) / len(yb)
                torch.autograd.grad(objective, params)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--cap", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg_train = preset("mnist-cnn-noise10", epochs=2)
    folder = Path(tempfile.gettempdir()) / "lenscape-bench-flip" / "run"
    rec = train_run(cfg_train, folder, device=device)
    state, _ = load_checkpoint(folder / rec["checkpoints"][-1]["file"])
    model = model_from_state(ArchSpec.from_dict(rec["arch"]), state).to(device).eval()
    data = prepare_data(cfg_train)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    examples = torch.cat(
        [
            torch.nonzero(mask).flatten()[: args.examples // 2],
            torch.nonzero(~mask).flatten()[: args.examples - args.examples // 2],
        ]
    )

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    cfg = FlipConfig(batch_size=args.batch, max_steps=args.cap, max_acc_drop=1.0, group_size=args.examples)
    flip_neurons(model, x, y, examples[:2], cfg)  # warm-up
    res, t_batched = timed(lambda: flip_neurons(model, x, y, examples, cfg))
    one = FlipConfig(batch_size=args.batch, max_steps=args.cap, max_acc_drop=1.0, group_size=1)
    res1, t_single = timed(lambda: flip_neurons(model, x, y, examples, one))
    assert res.neurons == res1.neurons, "batched and one-at-a-time runs differ"
    for p in model.parameters():
        p.requires_grad_(True)
    _, t_bare = timed(lambda: bare(model, x, y, examples, res.n_neurons, cfg, device))
    steps = int(res.n_neurons.sum())
    print(
        f"device {device} · {len(examples)} examples · batch {args.batch} · cap {args.cap} · {steps} neuron removals "
        f"(median {np.median(res.n_neurons):g})"
    )
    for name, t in (
        ("Lenscape, 32 per pass", t_batched),
        ("Lenscape, 1 per pass", t_single),
        ("bare passes, 1 by 1", t_bare),
    ):
        print(f"{name:24s} {t:7.2f} s")
    print(
        f"ratio batched / bare: {t_batched / t_bare:.2f}x · one at a time / bare: {t_single / t_bare:.2f}x · "
        f"speedup from batching: {t_single / t_batched:.2f}x"
    )


if __name__ == "__main__":
    main()
