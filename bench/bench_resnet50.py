"""Seconds to a first saliency grid for a torchvision ResNet-50 at 224 px (issue 25): the Saliency page's
first page as a user gets it, through the backend, on a folder of 224-px JPEGs decoded on demand.

    python bench/bench_resnet50.py [--device cpu] [--images 500]

The model (random weights: no network here) is added with lenscape.add_model from torchvision's own
builder; the first grid is the page's default on this device: 6 test images × the methods the Saliency page
starts with (Gradient alone for a model this size without a GPU, else Gradient, Integrated Gradients (50 steps)
and SmoothGrad); `--all-methods` also times the three. Baseline in the same run: one bare forward+backward
pass of ResNet-50 over the 6 images (what Gradient alone costs), so the ratio reads the same on any
machine. Prints seconds and ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--all-methods", action="store_true", help="also time Gradient, IG-50 and SmoothGrad")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lenscape-bench-r50-"))
    os.environ["LENSCAPE_HOME"] = str(tmp / "home")
    os.environ["LENSCAPE_DEVICE"] = args.device
    from bench.bench_folder import make_folder

    make_folder(tmp / "images", args.images, classes=100)

    import torch
    import torchvision

    import lenscape
    from lenscape.analysis import SaliencyConfig
    from lenscape.backend.jobs import JobStatus, job, ref
    from lenscape.backend.runner import open_backend
    from lenscape.backend.saliency_tasks import GridConfig
    from lenscape.models.architectures import IMAGENET_MEAN, IMAGENET_STD
    from lenscape.models.zoo import load_model

    net = torchvision.models.resnet50(num_classes=100)
    t0 = time.perf_counter()
    run_id = lenscape.add_model(
        net,
        str(tmp / "images"),
        architecture="torchvision.models:resnet50",
        kwargs={"num_classes": 100},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    added = time.perf_counter() - t0
    runner = open_backend()
    r = ref(load_model(run_id))
    from lenscape.ui.saliency import DEFAULT_METHODS, heavy_on_this_machine

    lm = load_model(run_id, device=args.device)
    page = ("gradient",) if heavy_on_this_machine(lm) else DEFAULT_METHODS
    grids = {page: 0.0}
    if args.all_methods:
        grids[DEFAULT_METHODS] = 0.0
    per_method = {}
    for names in grids:
        methods = tuple(SaliencyConfig(method=m) for m in names)
        t0 = time.perf_counter()
        jid = runner.submit(job("saliency", GridConfig(model=r, indices=tuple(range(6)), methods=methods), (r,)))
        assert runner.wait(jid, 3600) == JobStatus.DONE, runner.error(jid)
        grids[names] = time.perf_counter() - t0
        per_method.update({res.config.method: res.seconds for res in runner.result(jid)})
    runner.shutdown()

    model = load_model(run_id, device=args.device).model
    x = torch.rand(6, 3, 224, 224, device=args.device, requires_grad=True)
    model(x).max(1).values.sum().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(3):
        x.grad = None
        model(x).max(1).values.sum().backward()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    bare = (time.perf_counter() - t0) / 3
    print(f"device {args.device}: add_model (ResNet-50, {args.images} images listed) {added:.1f} s")
    for names, seconds in grids.items():
        which = "the page's first grid" if names == page else "the three default methods"
        print(f"{which} (6 images x {', '.join(names)}): {seconds:.1f} s; / baseline = {seconds / bare:.1f}x")
    print("  per method: " + ", ".join(f"{m} {s:.1f} s" for m, s in per_method.items()))
    print(f"baseline, one bare forward+backward of the 6 images: {bare:.2f} s")


if __name__ == "__main__":
    main()
