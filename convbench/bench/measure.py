"""One case of a sweep, in three steps: prepare it (inputs, reference, the row every
algorithm shares), admit each algorithm (supported, workspace within the limit, first call
checked against the reference, timed call within the case budget, memory measured), then time
the admitted ones side by side with the one timer and derive the figures of every row."""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import registry, timing
from ..reference import random_inputs, reference
from ..spec import ConvSpec, PoolSpec
from ..tolerance import check_close, error_bound
from ..workspace import available_memory, max_workspace_bytes
from . import gpu_monitor, memory, noise
from .experiments import Case, Experiment
from .information import information_kept
from .rundir import AUTO, PARAM_COLUMNS, PREPARED

RETRY_FIRST = 5  # a library's first call up to this many case budgets is tried once more
MEMORY_SHARE = 0.8  # a case's inputs, output and reference may use this much of free memory


@dataclass
class SweepOptions:
    devices: list[str]
    algorithms: list[str] | None = None  # None: the experiment's own list (or all)
    max_case_seconds: float | None = None  # None: the experiment's (preset's) own limit
    gemm_peak_gflops: float | None = None
    repeats: int | None = None  # None: the experiment's
    min_time: float | None = None  # seconds per repeat; None: the experiment's target_seconds
    machine: str = ""  # the identity recorded in every row
    control: noise.Control | None = None  # the drift control (None: not measured)
    measured_auto: bool = False  # also time auto's measure=True choice (the auto experiment)


@dataclass
class Budget:
    repeats: int
    target_s: float
    max_s: float
    noise: float
    cache: str = "warm"  # GPU timing with the L2 warm or overwritten before every call

    @classmethod
    def of(cls, experiment: Experiment, options: SweepOptions) -> "Budget":
        return cls(options.repeats or experiment.repeats,
                   options.min_time or experiment.target_seconds,
                   options.max_case_seconds or experiment.max_case_seconds, experiment.noise,
                   experiment.cache)


@dataclass
class Prepared:
    """A case ready to run: its inputs on the device, its float64 reference, its shared row."""

    spec: ConvSpec | PoolSpec
    device: str
    x: np.ndarray
    w: np.ndarray | None
    b: np.ndarray | None
    expected: np.ndarray
    xin: object
    win: object
    base: dict
    bounds: dict = field(default_factory=dict)  # one error bound per error model

    def bound(self, model: str):
        if model not in self.bounds:
            self.bounds[model] = error_bound(self.spec, self.x, self.w, model, self.b)
        return self.bounds[model]


def case_seed(case: Case) -> int:
    """A fixed seed per case, derived from its id (recorded in every row)."""
    return zlib.crc32(case.case_id.encode())


def spec_values(spec) -> dict:
    if isinstance(spec, ConvSpec):
        return {"n": spec.n, "c": spec.c, "h": spec.h, "w": spec.w, "k": spec.k, "kh": spec.kh,
                "kw": spec.kw, "stride_h": spec.stride[0], "stride_w": spec.stride[1],
                "pad_top": spec.pad[0], "pad_bottom": spec.pad[1], "pad_left": spec.pad[2],
                "pad_right": spec.pad[3], "dilation_h": spec.dilation[0],
                "dilation_w": spec.dilation[1], "flip": spec.flip, "dtype": spec.dtype}
    return {"n": spec.n, "c": spec.c, "h": spec.h, "w": spec.w, "k": spec.c,
            "stride_h": spec.stride[0], "stride_w": spec.stride[1], "pad_top": spec.pad[0],
            "pad_bottom": spec.pad[0], "pad_left": spec.pad[1], "pad_right": spec.pad[1],
            "pool_h": spec.size[0], "pool_w": spec.size[1], "dtype": spec.dtype}


def base_row(case: Case, device: str, options: SweepOptions) -> dict:
    spec = case.spec
    return {"experiment": case.experiment, "series": case.series, "group": case.group,
            "case_id": case.case_id, "label": spec.label(), "layer": case.layer,
            "count": case.count, "layer_index": case.index if case.index >= 0 else None, "op": spec.op, "device": device,
            "machine": options.machine, "seed": case_seed(case), "flops": spec.flops,
            "min_bytes": spec.min_bytes, **{k: case.params.get(k) for k in PARAM_COLUMNS},
            **spec_values(spec)}


