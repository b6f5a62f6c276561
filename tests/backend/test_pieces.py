"""Jobs made of independent pieces (ctx.map), on the local runner and on a Ray instance the test
starts on this machine: the same results bit for bit, progress as the fraction of pieces done,
cancel stops the pieces, a piece's error is the job's message, a worker killed mid-piece is retried
or fails the job cleanly, and identical requests compute once."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lenscape.backend.jobs import Job, JobCancelled, JobFailed, JobStatus, job_kind
from lenscape.backend.runner import LocalRunner
from lenscape.backend.store import ResultStore

ray = pytest.importorskip("ray")


@dataclass(frozen=True)
class PiecesConfig:
    name: str
    n: int = 6
    seconds: float = 0.0
    fail_at: int = -1  # this piece raises
    die_at: int = -1  # this piece's worker process exits; `die_times` times, then it works
    die_times: int = 1
    folder: str = ""  # pieces leave a marker file here (to see which ran, and how often)


def square_piece(i: int, seed_data, cfg: PiecesConfig, *, device) -> np.ndarray:
    folder = Path(cfg.folder) if cfg.folder else None
    if folder is not None:
        tries = len(list(folder.glob(f"piece{i}.*")))
        (folder / f"piece{i}.{tries}.{os.getpid()}").touch()
        if i == cfg.die_at and tries < cfg.die_times:
            os._exit(1)  # the worker process dies mid-piece
    if i == cfg.fail_at:
        raise ValueError(f"piece {i} exploded")
    time.sleep(cfg.seconds)
    g = np.random.default_rng([i, int(seed_data.sum())])
    return g.normal(size=4) + i**2


@job_kind("test_pieces")
def pieces_job(ctx, cfg: PiecesConfig) -> np.ndarray:
    shared = ctx.share(np.arange(1000))  # one copy in the object store for every piece
    out = ctx.map(square_piece, [(i, shared, cfg) for i in range(cfg.n)], "squares")
    return np.stack(out)


@pytest.fixture(autouse=True)
def own_kinds(register_kinds):
    register_kinds(pieces_job)


# Ray's workers cannot import this test module by name (pytest put its folder on the path only
# here): ship its functions by value
ray.cloudpickle.register_pickle_by_value(__import__(__name__))


@pytest.fixture
def any_runner(make_runner, tmp_path):
    r = make_runner(ResultStore(tmp_path / "store"), workers=2)
    yield r
    r.shutdown()


def _job(**kw) -> Job:
    return Job("test_pieces", PiecesConfig(**kw), fingerprints=("abc",), label="pieces")


def test_both_runners_give_the_same_pieces_in_order(any_runner, tmp_path):
    job_id = any_runner.submit(_job(name="same", n=7))
    assert any_runner.wait(job_id, 60) == JobStatus.DONE, any_runner.error(job_id)
    got = any_runner.result(job_id)
    # computed here, without any runner: the pieces in order
    want = np.stack([square_piece(i, np.arange(1000), PiecesConfig("same", 7), device="cpu") for i in range(7)])
    assert np.array_equal(got, want)


def test_progress_is_the_fraction_of_pieces_done(any_runner):
    job_id = any_runner.submit(_job(name="progress", n=4, seconds=0.4))
    seen = set()
    while any_runner.status(job_id) in (JobStatus.QUEUED, JobStatus.RUNNING):
        seen.add(round(any_runner.progress(job_id).fraction, 3))
        time.sleep(0.02)
    assert any_runner.status(job_id) == JobStatus.DONE
    assert seen - {0.0} <= {0.25, 0.5, 0.75, 1.0} and seen & {0.25, 0.5, 0.75}, seen


def _no_piece_can_start(runner_kind: str, timeout: float = 60) -> None:
    """Wait until no piece of a cancelled job is left to start. Locally there is nothing to wait
    for: pieces run in the job's thread, which has ended when the job is CANCELLED. On Ray, until
    the cluster's CPUs are all free again: a piece still running holds one, and a piece still
    queued would be given one (so without a working cancel they stay busy until every piece ran)."""
    if runner_kind != "ray":
        return
    deadline = time.time() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.time() < deadline, f"Ray's CPUs still busy {timeout} s after the cancel"
        time.sleep(0.02)


def test_cancel_stops_the_pieces_and_stores_nothing(any_runner, runner_kind, tmp_path):
    folder = tmp_path / "markers"
    folder.mkdir()
    job_id = any_runner.submit(_job(name="cancel", n=12, seconds=0.5, folder=str(folder)))
    deadline = time.time() + 60
    while not list(folder.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    any_runner.cancel(job_id)
    assert any_runner.wait(job_id, 60) == JobStatus.CANCELLED
    _no_piece_can_start(runner_kind)  # anything still running would have marked by now
    started = len(list(folder.iterdir()))
    assert started < 12, f"{started} of 12 pieces ran after the cancel"
    assert not any_runner.store.path(job_id).exists()
    with pytest.raises(JobCancelled):
        any_runner.result(job_id)


def test_a_piece_that_raises_fails_the_job_with_its_message(any_runner):
    job_id = any_runner.submit(_job(name="fails", n=5, fail_at=3))
    assert any_runner.wait(job_id, 60) == JobStatus.FAILED
    with pytest.raises(JobFailed, match="piece 3 exploded"):
        any_runner.result(job_id)
    assert "ValueError" in any_runner.store.get(job_id)["error"]
    assert not any_runner.store.path(job_id).exists()


def test_identical_requests_from_many_sessions_compute_once(any_runner, tmp_path):
    folder = tmp_path / "markers"
    folder.mkdir()
    job = _job(name="dedupe", n=3, seconds=0.3, folder=str(folder))
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda w=w: ids.append(any_runner.submit(job, watcher=f"session-{w}")))
        for w in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and any_runner.wait(ids[0], 60) == JobStatus.DONE
    assert sorted(p.name.split(".")[0] for p in folder.iterdir()) == ["piece0", "piece1", "piece2"]  # once each
    assert any_runner.submit(job) == ids[0] and len(list(folder.iterdir())) == 3  # stored: not run again


def test_a_killed_worker_is_retried_and_the_result_is_right(ray_instance, tmp_path):
    from lenscape.backend.runner import RayRunner

    folder = tmp_path / "markers"
    folder.mkdir()
    runner = RayRunner(ResultStore(tmp_path / "store"), "local")
    job_id = runner.submit(_job(name="killed", n=4, die_at=2, folder=str(folder)))
    assert runner.wait(job_id, 120) == JobStatus.DONE, runner.error(job_id)
    tries = sorted(p.name for p in folder.glob("piece2.*"))
    assert len(tries) == 2 and tries[0].split(".")[2] != tries[1].split(".")[2]  # two processes
    want = np.stack([square_piece(i, np.arange(1000), PiecesConfig("x"), device="cpu") for i in range(4)])
    assert np.array_equal(runner.result(job_id), want)
    runner.shutdown()


def test_a_worker_that_keeps_dying_fails_the_job_cleanly(ray_instance, tmp_path):
    from lenscape.backend.pieces import RETRIES
    from lenscape.backend.runner import RayRunner

    folder = tmp_path / "markers"
    folder.mkdir()
    runner = RayRunner(ResultStore(tmp_path / "store"), "local")
    job_id = runner.submit(_job(name="dies", n=3, die_at=1, die_times=99, folder=str(folder)))
    assert runner.wait(job_id, 120) == JobStatus.FAILED
    assert "worker died" in runner.error(job_id) and len(list(folder.glob("piece1.*"))) == RETRIES + 1
    assert not runner.store.path(job_id).exists()  # no result, corrupt or not
    with pytest.raises(JobFailed, match="worker died"):
        runner.result(job_id)
    runner.shutdown()


def _local_with_a_digits_mlp(tmp_path, monkeypatch):
    """A local runner over tmp_path/local and a digits MLP it trained into tmp_path/home."""
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset
    from lenscape.models.zoo import load_model

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "home"))
    local = LocalRunner(ResultStore(tmp_path / "local"))
    (train,) = train_jobs(preset("digits-mlp", epochs=3), [0])
    tid = local.submit(train)
    assert local.wait(tid, 120) == JobStatus.DONE
    return local, load_model(local.result(tid)["run_id"])


def test_diffroar_is_bit_identical_on_both_runners(ray_instance, tmp_path, monkeypatch):
    """DiffROAR's retrainings as pieces: the same accuracies from the local runner and from Ray."""
    from lenscape.analysis.roar import DiffRoarConfig
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.runner import RayRunner
    from lenscape.backend.saliency_tasks import DiffRoarJobConfig

    local, lm = _local_with_a_digits_mlp(tmp_path, monkeypatch)
    cfg = DiffRoarJobConfig(
        model=ref(lm), roar=DiffRoarConfig(methods=("gradient",), k_grid=(0.1, 0.5), seeds=(0, 1), epochs=2)
    )
    roar = job("diffroar", cfg, (ref(lm),), "DiffROAR")
    a = local.submit(roar)
    assert local.wait(a, 300) == JobStatus.DONE, local.error(a)
    remote = RayRunner(ResultStore(tmp_path / "ray"), "local")
    b = remote.submit(roar)
    assert remote.wait(b, 300) == JobStatus.DONE, remote.error(b)
    ra, rb = local.result(a), remote.result(b)
    assert np.array_equal(ra.acc_top, rb.acc_top) and np.array_equal(ra.acc_bottom, rb.acc_bottom)
    assert np.array_equal(ra.diff_mean, rb.diff_mean)
    assert remote.store.get(b)["device"].startswith("ray")
    local.shutdown(), remote.shutdown()


