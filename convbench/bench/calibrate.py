"""``python -m convbench calibrate``: fit the cost model's constants on this machine.

Times every one of our conv2d algorithms that declares cost features on a seeded random set of
layers, fits each algorithm's constants by non-negative least squares on relative error, and
stores them with this machine's identity in the user's cache directory. The rounds go across
the layers (round 1 of every layer, then round 2, ...), each layer's algorithms round-robin
within a round: a few busy seconds of the machine then spoil one round of several layers, which
their medians discard, instead of every round of one layer.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import costmodel, machine, registry, timing
from ..reference import random_inputs
from ..workspace import max_workspace_bytes
from . import costfit
from .suite import random_layers

CALIBRATION_SEED = 1  # the auto experiment judges on another seed (experiments/auto.toml)
SLOWEST_S = 0.3  # an algorithm slower than this on a layer is not timed there (it would not win)
ROUNDS = 7  # timed rounds per layer and algorithm; the median is fitted
MIN_LAYERS = 8  # fewer layers than this cannot fit the features of an algorithm


def collect(count: int, device: str = "cpu", say=print) -> dict[str, list]:
    """{algorithm: [(features, median seconds, descriptor), ...]} over ``count`` random layers."""
    specs = random_layers(count, CALIBRATION_SEED, max_flops=4e8)
    algos = [a for a in registry.algorithms("conv2d", device, peers=False)
             if a.cost_features is not None]
    repeat = timing.repeat_for(device)
    limit = max_workspace_bytes()
    cases = []  # (spec, {name: fn}, {name: loops})
    for i, spec in enumerate(specs):
        x, w, b = random_inputs(spec, CALIBRATION_SEED + i)
        if device == "cuda":
            from numba import cuda

            x, w = cuda.to_device(x), cuda.to_device(w)
        fns, loops = {}, {}
        for algo in algos:
            if not algo.supports(spec) or algo.workspace_bytes(spec) > limit:
                continue
            fn = algo.bound(spec, x, w, b)
            fn()  # compile and warm up
            n, warm = timing.loops_for(fn, 0.01, repeat)
            if warm <= SLOWEST_S:
                fns[algo.name], loops[algo.name] = fn, n
        cases.append((spec, fns, loops))
        say(f"[{i + 1}/{len(specs)}] prepared {spec.label()}")
    times = [{name: [] for name in fns} for _, fns, _ in cases]
    for r in range(ROUNDS):
        for (spec, fns, loops), got in zip(cases, times):
            for name, values in timing.round_robin(fns, loops, 1, repeat, first_round=r).items():
                got[name].extend(values)
        say(f"round {r + 1}/{ROUNDS} done")
    by_name = {a.name: a for a in algos}
    samples: dict[str, list] = {a.name: [] for a in algos}
    for i, ((spec, _, _), got) in enumerate(zip(cases, times)):
        for name, t in got.items():
            samples[name].append((list(by_name[name].cost_features(spec)), float(np.median(t)),
                                  costmodel.descriptor(spec)))
        say(f"[{i + 1}/{len(cases)}] {spec.label()}: " + ", ".join(
            f"{n} {np.median(t) * 1e3:.3g} ms" for n, t in got.items()))
    return samples


def calibrate(count: int = 120, devices: tuple[str, ...] = ("cpu",), path: Path | None = None,
              say=print) -> dict:
    """Fit and save the constants; returns the saved document (with fit quality). ValueError
    when too few layers were timed to fit anything."""
    if count < MIN_LAYERS:
        raise ValueError(f"--layers must be at least {MIN_LAYERS} (a fit needs more layers "
                         f"than features), got {count}")
    start = time.perf_counter()
    constants, residuals, quality = {}, {}, {}
    for device in devices:
        for name, rows in collect(count, device, say).items():
            if len(rows) < MIN_LAYERS:
                say(f"{device}/{name}: timed on {len(rows)} layers only, not fitted")
                continue
            coeffs = costfit.fit([(f, t) for f, t, _ in rows])
            key = costmodel.CostModel.key(device, "conv2d", name)
            constants[key] = coeffs
            residuals[key] = costfit.residuals(coeffs, rows)
            quality[key] = costfit.fit_quality(coeffs, rows, np.asarray(residuals[key]))
            q = quality[key]
            say(f"{key:22s} {len(rows)} layers, error median/90th percentile: linear "
                f"{q['linear']:.0%}/{q['linear_p90']:.0%}, corrected {q['corrected']:.0%}/"
                f"{q['corrected_p90']:.0%} (each layer's own error left out)")
    if not constants:
        raise ValueError("no algorithm could be fitted: every one was timed on too few layers")
    doc = {"machine": costmodel.model_id(),
           "machines": {d: machine.device_identity(d) for d in devices},
           "constants": constants, "residuals": residuals, "quality": quality,
           "seconds": round(time.perf_counter() - start, 1)}
    costmodel.save_calibration(doc, path)
    return doc