def case_bytes(spec) -> int:
    """Host bytes a case needs at once: inputs, the output, and the float64 reference with
    its padded input."""
    out = int(np.prod(spec.out_shape, dtype=np.int64))
    x = int(np.prod(spec.x_shape, dtype=np.int64))
    w = int(np.prod(spec.w_shape, dtype=np.int64)) if isinstance(spec, ConvSpec) else 0
    hp, wp = spec.padded_size if isinstance(spec, ConvSpec) else (spec.h + 2 * spec.pad[0],
                                                                  spec.w + 2 * spec.pad[1])
    padded = spec.n * spec.c * hp * wp
    return (x + w + out) * spec.itemsize + (2 * out + padded + x + w) * 8


def prepare(case: Case, device: str, base: dict) -> Prepared:
    """Inputs and reference of a case; MemoryError (before allocating) when they would not
    fit in the memory available."""
    spec = case.spec
    need, free = case_bytes(spec), available_memory()
    if need > MEMORY_SHARE * free:
        raise MemoryError(f"the case needs about {need / 2**30:.3g} GiB for its inputs, output "
                          f"and reference, more than {MEMORY_SHARE:.0%} of the "
                          f"{free / 2**30:.3g} GiB available")
    x, w, b = random_inputs(spec, base["seed"])
    expected = reference(spec, x, w, b)
    xin, win = x, w
    if device == "cuda":  # time kernels on resident data; transfers are measured apart
        from numba import cuda

        start = time.perf_counter()
        xin = cuda.to_device(x)
        win = cuda.to_device(w) if w is not None else None
        cuda.synchronize()
        base["transfer_s"] = time.perf_counter() - start
    if isinstance(spec, PoolSpec):
        base["info_kept"] = round(information_kept(spec), 6)
    return Prepared(spec, device, x, w, b, expected, xin, win, base)


@dataclass
class Admitted:
    fn: Callable[[], object]
    loops: int
    prepared: Callable[[], object] | None = None  # the same call with its weights prepared



def _fail(row: dict, status: str, error: str) -> None:
    row.update(status=status, error=error[:500])


def admit(algo: registry.Algorithm, prep: Prepared, budget: Budget, row: dict,
          limit: int) -> Admitted | None:
    """Check one algorithm on the case and decide whether to time it (None: the row's status
    says why not). Compilation (the first call) is reported, never judged: the budget judges
    the timed, warm call."""
    spec = prep.spec
    if not algo.supports(spec):
        _fail(row, "skipped", f"unsupported: {algo.limits}")
        return None
    declared = algo.workspace_bytes(spec)
    row["workspace_bytes"] = declared
    if declared > limit:
        _fail(row, "skipped", f"workspace {declared} B over the {limit} B limit")
        return None
    fn = algo.bound(spec, prep.xin, prep.win, prep.b)
    repeat = timing.repeat_for(prep.device, budget.cache)
    first, out = timing.first_call(fn)
    row["first_call_s"] = first
    if prep.device == "cuda":
        out = out.copy_to_host() if hasattr(out, "copy_to_host") else np.asarray(out)
    ok, ratio = check_close(out, prep.expected, prep.bound(algo.error_model))
    row["error_to_bound"] = ratio
    if not ok:
        _fail(row, "mismatch", f"error/bound = {ratio:.3g}")
        return None
    if not algo.compiles and first * budget.repeats > budget.max_s and (
            first < RETRY_FIRST * budget.max_s):
        # no JIT of ours, but a library's own first-call setup (oneDNN generates its kernels
        # on the first call of a shape, and torch sets itself up on its first call at all):
        # a first call not far over the budget gets one more
        first, _ = timing.first_call(fn)
    if not algo.compiles and first * budget.repeats > budget.max_s:  # a fair sample now
        _fail(row, "skipped", f"timing needs ~{first * budget.repeats:.1f} s ({budget.repeats} "
              f"repeats of a {first:.3g} s call) > max case seconds {budget.max_s:g}")
        return None
    loops, warm = timing.loops_for(fn, budget.target_s, repeat)
    row["warm_call_s"] = warm
    predicted = warm * loops * budget.repeats
    if predicted > budget.max_s:
        _fail(row, "skipped", f"timing needs ~{predicted:.1f} s ({budget.repeats} repeats of "
              f"a {warm:.3g} s call) > max case seconds {budget.max_s:g}")
        return None
    if prep.device != "cuda":  # a host call's fresh pages (see memory.page_faults)
        row["page_faults"] = memory.page_faults(fn)
    if not algo.memory_visible:  # allocates where neither tracemalloc nor the plugin sees
        pass
    elif prep.device == "cuda":
        from ..cuda import memory as device_memory

        row["measured_device_bytes"] = _peak_device_bytes(fn, device_memory)
    else:
        row["measured_host_bytes"] = memory.peak_extra_host_bytes(fn)
    prepared = None
    if algo.prepare is not None and prep.win is not None:
        run = algo.prepared(prep.win, spec, prep.b)
        prepared = lambda: run(prep.xin)  # noqa: E731
        prepared()  # compile and warm, untimed
    return Admitted(fn, loops, prepared)


