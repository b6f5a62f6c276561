"""Training with per-epoch checkpoints, label noise, PGD adversarial training and example-tied
dropout. `train_run` is plain code: the backend runs it as a job, the CLI runs it directly."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lenscape.models.architectures import ArchSpec, build_model, example_ids
from lenscape.models.attacks import PGDConfig, pgd_perturbation
from lenscape.models.checkpoints import model_fingerprint, read_json, save_checkpoint, write_json
from lenscape.models.data import DataSpec, ImageData, apply_label_noise, load_data
from lenscape.errors import InvalidInputError

SCHEDULES = ("constant", "cosine", "step", "triangle")
Progress = Callable[[float, str], None]  # may raise to stop the run


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: DataSpec = field(default_factory=DataSpec)
    arch: str = "cnn"
    widths: tuple[int, ...] = (256, 256)  # MLP hidden widths
    channels: tuple[int, int] = (32, 64)  # small CNN conv widths
    batchnorm: bool = False
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    schedule: str = "cosine"  # per step; "triangle" = linear up then down (Maini et al.)
    warmup: float = 0.0  # fraction of steps with linear warm-up (cosine/step)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0  # initialization and batch order
    label_noise: float = 0.0  # fraction of training labels flipped
    noise_seed: int = 0  # which examples flip: fixed across seeds on purpose
    adversarial: PGDConfig | None = None  # PGD adversarial training when set
    p_gen: float = 0.0  # example-tied dropout (0 = off)
    p_mem: float = 0.0
    train_subset: int = 0  # use only the first n training examples (0 = all)
    builder: str = ""  # arch "custom": the user's trusted code, "module:callable" (models.custom)
    builder_kwargs: str = ""  # its keyword arguments, canonical JSON

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InvalidInputError(
                f"need epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.schedule not in SCHEDULES:
            raise InvalidInputError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if not 0 <= self.warmup < 1:
            raise InvalidInputError(f"warmup is a fraction of training in [0, 1); got {self.warmup}")
        if not 0 <= self.label_noise < 1:
            raise InvalidInputError(f"label_noise must be in [0, 1); got {self.label_noise}")
        if (self.arch == "custom") != bool(self.builder) or (self.builder_kwargs and not self.builder):
            raise InvalidInputError("a custom architecture needs its builder (module:callable), and only it takes one")
        if self.builder:
            from lenscape.models.custom import canonical_kwargs, check_ref

            check_ref(self.builder)
            object.__setattr__(self, "builder_kwargs", canonical_kwargs(self.builder_kwargs or "{}"))

    def arch_spec(self, data: ImageData) -> ArchSpec:
        return ArchSpec(
            name=self.arch,
            in_shape=data.input_shape,
            num_classes=data.num_classes,
            mean=data.mean,
            std=data.std,
            widths=self.widths,
            channels=self.channels,
            batchnorm=self.batchnorm,
            p_gen=self.p_gen,
            p_mem=self.p_mem,
            builder=self.builder,
            builder_kwargs=self.builder_kwargs,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.builder:  # a zoo recipe's dict, and so its run id, stays what it was before custom code
            del d["builder"], d["builder_kwargs"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["data"] = DataSpec.from_dict(d["data"])
        d["adversarial"] = PGDConfig(**d["adversarial"]) if d.get("adversarial") else None
        for k in ("widths", "channels"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def describe(self) -> str:
        arch = {"mlp": f"MLP {'-'.join(map(str, self.widths))}", "cnn": f"CNN{'+BN' if self.batchnorm else ''}"}
        arch["custom"] = self.builder
        parts = [self.data.label, arch.get(self.arch, self.arch), f"{self.epochs} ep", f"seed {self.seed}"]
        if self.label_noise:
            parts.append(f"{self.label_noise:.0%} noise")
        if self.adversarial:
            parts.append(f"PGD-{self.adversarial.norm} eps {self.adversarial.eps:g}")
        if self.p_gen:
            parts.append(f"tied dropout {self.p_gen:g}/{self.p_mem:g}")
        return " · ".join(parts)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at optimizer step `step` of `total`."""
    t = step / max(total, 1)
    if cfg.schedule == "triangle":
        return min(t / 0.5, (1 - t) / 0.5) if t < 1 else 0.0
    if cfg.warmup and t < cfg.warmup:
        return (step + 1) / (cfg.warmup * total)
    if cfg.schedule == "cosine":
        u = (t - cfg.warmup) / (1 - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * u))
    if cfg.schedule == "step":  # x0.1 at 50% and 75% of training
        return 0.1 ** ((t >= 0.5) + (t >= 0.75))
    return 1.0