def test_a_landscape_surface_in_tiles_is_the_same_on_both_runners(ray_instance, tmp_path, monkeypatch):
    """The surface's grid split into tiles (pieces): Ray workers load the model with the safe
    loader and give the values the local runner gives, bit for bit; the point cache is per
    workspace, so the second runner recomputes every point."""
    from lenscape.analysis.landscape import DirectionConfig
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.landscape_tasks import TILE_POINTS, EvalSet, SurfaceConfig
    from lenscape.backend.runner import RayRunner

    local, lm = _local_with_a_digits_mlp(tmp_path, monkeypatch)
    cfg = SurfaceConfig(model=ref(lm), directions=DirectionConfig(seed=3), resolution=7, data=EvalSet(n_examples=300))
    assert 7 * 7 > 2 * TILE_POINTS  # several tiles
    surface = job("landscape_surface", cfg, (ref(lm),), "surface")
    a = local.submit(surface)
    assert local.wait(a, 300) == JobStatus.DONE, local.error(a)
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "home2"))  # an empty point cache for the second runner
    import shutil

    shutil.copytree(tmp_path / "home" / "runs", tmp_path / "home2" / "runs")
    remote = RayRunner(ResultStore(tmp_path / "ray"), "local")
    b = remote.submit(surface)
    assert remote.wait(b, 300) == JobStatus.DONE, remote.error(b)
    sa, sb = local.result(a), remote.result(b)
    assert sb.reused == 0 and np.array_equal(sa.loss, sb.loss) and np.array_equal(sa.accuracy, sb.accuracy)
    local.shutdown(), remote.shutdown()


