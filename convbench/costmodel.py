"""A cost model per algorithm: predicted seconds = sum of non-negative constants x features
(``costfeatures.py``), times a local correction.

The constants are fitted per machine by ``python -m convbench calibrate`` (non-negative least
squares on relative error over a random layer set). A linear model still errs systematically in
some regions of layer space (strided direct on tiny outputs, GEMMs with few output channels):
the calibration keeps each layer's log error, and a prediction is corrected by the weighted
mean log error of its NEIGHBOURS nearest calibration layers (in ``descriptor`` space). On the
project's 2-core CPU, offline on timed layers the model was not fitted on, that took the picks'
mean regret (pick time / fastest - 1) from 3.9% to 2.5% (4-fold cross-validation over 168
layers, within 10% of the fastest on 90% -> 93%), and on 48 held-out layers timed after the
allocator and FFT-thread fixes from 1.5% to 0.3%. Everything is stored in the user's cache
directory; without a calibration, the shipped one (``cost_defaults.json``, fitted on the
project's 2-core CPU and an H100) applies.
"""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np

from ._version import __version__
from .costfeatures import DESCRIPTOR_SIZE, descriptor, features

__all__ = ["CostModel", "cache_dir", "calibration_path", "descriptor", "features", "fit",
           "machine_id", "residuals"]

DEFAULTS = Path(__file__).with_name("cost_defaults.json")
MODEL_VERSION = 2  # bump when features change: calibrations and tuned picks of older ones are stale
NEIGHBOURS = 8  # calibration layers whose errors correct a prediction


def cache_dir() -> Path:
    """Per-user cache folder ($CONVBENCH_CACHE_DIR, else $XDG_CACHE_HOME/convbench, else
    ~/.cache/convbench)."""
    explicit = os.environ.get("CONVBENCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convbench"


def machine_id() -> str:
    """What makes timings comparable: CPU model, usable cores, Numba threads, package version."""
    from numba import config

    from .bench.environment import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu_model()}|{platform.machine()}|{cores} cores|"
            f"{config.NUMBA_NUM_THREADS} threads|convbench {__version__}|model {MODEL_VERSION}")


class CostModel:
    """Fitted constants, and calibration layers' log errors, per (device, op, algorithm)."""

    def __init__(self, constants: dict, source: str, residuals: dict | None = None):
        self.constants = constants  # {"cpu/conv2d/direct": [c0, c1, ...], ...}
        self.source = source
        # {key: [[*descriptor, log(measured / linear prediction)], ...]}
        self.residuals = {}
        for key, rows in (residuals or {}).items():
            try:
                table = np.asarray(rows, dtype=float)
            except (TypeError, ValueError):
                continue  # a malformed entry: that algorithm goes uncorrected
            if (table.ndim == 2 and len(table) and table.shape[1] == DESCRIPTOR_SIZE + 1
                    and np.isfinite(table).all()):
                self.residuals[key] = table

    @staticmethod
    def key(device: str, op: str, name: str) -> str:
        return f"{device}/{op}/{name}"

    def linear(self, name: str, spec, device: str = "cpu") -> float | None:
        """Constants x features: the prediction before the local correction."""
        coeffs = self.constants.get(self.key(device, spec.op, name))
        f = features(name, spec, device)
        if coeffs is None or f is None or len(coeffs) != len(f):
            return None
        return float(np.dot(coeffs, f))

    def correction(self, name: str, spec, device: str = "cpu") -> float:
        """Factor from the nearest calibration layers' errors (1 where there are none)."""
        table = self.residuals.get(self.key(device, spec.op, name))
        if table is None or spec.op != "conv2d":
            return 1.0
        return local_factor(table, descriptor(spec))

    def predict(self, name: str, spec, device: str = "cpu") -> float | None:
        """Predicted seconds, or None when the model has no constants for the algorithm."""
        base = self.linear(name, spec, device)
        return None if base is None else base * self.correction(name, spec, device)

    @classmethod
    def load(cls) -> "CostModel":
        """The shipped calibration, overridden per algorithm by this machine's own if there is
        one for this machine, package and model version."""
        defaults = json.loads(DEFAULTS.read_text())
        constants = dict(defaults["constants"])
        residuals = dict(defaults.get("residuals", {}))
        where = defaults.get("sources") or {"cpu": defaults.get("machine", "?")}
        source = f"shipped defaults ({'; '.join(f'{k}: {v}' for k, v in where.items())})"
        path = calibration_path()
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("machine") == machine_id():
                    # a CPU-only calibration keeps the shipped GPU constants, and vice versa
                    for key in data["constants"]:
                        residuals.pop(key, None)  # the shipped errors belong to other constants
                    constants.update(data["constants"])
                    residuals.update(data.get("residuals", {}))
                    source = f"calibration {path}, else {source}"
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass  # a corrupt file is ignored: the defaults still work
        return cls(constants, source, residuals)


def local_factor(table: np.ndarray, where: list[float], skip: int | None = None) -> float:
    """exp of the distance-weighted mean log error of the NEIGHBOURS rows of ``table`` nearest
    to ``where`` (L1 distance on the descriptor; row ``skip`` left out)."""
    dist = np.abs(table[:, :-1] - np.asarray(where)).sum(axis=1)
    if skip is not None:
        dist[skip] = np.inf
    near = np.argsort(dist)[:NEIGHBOURS]
    near = near[np.isfinite(dist[near])]
    if not len(near):
        return 1.0
    weights = 1.0 / (1.0 + dist[near])
    return float(np.exp(np.sum(weights * table[near, -1]) / weights.sum()))


def residuals(coeffs: list[float], samples: list[tuple[list[float], float, list[float]]]
              ) -> list[list[float]]:
    """[*descriptor, log(measured / linear prediction)] per calibration sample."""
    out = []
    for f, t, where in samples:
        predicted = max(float(np.dot(coeffs, f)), 1e-12)
        out.append([round(v, 4) for v in where] + [round(math.log(t / predicted), 4)])
    return out


def calibration_path() -> Path:
    return cache_dir() / "cost_model.json"


def fit(samples: list[tuple[list[float], float]]) -> list[float]:
    """Non-negative constants minimising the relative error sum(((f.c - t) / t)^2), so a layer
    of microseconds weighs as much as one of seconds. Tried and not kept: the same fit on log
    error, and a power law log t = c0 + sum c_i log(1 + f_i); on held-out layers neither picked
    better beyond the run-to-run noise of the calibration timings (79-88% of picks within 10%
    of the fastest for all three)."""
    from scipy.optimize import nnls

    a = np.array([f for f, _ in samples], dtype=float)
    t = np.array([t for _, t in samples], dtype=float)
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    coeffs, _ = nnls((a / scale) / t[:, None], np.ones_like(t))
    return list(coeffs / scale)
