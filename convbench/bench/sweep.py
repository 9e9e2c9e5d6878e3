"""Run an experiment: for every case and algorithm, check, time, measure memory, write a row.

Rows are appended to ``results.csv`` case by case (flushed to disk), so an interrupted sweep
keeps every finished case and ``--resume`` skips exactly those. One failing, mismatching or
out-of-memory algorithm becomes a row with its status and error; the sweep goes on.
"""
from __future__ import annotations

import csv
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import registry
from ..reference import random_inputs, reference
from ..spec import ConvSpec, PoolSpec
from ..tolerance import check_close, conv_error_bound, pool_error_bound
from ..workspace import max_workspace_bytes
from . import memory, timer
from .experiments import CONV_PARAMS, POOL_PARAMS, Case, Experiment
from .information import information_kept

SPEC_COLUMNS = ["n", "c", "h", "w", "k", "kh", "kw", "stride_h", "stride_w", "pad_top",
                "pad_bottom", "pad_left", "pad_right", "dilation_h", "dilation_w", "flip",
                "pool_h", "pool_w", "dtype"]
PARAM_COLUMNS = [p for p in dict.fromkeys([*CONV_PARAMS, *POOL_PARAMS]) if p != "dtype"]
COLUMNS = (["experiment", "series", "group", "case_id", "label", "op", "device", "algorithm",
            "is_peer", "status", "error", "seed"] + PARAM_COLUMNS + SPEC_COLUMNS +
           ["flops", "min_bytes", "compile_s", "median_s", "min_s", "iqr_s", "repeats", "loops",
            "gflops", "gbps", "peak_fraction", "speedup_vs_best_peer", "best_peer",
            "workspace_bytes", "measured_host_bytes", "measured_device_bytes", "transfer_s",
            "error_to_bound", "info_kept", "auto_pick", "auto_top", "scipy_choice"])


@dataclass
class SweepOptions:
    devices: list[str]
    algorithms: list[str] | None = None  # None: every registered algorithm
    max_case_seconds: float | None = None  # None: the experiment's (preset's) own limit
    gemm_peak_gflops: float | None = None


def case_seed(case: Case) -> int:
    """A fixed seed per case, derived from its id (recorded in every row)."""
    return zlib.crc32(case.case_id.encode())


def _spec_values(spec) -> dict:
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


