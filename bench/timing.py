"""Shared by the benches: median wall time (one warm-up call, CUDA synchronized around each call) and
MNIST, or random images of its shape where it is missing (timings do not depend on the pixels)."""

from __future__ import annotations

import statistics
import time

import torch


def median_seconds(fn, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    cuda = torch.device(device).type == "cuda"
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mnist_or_random(split: str, n: int):
    """The first n MNIST images of `split` as ImageData; random uint8 images where MNIST is missing."""
    from lenscape.models.data import DataSpec, ImageData, load_data

    try:
        return load_data(DataSpec(name="mnist"), split).head(n)
    except Exception:
        return ImageData(
            images=torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8),
            labels=torch.randint(0, 10, (n,)),
            classes=tuple("0123456789"),
            mean=(0.13,),
            std=(0.31,),
            spec=DataSpec(name="mnist"),
            split=split,
        )


def timed(fn):
    """(fn(), seconds it took), once: for runs too long to repeat."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def trained_model(recipe, folder, device: str = "cpu"):
    """Train `recipe` (a TrainConfig) into `folder` and return its final model in eval mode, saying
    its test accuracy and how long it took."""
    from lenscape.models.architectures import ArchSpec
    from lenscape.models.checkpoints import load_checkpoint
    from lenscape.models.loading import model_from_state
    from lenscape.models.training import train_run

    start = time.perf_counter()
    rec = train_run(recipe, folder, device=device)
    state, _ = load_checkpoint(folder / rec["checkpoints"][-1]["file"])
    model = model_from_state(ArchSpec.from_dict(rec["arch"]), state).to(device).eval()
    print(
        f"trained {folder.name}: test accuracy {rec['metrics'][-1]['test_acc']:.3f} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return model
