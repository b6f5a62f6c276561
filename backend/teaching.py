"""The class demo: a few small models and one result per view, computed ahead
(`lenscape warm --preset teaching`, or the button on Home) so that a live demo opens on
pictures instead of progress bars.

Each tour step's job is built exactly as its view builds its default job, so "explore this in the
view" finds the same stored result (the Saliency Maps tab, the Memorization overview, ...)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lenscape.analysis.activations import hidden_layers
from lenscape.analysis.level_sets import LSTConfig
from lenscape.analysis.saliency import SaliencyConfig
from lenscape.analysis.evaluation import evaluate
from lenscape.backend.jobs import Job, JobStatus, job, ref
from lenscape.backend.landscape_tasks import InterpolationConfig
from lenscape.backend.level_set_tasks import TraversalConfig
from lenscape.backend.memorization_tasks import SweepConfig
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.backend.similarity_tasks import LayerMatrixConfig
from lenscape.models.data import load_data, stratified
from lenscape.models.paths import runs_dir
from lenscape.models.training import TrainConfig, preset, run_id_for
from lenscape.models.zoo import load_model

# preset, seeds: two seeds of the small CNN (its layers differ enough for the similarity step's diagonal to
# show: linear CKA between two MLP seeds is 0.85-0.98 everywhere), and the MLP with 10% flipped labels
TEACHING = (("digits-cnn", (0, 1)), ("digits-mlp-noise10", (0,)))
SALIENCY_METHODS = ("gradient", "integrated_gradients", "smoothgrad")  # the Maps tab's default
PER_PAGE = 6  # the Maps tab's first page


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    page: str  # the view that explores it further
    tab: str | None
    text: str  # two or three sentences for the class


STEPS = (
    Step(
        "saliency",
        "1 · Which pixels matter?",
        "pages/2_Saliency.py",
        "Maps",
        "Each map colours the pixels the model's prediction is most sensitive to. The plain gradient is speckled "
        "and spills onto the black background; Integrated Gradients weighs it by each pixel's difference from a "
        "black image, so it sits on the digit's strokes; SmoothGrad averages it over noisy copies and is a little "
        "smoother. Ask the class: does a bright map prove the model *uses* those pixels?",
    ),
    Step(
        "similarity",
        "2 · Do two seeds learn the same thing?",
        "pages/5_Similarity.py",
        "Layers × layers",
        "The same small CNN trained from two random seeds, compared layer by layer with linear CKA (1 = the same "
        "representation up to rotation and scale). The bright diagonal says corresponding layers agree, although "
        "the individual neurons do not; the first convolution and the classifier layers share little.",
    ),
    Step(
        "landscape",
        "3 · What lies between two solutions?",
        "pages/6_Loss_landscape.py",
        "Interpolation",
        "Walk in a straight line through weight space from seed 0's weights (α = 0) to seed 1's (α = 1). "
        "The loss rises in between: two good solutions are separated by a barrier, unless the network is wide "
        "enough to connect them.",
    ),
    Step(
        "level_sets",
        "4 · Where is the model blind?",
        "pages/3_Level_sets.py",
        None,
        "Start from a correctly classified 0 and walk toward images of other digits, moving only in directions "
        "that leave the model's confidence in '0' unchanged. The outputs come most of the way to the targets "
        "(half the distance, and from no likeness to a clear one), yet the model still calls them 0 with the "
        "same confidence: large regions of input space it cannot tell apart.",
    ),
    Step(
        "memorization",
        "5 · What does memorizing look like?",
        "pages/4_Memorization.py",
        "Overview",
        "10% of the training labels were flipped on purpose. The clean examples are learnt within a few epochs; "
        "the flipped ones only later, one by one, while test accuracy stops improving: the network memorizes "
        "them. The gallery shows examples it now predicts with the wrong label it was taught.",
    ),
)


def train_configs() -> list[TrainConfig]:
    return [preset(name, seed=s) for name, seeds in TEACHING for s in seeds]


def missing() -> list[TrainConfig]:
    """The demo's models not in the workspace yet."""
    return [c for c in train_configs() if not (runs_dir() / run_id_for(c) / "run.json").exists()]


