"""Median wall time of a function after one warm-up call, synchronizing CUDA around each call."""

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