class ResultsFile:
    """results.csv, appended one case at a time and flushed, readable after any interrupt."""

    def __init__(self, path: Path):
        self.path = path
        self.done: set[tuple[str, str, str]] = set()
        if path.exists():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    self.done.add((row["device"], row["case_id"], row["algorithm"]))

    def append(self, rows: list[dict]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.done.add((row["device"], row["case_id"], row["algorithm"]))


def _bound(algo, spec, x, w):
    if isinstance(spec, PoolSpec):
        return pool_error_bound(x, spec)
    return conv_error_bound(x, w, spec, algo.error_model)


def _selected(spec, device: str, names: list[str] | None) -> list[registry.Algorithm]:
    algos = registry.algorithms(spec.op, device)
    return [a for a in algos if names is None or a.name in names]


def run_case(case: Case, device: str, options: SweepOptions, experiment: Experiment,
             done: set, status: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Check, time and measure every selected algorithm on one case; return its rows."""
    spec, seed = case.spec, case_seed(case)
    base = {"experiment": case.experiment, "series": case.series, "group": case.group,
            "case_id": case.case_id, "label": spec.label(), "op": spec.op, "device": device,
            "seed": seed, "flops": spec.flops, "min_bytes": spec.min_bytes,
            **{k: case.params.get(k) for k in PARAM_COLUMNS}, **_spec_values(spec)}
    if isinstance(spec, PoolSpec):
        base["info_kept"] = round(information_kept(spec), 6)
    else:
        base.update(_choices(spec, device))
    names = options.algorithms or experiment.algorithms
    todo = [a for a in _selected(spec, device, names)
            if (device, case.case_id, a.name) not in done]
    if not todo:
        return []
    x, w = random_inputs(spec, seed)
    expected = reference(spec, x, w)
    on_gpu = device == "cuda"
    xin, win = x, w
    repeat = timer.host_repeat
    if on_gpu:  # time kernels on resident data; transfers are measured apart (transfer_s)
        from ..cuda import memory as device_memory
        from numba import cuda

        start = time.perf_counter()
        xin = cuda.to_device(x)
        win = cuda.to_device(w) if w is not None else None
        cuda.synchronize()
        base["transfer_s"] = time.perf_counter() - start
        repeat = timer.cuda_repeat
    rows: dict[str, dict] = {}
    timed: dict[str, Callable[[], object]] = {}
    loops: dict[str, int] = {}
    limit = max_workspace_bytes()
    max_s = options.max_case_seconds or experiment.max_case_seconds
    bounds: dict[str, object] = {}  # one error bound per error model: the "sum" one costs a conv
    for algo in todo:
        row = rows[algo.name] = dict(base, algorithm=algo.name, is_peer=algo.is_peer,
                                      status="ok", error="")
        status(f"{spec.label()} {algo.name}: check")
        if not algo.supports(spec):
            row.update(status="skipped", error=f"unsupported: {algo.limits}")
            continue
        declared = algo.workspace_bytes(spec)
        row["workspace_bytes"] = declared
        if declared > limit:
            row.update(status="skipped", error=f"workspace {declared} B over the {limit} B limit")
            continue
        fn = algo.bound(spec, xin, win)
        try:
            first, out = timer.time_first_call(fn)
            if on_gpu:
                out = out.copy_to_host() if hasattr(out, "copy_to_host") else np.asarray(out)
            row["compile_s"] = first
            if algo.error_model not in bounds:
                bounds[algo.error_model] = _bound(algo, spec, x, w)
            ok, ratio = check_close(out, expected, bounds[algo.error_model])
            row["error_to_bound"] = ratio
            if not ok:
                row.update(status="mismatch", error=f"error/bound = {ratio:.3g}")
                continue
            if first > max_s:
                row.update(status="skipped", error=f"first call took {first:.1f} s "
                           f"> max case seconds {max_s:g}")
                continue
            n_loops, warm = timer.calibrate(fn, experiment.target_seconds, repeat)
            predicted = warm * n_loops * experiment.repeats
            if predicted > max_s:
                row.update(status="skipped", error=f"predicted {predicted:.1f} s > "
                           f"max case seconds {max_s:g}")
                continue
            if on_gpu:
                row["measured_device_bytes"] = _peak_device_bytes(fn, device_memory)
            else:
                row["measured_host_bytes"] = memory.peak_extra_host_bytes(fn)
        except Exception as exc:  # MemoryError included: record it and go on with the others
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            continue
        timed[algo.name], loops[algo.name] = fn, n_loops
    if timed:
        try:
            rounds = timer.round_robin(
                timed, loops, experiment.repeats,
                lambda r, n: status(f"{spec.label()} timing round {r + 1}/{experiment.repeats}"),
                repeat)
        except Exception as exc:
            for name in timed:
                rows[name].update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            return list(rows.values())
        _fill_timings(rows, rounds, loops, spec, options)
    return list(rows.values())


def _choices(spec: ConvSpec, device: str) -> dict:
    """What the choosers would run: our auto (model only, no measuring) and, on the single-
    channel stride-1 cases it can answer, scipy.signal.choose_conv_method (direct or fft)."""
    from ..auto import choose

    from ..auto import MEASURE_TOP

    out = {}
    try:
        choice = choose(spec, device, measure=False)
    except ValueError:
        return out
    out["auto_pick"] = choice.algorithm.name
    ranked = sorted((c for c in choice.candidates if c.predicted_s is not None and not c.note),
                    key=lambda c: c.predicted_s)
    out["auto_top"] = "+".join(c.name for c in ranked[:MEASURE_TOP])
    plain = spec.stride == (1, 1) and spec.dilation == (1, 1)
    if spec.n == spec.c == spec.k == 1 and plain:
        import scipy.signal

        hp, wp = spec.padded_size
        a = np.empty((hp, wp), spec.dtype)  # only the shapes and dtype are used
        out["scipy_choice"] = "scipy_" + scipy.signal.choose_conv_method(
            a, np.empty((spec.kh, spec.kw), spec.dtype), mode="valid")
    return out


def _peak_device_bytes(fn, device_memory) -> int:
    """Peak device bytes beyond those live before, minus the output (0 for peers whose
    allocator Numba does not see, such as PyTorch's caching allocator)."""
    from numba import cuda

    cuda.synchronize()
    before = device_memory.TRACKER.live
    device_memory.TRACKER.reset_peak()
    out = fn()
    cuda.synchronize()
    out_bytes = int(getattr(out, "nbytes", 0)) if hasattr(out, "copy_to_host") else 0
    return max(0, device_memory.TRACKER.peak - before - out_bytes)


def _fill_timings(rows, rounds, loops, spec, options):
    peers = [n for n in rounds if rows[n]["is_peer"]]
    best_peer = min(peers, key=lambda n: np.median(rounds[n])) if peers else None
    for name, times in rounds.items():
        t = timer.Timing(rows[name]["compile_s"], loops[name], times)
        row = rows[name]
        row.update(median_s=t.median, min_s=t.min, iqr_s=t.iqr, repeats=len(times),
                   loops=loops[name], gflops=spec.flops / t.median / 1e9,
                   gbps=spec.min_bytes / t.median / 1e9)
        if options.gemm_peak_gflops:
            row["peak_fraction"] = row["gflops"] / options.gemm_peak_gflops
        if best_peer:
            row["best_peer"] = best_peer
            row["speedup_vs_best_peer"] = timer.median_round_ratio(times, rounds[best_peer])


def write_run_info(run_dir: Path, info: dict) -> None:
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))


def read_run_info(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.exists():
        raise ValueError(f"--resume {run_dir}: no run.json there; is it a convbench run directory?")
    return json.loads(path.read_text())


def sweep(experiment: Experiment, run_dir: Path, options: SweepOptions, progress=None) -> int:
    """Run every case of ``experiment`` on every device; returns the number of rows written."""
    results = ResultsFile(run_dir / "results.csv")
    written = 0
    for device in options.devices:
        for case in experiment.cases():
            if progress is not None:
                progress.set_postfix_str(case.spec.label()[:40])
            rows = run_case(case, device, options, experiment, results.done,
                            (lambda s: progress.set_postfix_str(s[:60])) if progress else
                            (lambda s: None))
            if rows:
                results.append(rows)
                written += len(rows)
            if progress is not None:
                progress.update(1)
    return written


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