def _remote(tmp_path, name="ray"):
    from lenscape.backend.runner import RayRunner

    return RayRunner(ResultStore(tmp_path / name), "local")


def _both(local, remote, the_job, timeout=300):
    """The job's result from the local runner and from Ray."""
    out = []
    for r in (local, remote):
        job_id = r.submit(the_job)
        assert r.wait(job_id, timeout) == JobStatus.DONE, r.error(job_id)
        out.append(r.result(job_id))
    return out


def test_training_is_one_piece_with_the_same_weights_on_both_runners_and_seeds_train_side_by_side(
    ray_instance, tmp_path, monkeypatch, request
):
    """A training run is a piece: on Ray the worker gets the data by reference and sends the run's
    files back, which land in the workspace whole; every checkpoint's weights match the local run's.
    The seeds of one request train at once (2 workers), and the bar moves inside the run."""
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset
    from lenscape.models.zoo import load_model

    import torch

    # a run pins the app's torch threads (its bits depend on them) and asks Ray for as many CPUs:
    # one here, so that this 2-CPU instance trains two seeds at once
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    cfg = preset("digits-mlp", epochs=150)  # long enough (~3 s) for the bar to be read mid-run
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "a"))
    local = LocalRunner(ResultStore(tmp_path / "a" / "store"))
    (want,) = _both_one(local, train_jobs(cfg, [0])[0])
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "b"))
    remote = _remote(tmp_path / "b")
    ids = [remote.submit(j) for j in train_jobs(cfg, [0, 1])]
    fractions = set()
    while any(remote.status(i) in (JobStatus.QUEUED, JobStatus.RUNNING) for i in ids):
        fractions.add(round(remote.progress(ids[0]).fraction, 3))
        time.sleep(0.02)
    assert [remote.status(i) for i in ids] == [JobStatus.DONE] * 2, [remote.error(i) for i in ids]
    got = remote.result(ids[0])
    assert [c["fingerprint"] for c in got["checkpoints"]] == [c["fingerprint"] for c in want["checkpoints"]]
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in got["metrics"]] == [
        {k: v for k, v in m.items() if k != "seconds"} for m in want["metrics"]
    ]
    assert load_model(got["run_id"]).fingerprint == got["checkpoints"][-1]["fingerprint"]  # written whole, readable
    assert not list((tmp_path / "b" / "runs").glob(".*incoming*"))
    a, b = (remote.store.get(i) for i in ids)
    print(f"\nseeds trained in {a['finished'] - a['started']:.1f} and {b['finished'] - b['started']:.1f} s")
    assert a["started"] < b["finished"] and b["started"] < a["finished"], "the two seeds did not overlap"
    assert {f for f in fractions if 0 < f < 1}, f"the bar only jumped: {sorted(fractions)}"
    local.shutdown(), remote.shutdown()


