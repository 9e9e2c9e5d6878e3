"""Performance regression gate that holds across runs and noise, per machine.

Every algorithm is timed interleaved round-robin with a control of its own kind (a BLAS GEMM
for BLAS-bound algorithms, a Numba stencil for our loops, an FFT for FFT-bound ones, a memory
copy for memory-bound ones: ``controls.py``), and each round gives one ratio algorithm /
control. Baselines of these per-round ratios are kept per machine (asv's machine concept), in
``tests/benchmarks/baselines/<machine>.json``; a fresh measurement regresses when the 95%
bootstrap interval of its median ratio over the baseline's lies wholly above 1 + threshold.
A ratio to a control does not carry between hosts, even of one kind (1.5x was seen), so a
stored baseline is strict only on the host that recorded it, advisory on another host of the
same identity, and refused for another identity; ``gate --against`` (``against.py``), which
times both versions here, is what holds on any machine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import machine, registry, timing
from ..reference import random_inputs
from . import controls, stats
from .suite import Layer

BASELINES = Path(__file__).resolve().parents[2] / "tests" / "benchmarks" / "baselines"
DEFAULT_THRESHOLD = 0.25


@dataclass
class Result:
    layer: str
    algorithm: str
    control: str
    ratio: float  # median(new) / median(baseline), or nan without a baseline
    low: float
    high: float
    verdict: str  # "regression", "ok", "improved" or "new"
    allowed: float


def baseline_path(identity: str | None = None) -> Path:
    """This machine's baseline file (by CPU model, architecture and cores)."""
    return BASELINES / f"{machine.machine_slug(identity)}.json"


def measure(layers: list[Layer], repeats: int = 9, target_seconds: float = 0.02,
            include_peers: bool = False) -> dict[str, dict]:
    """``{"layer|algorithm": {"control": kind, "ratios": [time/control of each round]}}`` for
    every registered CPU algorithm that supports the layer (new algorithms are picked up from
    the registry)."""
    samples = {}
    ready = {}
    for layer in layers:
        spec = layer.spec
        x, w, b = random_inputs(spec)
        for algo in registry.algorithms(spec.op, "cpu", peers=None if include_peers else False):
            if not algo.supports(spec):
                continue
            if algo.bound_by not in ready:
                ready[algo.bound_by] = controls.control(algo.bound_by)
            fn = algo.bound(spec, x, w, b)
            fn()  # compile / first call, untimed
            got = timing.measure({"algorithm": fn, "control": ready[algo.bound_by]},
                                 min_rounds=repeats, max_rounds=repeats,
                                 target_seconds=target_seconds)
            mine, control = timing.paired(got["algorithm"].rounds, got["control"].rounds)
            ratios = mine / control
            samples[f"{layer.name}|{algo.name}"] = {"control": algo.bound_by,
                                                    "ratios": [float(r) for r in ratios]}
    return samples


def check(measured: dict[str, dict], baseline: dict, threshold: float | None = None
          ) -> list[Result]:
    """A verdict per (layer, algorithm): 'regression' when the bootstrap interval of the
    ratio new/baseline lies wholly above 1 + its allowed slowdown; 'new' without a baseline."""
    default = baseline.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold
    per_layer = baseline.get("layer_thresholds", {})
    results = []
    for key, got in sorted(measured.items()):
        layer, algo = key.split("|")
        new, control = got["ratios"], got["control"]
        allowed = per_layer.get(layer, default) if threshold is None else threshold
        old = baseline.get("samples", {}).get(key)
        if not old:
            results.append(Result(layer, algo, control, np.nan, np.nan, np.nan, "new", allowed))
            continue
        ratio, lo, hi = stats.median_ratio_interval(new, old)
        verdict = ("regression" if lo > 1 + allowed else
                   "improved" if hi < 1 / (1 + allowed) else "ok")
        results.append(Result(layer, algo, control, ratio, lo, hi, verdict, allowed))
    return results


def standing(baseline: dict) -> str:
    """How a stored baseline holds here: 'strict' (recorded on this host), 'advisory' (the
    same machine identity on another host, which can differ by 1.5x) or 'foreign' (another
    identity: CPU, cores, vector target or BLAS kernel differ; not comparable)."""
    recorded = baseline.get("machine", "")
    if not machine.same_hardware(recorded, machine.machine_id()):
        return "foreign"
    return "strict" if baseline.get("host") == machine.host_id() else "advisory"


def load_baseline(path: Path | None = None) -> dict | None:
    """This machine's baseline (or the file given), None when there is none."""
    path = Path(path) if path else baseline_path()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"baseline {path} is damaged ({exc}); write a new one with "
                         "`python -m convbench baseline`") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), dict):
        raise ValueError(f"baseline {path} is not a convbench baseline; write a new one with "
                         "`python -m convbench baseline`")
    return data


def save_baseline(samples: dict[str, list[float]], env: dict, path: Path | None = None,
                  previous: dict | None = None) -> Path:
    """Write the per-round ratios (``{"layer|algorithm": [ratio, ...]}``), keeping the
    thresholds of the previous baseline."""
    path = Path(path) if path else baseline_path()
    previous = previous or {}
    data = {
        "machine": machine.machine_id(),
        "host": machine.host_id(),
        "controls": controls.describe(),
        "threshold": previous.get("threshold", DEFAULT_THRESHOLD),
        "layer_thresholds": previous.get("layer_thresholds", {}),
        "environment": {k: env.get(k) for k in ("cpu", "cores", "cpu_flags", "blas",
                                                "numba_threading_layer", "versions")},
        "samples": {k: [round(v, 5) for v in vs] for k, vs in sorted(samples.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def format_results(results: list[Result]) -> str:
    from tabulate import tabulate

    rows = [[r.layer, r.algorithm, r.control,
             "" if np.isnan(r.ratio) else f"{r.ratio:.3f}",
             "" if np.isnan(r.ratio) else f"{(r.ratio - 1) * 100:+.0f}%",
             "" if np.isnan(r.low) else f"{r.low:.2f}-{r.high:.2f}",
             f"+{r.allowed * 100:.0f}%", r.verdict.upper() if r.verdict == "regression"
             else r.verdict] for r in results]
    return tabulate(rows, headers=["layer", "algorithm", "control", "now/baseline", "change",
                                   "95% CI", "allowed", "verdict"])
