"""Every job kind the app ships, registered explicitly (see backend/jobs.py for the four rules)."""

from __future__ import annotations

from lenscape.backend import (
    landscape_tasks,
    level_set_tasks,
    memorization_tasks,
    saliency_tasks,
    similarity_tasks,
    tasks,
)
from lenscape.backend.jobs import REGISTRY, Registry

KINDS = (
    tasks.train_job,
    tasks.summary_job,
    tasks.prepare_data_job,
    saliency_tasks.predict_job,
    saliency_tasks.saliency_job,
    saliency_tasks.null_mass_job,
    saliency_tasks.diffroar_job,
    saliency_tasks.randomization_job,
    similarity_tasks.layer_similarity_job,
    similarity_tasks.seed_similarity_job,
    similarity_tasks.convergence_job,
    similarity_tasks.all_metrics_job,
    similarity_tasks.projection_job,
    landscape_tasks.surface_job,
    landscape_tasks.interpolation_job,
    landscape_tasks.trajectory_job,
    landscape_tasks.hessian_job,
    landscape_tasks.convexity_job,
    level_set_tasks.traversal_job,
    memorization_tasks.overview_job,
    memorization_tasks.gradients_job,
    memorization_tasks.rewinding_job,
    memorization_tasks.retraining_job,
    memorization_tasks.flipping_job,
    memorization_tasks.tied_dropout_job,
)


def register_all(registry: Registry = REGISTRY) -> Registry:
    registry.register(*KINDS)
    return registry
