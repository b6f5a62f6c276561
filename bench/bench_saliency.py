"""Attribution time against the bare cost of the same forward+backward passes in plain PyTorch.

    python bench/bench_saliency.py [--device cuda] [--repeats 5] [--cases cnn256,cnn4096,resnet1024]

Cases (the issue's three sizes): the small CNN on 256 and on 4,096 MNIST test images, ResNet-18 on
1,024 CIFAR-10 test images (random images where the data set is missing: timing does not depend on
the pixels). For each method it prints Lenscape's time, Captum's own per-example gradient helper
(what Lenscape used before) and the bare passes, all measured in one run, and the ratio to bare
(target <= 1.3).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lenscape.analysis.saliency as sal  # noqa: E402
from lenscape.analysis.saliency import SaliencyConfig, attribute  # noqa: E402
from lenscape.models.architectures import ArchSpec, build_model  # noqa: E402
from timing import median_seconds  # noqa: E402

CASES = {
    "cnn256": ("mnist", "cnn", 256),
    "cnn4096": ("mnist", "cnn", 4096),
    "resnet1024": ("cifar10", "resnet18", 1024),
}


def images(data: str, n: int) -> torch.Tensor:
    try:
        from lenscape.models.data import DataSpec, load_data

        return load_data(DataSpec(name=data), "test").x(slice(0, n))
    except Exception:  # the data set is missing here
        return torch.rand(n, *((1, 28, 28) if data == "mnist" else (3, 32, 32)))


def model_for(data: str, arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    shape, mean, std = (
        ((1, 28, 28), (0.1307,), (0.3081,))
        if data == "mnist"
        else ((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    )
    return build_model(ArchSpec(name=arch, in_shape=shape, num_classes=10, mean=mean, std=std)).eval()


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


def captum_default(fn):
    """Run `fn` with Captum's own gradient helper (one backward seed per example)."""
    from captum._utils.gradient import compute_gradients

    def run():
        saved, sal._summed_gradients = sal._summed_gradients, compute_gradients
        try:
            return fn()
        finally:
            sal._summed_gradients = saved

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="cnn256,cnn4096,resnet1024")
    parser.add_argument("--ig-steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    print(f"device {device} · median of {args.repeats} · ratio = time / bare passes (target <= 1.3)")
    for case in args.cases.split(","):
        data, arch, n = CASES[case]
        model, x = model_for(data, arch).to(device), images(data, n).to(device)
        with torch.no_grad():
            t = model(x).argmax(1)
        methods = [("gradient", SaliencyConfig(method="gradient", batch_size=n), lambda: bare_gradient(model, x, t))]
        if args.ig_steps:  # --ig-steps 0: the gradient only
            methods.append(
                (
                    f"IG ({args.ig_steps} steps)",
                    SaliencyConfig(method="integrated_gradients", batch_size=n, n_steps=args.ig_steps),
                    lambda: bare_ig(model, x, t, args.ig_steps),
                )
            )
        for name, cfg, bare in methods:
            ours = lambda cfg=cfg: attribute(model, x, t, cfg)  # noqa: E731
            base = median_seconds(bare, args.repeats, device)
            t_ours = median_seconds(ours, args.repeats, device)
            t_captum = median_seconds(captum_default(ours), args.repeats, device)
            print(
                f"{case:10s} {name:14s} bare {base * 1e3:9.1f} ms · lenscape {t_ours * 1e3:9.1f} ms "
                f"({t_ours / base:4.2f}x) · captum's helper {t_captum * 1e3:9.1f} ms ({t_captum / base:4.2f}x) · "
                f"{n / t_ours:8.0f} images/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
