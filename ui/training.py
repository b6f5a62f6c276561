"""The training form: a preset or a recipe of one's own, for one or several seeds."""

from __future__ import annotations

import json
from dataclasses import replace

import streamlit as st

from lenscape.models.attacks import PGDConfig
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.training import PRESETS, SCHEDULES, TrainConfig, parse_seeds
from lenscape.ui.common import adopt_model, plain, plot_text, run_safely
from lenscape.ui.figures import CONFIG, training_curves

ARCH_LABELS = {
    "mlp": "MLP",
    "cnn": "Small CNN",
    "resnet18": "ResNet-18 (CIFAR)",
    "resnet9": "ResNet-9",
    "lenet": "LeNet (Captum tutorial)",
}


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.replace(" ", "").split(",") if w)
    except ValueError:
        raise InvalidInputError(f"widths look like '256, 128'; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise InvalidInputError(f"widths must be positive; got {text!r}")
    return widths


def train_form(spec: DataSpec, key: str = "train") -> tuple[TrainConfig, list[int]] | None:
    presets = {n: p for n, p in PRESETS.items() if p.data.name == spec.name}

    # a preset whose architecture was changed says so in the label (not in its options: the browser
    # sends an option's text back, so that text must not change)
    was = st.session_state.get(f"{key}.preset", next(iter(presets), "custom"))
    arch_now = st.session_state.get(f"{key}.arch.{was}")
    label = (
        "Recipe"
        if was not in presets or arch_now in (None, presets[was].arch)
        else f"Recipe: preset {was} with {ARCH_LABELS.get(arch_now, arch_now)} instead of "
        f"{ARCH_LABELS.get(presets[was].arch, presets[was].arch)}"
    )
    choice = st.selectbox(
        label,
        [*presets, "custom"],
        key=f"{key}.preset",
        format_func=lambda n: "Custom (start from defaults)" if n == "custom" else f"Preset: {n}",
    )
    base = replace(presets.get(choice, TrainConfig()), data=spec)
    # not a form: the fields that apply follow the choices (widths for an MLP, PGD settings when
    # adversarial training is on, p_gen/p_mem with tied dropout)
    with st.container(border=True):
        c = st.columns(4)
        arch = c[0].selectbox(
            "Architecture",
            list(ARCH_LABELS),
            list(ARCH_LABELS).index(base.arch),
            format_func=ARCH_LABELS.get,
            key=f"{key}.arch.{choice}",
        )
        widths = (
            c[1].text_input(
                "MLP widths",
                ", ".join(map(str, base.widths)),
                key=f"{key}.widths.{choice}",
                help="Hidden layer widths, e.g. 256, 256",
            )
            if arch == "mlp"
            else ""
        )
        batchnorm = (
            c[1].checkbox("With BatchNorm", base.batchnorm, key=f"{key}.bn.{choice}")
            if arch == "cnn"
            else base.batchnorm
        )
        seeds = c[3].text_input("Seeds (e.g. 0 or 0-4)", str(base.seed), key=f"{key}.seeds.{choice}")
        c = st.columns(5)
        epochs = c[0].number_input("Epochs", 1, 500, base.epochs, key=f"{key}.epochs.{choice}")
        batch = c[1].number_input("Batch size", 1, 4096, base.batch_size, key=f"{key}.batch.{choice}")
        lr = c[2].number_input("Learning rate", 1e-5, 10.0, base.lr, format="%.4f", key=f"{key}.lr.{choice}")
        schedule = c[3].selectbox("Schedule", SCHEDULES, SCHEDULES.index(base.schedule), key=f"{key}.sched.{choice}")
        subset = c[4].number_input("Training subset (0 = all)", 0, 10**7, base.train_subset, key=f"{key}.sub.{choice}")
        c = st.columns(4)
        noise = c[0].slider(
            "Label noise",
            0.0,
            0.5,
            base.label_noise,
            0.01,
            key=f"{key}.noise.{choice}",
            help="Fraction of training labels changed to another class (Maini et al.).",
        )
        adv = c[1].checkbox("Adversarial training (PGD)", base.adversarial is not None, key=f"{key}.adv.{choice}")
        pgd = base.adversarial or PGDConfig()
        norm, eps, steps = pgd.norm, pgd.eps, pgd.steps
        if adv:
            norm = c[2].selectbox(
                "PGD norm", ["l2", "linf"], ["l2", "linf"].index(pgd.norm), key=f"{key}.norm.{choice}"
            )
            c2 = c[3].columns(2)
            eps = c2[0].number_input("ε", 0.001, 10.0, pgd.eps, format="%.3f", key=f"{key}.eps.{choice}")
            steps = c2[1].number_input("Steps", 1, 50, pgd.steps, key=f"{key}.steps.{choice}")
        c = st.columns(3)
        tied = c[0].checkbox(
            "Example-tied dropout",
            base.p_gen > 0,
            key=f"{key}.tied.{choice}",
            help="Maini et al.: a share of channels always on, the rest tied to each example.",
        )
        p_gen, p_mem = base.p_gen or 0.5, base.p_mem or 0.2
        if tied:
            p_gen = c[1].number_input(
                "p_gen",
                0.01,
                0.99,
                p_gen,
                key=f"{key}.pgen.{choice}",
                help="Share of channels always on (generalization)",
            )
            p_mem = c[2].number_input(
                "p_mem",
                0.01,
                1.0,
                p_mem,
                key=f"{key}.pmem.{choice}",
                help="Chance each example keeps each remaining (memorization) channel",
            )

        def build() -> tuple[TrainConfig, list[int]]:
            cfg = replace(
                base,
                arch=arch,
                widths=parse_widths(widths) if arch == "mlp" else base.widths,
                batchnorm=batchnorm,
                epochs=int(epochs),
                batch_size=int(batch),
                lr=float(lr),
                schedule=schedule,
                train_subset=int(subset),
                label_noise=float(noise),
                p_gen=float(p_gen) if tied else 0.0,
                p_mem=float(p_mem) if tied else 0.0,
                adversarial=PGDConfig(norm=norm, eps=float(eps), steps=int(steps)) if adv else None,
            )
            return cfg, parse_seeds(seeds)

        submitted = st.button("Train", type="primary", key=f"{key}.run")
        try:  # under the button: timing a step takes a moment, once
            recipe = build()
        except InvalidInputError:
            recipe = None  # said when Train is pressed
        try:
            if recipe is not None:
                st.caption(about_recipe(recipe[0], presets.get(choice), choice, len(recipe[1])))
        except InvalidInputError as exc:  # e.g. an architecture these images do not fit
            st.warning(plain(exc))
    return run_safely(build, "Training recipe") if submitted else None


CHANGES = {
    "arch": "architecture",
    "widths": "widths",
    "batchnorm": "BatchNorm",
    "epochs": "epochs",
    "batch_size": "batch size",
    "lr": "learning rate",
    "schedule": "schedule",
    "train_subset": "subset",
    "label_noise": "label noise",
    "adversarial": "adversarial training",
    "p_gen": "tied dropout",
}


def about_recipe(cfg: TrainConfig, preset_cfg: TrainConfig | None, name: str, seeds: int) -> str:
    """What will train: the preset and what differs from it, and about how long it takes here."""
    if preset_cfg is None:
        head = "Custom recipe"
    else:
        changed = [what for f, what in CHANGES.items() if getattr(cfg, f) != getattr(preset_cfg, f)]
        head = f"Preset **{name}**" + (f", changed: {', '.join(changed)}" if changed else "")
    seconds, n = estimated_seconds(cfg)
    if seconds is None:
        return head + "."
    per = f" per seed ({seeds} seeds)" if seeds > 1 else ""
    return (
        f"{head}. About **{_duration(seconds)}**{per} on this device: {n:,} images × {cfg.epochs} epochs, from a "
        f"timed training step of {ARCH_LABELS.get(cfg.arch, cfg.arch)}"
        + (f" with {cfg.adversarial.steps}-step PGD" if cfg.adversarial else "")
        + "."
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimated_seconds(cfg: TrainConfig) -> tuple[float | None, int]:
    """(seconds to train `cfg` here, training images): a timed step's seconds per example times the
    examples of every epoch (PGD's steps each cost about a forward and backward more), plus the test
    set's forward pass each epoch. None where the data cannot be read; InvalidInputError where the
    architecture does not fit the images."""
    from lenscape.ui.common import backend, cached_data

    try:
        train, test = cached_data(cfg.data, "train"), cached_data(cfg.data, "test")
    except InvalidInputError:
        return None, 0
    n = min(len(train), cfg.train_subset) if cfg.train_subset else len(train)
    arch = replace(cfg, p_gen=0.0, p_mem=0.0).arch_spec(train)  # tied dropout needs example ids; cost alike
    device = str(backend().device)
    probe = min(cfg.batch_size, 8 if device == "cpu" else 128)  # a CPU's cost per example hardly depends on it
    per = _seconds_per_example(json.dumps(arch.to_dict()), probe, device)
    passes = 1 + (cfg.adversarial.steps if cfg.adversarial else 0)
    return cfg.epochs * per * (n * passes + len(test) / 3), n


@st.cache_data(max_entries=32, show_spinner="Timing a training step on this device…")
def _seconds_per_example(arch_json: str, batch: int, device: str) -> float:
    """Seconds per example of one SGD step (forward, backward, update) on random inputs, after a
    warm-up step; keyed by the architecture, batch and device."""
    import time

    import torch

    from lenscape.models.architectures import ArchSpec, build_model

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(arch_json).items()}
    spec = ArchSpec(**fields)
    model = build_model(spec, seed=0).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, *spec.in_shape, device=device)
    y = torch.randint(spec.num_classes, (batch,), device=device)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    step()  # warm-up: first-call allocations are not the cost
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) / batch


def show_trained(records: list[dict]) -> None:
    adopted = st.session_state.setdefault("_trained.adopted", set())
    if records[0]["run_id"] not in adopted:  # once: the user may pick another model afterwards
        adopted.add(records[0]["run_id"])
        adopt_model(records[0])
    st.success(
        f"Trained {len(records)} model{'s' * (len(records) > 1)}; they are in the workspace below, and "
        f"**{plain(records[0]['name'])}** is the current model."
    )
    cols = st.columns(min(len(records), 3))
    for i, rec in enumerate(records):
        with cols[i % len(cols)]:
            st.plotly_chart(
                training_curves(rec["metrics"], plot_text(rec["name"])), config=CONFIG, key=f"curves.{rec['run_id']}"
            )
