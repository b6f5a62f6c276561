"""The class demo: a few small models and one result per view, computed ahead
(`python -m models warm --preset teaching`, or the button on Home) so that a live demo opens on
pictures instead of progress bars.

Each tour step's job is built exactly as its view builds its default job, so "explore this in the
view" finds the same stored result (the Saliency Maps tab, the Memorization overview, ...)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.activations import hidden_layers
from analysis.saliency import SaliencyConfig
from backend.jobs import Job, JobStatus, job, ref
from backend.landscape_tasks import InterpolationConfig
from backend.memorization_tasks import SweepConfig
from backend.saliency_tasks import GridConfig
from backend.similarity_tasks import LayerMatrixConfig
from models.data import load_data, stratified
from models.paths import runs_dir
from models.training import TrainConfig, preset, run_id_for
from models.zoo import load_model

TEACHING = (("digits-mlp", (0, 1)), ("digits-mlp-noise10", (0,)))   # preset, seeds
SALIENCY_METHODS = ("gradient", "integrated_gradients", "smoothgrad")  # the Maps tab's default
PER_PAGE = 6                                                           # the Maps tab's first page


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    page: str                     # the view that explores it further
    tab: str | None
    text: str                     # two or three sentences for the class


STEPS = (
    Step("saliency", "1 · Which pixels matter?", "pages/2_Saliency.py", "Maps",
         "Each map colours the pixels the model's prediction is most sensitive to. The gradient is noisy; "
         "Integrated Gradients and SmoothGrad average it along a path or over noisy copies and look more like the "
         "digit. Ask the class: does a bright map prove the model *uses* those pixels?"),
    Step("similarity", "2 · Do two seeds learn the same thing?", "pages/5_Similarity.py", "Layers × layers",
         "The same recipe trained from two random seeds, compared layer by layer with linear CKA (1 = the same "
         "representation up to rotation and scale). The bright diagonal says corresponding layers agree, although "
         "the individual neurons do not."),
    Step("landscape", "3 · What lies between two solutions?", "pages/6_Loss_landscape.py", "Interpolation",
         "Walk in a straight line through weight space from seed 0's weights (α = 0) to seed 1's (α = 1). "
         "The loss rises in between: two good solutions are separated by a barrier, unless the network is wide "
         "enough to connect them."),
    Step("memorization", "4 · What does memorizing look like?", "pages/4_Memorization.py", "Overview",
         "10% of the training labels were flipped on purpose. The clean examples are learnt within a few epochs; "
         "the flipped ones only later, one by one, while test accuracy stops improving: the network memorizes "
         "them. The gallery shows examples it now predicts with the wrong label it was taught."),
)


def train_configs() -> list[TrainConfig]:
    return [preset(name, seed=s) for name, seeds in TEACHING for s in seeds]


def missing() -> list[TrainConfig]:
    """The demo's models not in the workspace yet."""
    return [c for c in train_configs() if not (runs_dir() / run_id_for(c) / "run.json").exists()]


def tour_jobs() -> dict[str, Job]:
    """{step key: the job whose stored result the step shows}; the demo's models must exist."""
    mlp0, mlp1, noisy = (load_model(run_id_for(c)) for c in train_configs())
    r0, r1, rn = ref(mlp0), ref(mlp1), ref(noisy)
    test = load_data(mlp0.data, "test")
    indices = tuple(int(i) for i in stratified(np.arange(len(test)), test.labels.numpy())[:PER_PAGE])
    mean = tuple(load_data(mlp0.data, "train").mean)
    methods = tuple(SaliencyConfig(method=m, target="predicted", baseline_mean=mean) for m in SALIENCY_METHODS)
    layers = tuple(hidden_layers(mlp0.model))
    return {
        "saliency": job("saliency", GridConfig(model=r0, indices=indices, methods=methods), (r0,),
                        f"saliency maps of {mlp0.name}"),
        "similarity": job("layer_similarity", LayerMatrixConfig(a=r0, b=r1, layers_a=layers, layers_b=layers), (r0, r1),
                          f"Linear CKA: {mlp0.name} × {mlp1.name}"),
        "landscape": job("landscape_interpolation", InterpolationConfig(a=r0, b=r1), (r0, r1),
                         f"interpolation {mlp0.name} → {mlp1.name}"),
        "memorization": job("memorization_overview", SweepConfig(model=rn), (rn,), f"overview of {noisy.name}"),
    }


def warm(runner, say: Callable[[str], None] = print, timeout: float = 1800) -> dict[str, str]:
    """Train what is missing, then compute every step's result (each stored under its own job id,
    so a later request, from the tour or a view, finds it). Returns {step: job id}."""
    from backend.tasks import train_jobs

    start = time.perf_counter()
    todo = missing()
    ids = [runner.submit(j) for c in todo for j in train_jobs(c, [c.seed])]
    for i, job_id in enumerate(ids):
        say(f"training {i + 1}/{len(ids)}")
        _wait(runner, job_id, timeout)
    jobs = tour_jobs()
    done = {}
    for key, j in jobs.items():
        say(f"computing the {key} step")
        done[key] = runner.submit(j)
        _wait(runner, done[key], timeout)
    say(f"the class demo is ready ({time.perf_counter() - start:.0f} s)")
    return done


def _wait(runner, job_id: str, timeout: float) -> None:
    status = runner.wait(job_id, timeout)
    if status != JobStatus.DONE:
        raise RuntimeError(f"job {job_id} ended {status.value}: {runner.error(job_id)}")