@dataclass
class PreparedData:
    train: ImageData
    test: ImageData
    noise_mask: torch.Tensor | None
    original_labels: torch.Tensor


def prepare_data(cfg: TrainConfig) -> PreparedData:
    train, test = load_data(cfg.data, "train"), load_data(cfg.data, "test")
    train = train.head(cfg.train_subset)
    original, mask = train.labels, None
    if cfg.label_noise:
        noisy, mask = apply_label_noise(train.labels, cfg.label_noise, train.num_classes, cfg.noise_seed)
        train = train.with_labels(noisy)
    return PreparedData(train, test, mask, original)


ON_DEVICE_BYTES = 2 << 30  # data sets up to this size (as uint8) are copied to the device once per run


def on_device(data: ImageData, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) where batches are cheapest to gather: on the device when they fit the
    budget (no per-batch host gather and copy), else in pinned host memory for asynchronous copies."""
    device = torch.device(device)
    if device.type == "cpu":
        return data.images, data.labels
    if data.images.numel() <= ON_DEVICE_BYTES:
        return data.images.to(device), data.labels.to(device)
    return data.images.pin_memory(), data.labels.pin_memory()


def _batch(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images in [0, 1] and labels of `idx`, on `device`."""
    idx = idx.to(images.device)
    x = images[idx].to(device, non_blocking=True).float().div_(255.0)  # (B, C, H, W)
    return x, labels[idx].to(device, non_blocking=True)


def evaluate(
    model: nn.Module,
    data: ImageData,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
    labels: torch.Tensor | None = None,
) -> tuple[float, float, torch.Tensor]:
    """(mean CE loss, accuracy, predictions) in eval mode; `labels` overrides the data's labels.
    The data go to the device once (see on_device); analysis.evaluation does the batching."""
    from lenscape.analysis.evaluation import evaluate as batched

    labels = data.labels if labels is None else labels
    if not len(data):
        return 0.0, 0.0, torch.zeros(0, dtype=torch.long)
    images, dev_labels = on_device(data.with_labels(labels), device)
    ev = batched(model, images, dev_labels, batch_size=batch_size)
    return ev.loss, ev.accuracy, ev.predictions


def parse_seeds(text: str) -> list[int]:
    """'0-4' → [0, 1, 2, 3, 4]; '1, 5, 7' → [1, 5, 7]; at most 20 seeds."""
    seeds: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if part:
                lo, _, hi = part.partition("-")
                seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InvalidInputError(f"seeds look like '0', '0-4' or '1, 5, 7'; got {text!r}") from None
    if not seeds or len(seeds) > 20:
        raise InvalidInputError(f"give between 1 and 20 seeds; got {len(seeds)} from {text!r}")
    return sorted(set(seeds))


def run_id_for(cfg: TrainConfig) -> str:
    """The run folder's name: a hash of the recipe, so the app and the CLI share runs."""
    blob = json.dumps(cfg.to_dict(), sort_keys=True, default=list).encode()
    return f"run-{hashlib.sha256(blob).hexdigest()[:12]}"


def train_run(
    cfg: TrainConfig,
    out_dir: Path,
    progress: Progress = lambda f, m: None,
    device: torch.device | str = "cpu",
    name: str = "",
    data: PreparedData | None = None,
) -> dict:
    """Train one model, writing a checkpoint per epoch and run.json into `out_dir`.

    Returns the run record (the contents of run.json); a finished run of the same recipe in
    `out_dir` is returned as it is. If `progress` raises, the folder is removed and the
    exception propagates: a stopped run leaves nothing behind. `data` is `prepare_data(cfg)`
    where the caller has it already (a Ray worker gets it by reference).
    """
    record = finished_run(cfg, out_dir)
    if record is not None:
        return record
    try:
        return _train(cfg, out_dir, progress, torch.device(device), name, data)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def finished_run(cfg: TrainConfig, out_dir: Path) -> dict | None:
    """The record of a complete run of this very recipe in `out_dir`, or None."""
    done = out_dir / "run.json"
    if not done.exists():
        return None
    record = read_json(done)
    same = record.get("status") == "complete" and record.get("config") == json.loads(json.dumps(cfg.to_dict()))
    return record if same else None


def _optimizer(model: nn.Module, cfg: TrainConfig, n_train: int):
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    total = cfg.epochs * math.ceil(n_train / cfg.batch_size)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))


