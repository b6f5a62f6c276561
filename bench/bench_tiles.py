"""A loss-surface grid split into tiles (pieces): one after another here, and as Ray tasks, in one run.

Times the same tiles (TILE_POINTS grid points each, filter-normalized directions, `--n` CIFAR-shaped
images) through the local runner's pieces and through a local Ray instance with `--workers`
workers, checks the values agree, and prints pieces per worker, seconds per grid point and, on a
GPU, the GPU's utilization sampled while the tiles ran. From the measured seconds per point it
projects a 51×51 surface on 1 and on 8 such workers.

    python bench/bench_tiles.py [--arch resnet18|cnn] [--n 256] [--resolution 9] [--workers 2] [--device cuda]

Weights are random (a trained model costs the same per point).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(arch: str, device):
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.checkpoints import model_fingerprint

    spec = ArchSpec(name=arch, in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = build_model(spec, seed=0).eval()
    return SimpleNamespace(
        run_id="bench",
        epoch=0,
        name=f"{arch} (random weights)",
        fingerprint=model_fingerprint(model),
        arch=spec,
        model=model,
    )


class Utilization:
    """GPU utilization (%) sampled every 0.1 s while it is open (nvidia-smi's counter via torch)."""

    def __init__(self, on: bool) -> None:
        self.on, self.samples, self._stop = on, [], threading.Event()

    def __enter__(self):
        if self.on:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization())
            except Exception:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def mean(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["resnet18", "resnet9", "cnn"], default="resnet18")
    ap.add_argument("--n", type=int, default=256, help="images each grid point is evaluated on")
    ap.add_argument("--resolution", type=int, default=9, help="points per axis of the timed grid")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch

    from lenscape.analysis.landscape import DirectionConfig, grid_points, random_directions
    from lenscape.backend.landscape_tasks import TILE_POINTS
    from lenscape.backend.cluster import connect
    from lenscape.backend.pieces import LocalPieces, RayPieces, Resources

    device = torch.device(args.device)
    lm = _model(args.arch, device)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.n,))
    dirs = random_directions(lm.model, 2, DirectionConfig(seed=0))
    xs = np.linspace(-1, 1, args.resolution)
    points = grid_points(xs, xs)
    tiles = [t for t in np.array_split(np.arange(len(points)), -(-len(points) // TILE_POINTS)) if len(t)]
    gpu = device.type == "cuda"
    resources = Resources(cpus=1, gpus=1.0 / max(1, args.workers) if gpu else 0.0)
    print(
        f"{lm.name}: {len(points)} grid points in {len(tiles)} tiles of ≤{TILE_POINTS}, {args.n} images, "
        f"device {device}, torch threads here {torch.get_num_threads()}"
    )

    def run(pieces) -> tuple[float, list, str]:
        payload = pieces.share_model(lm)
        shared = (payload, pieces.share(dirs), pieces.share(images), pieces.share(labels))
        where: Counter = Counter()
        start = time.perf_counter()
        with Utilization(gpu) as util:
            out = pieces.map(
                _tile_where,
                [(*shared, points[t]) for t in tiles],
                lambda done, total, msg="": None,
                lambda: False,
                resources,
            )
        seconds = time.perf_counter() - start
        for _, _, pid in out:
            where[pid] += 1
        return (
            seconds,
            out,
            f"{len(where)} worker{'s' if len(where) != 1 else ''}: "
            f"{', '.join(str(c) for c in where.values())} tiles; GPU utilization {util.mean()}",
        )

    t_local, out_local, how_local = run(LocalPieces(device))
    started = time.perf_counter()
    summary = connect("local", args.workers)
    t_start = time.perf_counter() - started
    run(RayPieces())  # warm: worker processes start, models built
    t_ray, out_ray, how_ray = run(RayPieces())
    same = all(np.allclose(a[0], b[0], rtol=1e-5) for a, b in zip(out_local, out_ray))
    per_point = t_local / len(points)
    print(f"Ray: {summary}, started in {t_start:.1f} s (not counted)")
    print(f"{'how':28s} {'seconds':>8s} {'per point':>10s} {'speed-up':>9s}  pieces")
    print(f"{'local, one after another':28s} {t_local:8.2f} {per_point:9.3f}s {1.0:8.2f}x  {how_local}")
    print(
        f"{f'Ray, {args.workers} workers (warm)':28s} {t_ray:8.2f} {t_ray / len(points):9.3f}s "
        f"{t_local / t_ray:8.2f}x  {how_ray}"
    )
    print(f"same values (rtol 1e-5): {same}")
    full, n_default = 51 * 51, 2000
    one = full * per_point * n_default / args.n  # the view's default evaluation set: 2,000 images
    print(
        f"51×51 = {full} points on {n_default} images at {per_point * n_default / args.n:.2f} s a point "
        f"(scaled from {args.n} images): {one / 60:.0f} min on one such worker; on 8 workers that are "
        f"devices of their own (8 GPUs) {one / 8 / 60:.1f} min + the tiles' shipping. Workers that share "
        f"this machine's cores scaled {t_local / t_ray:.2f}x with {args.workers}."
    )


def _tile_where(model, dirs, images, labels, points, *, device):
    """A tile, and which process computed it."""
    from lenscape.backend.landscape_tasks import surface_tile

    loss, acc = surface_tile(model, dirs, images, labels, points, device=device)
    return loss, acc, os.getpid()


if __name__ == "__main__":
    main()
