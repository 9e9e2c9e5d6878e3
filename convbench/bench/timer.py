"""Timing that survives a shared, noisy machine.

Each algorithm's first call is timed alone (JIT compile + run). Then one warm call predicts the
cost and calibrates how many calls make one repeat last ``target_seconds``; every repeat starts
with one untimed warm-up call. The repeats of all
algorithms of a case are interleaved round-robin (A B C, B C A, ...), so drift in the machine's
load hits all alike, and per-round ratios between algorithms stay meaningful.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Timing:
    """Per-call seconds of every round (one value per repeat), and the loop count used."""

    first_call_s: float
    loops: int = 1
    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.rounds))

    @property
    def min(self) -> float:
        return float(np.min(self.rounds))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.rounds, [25, 75])
        return float(q3 - q1)


def time_first_call(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of the first call (compilation included) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def host_repeat(fn: Callable[[], object], loops: int) -> float:
    """Per-call seconds of ``loops`` calls, after one untimed call that absorbs the cost of
    switching from the previous algorithm (cold caches, other libraries' threads going idle)."""
    fn()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def cuda_repeat(fn: Callable[[], object], loops: int) -> float:
    """Per-call seconds of ``loops`` launches measured with CUDA events on the default stream,
    after one untimed warm-up call and a synchronisation, so that no earlier work is counted."""
    from numba import cuda

    from ..devices import simulator_enabled

    if simulator_enabled():  # no timing events there; its kernels run synchronously anyway
        return host_repeat(fn, loops)
    fn()
    cuda.synchronize()
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    start.record()
    for _ in range(loops):
        fn()
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / 1e3 / loops


def calibrate(fn: Callable[[], object], target_seconds: float,
              repeat: Callable[[Callable[[], object], int], float] = host_repeat
              ) -> tuple[int, float]:
    """(calls per repeat, seconds of one warm call): enough calls to fill ``target_seconds``."""
    warm = repeat(fn, 1)
    return max(1, int(target_seconds / max(warm, 1e-7))), warm


def round_robin(fns: dict[str, Callable[[], object]], loops: dict[str, int], repeats: int,
                on_round: Callable[[int, str], None] | None = None,
                repeat: Callable[[Callable[[], object], int], float] = host_repeat
                ) -> dict[str, list[float]]:
    """Per-call seconds of each function for each of ``repeats`` rounds, interleaved; the start
    of the order rotates every round so no function always runs right after the same one."""
    names = list(fns)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)] if names else []
        if on_round:
            on_round(r, order[0] if order else "")
        for name in order:
            rounds[name].append(repeat(fns[name], loops[name]))
    return rounds


def median_round_ratio(ours: list[float], theirs: list[float]) -> float:
    """Speedup of ``ours`` over ``theirs``: the median over rounds of theirs/ours, so a slow
    moment of the machine, which hits both in the same round, cancels out."""
    return float(np.median(np.asarray(theirs) / np.asarray(ours)))
