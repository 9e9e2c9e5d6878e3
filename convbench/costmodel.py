"""A cost model per algorithm: predicted seconds = sum of non-negative constants x the work
features the algorithm declares (``Algorithm.cost_features``), times a local correction.

The constants are fitted per machine by ``python -m convbench calibrate`` (``bench/costfit.py``: non-negative least
squares on relative error over a seeded random set of layers). A linear model errs
systematically in some regions of layer space (strided direct on tiny outputs, GEMMs with few
output channels), so calibration also keeps each layer's log error, and a prediction is
multiplied by the distance-weighted mean error of its ``NEIGHBOURS`` nearest calibration layers
(in :func:`descriptor` space). Without a calibration for this machine the shipped one
(``cost_defaults.json``) applies, and :attr:`CostModel.note` says that it was made elsewhere.
The file ships one CPU calibration per vector target (the main one and ``cpu_alternatives``):
the one whose machine is closest to this one's applies (the same vector target first, as the
kernels' block shapes and so their speeds follow it; then the BLAS kernel, the CPU model).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from . import machine, settings

__all__ = ["CostModel", "cache_dir", "calibration_path", "descriptor", "local_factor",
           "model_id", "save_calibration"]

DEFAULTS = Path(__file__).with_name("cost_defaults.json")
MODEL_VERSION = 4  # bump when features change: calibrations and tuned picks of older ones are stale
NEIGHBOURS = 8  # calibration layers whose errors correct a prediction
DESCRIPTOR_SIZE = 9


def cache_dir() -> Path:
    """Per-user cache folder ($CONVBENCH_CACHE_DIR, else $XDG_CACHE_HOME/convbench, else
    ~/.cache/convbench)."""
    explicit = settings.path("CONVBENCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convbench"


def calibration_path() -> Path:
    return cache_dir() / "cost_model.json"


_generation = 0  # bumped by every calibration this process saves


def generation() -> int:
    """Changes whenever this process saves a calibration (the chooser reloads then)."""
    return _generation


def save_calibration(doc: dict, path: Path | None = None) -> Path:
    """Write a calibration document (atomically: a reader sees the old file or the new)."""
    global _generation
    path = Path(path) if path else calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    _generation += 1
    return path


def model_id() -> str:
    """This machine's id with the model version: what a calibration must match to be used."""
    return f"{machine.machine_id()}|model {MODEL_VERSION}"


def descriptor(spec) -> list[float]:
    """Log2 of batch, channels in and out, image, kernel and output size, with stride and padding
    flags and the groups: neighbours in this space share the model's systematic errors."""
    ho, wo = spec.out_size
    # an empty batch sits with batch 1: it computes nothing, but is still explained
    return [math.log2(max(spec.n, 1)), math.log2(spec.c), math.log2(spec.k),
            math.log2(spec.h * spec.w) / 2, math.log2(spec.kh * spec.kw) / 2,
            math.log2(ho * wo) / 2, 2.0 * (spec.stride != (1, 1)), 1.0 * any(spec.pad),
            math.log2(spec.groups) / 2]


def _constants_ok(value) -> bool:
    return (isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in value))


def _residual_table(rows) -> np.ndarray | None:
    try:
        table = np.asarray(rows, dtype=float)
    except (TypeError, ValueError):
        return None
    if (table.ndim == 2 and len(table) and table.shape[1] == DESCRIPTOR_SIZE + 1
            and np.isfinite(table).all()):
        return table
    return None