def _both_one(runner, the_job, timeout=300):
    job_id = runner.submit(the_job)
    assert runner.wait(job_id, timeout) == JobStatus.DONE, runner.error(job_id)
    return (runner.result(job_id),)


def test_saliency_maps_in_image_chunks_are_the_whole_set_s_maps_on_both_runners(ray_instance, tmp_path, monkeypatch):
    """Methods × chunks of images are pieces. SmoothGrad draws each image's noise from its position,
    so chunks give the whole set's maps; both runners give the same bits."""
    import torch

    from lenscape.analysis.saliency import SaliencyConfig, compute_saliency
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.saliency_tasks import SALIENCY_PIECE, GridConfig
    from lenscape.models.data import load_data

    local, lm = _local_with_a_digits_mlp(tmp_path, monkeypatch)
    methods = (
        SaliencyConfig(method="smoothgrad", n_samples=3, seed=5),
        SaliencyConfig(method="integrated_gradients", n_steps=8),
    )
    indices = tuple(range(3, 43))
    assert len(indices) > 2 * SALIENCY_PIECE
    grid = job("saliency", GridConfig(model=ref(lm), indices=indices, methods=methods), (ref(lm),))
    here, there = _both(local, _remote(tmp_path), grid)
    data = load_data(lm.data, "test")
    x, y = data.x(torch.tensor(indices)), data.labels[list(indices)]
    for m, a, b in zip(methods, here, there):
        whole = compute_saliency(lm.model, x, y, m)  # one call, no pieces
        assert np.array_equal(a.attributions, b.attributions) and np.array_equal(a.delta, b.delta)
        np.testing.assert_allclose(a.attributions, whole.attributions, rtol=1e-5, atol=1e-7)
        assert np.array_equal(a.predictions, whole.predictions) and np.array_equal(a.targets, whole.targets)
        assert a.attributions.shape == (40, 1, 8, 8) and a.config == m


