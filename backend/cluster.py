"""Where a job's pieces go when the server runs on a Ray cluster: connecting (or starting one
here), what the cluster offers, and warming its workers. Only whoever starts the server chooses
the cluster (LENSCAPE_RAY_ADDRESS); a page shows it and cannot change it."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future

import torch

from lenscape.backend.pieces import _threads


def ray_address() -> str | None:
    """LENSCAPE_RAY_ADDRESS, set by whoever starts the server: "auto" (the cluster this machine is a
    node of), "host:port" (a cluster's GCS address, reachable from here), or "local" (start one
    here); unset or empty: no Ray. A page cannot change it."""
    value = os.environ.get("LENSCAPE_RAY_ADDRESS", "").strip()
    return value or None


class RayUnavailable(RuntimeError):
    """The configured Ray cluster could not be used (unreachable, refused, or timed out)."""


def connect_timeout() -> float:
    try:
        return max(float(os.environ.get("LENSCAPE_RAY_TIMEOUT", "60")), 1.0)
    except ValueError:
        return 60.0


def connect(address: str, workers: int | None = None, timeout: float | None = None) -> dict:
    """Connect to (or start, for "local") a Ray cluster; returns what it offers, or RayUnavailable
    within `timeout` seconds (LENSCAPE_RAY_TIMEOUT, default 60). The workers get this checkout on
    their import path and the LENSCAPE_* settings (on a multi-node cluster, install Lenscape on
    every node instead: see the README)."""
    import re
    from concurrent.futures import TimeoutError as FutureTimeout

    if address.startswith("ray://"):
        raise RayUnavailable(
            "Ray Client addresses (ray://) are not supported: run Lenscape on a node of the cluster "
            "with LENSCAPE_RAY_ADDRESS=auto, or give the cluster's GCS address as host:port"
        )
    if not (address in ("local", "auto") or re.fullmatch(r"[\w.\-]+:\d+", address)):
        raise RayUnavailable(f"a Ray address is 'local', 'auto' or 'host:port'; got {address!r}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RayUnavailable(
            'Ray is not installed here: pip install "lenscape[cluster]" (or pip install -e ".[cluster]" '
            "in a checkout), then start the app again"
        ) from None
    timeout = connect_timeout() if timeout is None else timeout
    attempt = _RayThread()  # a thread of its own: one that hangs in ray.init is left behind
    try:
        summary = attempt.submit(_connect, address, workers).result(timeout)
    except FutureTimeout:
        raise RayUnavailable(
            f"the Ray cluster {address!r} did not answer within {timeout:.0f} s (LENSCAPE_RAY_TIMEOUT)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - ray.init's many ways to fail
        raise RayUnavailable(
            f"could not use the Ray cluster {address!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
        ) from None
    global _RAY_THREAD
    _RAY_THREAD = attempt
    return summary


def _connect(address: str, workers: int | None) -> dict:
    import ray

    if ray.is_initialized() and _CONNECTED.get("address") not in (None, address):
        raise RuntimeError(
            f"this process is connected to the Ray cluster {_CONNECTED['address']!r}; restart the "
            f"app to use {address!r}"
        )
    if not ray.is_initialized():
        import lenscape

        root = os.path.dirname(os.path.dirname(os.path.abspath(lenscape.__file__)))  # where `import lenscape` works
        env = {
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
                **{k: v for k, v in os.environ.items() if k.startswith("LENSCAPE_") and k != "LENSCAPE_RAY_ADDRESS"},
            }
        }
        started = time.perf_counter()
        if address == "local":
            # the node's address is loopback (Ray versions that bind to the node address listen there
            # only; Ray 2.60's GCS and raylets still listen on every interface: see README)
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                runtime_env=env,
                logging_level="ERROR",
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, runtime_env=env, logging_level="ERROR", log_to_driver=False)
        _CONNECTED.update(address=address, seconds=time.perf_counter() - started)
    return _summary()


def exposed_ports() -> list[str]:
    """The local Ray services' listening addresses that are not loopback ("*:45517 (gcs_server)"):
    what a shared machine's other users or network can reach."""
    import subprocess

    try:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    ray_procs = ("gcs_server", "raylet", "ray::")
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and any(p in line for p in ray_procs):
            host = parts[3].rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "[::1]", "localhost"):
                found.append(parts[3])
    return found


def warm_up(wait: bool = False) -> None:
    """One small task per CPU of the cluster that imports what pieces use (torch and Lenscape's
    modules), so the first job does not pay for starting its workers. `wait`: until they are done."""
    import ray

    refs = [ray.remote(num_cpus=1)(_imports).remote() for _ in range(max(1, int(cluster_summary()["cpus"])))]
    if wait:
        ray.get(refs)


def _imports() -> int:
    import importlib

    # every job kind's module, and so every piece function; by name, so that code versions (which
    # follow a module's import statements) do not count the warm-up as a dependency of every kind
    importlib.import_module("lenscape.backend.kinds")

    # a few training steps of a small MLP and CNN, one thread, as a piece would: torch's kernels and
    # allocator set up in this worker before the first real piece
    from torch import nn

    with _threads(1, torch.device("cpu")):
        for net, shape in (
            (nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)), (256, 1, 28, 28)),
            (nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 30 * 30, 10)), (32, 3, 32, 32)),
        ):
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            for _ in range(10):
                loss = nn.functional.cross_entropy(net(torch.randn(shape)), torch.randint(0, 10, (shape[0],)))
                opt.zero_grad()
                loss.backward()
                opt.step()
    return os.getpid()


def cluster_summary() -> dict:
    """Nodes, CPUs and GPUs of the cluster this process is connected to."""
    return _RAY_THREAD.submit(_summary).result()


def _summary() -> dict:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "cpus": float(res.get("CPU", 0.0)), "gpus": float(res.get("GPU", 0.0))}


class _RayThread:
    """One long-lived daemon thread that runs what it is given, in order. Ray's cluster-state calls
    hang once the thread that called ray.init has ended (seen with Ray 2.60: Streamlit runs each
    script run on a new thread), so ray.init and those calls run on the thread that connected. A
    daemon, so that a connect left hanging (an unreachable cluster) does not hold the process open."""

    def __init__(self) -> None:
        import queue

        self._todo: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, name="lenscape-ray", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, args, future = self._todo.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._todo.put((fn, args, future))
        return future


_RAY_THREAD = _RayThread()
_CONNECTED: dict = {}