class CostModel:
    """Fitted constants, and calibration layers' log errors, per (device, op, algorithm)."""

    def __init__(self, constants: dict, source: str, residuals: dict | None = None,
                 machines: dict[str, str] | None = None):
        self.constants = {k: list(v) for k, v in constants.items() if _constants_ok(v)}
        self.source = source
        self.machines = machines or {}  # device -> the machine id its constants came from
        self.residuals = {}  # {key: [[*descriptor, log(measured / linear prediction)], ...]}
        for key, rows in (residuals or {}).items():
            table = _residual_table(rows)
            if table is not None:  # a malformed table leaves that algorithm uncorrected
                self.residuals[key] = table
        self._warned: set[str] = set()

    @staticmethod
    def key(device: str, op: str, name: str) -> str:
        return f"{device}/{op}/{name}"

    def linear(self, algorithm, spec) -> float | None:
        """Constants x features: the prediction before the local correction. None when the
        algorithm is not modelled or has no constants here; constants fitted for another
        feature vector (a stale calibration) are ignored with one warning."""
        if algorithm.cost_features is None:
            return None
        key = self.key(algorithm.device, spec.op, algorithm.name)
        coeffs = self.constants.get(key)
        if coeffs is None:
            return None
        f = algorithm.cost_features(spec)
        if len(coeffs) != len(f):
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"cost model {self.source}: {len(coeffs)} constants for {key} "
                              f"but the algorithm has {len(f)} features; its prediction is "
                              "left out (run `python -m convbench calibrate`)", stacklevel=3)
            return None
        return float(np.dot(coeffs, f))

    def correction(self, algorithm, spec) -> float:
        """Factor from the nearest calibration layers' errors (1 where there are none)."""
        table = self.residuals.get(self.key(algorithm.device, spec.op, algorithm.name))
        if table is None or spec.op != "conv2d":
            return 1.0
        return local_factor(table, descriptor(spec))

    def predict(self, algorithm, spec) -> float | None:
        """Predicted seconds, or None when the model has no constants for the algorithm."""
        base = self.linear(algorithm, spec)
        return None if base is None else base * self.correction(algorithm, spec)

    def note(self, device: str) -> str:
        """'' when ``device``'s constants were calibrated on this machine; else what to do."""
        made_on = self.machines.get(device)
        here = machine.device_identity(device)
        if made_on and machine.same_hardware(made_on, here):
            return ""
        if not made_on:
            where = "no machine"
        else:
            where = made_on.split("|")[0]
            difference = machine.hardware_difference(made_on, here)
            if where == here.split("|")[0] and difference:
                where = f"another {where} ({difference})"
        return (f"the {device} cost model was calibrated on {where}, not on this machine "
                f"({here.split('|')[0]}); run `python -m convbench calibrate"
                f"{' --device cuda' if device == 'cuda' else ''}` to fit it here")

    @classmethod
    def load(cls) -> "CostModel":
        """The shipped calibration, overridden per algorithm by this machine's own if there is
        one for this machine, package and model version. A damaged calibration file is
        ignored with one warning naming it."""
        defaults = json.loads(DEFAULTS.read_text())
        constants = dict(defaults["constants"])
        residuals = dict(defaults.get("residuals", {}))
        machines = dict(defaults.get("machines", {}))
        where = dict(defaults.get("sources", {}))
        closer = closest_cpu_alternative(defaults, machine.device_identity("cpu"))
        if closer is not None:  # another vector target's CPU set replaces the main one
            for key in [k for k in constants if k.startswith("cpu/")]:
                constants.pop(key)
                residuals.pop(key, None)
            constants.update(closer["constants"])
            residuals.update(closer.get("residuals", {}))
            machines["cpu"], where["cpu"] = closer["machine"], closer.get("source", "")
        source = f"shipped defaults ({'; '.join(f'{k}: {v}' for k, v in where.items())})"
        path = calibration_path()
        data = _read_calibration(path)
        if data is not None and data["machine"] == model_id():
            # a CPU-only calibration keeps the shipped GPU constants, and vice versa
            for key in data["constants"]:
                residuals.pop(key, None)  # the shipped errors belong to other constants
            constants.update(data["constants"])
            residuals.update(data.get("residuals", {}))
            made_on = data.get("machines", {})
            for key in data["constants"]:
                device = key.split("/")[0]
                machines[device] = made_on.get(device, data["machine"])
            source = f"calibration {path}, else {source}"
        return cls(constants, source, residuals, machines)


def closest_cpu_alternative(defaults: dict, here: str) -> dict | None:
    """The shipped CPU calibration of ``cpu_alternatives`` whose machine is closer to ``here``
    (:func:`machine.closeness`) than the main one's, or None (the main one applies)."""
    main = defaults.get("machines", {}).get("cpu")
    best, best_closeness = None, machine.closeness(main, here) if main else ()
    for alternative in defaults.get("cpu_alternatives", []):
        if not (isinstance(alternative, dict) and isinstance(alternative.get("machine"), str)
                and isinstance(alternative.get("constants"), dict)):
            continue
        near = machine.closeness(alternative["machine"], here)
        if near > best_closeness:
            best, best_closeness = alternative, near
    return best


def _read_calibration(path: Path) -> dict | None:
    """The calibration document at ``path``, or None (absent, or damaged: warned once)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        _warn_damaged(path, f"{type(exc).__name__}: {exc}")
        return None
    if not (isinstance(data, dict) and isinstance(data.get("machine"), str)
            and isinstance(data.get("constants"), dict)
            and all(_constants_ok(v) for v in data["constants"].values())
            and isinstance(data.get("residuals", {}), dict)):
        _warn_damaged(path, "not a calibration document (machine, constants, residuals)")
        return None
    return data


_damaged_warned: set[str] = set()


def _warn_damaged(path: Path, why: str) -> None:
    if str(path) not in _damaged_warned:
        _damaged_warned.add(str(path))
        warnings.warn(f"ignoring damaged cost-model calibration {path} ({why}); the shipped "
                      "one applies (`python -m convbench calibrate` writes a new one)",
                      stacklevel=4)


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