def test_your_own_model_s_maps_come_from_ray_workers_that_never_read_the_workspace(ray_instance, tmp_path, monkeypatch):
    """A model from the user's code (a residual CNN and a tiny ViT of tests.custom_nets, unknown to the zoo),
    added with add_model: Ray workers rebuild it from its reference and compute the same maps.
    The Ray instance was started for another workspace, whose trusted references do not hold these: the
    workers build what the app sends (the app checked the reference when it loaded the model)."""
    import torch

    import lenscape
    from lenscape.analysis.saliency import SaliencyConfig
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.saliency_tasks import GridConfig
    from lenscape.models.zoo import load_model
    from tests import custom_nets

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    nets = {
        "tests.custom_nets:residual_cnn": (custom_nets.residual_cnn(width=4, blocks=1), {"width": 4, "blocks": 1}),
        "tests.custom_nets:tiny_vit": (custom_nets.tiny_vit(depth=1), {"depth": 1}),
    }
    local = LocalRunner(ResultStore(tmp_path / "local"))
    remote = _remote(tmp_path)
    methods = (SaliencyConfig(method="gradient"), SaliencyConfig(method="integrated_gradients", n_steps=4))
    for arch, (net, kwargs) in nets.items():
        run_id = lenscape.add_model(net, custom_nets.DigitsDataset(), architecture=arch, kwargs=kwargs)
        lm = load_model(run_id)
        grid = job("saliency", GridConfig(model=ref(lm), indices=tuple(range(20)), methods=methods), (ref(lm),))
        here, there = _both(local, remote, grid)
        for a, b in zip(here, there):
            # the same maps to float rounding (in one suite run a worker's differed in the 7th digit: its
            # kernels' summation order is not the test process's); the same predictions exactly
            np.testing.assert_allclose(b.attributions, a.attributions, rtol=1e-5, atol=1e-7)
            assert np.array_equal(a.predictions, b.predictions)
            assert a.attributions.shape == (20, 1, 8, 8) and float(np.abs(a.attributions).sum()) > 0


def test_a_seed_matrix_in_pairs_is_linear_cka_on_both_runners(ray_instance, tmp_path, monkeypatch):
    """Each cell of the seeds × seeds matrix is a piece; checked against CKA written out in NumPy."""
    from lenscape.analysis.activations import extract
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.similarity_tasks import ActSpec, SeedMatrixConfig
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.data import load_data
    from lenscape.models.training import preset
    from lenscape.models.zoo import load_model

    local, lm0 = _local_with_a_digits_mlp(tmp_path, monkeypatch)
    (more,) = train_jobs(preset("digits-mlp", epochs=3), [1])
    (rec,) = _both_one(local, more)
    lms = [lm0, load_model(rec["run_id"])]
    refs = tuple(ref(m) for m in lms)
    cfg = SeedMatrixConfig(models=refs, layer="relu1", metric="linear_cka", acts=ActSpec(n_examples=200))
    here, there = _both(local, _remote(tmp_path), job("seed_similarity", cfg, refs))
    assert np.array_equal(here.values, there.values) and np.array_equal(here.baseline, there.baseline)
    x = load_data(lms[0].data, "test").head(200).x()
    acts = [extract(m.model, x, ["relu1"], "pool")["relu1"].double().numpy() for m in lms]

    def cka(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))

    want = np.array([[cka(a, b) for b in acts] for a in acts])
    np.testing.assert_allclose(here.values, want, rtol=1e-5)
    assert 0.3 < want[0, 1] < 0.999


def test_neuron_flipping_in_batches_of_examples_is_the_same_on_both_runners(ray_instance, tmp_path, monkeypatch):
    """Batches of examples are pieces; an example's neurons do not depend on its batch, so the job
    matches flip_neurons over all of them at once."""
    from lenscape.analysis.memorization import FlipConfig, flip_neurons
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.memorization_tasks import FLIP_PIECE, FlipJobConfig
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset
    from lenscape.models.zoo import load_model, training_data

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "home"))
    local = LocalRunner(ResultStore(tmp_path / "local"))
    (rec,) = _both_one(local, train_jobs(preset("digits-mlp", epochs=5, label_noise=0.1), [0])[0])
    lm = load_model(rec["run_id"])
    examples = tuple(range(0, 2 * FLIP_PIECE + 3))
    cfg = FlipJobConfig(model=ref(lm), examples=examples, flip=FlipConfig(max_steps=8, batch_size=64), probe=200)
    here, there = _both(local, _remote(tmp_path), job("memorization_flipping", cfg, (ref(lm),)))
    assert here.neurons == there.neurons and np.array_equal(here.clean_acc, there.clean_acc)
    assert np.array_equal(here.test_acc, there.test_acc) and here.stopped == there.stopped
    data = training_data(lm)
    whole = flip_neurons(lm.model, data.train.images, data.train.labels, list(examples), cfg.flip)
    assert here.neurons == whole.neurons and np.array_equal(here.n_neurons, whole.n_neurons)
    assert here.examples.tolist() == list(examples) and sum(map(len, here.neurons)) > 0
