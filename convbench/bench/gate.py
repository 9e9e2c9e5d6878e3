"""Performance regression gate that holds across machines and noise.

Absolute times do not carry between machines, so every measurement session also times a fixed
control (a float32 GEMM, 384^3) interleaved round-robin with the algorithms, and stores each
algorithm's time as the median over rounds of algorithm/control. A committed baseline of these
ratios is compared with a fresh measurement: an algorithm whose normalised time grew by more
than the threshold (25% by default, overridable per layer) fails the gate.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .. import registry
from ..reference import random_inputs
from . import timer
from .suite import Layer

BASELINE = Path(__file__).resolve().parents[2] / "tests" / "benchmarks" / "baseline.json"
CONTROL_SIZE = 384
DEFAULT_THRESHOLD = 0.25
CONTROL = "control_gemm"


def control_fn() -> Callable[[], object]:
    """The fixed control: a float32 GEMM of CONTROL_SIZE^3 into a preallocated output."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((CONTROL_SIZE, CONTROL_SIZE), dtype=np.float32)
    b = rng.standard_normal((CONTROL_SIZE, CONTROL_SIZE), dtype=np.float32)
    c = np.empty_like(a)
    return lambda: np.dot(a, b, out=c)


def measure(layers: list[Layer], repeats: int = 7, target_seconds: float = 0.02,
            include_peers: bool = False) -> dict[str, float]:
    """``{"layer|algorithm": median over rounds of time/control}`` for every registered CPU
    algorithm that supports the layer (new algorithms are picked up from the registry)."""
    ratios = {}
    control = control_fn()
    for layer in layers:
        spec = layer.spec
        x, w = random_inputs(spec)
        fns = {CONTROL: control}
        for algo in registry.algorithms(spec.op, "cpu"):
            if (algo.is_peer and not include_peers) or not algo.supports(spec):
                continue
            fns[algo.name] = algo.bound(spec, x, w)
        loops = {}
        for name, fn in fns.items():
            fn()  # compile / first call, untimed
            loops[name], _ = timer.calibrate(fn, target_seconds)
        rounds = timer.round_robin(fns, loops, repeats)
        for name, times in rounds.items():
            if name != CONTROL:
                ratios[f"{layer.name}|{name}"] = 1.0 / timer.median_round_ratio(
                    times, rounds[CONTROL])
    return ratios


def check(measured: dict[str, float], baseline: dict, threshold: float | None = None) -> list[str]:
    """Messages for every (layer, algorithm) whose normalised time exceeds the baseline by more
    than its threshold; empty when the gate passes. Unknown keys (new algorithms) pass."""
    default = baseline.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold
    per_layer = baseline.get("layer_thresholds", {})
    failures = []
    for key, new in sorted(measured.items()):
        old = baseline["ratios"].get(key)
        if old is None:
            continue
        layer, algo = key.split("|")
        limit = per_layer.get(layer, default) if threshold is None else threshold
        if new > old * (1 + limit):
            failures.append(
                f"{algo} on {layer}: time/control {new:.3g} vs baseline {old:.3g} "
                f"(+{(new / old - 1) * 100:.0f}%, allowed +{limit * 100:.0f}%)")
    return failures


def load_baseline(path: Path = BASELINE) -> dict:
    if not Path(path).exists():
        raise ValueError(f"no baseline at {path}; create it with `python -m convbench baseline`")
    return json.loads(Path(path).read_text())


def save_baseline(ratios: dict[str, float], env: dict, path: Path = BASELINE,
                  previous: dict | None = None) -> None:
    """Write the ratios, keeping the thresholds of the previous baseline file."""
    previous = previous or {}
    data = {
        "control": f"float32 GEMM {CONTROL_SIZE}^3 (numpy.dot)",
        "threshold": previous.get("threshold", DEFAULT_THRESHOLD),
        "layer_thresholds": previous.get("layer_thresholds", {}),
        "machine": {k: env.get(k) for k in ("cpu", "cores", "versions")},
        "ratios": {k: round(v, 4) for k, v in sorted(ratios.items())},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
