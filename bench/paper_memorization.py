"""Maini et al. (2023) at small scale on MNIST: the figures the Memorization view shows, for the
preset `mnist-cnn-noise10` (small CNN, 10 000 training images, 10% flipped labels, 20 epochs).

    python bench/paper_memorization.py [--device cuda] [--examples 30] [--cap 100]

Prints: the noise rate and how many relabelled examples are memorized; the median neurons to flip
for memorized vs clean examples and the layers those neurons are in; the accuracy each layer keeps
on the noisy examples when rewound to epoch 0, and when retrained from its initial weights on the
clean examples only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.evaluation import evaluate  # noqa: E402
from lenscape.analysis.memorization import (
    FlipConfig,
    RetrainConfig,
    flip_neurons,
    layer_groups,  # noqa: E402
    retrain_group,
    rewound,
)
from lenscape.models.architectures import ArchSpec  # noqa: E402
from lenscape.models.checkpoints import load_checkpoint  # noqa: E402
from lenscape.models.loading import model_from_state  # noqa: E402
from lenscape.models.training import prepare_data, preset, train_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=30, help="memorized and clean examples to flip, each")
    parser.add_argument("--cap", type=int, default=100, help="at most this many neurons per example")
    parser.add_argument("--retrain-epochs", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = preset("mnist-cnn-noise10")
    folder = Path(tempfile.gettempdir()) / "lenscape-paper-mem" / "run"
    t0 = time.perf_counter()
    rec = train_run(cfg, folder, device=device)
    print(f"trained {cfg.describe()} in {time.perf_counter() - t0:.0f} s")

    def load(epoch: int):
        ck = next(c for c in rec["checkpoints"] if c["epoch"] == epoch)
        state, _ = load_checkpoint(folder / ck["file"])
        return state, model_from_state(ArchSpec.from_dict(rec["arch"]), state).to(device).eval()

    last = rec["checkpoints"][-1]["epoch"]
    final_state, model = load(last)
    init_state, _ = load(0)
    data = prepare_data(cfg)
    x, y, noisy = data.train.images, data.train.labels, data.noise_mask
    with torch.no_grad():
        pred = torch.cat(
            [model(x[s : s + 2000].to(device).float() / 255).argmax(1).cpu() for s in range(0, len(y), 2000)]
        )
    memorized = torch.nonzero(noisy & (pred == y)).flatten()
    clean = torch.nonzero(~noisy & (pred == y)).flatten()
    test_acc = evaluate(model, data.test.images, data.test.labels).accuracy
    print(
        f"noise rate {float(noisy.float().mean()):.1%} ({int(noisy.sum())} of {len(y)}); memorized "
        f"{len(memorized)} ({len(memorized) / int(noisy.sum()):.1%} accuracy on the relabelled examples under "
        f"their noisy labels); clean train {float((pred[~noisy] == y[~noisy]).float().mean()):.1%}; test {test_acc:.1%}"
    )

    t0 = time.perf_counter()
    fc = FlipConfig(max_steps=args.cap, max_acc_drop=0.5)
    mem = flip_neurons(model, x, y, memorized[: args.examples], fc)
    cln = flip_neurons(model, x, y, clean[: args.examples], fc)
    print(f"\nneuron flipping ({args.examples} each, cap {args.cap}, {time.perf_counter() - t0:.0f} s):")
    for name, r in (("memorized", mem), ("clean", cln)):
        layers = Counter(r.layers[a] for ns in r.neurons for a, _ in ns)
        print(
            f"  {name:9s} median {np.median(r.n_neurons):g} neurons (mean {r.n_neurons.mean():.1f}); flipped "
            f"{int(r.flipped.sum())}/{len(r.flipped)}; stopped {dict(Counter(r.stopped))}; layers "
            f"{dict(sorted(layers.items(), key=lambda kv: r.layers.index(kv[0])))}"
        )

    groups = layer_groups(model)
    print(
        "\nper layer: noisy-example accuracy (noisy labels) after rewinding it to epoch 0 / after retraining it "
        f"from its initial weights on clean examples ({args.retrain_epochs} epochs at most); clean accuracy after rewinding"
    )
    for g, names in groups.items():
        m = model_from_state(ArchSpec.from_dict(rec["arch"]), rewound(final_state, init_state, names)).to(device).eval()
        rw_noisy, rw_clean = evaluate(m, x[noisy], y[noisy]).accuracy, evaluate(m, x[~noisy], y[~noisy]).accuracy
        work = model_from_state(ArchSpec.from_dict(rec["arch"]), final_state).to(device).eval()
        res = retrain_group(work, init_state, g, x, y, noisy, RetrainConfig(max_epochs=args.retrain_epochs))
        print(
            f"  {g:8s} rewound: noisy {rw_noisy:6.1%} clean {rw_clean:6.1%} · retrained: noisy {res.noisy_acc[-1]:6.1%} "
            f"(clean train {res.train_acc[-1]:.1%}, {res.epochs} epochs)"
        )


if __name__ == "__main__":
    main()
