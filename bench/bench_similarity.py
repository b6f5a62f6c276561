"""linear_cka and pwcca against straightforward NumPy versions of the same formulas, and
MinibatchCKA's peak memory against the full-Gram approach.

    python bench/bench_similarity.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.similarity import MinibatchCKA, linear_cka, pwcca  # noqa: E402
from timing import median_seconds  # noqa: E402


def numpy_linear_cka(x, y):
    """The demo notebook's way: n×n Gram matrices, centred, then the Frobenius inner products."""
    k, l = x @ x.T, y @ y.T
    k = k - k.mean(0)[:, None] - k.mean(0)[None, :] + k.mean()
    l = l - l.mean(0)[:, None] - l.mean(0)[None, :] + l.mean()
    return float((k * l).sum() / (np.linalg.norm(k) * np.linalg.norm(l)))


def numpy_linear_cka_features(x, y):
    """The same formula in feature space: ‖YcᵀXc‖² / (‖XcᵀXc‖ ‖YcᵀYc‖)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def numpy_pwcca(x, y):
    """The formula with NumPy: covariances, inverse square roots by eigh, SVD, QR, weights."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    sxx, syy, sxy = x.T @ x / (n - 1), y.T @ y / (n - 1), x.T @ y / (n - 1)

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T

    wx, wy = inv_sqrt(sxx), inv_sqrt(syy)
    u, s, _ = np.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    h, _ = np.linalg.qr(x @ wx @ u)
    alpha = np.abs(h.T @ x).sum(1)
    return float((alpha / alpha.sum()) @ s[: len(alpha)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--memory", choices=["minibatch", "gram"])
    args = parser.parse_args()
    if args.memory:
        return measure(args.memory, args.n)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 512))
    y = x @ rng.normal(size=(512, 512)) * 0.1 + rng.normal(size=(args.n, 512))
    xt, yt = torch.tensor(x, device=args.device), torch.tensor(y, device=args.device)
    print(f"x, y: ({args.n}, 512) float64 · device {args.device}")
    for name, ours, ref in (
        ("linear_cka vs the demo's Gram version", lambda: linear_cka(xt, yt), lambda: numpy_linear_cka(x, y)),
        ("linear_cka vs NumPy in feature space", lambda: linear_cka(xt, yt), lambda: numpy_linear_cka_features(x, y)),
        ("pwcca vs NumPy (with the QR step)", lambda: pwcca(xt, yt), lambda: numpy_pwcca(x, y)),
    ):
        assert abs(ours() - ref()) < 1e-6, name
        t_ours, t_ref = median_seconds(ours, 3, args.device), median_seconds(ref, 3)
        print(f"{name:38s} lenscape {t_ours * 1e3:8.1f} ms  numpy {t_ref * 1e3:9.1f} ms  ratio {t_ref / t_ours:6.1f}x")
    if args.device == "cpu":  # the floor both feature-space versions stand on
        xc, yc = x - x.mean(0), y - y.mean(0)
        t_blas = median_seconds(lambda: (xc.T @ xc, yc.T @ yc, xc.T @ yc), 3)
        print(
            f"{'  (its three BLAS products alone)':38s}          {t_blas * 1e3:8.1f} ms: linear CKA in feature space is "
            "these products plus a centring pass, so no float64 version can be 2x faster than the NumPy one"
        )
    memory()


def memory() -> None:
    """Peak resident memory of a fresh process doing only one of the two (MiB)."""
    import subprocess

    for what, n in (("minibatch", 50_000), ("gram", 10_000)):
        out = subprocess.run(
            [sys.executable, __file__, "--memory", what, "--n", str(n)], capture_output=True, text=True, check=True
        ).stdout.split()
        print(f"peak RSS above the start, {what:9s} CKA over {n:>6,} examples (64 features): {float(out[-1]):8.0f} MiB")
    print(
        f"full-Gram CKA over 50,000 examples would hold two 50,000² float64 Gram matrices: "
        f"{2 * 50_000**2 * 8 / 2**20:,.0f} MiB before centring"
    )


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process (Linux). ru_maxrss would carry the parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(what: str, n: int) -> None:
    rng = np.random.default_rng(0)
    base = _status_mib("VmRSS")
    if what == "minibatch":
        mb = MinibatchCKA()
        for _ in range(0, n, 500):  # activations arrive batch by batch, as from a data loader
            a = torch.from_numpy(rng.normal(size=(500, 64)))
            mb.update(a, a + torch.from_numpy(rng.normal(size=(500, 64))))
    else:
        a = rng.normal(size=(n, 64))
        numpy_linear_cka(a, a + rng.normal(size=(n, 64)))
    print(_status_mib("VmHWM") - base)


if __name__ == "__main__":
    main()
