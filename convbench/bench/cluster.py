"""Sweeps on a Dask cluster: each case one task, timed alone on the worker that runs it.

Dask distributed does the scheduling; this module only says what a benchmark needs of it:

* **Exclusive timing.** Every case holds the worker resource ``bench=1`` (plus any the
  experiment or the command line asks for, e.g. ``gpu=1``), and a worker offers ``bench=1``
  once, so no two cases are ever timed at once on one worker. Run one CPU worker per machine
  (or per pinned core set) and one GPU worker per GPU.
* **The worker's own identity.** A task measures with its worker's machine id, environment,
  GEMM peak and drift control (collected once per worker process), and every row names the
  worker that measured it.
* **Nothing lost.** The client appends each case's rows to the one run directory as its task
  finishes; ``--resume`` submits only cases with rows missing. A case whose worker died is
  retried once on another (a local cluster's scheduler allows one failure; give a remote
  scheduler ``distributed.scheduler.allowed-failures: 1``), and otherwise recorded as failed.
  Ctrl-C cancels what is outstanding and keeps what finished.
* **Same code everywhere.** Workers whose convbench, NumPy, Numba or Python version differs
  from the client's are refused before any case runs.
"""
from __future__ import annotations

import os
import platform
import socket
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

from .experiments import Case, Experiment
from .measure import SweepOptions, case_rows, run_case
from .rundir import RunDirectory
from .sweep import Progress, Quiet, case_weight

BENCH = {"bench": 1.0}  # held by every case: one case at a time per worker
CONNECT_SECONDS = 30


class ClusterError(ValueError):
    """The cluster cannot run the sweep (unreachable, no suitable worker, other versions)."""


def parse_resources(items: list[str] | None) -> dict[str, float]:
    """``["gpu=1", "big=2"]`` -> ``{"gpu": 1.0, "big": 2.0}``; a malformed item is an error."""
    out = {}
    for item in items or []:
        name, sep, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value <= 0:
            raise ClusterError(f"--resources: expected NAME=AMOUNT with AMOUNT > 0, got {item!r}")
        out[name.strip()] = value
    return out


def versions() -> dict[str, str]:
    """What must match between client and workers for their rows to be one run's."""
    import numba
    import numpy

    from .. import __version__

    return {"convbench": __version__, "numpy": numpy.__version__, "numba": numba.__version__,
            "python": ".".join(platform.python_version_tuple()[:2])}


def _worker_versions() -> dict[str, str]:
    return versions()  # looked up in the worker's own module, whatever the client patched


def worker_env(threads: int | None = None) -> dict[str, str]:
    """Environment for local worker processes: the benchmark settings the CLI applies to
    itself (set before the worker imports NumPy), and each worker's share of the cores."""
    from ..process import configure_for_benchmarks

    env = {k: v for k, v in configure_for_benchmarks().items() if isinstance(v, str)}
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    return env


@contextmanager
def connect(scheduler: str | None, local_workers: int | None) -> Iterator[object]:
    """A Dask client: of the scheduler at ``scheduler``, or of a new local cluster of
    ``local_workers`` processes (one thread each, ``bench=1`` each, the cores shared out)."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("running on a cluster needs Dask distributed: "
                           "pip install -e \".[distributed]\"") from None
    if local_workers:
        threads = max(1, (os.cpu_count() or 1) // local_workers)
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                   # its HTTP server on a free port: 8787 may be taken
                                   # (another cluster, a second run) and warns then
                                   resources=dict(BENCH), dashboard_address=":0",
                                   env=worker_env(threads))
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    with client:
        yield client


def check_workers(client, needed: dict[str, float]) -> list[str]:
    """The workers that can run a case; an error when none can or any runs other versions."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError):
        raise ClusterError(f"no worker joined the scheduler within {CONNECT_SECONDS} s") from None
    mine = versions()
    theirs = client.run(_worker_versions)
    wrong = [f"{addr} has {k} {v[k]}" for addr, v in sorted(theirs.items()) for k in mine
             if v.get(k) != mine[k]]
    if wrong:
        raise ClusterError("workers differ from this client (" + "; ".join(wrong[:4])
                           + (f"; {len(wrong) - 4} more" if len(wrong) > 4 else "")
                           + f"; here: {', '.join(f'{k} {v}' for k, v in mine.items())}): "
                           "install the same versions on every worker")
    workers = client.scheduler_info()["workers"]
    able = [addr for addr, info in workers.items()
            if all(info.get("resources", {}).get(r, 0) >= n for r, n in needed.items())]
    if not able:
        wanted = " ".join(f"{k}={v:g}" for k, v in needed.items())
        raise ClusterError(f"no worker offers the resources every case needs ({wanted}); "
                           f"start workers with: dask worker ADDRESS --nworkers 1 --nthreads 1 "
                           f"--resources \"{wanted}\"")
    return able


