"""Run an experiment: every case on every device, rows appended to the run directory case by
case, so an interrupted sweep keeps every finished case and ``--resume`` skips exactly those.
One failing, mismatching or out-of-memory algorithm (or case) becomes rows with their status
and error; the sweep goes on."""
from __future__ import annotations

from typing import Protocol

from .experiments import Case, Experiment
from .measure import SweepOptions, run_case
from .rundir import RunDirectory

FLOPS_PER_SECOND = 2e10  # a rough rate for weighing cases against each other (progress only)


class Progress(Protocol):
    algorithms: int  # algorithms per case, for the weights

    def status(self, text: str) -> None: ...

    def advance(self, weight: float, compile_s: float = 0.0) -> None: ...


class Quiet:
    algorithms = 6

    def status(self, text: str) -> None:
        pass

    def advance(self, weight: float, compile_s: float = 0.0) -> None:
        pass


def case_weight(case: Case, experiment: Experiment, options: SweepOptions,
                algorithms: int) -> float:
    """Expected seconds of a case, roughly: each algorithm is timed for about repeats x
    max(target, call) seconds, plus its checks."""
    repeats = options.repeats or experiment.repeats
    target = options.min_time or experiment.target_seconds
    call = max(case.spec.flops, 10 * case.spec.min_bytes) / FLOPS_PER_SECOND
    return algorithms * ((repeats + 3) * max(target, call) + 5 * call)


def sweep(experiment: Experiment, run: RunDirectory, options: SweepOptions,
          progress: Progress | None = None) -> int:
    """Run every case of ``experiment`` on every device; returns the number of rows written.
    The caller holds the directory's lock (``RunDirectory.writing``)."""
    progress = progress or Quiet()
    run.repair()
    done = run.done()
    written = 0
    for device in options.devices:
        for case in experiment.cases():
            progress.status(case.spec.label()[:40])
            rows, rounds = run_case(case, device, experiment, options, done, progress.status)
            if rows:
                run.append(rows, rounds)
                done.update((r["device"], r["case_id"], r["algorithm"]) for r in rows)
                written += len(rows)
            compiled = sum(r.get("first_call_s") or 0.0 for r in rows)
            progress.advance(case_weight(case, experiment, options, progress.algorithms),
                             compiled)
    return written