def _peak_device_bytes(fn, device_memory) -> int:
    """Peak device bytes beyond those live before, minus the output."""
    from numba import cuda

    cuda.synchronize()
    before = device_memory.TRACKER.live
    device_memory.TRACKER.reset_peak()
    out = fn()
    cuda.synchronize()
    out_bytes = int(getattr(out, "nbytes", 0)) if hasattr(out, "copy_to_host") else 0
    return max(0, device_memory.TRACKER.peak - before - out_bytes)


def time_admitted(prep: Prepared, admitted: dict[str, Admitted], budget: Budget,
                  options: SweepOptions, status: Callable[[str], None]
                  ) -> tuple[dict[str, timing.Timing], dict]:
    """Time the admitted algorithms side by side; also what the machine did meanwhile."""
    repeat = timing.repeat_for(prep.device, budget.cache)
    before = noise.Snapshot.now()
    label = prep.spec.label()
    fns = {n: a.fn for n, a in admitted.items()}
    loops = {n: a.loops for n, a in admitted.items()}
    for name, a in admitted.items():  # the prepared call in the same rounds, as many loops
        if a.prepared is not None:
            fns[name + PREPARED], loops[name + PREPARED] = a.prepared, a.loops
    # each algorithm may take up to max_s of timing, so the group as many times that
    with gpu_monitor.sampler_for(prep.device) as gpu:  # clocks, heat, power meanwhile
        timings = timing.measure(
            fns, min_rounds=budget.repeats, target_seconds=budget.target_s,
            rel_spread=budget.noise, budget_s=budget.max_s * len(fns), repeat=repeat,
            loops=loops, on_round=lambda r: status(f"{label} timing round {r + 1}"))
    signals = noise.during(before)
    signals.update(gpu.summary())
    if options.control is not None:
        signals["control_drift"] = options.control.drift()
    return timings, signals


def fill_figures(rows: dict[str, dict], timings: dict[str, timing.Timing], signals: dict,
                 spec, budget: Budget, options: SweepOptions) -> None:
    """Times, spread, noise flags, throughput and the speedup over the best peer."""
    for name in [n for n in timings if n.endswith(PREPARED)]:
        rows[name[:-len(PREPARED)]]["prepared_median_s"] = timings.pop(name).median
    peers = [n for n in timings if rows[n]["is_peer"]]
    best_peer = min(peers, key=lambda n: timings[n].median) if peers else None
    busy, drift = noise.contention(signals), noise.drift_reason(signals)
    for name, t in timings.items():
        row = rows[name]
        row.update(signals)
        unsettled = ([f"spread {t.rel_spread:.1%} > {budget.noise:.0%}"] if t.unsettled else [])
        unsettled += [busy] if busy else []
        row.update(median_s=t.median, min_s=t.min, iqr_s=t.iqr,
                   rel_spread=round(t.rel_spread, 4), repeats=len(t.rounds), loops=t.loops,
                   unsettled=bool(unsettled), drifted=bool(drift),
                   noise="; ".join(unsettled + ([drift] if drift else [])),
                   gflops=spec.flops / t.median / 1e9, gbps=spec.min_bytes / t.median / 1e9)
        if options.gemm_peak_gflops:
            row["peak_fraction"] = row["gflops"] / options.gemm_peak_gflops
        if best_peer:
            row["best_peer"] = best_peer
            row["speedup_vs_best_peer"] = timing.median_round_ratio(
                t.rounds, timings[best_peer].rounds)


