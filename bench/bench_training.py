"""One training epoch of Lenscape's loop against a bare PyTorch loop doing the same work.

    python bench/bench_training.py [--device cuda] [--repeats 3] [--n 60000]

The small CNN on MNIST (random images where MNIST is missing), batch 128, SGD with momentum and
weight decay, a cosine schedule. The bare loop keeps the float data set on the device and never
synchronizes; Lenscape's gathers uint8 batches where the data set lives (the device when it fits),
and reads its running loss and accuracy every 10 batches for the progress bar. Prints the ratio
Lenscape / bare, measured in one run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.models.architectures import build_model  # noqa: E402
from lenscape.models.data import DataSpec  # noqa: E402
from lenscape.models.training import TrainConfig, _epoch, _optimizer  # noqa: E402
from timing import median_seconds, mnist_or_random  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=60000)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = mnist_or_random("train", args.n)
    cfg = TrainConfig(data=DataSpec(name="mnist"), arch="cnn", epochs=1, batch_size=128, lr=0.05)
    model = build_model(cfg.arch_spec(data)).to(device)
    opt, sched = _optimizer(model, cfg, len(data))
    x_all, y_all = data.x().to(device), data.labels.to(device)

    def bare():
        model.train()
        perm = torch.randperm(len(data), device=device)
        for b in range(math.ceil(len(data) / cfg.batch_size)):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    ours = lambda: _epoch(
        model,
        opt,
        sched,
        data,
        cfg,
        torch.Generator().manual_seed(0),
        device,  # noqa: E731
        lambda f, m: None,
    )
    t_bare = median_seconds(bare, args.repeats, device)
    t_ours = median_seconds(ours, args.repeats, device)
    steps = math.ceil(len(data) / cfg.batch_size)
    print(f"device {device} · small CNN · {len(data):,} MNIST images · batch 128 · median of {args.repeats}")
    print(
        f"bare {t_bare:7.2f} s/epoch ({t_bare / steps * 1e3:6.2f} ms/batch) · lenscape {t_ours:7.2f} s/epoch "
        f"({t_ours / steps * 1e3:6.2f} ms/batch) · ratio {t_ours / t_bare:4.2f}x"
    )


if __name__ == "__main__":
    main()
