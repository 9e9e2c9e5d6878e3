"""Fitting the cost model and shipping a calibration: the maintainer's and ``calibrate``'s
side of ``costmodel`` (which, at run time, only loads constants and predicts).

The constants are fitted by non-negative least squares on relative error; each calibration
layer's log error is kept for the local correction; ``ship`` makes a calibration the one the
package installs (``convbench/cost_defaults.json``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import costmodel
from ..costmodel import DEFAULTS


def residuals(coeffs: list[float], samples: list[tuple[list[float], float, list[float]]]
              ) -> list[list[float]]:
    """[*descriptor, log(measured / linear prediction)] per calibration sample."""
    out = []
    for f, t, where in samples:
        predicted = max(float(np.dot(coeffs, f)), 1e-12)
        out.append([round(v, 4) for v in where] + [round(math.log(t / predicted), 4)])
    return out


def fit(samples: list[tuple[list[float], float]]) -> list[float]:
    """Non-negative constants minimising the relative error sum(((f.c - t) / t)^2), so a layer
    of microseconds weighs as much as one of seconds."""
    from scipy.optimize import nnls

    a = np.array([f for f, _ in samples], dtype=float)
    t = np.array([t for _, t in samples], dtype=float)
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    coeffs, _ = nnls((a / scale) / t[:, None], np.ones_like(t))
    return list(coeffs / scale)


def fit_quality(coeffs, rows, table) -> dict:
    """Median relative error of the linear model, and of the corrected one with each layer's
    own error left out of its correction (an honest estimate for unseen layers)."""
    linear, corrected = [], []
    for i, (f, t, where) in enumerate(rows):
        base = float(np.dot(coeffs, f))
        linear.append(abs(base - t) / t)
        corrected.append(abs(base * costmodel.local_factor(table, where, skip=i) - t) / t)
    return {"samples": len(rows), "linear": float(np.median(linear)),
            "corrected": float(np.median(corrected)),
            "linear_p90": float(np.percentile(linear, 90)),
            "corrected_p90": float(np.percentile(corrected, 90))}


def ship(doc: dict, devices: tuple[str, ...], note: str) -> Path:
    """Make a calibration the shipped default for ``devices`` (a maintainer's step: the
    constants and errors of those devices replace the shipped ones, the others stay). A CPU
    calibration replaces the shipped one of its vector target: the main CPU set when that was
    made for the same target (or there is none), else the ``cpu_alternatives`` entry of its
    target, added if there is none yet; so one file ships a calibration per target."""
    shipped = json.loads(DEFAULTS.read_text())
    main_cpu = shipped.get("machines", {}).get("cpu")
    if "cpu" in devices and main_cpu and not _same_target(main_cpu, doc["machines"]["cpu"]):
        _ship_alternative(shipped, doc, note)
        devices = tuple(d for d in devices if d != "cpu")
    for key in [k for k in shipped["constants"] if k.split("/")[0] in devices]:
        shipped["constants"].pop(key)
        shipped.get("residuals", {}).pop(key, None)
        shipped.get("quality", {}).pop(key, None)
    for key, coeffs in doc["constants"].items():
        if key.split("/")[0] not in devices:
            continue
        shipped["constants"][key] = coeffs
        shipped.setdefault("residuals", {})[key] = doc["residuals"][key]
        shipped.setdefault("quality", {})[key] = doc["quality"][key]
    for device in devices:
        shipped.setdefault("machines", {})[device] = doc["machines"][device]
        shipped.setdefault("sources", {})[device] = note
    if devices:
        shipped["machine"] = doc["machine"]
    DEFAULTS.write_text(json.dumps(shipped, indent=1))
    return DEFAULTS


def _same_target(id_a: str, id_b: str) -> bool:
    """Whether two machine ids name the same architecture and vector target."""
    a, b = id_a.split("|"), id_b.split("|")
    return a[1:2] == b[1:2] and a[3:4] == b[3:4]


def _ship_alternative(shipped: dict, doc: dict, note: str) -> None:
    """The CPU part of ``doc`` as the ``cpu_alternatives`` entry of its vector target."""
    cpu = [k for k in doc["constants"] if k.startswith("cpu/")]
    entry = {"machine": doc["machines"]["cpu"], "source": note,
             "constants": {k: doc["constants"][k] for k in cpu},
             "residuals": {k: doc["residuals"][k] for k in cpu},
             "quality": {k: doc["quality"][k] for k in cpu}}
    others = [a for a in shipped.get("cpu_alternatives", [])
              if not _same_target(a["machine"], entry["machine"])]
    shipped["cpu_alternatives"] = others + [entry]