def choices(spec: ConvSpec, device: str, measured: bool) -> dict:
    """What the choosers would run: our auto (model only, and with ``measured`` also its
    measure=True pick, timed afresh), and on the single-channel stride-1 cases it can answer,
    scipy.signal.choose_conv_method (direct or fft)."""
    from ..auto import MEASURE_TOP, choose

    out = {}
    try:
        choice = choose(spec, device, measure=False)
    except ValueError:
        return out
    out["auto_pick"] = choice.algorithm.name
    ranked = sorted((c for c in choice.candidates if c.predicted_s is not None and not c.note),
                    key=lambda c: c.predicted_s)
    out["auto_top"] = "+".join(c.name for c in ranked[:MEASURE_TOP])
    if measured:
        out["auto_measured_pick"] = choose(spec, device, measure=True,
                                           use_cache=False).algorithm.name
    plain = spec.stride == (1, 1) and spec.dilation == (1, 1)
    if spec.n == spec.c == spec.k == 1 and plain:
        import scipy.signal

        from ..peers import SCIPY_METHODS

        hp, wp = spec.padded_size
        a = np.empty((hp, wp), spec.dtype)  # only the shapes and dtype are used
        method = scipy.signal.choose_conv_method(a, np.empty((spec.kh, spec.kw), spec.dtype),
                                                 mode="valid")
        out["scipy_choice"] = SCIPY_METHODS[method]
    return out


def case_rows(case: Case, device: str, experiment: Experiment, options: SweepOptions,
              done: set) -> dict[str, dict]:
    """The rows a case still owes, one per selected algorithm not in ``done``, by name (empty:
    nothing left to run); each starts as 'ok' and is filled in as the case runs."""
    chosen = (lambda name: name in options.algorithms) if options.algorithms else (
        experiment.selects)
    base = base_row(case, device, options)
    base["cache"] = timing.effective_cache(device, experiment.cache)
    rows = {a.name: dict(base, algorithm=a.name, is_peer=a.is_peer, library=a.library,
                         family=a.kind, status="ok", error="")
            for a in registry.algorithms(case.spec.op, device)
            if chosen(a.name) and (device, case.case_id, a.name) not in done}
    if (experiment.time_auto and case.spec.op == "conv2d" and chosen(AUTO)
            and (device, case.case_id, AUTO) not in done):
        rows[AUTO] = dict(base, algorithm=AUTO, is_peer=False, library="convbench",
                          family=AUTO, status="ok", error="")
    return rows


def _algorithm(spec, device: str, name: str) -> registry.Algorithm:
    """The registered algorithm ``name``, or auto's own row."""
    if name == AUTO:
        from .auto_row import auto_algorithm

        return auto_algorithm(spec, device)
    return registry.get(spec.op, device, name)


def run_case(case: Case, device: str, experiment: Experiment, options: SweepOptions,
             done: set, status: Callable[[str], None] = lambda s: None
             ) -> tuple[list[dict], dict[str, list[float]]]:
    """Check, time and measure every selected algorithm on one case: its rows (every failure
    recorded in them, none raised) and the per-round seconds of the timed ones."""
    spec = case.spec
    rows = case_rows(case, device, experiment, options, done)
    if not rows:
        return [], {}
    budget = Budget.of(experiment, options)
    base = base_row(case, device, options)
    try:
        todo = [_algorithm(spec, device, name) for name in rows]
        prep = prepare(case, device, base)
        if isinstance(spec, ConvSpec):
            base.update(choices(spec, device, options.measured_auto))
    except Exception as exc:  # MemoryError included: every row records it, the sweep goes on
        for row in rows.values():
            _fail(row, "failed", f"preparing the case: {type(exc).__name__}: {exc}")
        return list(rows.values()), {}
    for row in rows.values():
        for key, value in base.items():
            row.setdefault(key, value)
    limit = max_workspace_bytes()
    admitted: dict[str, Admitted] = {}
    for algo in todo:
        status(f"{spec.label()} {algo.name}: check")
        try:
            got = admit(algo, prep, budget, rows[algo.name], limit)
        except Exception as exc:  # MemoryError included: record it, go on with the others
            _fail(rows[algo.name], "failed", f"{type(exc).__name__}: {exc}")
            continue
        if got is not None:
            admitted[algo.name] = got
    if not admitted:
        return list(rows.values()), {}
    try:
        timings, signals = time_admitted(prep, admitted, budget, options, status)
    except Exception as exc:
        for name in admitted:
            _fail(rows[name], "failed", f"while timing: {type(exc).__name__}: {exc}")
        return list(rows.values()), {}
    rounds = {n: t.rounds for n, t in timings.items()}  # prepared calls' too (rundir.PREPARED)
    fill_figures(rows, timings, signals, spec, budget, options)
    return list(rows.values()), rounds
