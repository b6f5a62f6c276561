"""An image folder of N synthetic 224-px JPEGs (100 classes): peak memory and seconds to the first
page of saliency maps, for N = 1,000 and 10,000 (issue 25, point 4).

    python bench/bench_folder.py [--sizes 1000,10000] [--model resnet18] [--device cpu]

Each measurement runs in a fresh process (its peak RSS is its own) over a fresh workspace:

- first page: open the folder lazily (list the files, read every header), then Gradient maps of a
  torchvision classifier (random weights) for the first 8 test images: what a user waits for before
  the first maps. Only those images (and the 256 the normalization statistics come from) are decoded.
- full decode: every image decoded into the memory-mapped cache (the Models page's "prepare").

Peak RSS should stay near-constant in N (the images live in the mapped file, read a page at a time),
and the first page should cost about the same for both N apart from listing and headers. Prints a
table and the ratios 10,000 / 1,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, n: int, classes: int = 100, size: int = 224) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, 8, 8, 3), dtype=np.uint8)
    for i in range(n):
        c = i % classes
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = np.clip(base[c].astype(int) + rng.integers(-40, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        img.save(folder / f"{i:06d}.jpg", quality=85)


CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import torch
from lenscape.analysis import SaliencyConfig, attribute
from lenscape.models.data import DataSpec, load_data, prepare
folder, what, model_name, device = sys.argv[1:5]
spec = DataSpec(name="imagefolder", folder=folder)
out = {}
if what == "first-page":
    import torchvision
    t0 = time.perf_counter()
    test = load_data(spec, "test", lazy=True)
    out["open_s"] = time.perf_counter() - t0
    model = torchvision.models.get_model(model_name, weights=None, num_classes=len(test.classes)).eval().to(device)
    x = test.x(torch.arange(8)).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    maps = attribute(model, x, target, SaliencyConfig(method="gradient"))
    out["first_page_s"] = time.perf_counter() - t0
    out["maps"] = list(maps.shape)
else:
    t0 = time.perf_counter()
    n = prepare(spec)
    out["decode_s"] = time.perf_counter() - t0
    out["images"] = sum(n.values())
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def measure(folder: Path, what: str, model: str, device: str) -> dict:
    home = tempfile.mkdtemp(prefix="lenscape-bench-home-")
    env = {
        **os.environ,
        "LENSCAPE_HOME": home,
        "LENSCAPE_ALLOWED_ROOTS": str(folder.parent),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), what, model, device],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="lenscape-bench-folder-") as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            folder = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            make_folder(folder, n)
            made = time.perf_counter() - t0
            first = measure(folder, "first-page", args.model, args.device)
            full = measure(folder, "full", args.model, args.device)
            rows[n] = {
                "made_s": made,
                **{f"first_{k}": v for k, v in first.items()},
                **{f"full_{k}": v for k, v in full.items()},
            }
            r = rows[n]
            print(
                f"N={n:>6,}: first page of maps {r['first_first_page_s']:6.2f} s (open {r['first_open_s']:.2f} s), "
                f"peak RSS {r['first_peak_rss_mib']:6.0f} MiB | full decode {r['full_decode_s']:6.1f} s, "
                f"peak RSS {r['full_peak_rss_mib']:6.0f} MiB",
                flush=True,
            )
    sizes = sorted(rows)
    if len(sizes) >= 2:
        a, b = rows[sizes[0]], rows[sizes[-1]]
        print(
            f"ratios N={sizes[-1]:,} / N={sizes[0]:,}: first page {b['first_first_page_s'] / a['first_first_page_s']:.2f}x, "
            f"its peak RSS {b['first_peak_rss_mib'] / a['first_peak_rss_mib']:.2f}x; full decode "
            f"{b['full_decode_s'] / a['full_decode_s']:.2f}x, its peak RSS {b['full_peak_rss_mib'] / a['full_peak_rss_mib']:.2f}x "
            f"(N grew {sizes[-1] / sizes[0]:.0f}x)"
        )


if __name__ == "__main__":
    main()