def _train(
    cfg: TrainConfig, out_dir: Path, progress: Progress, device: torch.device, name: str, data: PreparedData | None
) -> dict:
    progress(0.0, f"loading {cfg.data.label}")
    data = data or prepare_data(cfg)
    spec = cfg.arch_spec(data.train)
    model = build_model(spec, seed=cfg.seed).to(device)
    opt, sched = _optimizer(model, cfg, len(data.train))
    record = _new_record(cfg, spec, data, out_dir.name, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    _checkpoint(out_dir, model, record, epoch=0, metrics=None)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    recorder = _gradient_recorder(model, data, record)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        loss, acc = _epoch(
            model,
            opt,
            sched,
            data.train,
            cfg,
            order_gen,
            device,
            lambda b, msg: progress((epoch - 1 + b) / cfg.epochs, f"epoch {epoch}/{cfg.epochs} · {msg}"),
            recorder,
        )
        if recorder is not None:
            _record_gradients(record, epoch, recorder[0].close_epoch())
        test_loss, test_acc, _ = evaluate(model, data.test, device)
        metrics = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        _checkpoint(out_dir, model, record, epoch, metrics)
        progress(
            epoch / cfg.epochs,
            f"epoch {epoch}/{cfg.epochs} done · loss {loss:.3f} · train acc {acc:.1%} · test acc {test_acc:.1%}",
        )
    record["status"] = "complete"
    write_json(out_dir / "run.json", record)
    return record


def fit_and_score(
    cfg: TrainConfig,
    train: ImageData,
    test: ImageData,
    device: torch.device | str = "cpu",
    progress: Progress = lambda f, m: None,
) -> float:
    """Train a fresh model of cfg's architecture on `train` (nothing saved) and return its best
    test accuracy over the epochs (ROAR's "predictive power")."""
    model = build_model(cfg.arch_spec(train), seed=cfg.seed).to(device)
    opt, sched = _optimizer(model, cfg, len(train))
    gen, best = torch.Generator().manual_seed(cfg.seed), 0.0
    for epoch in range(cfg.epochs):
        _epoch(model, opt, sched, train, cfg, gen, device, lambda b, m: progress((epoch + b) / cfg.epochs, m))
        best = max(best, evaluate(model, test, device)[1])
    return best


def _gradient_recorder(model: nn.Module, data: PreparedData, record: dict):
    """(GradientRecorder, noise mask on the device) for a run with label noise, else None: the
    paper's gradient accounting, summed while each epoch trains, goes into run.json's "gradients"
    (ALGORITHMS.md section 3)."""
    from lenscape.analysis.memorization import GradientRecorder

    if data.noise_mask is None or not bool(data.noise_mask.any()):
        return None
    recorder = GradientRecorder(model)
    record["gradients"] = {
        "names": recorder.names,
        "numel": [p.numel() for p in recorder.params],
        "epochs": [],
        "clean_norm": [],
        "noisy_norm": [],
        "cosine": [],
    }
    return recorder, data.noise_mask.to(next(model.parameters()).device)


def _record_gradients(record: dict, epoch: int, stats) -> None:
    rec = record["gradients"]
    rec["epochs"].append(epoch)
    for key in ("clean_norm", "noisy_norm", "cosine"):
        rec[key].append([float(v) for v in getattr(stats, key)])


def _epoch(model, opt, sched, data: ImageData, cfg: TrainConfig, gen: torch.Generator, device, report, recorder=None):
    """One epoch; with `recorder` (GradientRecorder, noise mask) the batch gradient is taken as the
    sum of its clean and noisy parts, each added to the recorder's epoch sums."""
    model.train()
    images, labels = on_device(data, device)
    perm = torch.randperm(len(data), generator=gen)
    n_batches = math.ceil(len(perm) / cfg.batch_size)
    total_loss, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
    for b in range(n_batches):
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = _batch(images, labels, idx, device)  # (B, C, H, W), (B,)
        with example_ids(model, idx):
            if cfg.adversarial:
                x = x + pgd_perturbation(model, x, y, cfg.adversarial, generator=gen)
            logits = model(x)
        opt.zero_grad(set_to_none=True)
        if recorder is None:
            loss = F.cross_entropy(logits, y)
            loss.backward()
        else:
            losses = F.cross_entropy(logits, y, reduction="none")
            loss = losses.detach().mean()
            recorder[0].step_gradients(losses, recorder[1][idx.to(recorder[1].device)])
        opt.step()
        sched.step()
        # running sums stay on the device; they are read (a sync) only when progress is reported
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        if b % 10 == 0 or b == n_batches - 1:
            seen = min((b + 1) * cfg.batch_size, len(perm))
            report(
                (b + 1) / n_batches,
                f"batch {b + 1}/{n_batches} · loss {float(total_loss) / seen:.3f} · acc {int(correct) / seen:.1%}",
            )
    return float(total_loss) / len(perm), int(correct) / len(perm)


def _new_record(cfg: TrainConfig, spec: ArchSpec, data: PreparedData, run_id: str, name: str) -> dict:
    noise = None
    if data.noise_mask is not None:
        idx = torch.nonzero(data.noise_mask).flatten()
        noise = {
            "fraction": cfg.label_noise,
            "seed": cfg.noise_seed,
            "indices": idx.tolist(),
            "original_labels": data.original_labels[idx].tolist(),
            "noisy_labels": data.train.labels[idx].tolist(),
        }
    return {
        "run_id": run_id,
        "name": name or cfg.describe(),
        "source": "trained",
        "created": time.time(),
        "arch": spec.to_dict(),
        "data": cfg.data.to_dict(),
        "classes": list(data.train.classes),
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "metrics": [],
        "checkpoints": [],
        "noise": noise,
        "n_train": len(data.train),
        "status": "running",
    }


def _checkpoint(out_dir: Path, model: nn.Module, record: dict, epoch: int, metrics: dict | None) -> None:
    fname = f"epoch_{epoch:03d}.safetensors"
    save_checkpoint(
        out_dir / fname,
        model,
        {"arch": record["arch"], "data": record["data"], "epoch": epoch, "run_id": record["run_id"]},
    )
    record["checkpoints"].append({"epoch": epoch, "file": fname, "fingerprint": model_fingerprint(model)})
    if metrics:
        record["metrics"].append(metrics)
    write_json(out_dir / "run.json", record)


PRESETS: dict[str, TrainConfig] = {
    "digits-mlp": TrainConfig(
        data=DataSpec(name="digits"), arch="mlp", widths=(128,), epochs=20, batch_size=64, lr=0.05
    ),
    "digits-cnn": TrainConfig(data=DataSpec(name="digits"), arch="cnn", epochs=15, batch_size=64, lr=0.05),
    "mnist-mlp": TrainConfig(data=DataSpec(name="mnist"), arch="mlp", widths=(256, 256), epochs=5, lr=0.05),
    "mnist-cnn": TrainConfig(data=DataSpec(name="mnist"), arch="cnn", epochs=5, lr=0.05),
    "mnist-cnn-noise10": TrainConfig(
        data=DataSpec(name="mnist"), arch="cnn", epochs=20, lr=0.05, label_noise=0.1, train_subset=10000
    ),
    # small enough to train in a minute on a CPU, large enough to memorize every flipped label (Memorization page)
    "digits-mlp-noise10": TrainConfig(
        data=DataSpec(name="digits"), arch="mlp", widths=(256, 256), epochs=100, batch_size=64, lr=0.05, label_noise=0.1
    ),
    "digits-mlp-tied-dropout": TrainConfig(
        data=DataSpec(name="digits"),
        arch="mlp",
        widths=(256, 256),
        epochs=100,
        batch_size=64,
        lr=0.05,
        label_noise=0.1,
        p_gen=0.5,
        p_mem=0.2,
    ),
    # L2 eps 3 in [0, 1] pixel units on 56x28 images: enough for the robust gradients to leave the null block
    "blockmnist-mlp": TrainConfig(data=DataSpec(name="blockmnist"), arch="mlp", widths=(256, 256), epochs=3),
    "blockmnist-mlp-robust": TrainConfig(
        data=DataSpec(name="blockmnist"),
        arch="mlp",
        widths=(256, 256),
        epochs=3,
        adversarial=PGDConfig(norm="l2", eps=3.0, steps=7),
    ),
    "blockmnist-cnn": TrainConfig(data=DataSpec(name="blockmnist"), arch="cnn", epochs=3),
    "blockmnist-cnn-robust": TrainConfig(
        data=DataSpec(name="blockmnist"), arch="cnn", epochs=3, adversarial=PGDConfig(norm="l2", eps=3.0, steps=7)
    ),
    "cifar10-resnet18": TrainConfig(data=DataSpec(name="cifar10"), arch="resnet18", epochs=30, lr=0.1, batch_size=128),
    "cifar10-resnet9-noise10": TrainConfig(
        data=DataSpec(name="cifar10"), arch="resnet9", epochs=50, lr=0.01, batch_size=512, warmup=0.1, label_noise=0.1
    ),
    "cifar10-resnet9-tied-dropout": TrainConfig(
        data=DataSpec(name="cifar10"),
        arch="resnet9",
        epochs=50,
        lr=0.01,
        batch_size=512,
        warmup=0.1,
        label_noise=0.1,
        p_gen=0.5,
        p_mem=0.2,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
