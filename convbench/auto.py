"""``algorithm="auto"``: pick the algorithm for a layer, say why, and optionally measure.

Without measuring, every algorithm of ours that supports the case and whose declared workspace
fits the limit (``CONVBENCH_MAX_WORKSPACE``, default half the free memory) gets a predicted time
from the calibrated cost model (``costmodel.py``); the fastest prediction wins. With
``measure=True`` (or ``CONVBENCH_AUTOTUNE=1``) the three best-predicted candidates are timed once
on the actual shape and the winner is cached per (device, dtype, shapes, stride, padding,
dilation, flip) in the user's cache directory, so later processes reuse it (like
``torch.backends.cudnn.benchmark``, but persisted, and invalidated when the machine or the
package version changes).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import registry
from .costmodel import CostModel, cache_dir, machine_id
from .reference import random_inputs
from .spec import conv_spec, pool_spec
from .workspace import max_workspace_bytes

MEASURE_TOP = 3  # candidates timed when measuring
ENV_AUTOTUNE = "CONVBENCH_AUTOTUNE"


@dataclass(frozen=True)
class Candidate:
    name: str
    predicted_s: float | None
    workspace_bytes: int
    note: str = ""  # why it is not eligible ("" when it is)
    correction: float = 1.0  # the local correction included in predicted_s


@dataclass
class Choice:
    """The algorithm ``auto`` runs, with every candidate it weighed and the reason."""

    algorithm: registry.Algorithm
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    model: str = ""

    def __str__(self) -> str:
        lines = [f"{'algorithm':12s} {'predicted ms':>12s} {'correction':>10s} "
                 f"{'workspace':>12s}  note"]
        for c in self.candidates:
            pred = f"{c.predicted_s * 1e3:12.3f}" if c.predicted_s is not None else f"{'-':>12s}"
            corr = f"x{c.correction:9.2f}" if c.predicted_s is not None else f"{'':10s}"
            mark = "  <- pick" if c.name == self.algorithm.name else ""
            lines.append(f"{c.name:12s} {pred} {corr} {c.workspace_bytes:12d}  {c.note}{mark}")
        lines.append(f"pick: {self.algorithm.name}: {self.reason}")
        lines.append(f"model: {self.model}")
        return "\n".join(lines)


_MODEL: CostModel | None = None


def model() -> CostModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = CostModel.load()
    return _MODEL


def reload_model() -> None:
    """Forget the loaded model (after a calibration)."""
    global _MODEL
    _MODEL = None


def _candidates(spec, device: str) -> list[tuple[registry.Algorithm, Candidate]]:
    limit = max_workspace_bytes()
    cm = model()
    out = []
    for algo in registry.algorithms(spec.op, device, peers=False):
        if not algo.supports(spec):
            out.append((algo, Candidate(algo.name, None, 0, f"unsupported: {algo.limits}")))
            continue
        need = algo.workspace_bytes(spec)
        base = cm.linear(algo.name, spec, device)
        corr = cm.correction(algo.name, spec, device) if base is not None else 1.0
        pred = None if base is None else base * corr  # as cm.predict, the correction once
        note = "" if need <= limit else f"workspace over the {limit}-byte limit"
        out.append((algo, Candidate(algo.name, pred, need, note, corr)))
    return out


def _rule_of_thumb(spec) -> list[str]:
    """Order of preference where the model has no constants (for example a GPU that was never
    calibrated): 1x1 -> GEMM; 9x9 and larger at stride 1 -> FFT; else direct."""
    if spec.op != "conv2d":
        return ["direct"]
    plain = spec.stride == (1, 1) and spec.dilation == (1, 1)
    if spec.kh * spec.kw == 1 and plain and not any(spec.pad):
        return ["im2col", "direct"]
    if spec.kh * spec.kw >= 81 and plain:
        return ["fft", "fft_tiled", "direct"]
    return ["direct", "im2col"]


def choose(spec, device: str = "cpu", measure: bool | None = None) -> Choice:
    """The algorithm ``auto`` runs for ``spec`` on ``device``, with the reason."""
    if measure is None:
        measure = os.environ.get(ENV_AUTOTUNE, "0") not in ("", "0")
    cands = _candidates(spec, device)
    eligible = [(a, c) for a, c in cands if not c.note]
    if not eligible:
        reasons = "; ".join(f"{c.name}: {c.note}" for _, c in cands)
        raise ValueError(f"no algorithm can run {spec.label()} on {device}: {reasons}; "
                         "raise CONVBENCH_MAX_WORKSPACE or change the layer")
    info = [c for _, c in cands]
    src = model().source
    if len(eligible) == 1:
        a, _ = eligible[0]
        return Choice(a, "the only eligible algorithm", info, src)
    predicted = [(c.predicted_s, a) for a, c in eligible if c.predicted_s is not None]
    if measure:
        ranked = [a for _, a in sorted(predicted, key=lambda p: p[0])] or [a for a, _ in eligible]
        return _measured(spec, device, ranked[:MEASURE_TOP], info, src)
    if len(predicted) == len(eligible):
        best_t, best = min(predicted, key=lambda p: p[0])
        runner = sorted(t for t, _ in predicted)[1]
        return Choice(best, f"fastest predicted ({best_t * 1e3:.3g} ms; next "
                      f"{runner * 1e3:.3g} ms)", info, src)
    names = {a.name: a for a, _ in eligible}
    for name in _rule_of_thumb(spec):
        if name in names:
            return Choice(names[name], "rule of thumb: no calibrated cost model for "
                          f"{device}; run `python -m convbench calibrate`", info, src)
    a, _ = eligible[0]
    return Choice(a, "first eligible algorithm", info, src)


# --------------------------------------------------------------------------- measured choices


def _tuning_path():
    return cache_dir() / "tuned.json"


def _cache_key(spec, device: str) -> str:
    return f"{device}|{spec.op}|{spec.label()}|{spec.dtype}"


def _load_tuned() -> dict:
    try:
        data = json.loads(_tuning_path().read_text())
        if data.get("machine") == machine_id():
            return data
    except (OSError, ValueError):
        pass
    return {"machine": machine_id(), "entries": {}}  # other machine or version: start afresh


def _save_tuned(data: dict) -> None:
    path = _tuning_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def _time_once(algo: registry.Algorithm, spec, device: str, repeats: int = 3) -> float:
    call = algo.bound(spec, *random_inputs(spec))
    sync = (lambda: __import__("numba").cuda.synchronize()) if device == "cuda" else (lambda: None)
    call()  # compile and warm up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _measured(spec, device, ranked, info, src) -> Choice:
    data = _load_tuned()
    key = _cache_key(spec, device)
    hit = data["entries"].get(key)
    names = {a.name: a for a in ranked}
    if hit and hit["algorithm"] in names:
        times = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in hit["times"].items())
        return Choice(names[hit["algorithm"]], f"measured earlier on this machine ({times})",
                      info, src)
    times = {a.name: _time_once(a, spec, device) for a in ranked}
    best = min(times, key=times.get)
    data["entries"][key] = {"algorithm": best, "times": times}
    _save_tuned(data)
    listed = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in times.items())
    return Choice(names[best], f"measured now, fastest of the top {len(ranked)} predicted "
                  f"({listed}); cached", info, src)


def explain(x_shape, w_shape=None, *, stride=1, padding=0, dilation=1, flip=False,
            dtype="float32", device="cpu", pool: str | None = None, size=None,
            measure: bool = False) -> Choice:
    """Every candidate's predicted time and workspace for a layer, the pick, and why.

    For a convolution pass ``x_shape`` (N, C, H, W) and ``w_shape`` (K, C, kh, kw); for pooling
    pass ``pool="max"`` or ``"avg"`` and ``size`` instead of ``w_shape``. ``print()`` the result
    for a table.
    """
    if pool is not None:
        spec = pool_spec(pool, x_shape, size, stride=None if stride == 1 else stride,
                         padding=padding, dtype=dtype)
    else:
        spec = conv_spec(x_shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                         flip=flip, dtype=dtype)
    from .devices import check_device

    check_device(device)
    return choose(spec, device, measure)