def tour_jobs() -> dict[str, Job]:
    """{step key: the job whose stored result the step shows}; the demo's models must exist."""
    seed0, seed1, noisy = (load_model(run_id_for(c)) for c in train_configs())
    r0, r1, rn = ref(seed0), ref(seed1), ref(noisy)
    test = load_data(seed0.data, "test")
    indices = tuple(int(i) for i in stratified(np.arange(len(test)), test.labels.numpy())[:PER_PAGE])
    mean = tuple(load_data(seed0.data, "train").mean)
    methods = tuple(SaliencyConfig(method=m, target="predicted", baseline_mean=mean) for m in SALIENCY_METHODS)
    layers = tuple(hidden_layers(seed0.model))
    source, targets = _level_set_pair(seed0, test)
    return {
        "saliency": job(
            "saliency", GridConfig(model=r0, indices=indices, methods=methods), (r0,), f"saliency maps of {seed0.name}"
        ),
        "similarity": job(
            "layer_similarity",
            LayerMatrixConfig(a=r0, b=r1, layers_a=layers, layers_b=layers),
            (r0, r1),
            f"Linear CKA: {seed0.name} × {seed1.name}",
        ),
        "landscape": job(
            "landscape_interpolation",
            InterpolationConfig(a=r0, b=r1),
            (r0, r1),
            f"interpolation {seed0.name} → {seed1.name}",
        ),
        "level_sets": job(
            "level_set_traversal",
            TraversalConfig(model=r0, source=source, targets=targets, lst=_page_lst(), data=seed0.data.key()),
            (r0,),
            f"level set traversal of {seed0.name} from #{source}",
        ),
        "memorization": job("memorization_overview", SweepConfig(model=rn), (rn,), f"overview of {noisy.name}"),
    }


def view_jobs() -> list[Job]:
    """What the views need besides a step's result to open on it: the test-set predictions the
    Saliency and Level sets pages pick images by (a link from the tour then computes nothing)."""
    from lenscape.backend.saliency_tasks import PredictConfig

    seed0 = load_model(run_id_for(train_configs()[0]))
    r0 = ref(seed0)
    return [job("predict", PredictConfig(model=r0, split="test"), (r0,), f"test predictions of {seed0.name}")]


def _level_set_pair(lm, test) -> tuple[int, tuple[int, ...]]:
    """The Level sets page's default pick: the first correctly classified image of class 0, and the
    first of classes 1, 2 and 3 classified correctly with p > 0.6 (correctly, where none is)."""
    probs = evaluate(lm.model, test.x(), probabilities=True).probabilities.numpy()
    labels = test.labels.numpy()
    correct = probs.argmax(1) == labels
    sure = correct & (probs[np.arange(len(labels)), labels] > 0.6)
    source = int(np.flatnonzero(correct & (labels == 0))[0])
    targets = []
    for k in (1, 2, 3):
        pool = np.flatnonzero(sure & (labels == k))
        pool = pool if len(pool) else np.flatnonzero(correct & (labels == k))
        if len(pool):
            targets.append(int(pool[0]))
    return source, tuple(targets)


def _page_lst() -> LSTConfig:
    """The Level sets page's default settings, computed as its form computes them."""
    b = LSTConfig()
    return LSTConfig(
        eta=float(b.eta),
        steps=int(b.steps),
        delta=float(b.delta),
        eps_adv=float(b.eps_adv * 255) / 255,
        jitter=float(b.jitter * 255) / 255,
        seed=0,
        log_every=max(1, -(-int(b.steps) // 6)),
    )


def warm(runner, say: Callable[[str], None] = print, timeout: float = 1800) -> dict[str, str]:
    """Train what is missing, then compute every step's result (each stored under its own job id,
    so a later request, from the tour or a view, finds it). Returns {step: job id}."""
    from lenscape.backend.tasks import train_jobs

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
    for j in view_jobs():
        _wait(runner, runner.submit(j), timeout)
    say(f"the class demo is ready ({time.perf_counter() - start:.0f} s)")
    return done


def _wait(runner, job_id: str, timeout: float) -> None:
    status = runner.wait(job_id, timeout)
    if status != JobStatus.DONE:
        raise RuntimeError(f"job {job_id} ended {status.value}: {runner.error(job_id)}")
