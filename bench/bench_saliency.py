"""Attribution time against the bare cost of the same forward+backward passes in plain PyTorch.

    python bench/bench_saliency.py [--device cuda] [--repeats 5]

Same model (the small CNN), same 256 MNIST test images (random images if MNIST is missing), measured
in one run; prints the ratio Lenscape / bare (target <= 1.3) and images per second.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.saliency import SaliencyConfig, attribute  # noqa: E402
from timing import median_seconds  # noqa: E402
from models.architectures import ArchSpec, build_model  # noqa: E402


def images(n: int) -> torch.Tensor:
    try:
        from models.data import DataSpec, load_data
        return load_data(DataSpec(name="mnist"), "test").x(slice(0, n))
    except Exception:  # no MNIST here: timing does not depend on the pixels
        return torch.rand(n, 1, 28, 28)


def bare_gradient(model, x, t):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x)[0]  # input gradients only


def bare_ig(model, x, t, steps):
    """The same passes IG makes: `steps` batches of len(x) scaled inputs, forward and backward."""
    total = torch.zeros_like(x)
    for a in torch.linspace(0, 1, steps, device=x.device):
        xs = (a * x).requires_grad_(True)
        total += torch.autograd.grad(model(xs).gather(1, t[:, None]).sum(), xs)[0]
    return total * x / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = build_model(ArchSpec(name="cnn", in_shape=(1, 28, 28), num_classes=10, mean=(0.1307,),
                                 std=(0.3081,))).to(device).eval()
    x = images(args.n).to(device)
    t = model(x).argmax(1)
    cases = [("gradient", SaliencyConfig(method="gradient", batch_size=args.n), lambda: bare_gradient(model, x, t)),
             ("integrated_gradients (50 steps)", SaliencyConfig(method="integrated_gradients", n_steps=50,
                                                                batch_size=args.n), lambda: bare_ig(model, x, t, 50))]
    print(f"device {device} · {args.n} images · small CNN · median of {args.repeats}")
    for name, cfg, bare in cases:
        ours = median_seconds(lambda: attribute(model, x, t, cfg), args.repeats, device)
        base = median_seconds(bare, args.repeats, device)
        print(f"{name:34s} lenscape {ours * 1e3:8.1f} ms  bare {base * 1e3:8.1f} ms  ratio {ours / base:5.2f}x  "
              f"{args.n / ours:9.0f} images/s")


if __name__ == "__main__":
    main()