class _WorkerState:
    """What a worker process measures once: its environment, identity and drift control."""

    _state: "_WorkerState | None" = None

    def __init__(self, devices: list[str]) -> None:
        from .. import machine
        from . import environment, noise

        self.env = environment.collect()
        self.machine = machine.machine_id()
        self.control = noise.Control()
        if "cuda" in devices:
            from ..cuda import memory

            memory.install()

    @classmethod
    def get(cls, devices: list[str]) -> "_WorkerState":
        if cls._state is None:
            cls._state = cls(devices)
        return cls._state


def run_remote(case: Case, device: str, experiment: Experiment, options: SweepOptions,
               done: set) -> tuple[list[dict], dict, dict]:
    """The task: one case measured on this worker, with its own identity and control; the
    rows, their rounds and the worker's environment."""
    from distributed import get_worker

    from ..process import configure_for_benchmarks

    configure_for_benchmarks()
    state = _WorkerState.get(options.devices)
    mine = replace(options, machine=state.machine, control=state.control,
                   gemm_peak_gflops=state.env.get("gemm_peak_gflops"))
    rows, rounds = run_case(case, device, experiment, mine, done)
    worker = f"{socket.gethostname()} {get_worker().address}"
    for row in rows:
        row["worker"] = worker
    return rows, rounds, state.env


def sweep_on_cluster(client, experiment: Experiment, run: RunDirectory, options: SweepOptions,
                     needed: dict[str, float], progress: Progress | None = None,
                     task: Callable = run_remote) -> int:
    """Submit every case with rows missing (as ``task``, :func:`run_remote` but in tests);
    append each case's rows as its task finishes. Returns the number of rows written. The
    caller holds the directory's lock."""
    from distributed import as_completed

    progress = progress or Quiet()
    run.repair()
    done = run.done()
    remote = replace(options, machine="", control=None, gemm_peak_gflops=None)
    futures = {}
    for device in options.devices:
        for case in experiment.cases():
            weight = case_weight(case, experiment, options, progress.algorithms)
            if not case_rows(case, device, experiment, options, done):
                progress.advance(weight)
                continue
            mine = {d for d in done if d[:2] == (device, case.case_id)}
            future = client.submit(task, case, device, experiment, remote, mine,
                                   resources=needed, pure=False,
                                   key=f"convbench-{device}-{case.case_id}-{len(futures)}")
            futures[future] = (case, device, weight)
    written = 0
    progress.status(f"{len(futures)} cases submitted")
    try:
        for future in as_completed(futures):
            case, device, weight = futures[future]
            try:
                rows, rounds, env = future.result()
                run.add_machine(env)
            except Exception as exc:  # the worker died twice, or the task could not run
                rows = list(case_rows(case, device, experiment, options, done).values())
                for row in rows:
                    row.update(status="failed", machine="", worker="",
                               error=f"on the cluster: {type(exc).__name__}: {exc}"[:500])
                rounds = {}
            run.append(rows, rounds)
            done.update((r["device"], r["case_id"], r["algorithm"]) for r in rows)
            written += len(rows)
            progress.status(case.spec.label()[:40])
            progress.advance(weight)
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
    return written
