"""``python -m convbench calibrate``: fit the cost model's constants on this machine.

Times every one of our conv2d algorithms on a seeded random set of layers (round-robin, as the
harness does), fits each algorithm's constants by non-negative least squares on relative error,
and stores them with this machine's identity in the user's cache directory.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import costmodel, registry
from ..reference import random_inputs
from ..workspace import max_workspace_bytes
from . import timer
from .suite import random_layers

CALIBRATION_SEED = 1  # the auto experiment judges on another seed (experiments/auto.toml)
SLOWEST_S = 0.3  # an algorithm slower than this on a layer is not timed there (it would not win)
ROUNDS = 5  # round-robin repeats per layer; the median is fitted


def collect(count: int, device: str = "cpu", say=print) -> dict[str, list]:
    """{algorithm: [(features, median seconds), ...]} over ``count`` random layers."""
    specs = random_layers(count, CALIBRATION_SEED, max_flops=4e8)
    algos = [a for a in registry.algorithms("conv2d", device, peers=False)
             if costmodel.features(a.name, specs[0], device) is not None]  # modelled ones
    samples: dict[str, list] = {a.name: [] for a in algos}
    repeat = timer.cuda_repeat if device == "cuda" else timer.host_repeat
    limit = max_workspace_bytes()
    for i, spec in enumerate(specs):
        x, w = random_inputs(spec, CALIBRATION_SEED + i)
        if device == "cuda":
            from numba import cuda

            x, w = cuda.to_device(x), cuda.to_device(w)
        fns, loops = {}, {}
        for algo in algos:
            if not algo.supports(spec) or algo.workspace_bytes(spec) > limit:
                continue
            fn = algo.bound(spec, x, w)
            fn()  # compile and warm up
            n, warm = timer.calibrate(fn, 0.01, repeat)
            if warm <= SLOWEST_S:
                fns[algo.name], loops[algo.name] = fn, n
        rounds = timer.round_robin(fns, loops, ROUNDS, repeat=repeat)
        for name, times in rounds.items():
            samples[name].append((costmodel.features(name, spec, device), float(np.median(times))))
        say(f"[{i + 1}/{len(specs)}] {spec.label()}: " + ", ".join(
            f"{n} {np.median(t) * 1e3:.3g} ms" for n, t in rounds.items()))
    return samples


def calibrate(count: int = 80, devices: tuple[str, ...] = ("cpu",), path: Path | None = None,
              say=print) -> dict:
    """Fit and save the constants; returns the saved document (with fit quality)."""
    start = time.perf_counter()
    constants, quality = {}, {}
    for device in devices:
        for name, rows in collect(count, device, say).items():
            if len(rows) < 5:
                continue
            coeffs = costmodel.fit(rows)
            key = costmodel.CostModel.key(device, "conv2d", name)
            constants[key] = coeffs
            errors = [abs(float(np.dot(coeffs, f)) - t) / t for f, t in rows]
            quality[key] = {"samples": len(rows), "median_rel_error": float(np.median(errors))}
    doc = {"machine": costmodel.machine_id(), "constants": constants, "quality": quality,
           "seconds": round(time.perf_counter() - start, 1)}
    path = path or costmodel.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    from .. import auto

    auto.reload_model()
    return doc
