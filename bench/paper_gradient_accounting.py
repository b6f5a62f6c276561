"""Gradient accounting on the `digits-mlp-noise10` preset (digits MLP 256-256, 10% flipped labels,
100 epochs): the paper's measurement (clean and noisy gradients summed while each epoch trains,
recorded by the trainer) beside the checkpoint version (the same split recomputed at the end-of-epoch
weights), per layer at the chosen epochs. Also times an epoch with and without the record, in the
same run (the record costs a second backward pass per batch).

    python bench/paper_gradient_accounting.py [--device cuda] [--epochs 5,25,50,100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenscape.analysis.memorization import gradient_account, layer_groups  # noqa: E402
from lenscape.backend.memorization_tasks import recorded_gradients  # noqa: E402
from lenscape.models.checkpoints import load_checkpoint  # noqa: E402
from lenscape.models.architectures import ArchSpec, build_model  # noqa: E402
from lenscape.models.training import prepare_data, preset, train_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", default="5,25,50,100")
    args = parser.parse_args()
    shown = [int(e) for e in args.epochs.split(",")]
    cfg = preset("digits-mlp-noise10")
    with tempfile.TemporaryDirectory() as tmp:
        for warm in (cfg, replace(cfg, label_noise=0.0)):  # imports, data and kernels warm before timing
            train_run(replace(warm, epochs=1), Path(tmp) / f"warm-{warm.label_noise}", device=args.device)
        t0 = time.perf_counter()
        rec = train_run(cfg, Path(tmp) / "run", device=args.device)
        t_rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_run(replace(cfg, label_noise=0.0), Path(tmp) / "plain", device=args.device)
        t_plain = time.perf_counter() - t0
        model = build_model(ArchSpec.from_dict(rec["arch"]), seed=0).to(args.device)
        trained = recorded_gradients(rec, model)
        data = prepare_data(cfg)
        print(
            f"digits MLP preset, 10% noise: train accuracy on noisy labels "
            f"{rec['metrics'][-1]['train_acc']:.1%}, test {rec['metrics'][-1]['test_acc']:.1%}"
        )
        print(
            f"training time with the record {t_rec:.1f} s, without (no label noise) {t_plain:.1f} s: "
            f"ratio {t_rec / t_plain:.2f}"
        )
        groups = list(layer_groups(model))
        print("\ncos(G_clean, G_noisy) per layer: in training (the paper's) | at the checkpoint")
        print("epoch  " + "  ".join(f"{g:>17}" for g in groups))
        for e in shown:
            state, _ = load_checkpoint(Path(tmp) / "run" / f"epoch_{e:03d}.safetensors")
            model.load_state_dict(state)
            ck = gradient_account(model, data.train.images, data.train.labels, data.noise_mask, batch_size=64)
            i = trained.epochs.index(e)
            print(
                f"{e:5d}  "
                + "  ".join(f"{trained.cosine[i, j]:+8.3f} | {ck.cosine[j]:+6.3f}" for j in range(len(groups)))
            )
        print("\nnoisy / clean gradient norm (Σ‖G‖/√numel) per layer, in training")
        for e in shown:
            i = trained.epochs.index(e)
            print(f"{e:5d}  " + "  ".join(f"{v:17.3f}" for v in trained.noisy_norm[i] / trained.clean_norm[i]))


if __name__ == "__main__":
    main()
