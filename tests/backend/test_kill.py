"""A server killed with kill -9 in the middle of a training, then started again: the job is
reported as interrupted, the half-written run is not offered as a model, and submitting the same
training again runs it to the end."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lenscape.backend.jobs import JobStatus
from lenscape.backend.runner import open_backend
from lenscape.backend.tasks import train_jobs
from lenscape.models.paths import runs_dir
from lenscape.models.training import preset
from lenscape.models.zoo import list_runs

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 120
SERVER = f"""
import time
from lenscape.backend.runner import open_backend
from lenscape.backend.tasks import train_jobs
from lenscape.models.training import preset
runner = open_backend()
(job,) = train_jobs(preset("digits-mlp", epochs={EPOCHS}), [0])
print(runner.submit(job), flush=True)
while True:
    time.sleep(1)
"""


def test_kill_9_mid_training_then_restart(lenscape_home):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SERVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        job_id = server.stdout.readline().strip()
        assert job_id, "the server did not start"
        deadline = time.monotonic() + 300
        ckpt = None
        scratch = Path(tempfile.gettempdir())  # a run trains in a scratch folder, then lands whole
        while time.monotonic() < deadline and server.poll() is None:
            ckpts = list(scratch.glob(f"lenscape-train-{server.pid}-*/*/epoch_003.safetensors"))
            if ckpts:
                ckpt = ckpts[0]
                break
            time.sleep(0.05)
        assert ckpt is not None, "training never reached epoch 3"
        os.kill(server.pid, signal.SIGKILL)  # mid-training, no chance to clean up
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    assert not (ckpt.parent / f"epoch_{EPOCHS:03d}.safetensors").exists()  # it really was cut short

    runner = open_backend()  # the restarted server
    try:
        assert runner.status(job_id) == JobStatus.FAILED
        assert "interrupted" in runner.error(job_id)
        assert list_runs() == [] and not list(runs_dir().glob("run-*"))  # the half-written run is not a model
        (job,) = train_jobs(preset("digits-mlp", epochs=EPOCHS), [0])
        assert runner.submit(job) == job_id  # the same work, submitted again
        assert runner.wait(job_id, 600) == JobStatus.DONE, runner.error(job_id)
        assert not ckpt.parent.parent.exists()  # the dead server's scratch was swept
        (rec,) = list_runs()
        assert len(rec["checkpoints"]) == EPOCHS + 1 and rec["status"] == "complete"
    finally:
        runner.shutdown()
