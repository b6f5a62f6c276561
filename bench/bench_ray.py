"""DiffROAR on the local runner against a local Ray instance with N workers, in one run.

DiffROAR's retrainings (methods × k × top/bottom × seeds) are independent pieces, each pinned to one
torch thread (so both runners give the same bits): the local runner trains them one after another in
the job's thread, the Ray runner as one task per retraining on N workers (warmed first, as a running
app's instance is; the first job still pays for shipping the data sets). Both must give the same accuracies, bit for bit;
the bench checks that and prints the ratio of wall times (Ray's start-up is timed separately).

    python bench/bench_ray.py [--workers 2] [--data digits|mnist] [--epochs 60] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", choices=["digits", "mnist"], default="digits")
    ap.add_argument("--epochs", type=int, default=60, help="epochs of each retraining (60: about 0.9 s a piece)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    os.environ.setdefault("LENSCAPE_HOME", tempfile.mkdtemp(prefix="lenscape-bench-ray-"))
    os.environ.setdefault("LENSCAPE_DATA", str(ROOT.parent / "shared" / "data"))
    os.environ["LENSCAPE_DEVICE"] = args.device

    import numpy as np
    import torch

    from lenscape.analysis.roar import DiffRoarConfig
    from lenscape.backend.jobs import JobStatus, job, ref
    from lenscape.backend.kinds import register_all
    from lenscape.backend.cluster import connect, warm_up
    from lenscape.backend.runner import LocalRunner, RayRunner
    from lenscape.backend.saliency_tasks import DiffRoarJobConfig
    from lenscape.backend.store import ResultStore
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.paths import home_dir
    from lenscape.models.training import preset
    from lenscape.models.zoo import load_model

    register_all()
    device = torch.device(args.device)
    local = LocalRunner(ResultStore(home_dir() / "local"), device=device)
    recipe = (
        preset("digits-mlp", epochs=3) if args.data == "digits" else preset("mnist-mlp", epochs=1, train_subset=10000)
    )
    (train,) = train_jobs(recipe, [0])
    tid = local.submit(train)
    assert local.wait(tid) == JobStatus.DONE, local.error(tid)
    lm = load_model(local.result(tid)["run_id"])
    cfg = DiffRoarJobConfig(
        model=ref(lm),
        roar=DiffRoarConfig(
            methods=("gradient",),
            k_grid=(0.1, 0.3, 0.5),
            seeds=tuple(range(args.seeds)),
            epochs=args.epochs,
            train_subset=0 if args.data == "digits" else 10000,
        ),
    )
    roar = job("diffroar", cfg, (ref(lm),), "DiffROAR bench")
    print(
        f"DiffROAR of {lm.name}: {cfg.roar.n_trainings} retrainings of {args.epochs} epochs; "
        f"torch threads here {torch.get_num_threads()}, device {device}"
    )

    start = time.perf_counter()
    a = local.submit(roar)
    assert local.wait(a) == JobStatus.DONE, local.error(a)
    t_local = time.perf_counter() - start

    start = time.perf_counter()
    summary = connect("local", args.workers)
    t_start = time.perf_counter() - start
    remote = RayRunner(ResultStore(home_dir() / "ray"), "local", device=device)
    start = time.perf_counter()
    warm_up(wait=True)  # what a running app's instance has done long before
    t_warm = time.perf_counter() - start
    start = time.perf_counter()
    b = remote.submit(roar)
    assert remote.wait(b) == JobStatus.DONE, remote.error(b)
    t_first = time.perf_counter() - start
    again = RayRunner(ResultStore(home_dir() / "ray-again"), "local", device=device)  # an empty store: computed again
    start = time.perf_counter()
    c = again.submit(roar)
    assert again.wait(c) == JobStatus.DONE, again.error(c)
    t_ray = time.perf_counter() - start

    ra, rb, rc = local.result(a), remote.result(b), again.result(c)
    same = all(np.array_equal(ra.acc_top, r.acc_top) and np.array_equal(ra.acc_bottom, r.acc_bottom) for r in (rb, rc))
    print(f"Ray instance: {summary}, started in {t_start:.1f} s, workers warmed in {t_warm:.1f} s (not counted below)")
    print(f"{'runner':44s} {'seconds':>8s} {'speed-up':>9s}")
    print(f"{'local (one after another)':44s} {t_local:8.2f} {1.0:8.2f}x")
    print(f"{f'Ray, {args.workers} workers, first job':44s} {t_first:8.2f} {t_local / t_first:8.2f}x")
    print(f"{f'Ray, {args.workers} workers, next job (models cached)':44s} {t_ray:8.2f} {t_local / t_ray:8.2f}x")
    print(f"same accuracies bit for bit: {same}")
    local.shutdown(), remote.shutdown(), again.shutdown()


if __name__ == "__main__":
    main()
