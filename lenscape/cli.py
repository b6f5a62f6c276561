"""The `lenscape` command (also `python -m lenscape`):

    lenscape app [--port 8501] [streamlit options]   start the app (localhost only unless configured)
    lenscape train --preset mnist-cnn --seeds 0-4 [--epochs 1] [--device cuda]
    lenscape warm --preset teaching                   prepare the class demo (models and one result per view)
    lenscape presets                                  list the training presets

Runs land in the same workspace (LENSCAPE_HOME/runs) as the app's, under the same run ids,
so the app lists them and does not train them again.
"""

from __future__ import annotations

import argparse
import sys
import time

from lenscape.errors import InvalidInputError
from lenscape.models.paths import runs_dir
from lenscape.models.training import PRESETS, parse_seeds, preset, run_id_for, train_run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:  # the rest goes to Streamlit as it is
        return _app(argv[1:])
    parser = argparse.ArgumentParser(
        prog="lenscape", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("app", help="start the app (options after it go to Streamlit, e.g. --server.port 8502)")
    train = sub.add_parser("train", help="train one preset for one or more seeds")
    train.add_argument("--preset", required=True, choices=sorted(PRESETS))
    train.add_argument("--seeds", default="0", help="e.g. 0, 0-4 or 1,3,5")
    train.add_argument("--epochs", type=int, help="override the preset's epochs")
    train.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    sub.add_parser("presets", help="list the presets")
    warm = sub.add_parser("warm", help="train the class demo's models and compute one result per view ahead")
    warm.add_argument("--preset", default="teaching", choices=["teaching"])
    args = parser.parse_args(argv)
    if args.command == "warm":
        from lenscape.backend.runner import open_backend
        from lenscape.backend.teaching import warm as warm_up

        runner = open_backend()
        try:
            warm_up(runner, say=lambda m: print(m, flush=True))
        finally:
            runner.shutdown()
        return 0
    if args.command == "presets":
        for name, cfg in PRESETS.items():
            print(f"{name:32s} {cfg.describe()}")
        return 0
    overrides = {"epochs": args.epochs} if args.epochs else {}
    try:
        for seed in parse_seeds(args.seeds):
            cfg = preset(args.preset, seed=seed, **overrides)
            start = time.perf_counter()
            rec = train_run(
                cfg,
                runs_dir() / run_id_for(cfg),
                device=args.device,
                progress=lambda f, m: print(f"\r[{f:6.1%}] {m:80s}", end="", flush=True),
            )
            last = rec["metrics"][-1]
            print(
                f"\n{rec['run_id']}: {rec['name']} · test acc {last['test_acc']:.2%} · "
                f"{time.perf_counter() - start:.1f} s"
            )
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _app(args: list[str]) -> int:
    from lenscape.ui.serve import main as serve

    if args[:1] == ["--port"] and len(args) >= 2:  # the one option most people want, spelled plainly
        args = ["--server.port", args[1], *args[2:]]
    serve(args)
    return 0
