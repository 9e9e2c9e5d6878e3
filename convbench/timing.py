"""The one timer: every measurement in convbench (the sweep, the gate, calibration,
``measure=True``, the GPU check) goes through these functions.

How a group of calls is timed (:func:`measure`): each function's first call is timed alone
(JIT compilation included: reported, never judged); one warm call sets how many calls make one
repeat last ``target_seconds``; then repeats of all functions run interleaved round-robin
(A B C, B C A, ...), each repeat after one untimed warm-up call, so that drift in the
machine's load hits all alike and per-round ratios stay meaningful. After ``min_rounds``
rounds, more are added for the functions whose relative spread (IQR / median of their rounds)
is still above ``rel_spread``, interleaved among themselves, while the time budget lasts
(torch.utils.benchmark's adaptive_autorange and nvbench's noise criterion are the models); a
function that never settled is marked ``unsettled``. On the GPU a repeat is timed with CUDA events
after a synchronisation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Repeat = Callable[[Callable[[], object], int], float]
DEFAULT_REL_SPREAD = 0.05


@dataclass
class Timing:
    """Per-call seconds of every round of one function, and how they were taken."""

    loops: int = 1
    rounds: list[float] = field(default_factory=list)
    first_call_s: float | None = None
    warm_call_s: float | None = None
    unsettled: bool = False

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

    @property
    def rel_spread(self) -> float:
        """IQR over median: the noise criterion."""
        return self.iqr / self.median if self.rounds and self.median > 0 else float("inf")


def first_call(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of a first call (compilation included) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def host_repeat(fn: Callable[[], object], loops: int) -> float:
    """Per-call seconds of ``loops`` calls, after one untimed call that absorbs the cost of
    switching from the previous function (cold caches, other libraries' threads going idle)."""
    fn()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def cuda_repeat(fn: Callable[[], object], loops: int) -> float:
    """Per-call seconds of ``loops`` launches measured with CUDA events on the default stream,
    after one untimed warm-up call and a synchronisation, so that no earlier work is counted.
    (In the simulator, which has no timing events and runs kernels synchronously, host time.)"""
    from numba import cuda

    from .devices import simulator_enabled

    if simulator_enabled():
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


L2_FALLBACK_BYTES = 50 << 20  # an H100's L2, when the device does not say
_flush_buffers: dict[int, object] = {}


def l2_flush_bytes() -> int:
    """Bytes a cold-L2 repetition writes first: twice the device's L2 (triton's do_bench
    writes a buffer of the L2's size; twice leaves nothing of the call's data behind)."""
    from numba import cuda

    try:
        size = int(cuda.get_current_device().L2_CACHE_SIZE)
    except Exception:  # an attribute this driver binding does not expose
        size = 0
    return 2 * (size or L2_FALLBACK_BYTES)


def _flush_l2() -> None:
    """Overwrite 2x the L2 on the device (a memset, itself not timed)."""
    from numba import cuda
    from numba.cuda.cudadrv.driver import device_memset

    nbytes = l2_flush_bytes()
    if nbytes not in _flush_buffers:
        _flush_buffers[nbytes] = cuda.device_array(nbytes, np.uint8)
    device_memset(_flush_buffers[nbytes], 0, nbytes)  # on the default stream, before the events


def cuda_repeat_cold(fn: Callable[[], object], loops: int) -> float:
    """Per-call seconds of ``loops`` calls, each after the L2 was overwritten: CUDA events
    around each call alone, the flush outside them, so the call starts with its inputs, weights
    and workspace in device memory only, as a layer's first touch in a network does.
    (In the simulator, host time with no flush: it has no cache to flush.)"""
    from numba import cuda

    from .devices import simulator_enabled

    if simulator_enabled():
        return host_repeat(fn, loops)
    fn()
    total = 0.0
    for _ in range(loops):
        _flush_l2()
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        total += cuda.event_elapsed_time(start, end) / 1e3
    return total / loops


CACHE_MODES = ("warm", "cold")


def repeat_for(device: str, cache: str = "warm") -> Repeat:
    """The repeat function of a device and cache mode. Cold (the L2 overwritten before every
    call) is a GPU mode; on the CPU the calls are timed warm, and rows say so."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if device != "cuda":
        return host_repeat
    return cuda_repeat_cold if cache == "cold" else cuda_repeat


def effective_cache(device: str, cache: str) -> str:
    """The cache mode a row was timed in (CPU rows: always warm)."""
    return cache if device == "cuda" else "warm"


def loops_for(fn: Callable[[], object], target_seconds: float,
              repeat: Repeat = host_repeat) -> tuple[int, float]:
    """(calls per repeat, seconds of one warm call): enough calls to fill ``target_seconds``."""
    warm = repeat(fn, 1)
    return max(1, int(target_seconds / max(warm, 1e-7))), warm


def round_robin(fns: dict[str, Callable[[], object]], loops: dict[str, int], rounds: int,
                repeat: Repeat = host_repeat, first_round: int = 0,
                on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Per-call seconds of each function in each of ``rounds`` rounds, interleaved; the start of
    the order rotates every round so no function always runs right after the same one."""
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(first_round, first_round + rounds):
        if on_round:
            on_round(r)
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            out[name].append(repeat(fns[name], loops[name]))
    return out


def measure(fns: dict[str, Callable[[], object]], *, min_rounds: int = 5,
            max_rounds: int | None = None, target_seconds: float = 0.05,
            rel_spread: float = DEFAULT_REL_SPREAD, budget_s: float | None = None,
            repeat: Repeat = host_repeat, loops: dict[str, int] | None = None,
            on_round: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time warm functions side by side (see the module docstring); ``loops`` skips the loop
    calibration where the caller already has it. Rounds stop at ``max_rounds`` (default
    3 x ``min_rounds``) or when ``budget_s`` seconds have passed, whichever is first."""
    max_rounds = max(min_rounds, max_rounds or 3 * min_rounds)
    timings = {name: Timing() for name in fns}
    for name, fn in fns.items():
        if loops and name in loops:
            timings[name].loops = loops[name]
        else:
            timings[name].loops, timings[name].warm_call_s = loops_for(fn, target_seconds, repeat)
    counts = {name: t.loops for name, t in timings.items()}
    start = time.perf_counter()
    active, done = dict(fns), 0
    while active and done < max_rounds:
        batch = min_rounds if done == 0 else 1
        for name, values in round_robin(active, counts, batch, repeat, done, on_round).items():
            timings[name].rounds.extend(values)
        done += batch
        active = {n: fn for n, fn in active.items() if timings[n].rel_spread > rel_spread}
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    for t in timings.values():
        t.unsettled = t.rel_spread > rel_spread
    return timings


def paired(a: list[float], b: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The rounds two functions ran together (the first ones: later rounds time only the
    functions still unsettled)."""
    n = min(len(a), len(b))
    return np.asarray(a[:n]), np.asarray(b[:n])


def median_round_ratio(ours: list[float], theirs: list[float]) -> float:
    """Speedup of ``ours`` over ``theirs``: the median over the rounds both ran of
    theirs/ours, so a slow moment of the machine, which hits both in the same round, cancels
    out."""
    mine, other = paired(ours, theirs)
    return float(np.median(other / mine))
