"""The `lenscape` command (also `python -m lenscape`):

    lenscape app [--port 8501] [streamlit options]   start the app (localhost only unless configured)
    lenscape app --model mypkg.nets:build_net [--kwargs '{"depth": 18}'] --weights w.safetensors
                 --data /path/to/images [--name N] [--mean 0.485,0.456,0.406] [--std ...] [--image-size 224]
                                                      add your own model first (see lenscape.add_model)
    lenscape train --preset mnist-cnn --seeds 0-4 [--epochs 1] [--device cuda]
    lenscape train --preset digits-mlp-noise10 --model mypkg.nets:build_net --kwargs '{"width": 64}'
    lenscape warm --preset teaching                   prepare the class demo (models and one result per view)
    lenscape presets                                  list the training presets

Runs land in the same workspace (LENSCAPE_HOME/runs) as the app's, under the same run ids,
so the app lists them and does not train them again.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

from lenscape.errors import InvalidInputError
from lenscape.models.custom import pending, trust
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
    train.add_argument(
        "--model", help="your own network for the preset's recipe: module:callable (trusted in this workspace)"
    )
    train.add_argument("--kwargs", default="{}", help="its keyword arguments, as JSON")
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
    overrides: dict = {"epochs": args.epochs} if args.epochs else {}
    try:
        if args.model:  # the person at the command line names code, as with `lenscape app --model`
            overrides.update(arch="custom", builder=args.model, builder_kwargs=args.kwargs)
        for seed in parse_seeds(args.seeds):
            cfg = preset(args.preset, seed=seed, **overrides)
            start = time.perf_counter()
            with pending(cfg.builder, cfg.builder_kwargs) if cfg.builder else nullcontext():
                rec = train_run(
                    cfg,
                    runs_dir() / run_id_for(cfg),
                    device=args.device,
                    progress=lambda f, m: print(f"\r[{f:6.1%}] {m:80s}", end="", flush=True),
                )
            if cfg.builder:  # trusted for the workspace only once it has built and trained
                trust(ref=cfg.builder, kwargs=cfg.builder_kwargs)
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

    own = argparse.ArgumentParser(prog="lenscape app", add_help=False, allow_abbrev=False)
    own.add_argument("--model", help="module:callable that builds your network")
    own.add_argument("--kwargs", default="{}", help="its keyword arguments, as JSON")
    own.add_argument("--weights", help="a safetensors file or a state_dict saved by torch.save")
    own.add_argument("--data", help="an image folder (root/<class>/<image>)")
    own.add_argument("--name")
    own.add_argument("--mean", help="the normalization your network expects, e.g. 0.485,0.456,0.406")
    own.add_argument("--std")
    own.add_argument("--image-size", type=int, default=0)
    known, args = own.parse_known_args(args)
    if known.model or known.weights or known.data:
        try:
            run_id = _add_own(known)
        except InvalidInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"added {run_id}; it is the model the app opens with ?model={run_id}", flush=True)

    if args[:1] == ["--port"] and len(args) >= 2:  # the one option most people want, spelled plainly
        args = ["--server.port", args[1], *args[2:]]
    serve(args)
    return 0


def _add_own(known: argparse.Namespace) -> str:
    import json
    from pathlib import Path

    from lenscape.api import add_model
    from lenscape.models.loading import read_state_dict

    missing = [f"--{k}" for k in ("model", "weights", "data") if not getattr(known, k)]
    if missing:
        raise InvalidInputError(f"to add your own model, give {', '.join(missing)} too")
    path = Path(known.weights).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path} ({exc.strerror})") from None
    try:
        kwargs = json.loads(known.kwargs)
    except ValueError as exc:
        raise InvalidInputError(f"--kwargs is not JSON: {exc}") from None

    def floats(text: str | None):
        return None if not text else tuple(float(v) for v in text.split(","))

    return add_model(
        None,
        known.data,
        weights=read_state_dict(raw, path.name),  # safetensors or weights_only: nothing unpickled
        name=known.name,
        architecture=known.model,
        kwargs=kwargs,
        mean=floats(known.mean),
        std=floats(known.std),
        image_size=known.image_size,
    )
