"""``algorithm="auto"``: pick the algorithm for a layer, say why, and optionally measure.

Without measuring, every algorithm of ours that supports the case and whose declared workspace
fits the limit (``CONVBENCH_MAX_WORKSPACE``, default half the available memory) gets a
predicted time from the calibrated cost model (``costmodel.py``); the fastest prediction wins.
Algorithms the model does not cover are ranked by their rough cost instead. With
``measure=True`` (or ``CONVBENCH_AUTOTUNE=1``) the best-predicted candidates are timed on the
actual shape until their spread settles, and the winner is cached per (device, dtype, shapes,
stride, padding, dilation, flip) in ``tuning.py``'s cache, so later processes reuse it (like
``torch.backends.cudnn.benchmark``, but persisted, and invalidated when the machine or the
package changes); a candidate within the noise of the model's pick does not overturn it.

Algorithms that mix inputs through transforms (FFT, Winograd) spread one NaN or Inf over whole
planes or tiles, and their intermediates exceed direct summation's range: when the inputs
hold a non-finite value, or are large enough for those intermediates to overflow, ``auto``
chooses among the others, so the default path gives torch's and SciPy's NaN/Inf pattern. A
call checks the transform's result rather than its inputs (:func:`checked_call`: any NaN or
Inf there comes from one of those two) and only then looks at the inputs and redoes it.

The model-only choice depends on the shape alone and is remembered per process, until the
cost model changes or the workspace limit moves past what the choice depended on.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

from . import costmodel, registry, settings, timing, tuning
from .costmodel import CostModel
from .magnitude import largest_magnitude
from .reference import random_inputs
from .spec import conv_spec, pool_spec
from .workspace import ENV_LIMIT, max_workspace_bytes

MEASURE_TOP = 3  # candidates timed when measuring
ENV_AUTOTUNE = "CONVBENCH_AUTOTUNE"
MEMO_SIZE = 4096  # shapes whose model-only choice a process remembers
MODEL_CHECK_S = 0.5  # how often the calibration file is looked at for changes
OVERFLOW_MARGIN = 16.0  # headroom below the dtype's largest value for transform intermediates


@dataclass(frozen=True)
class Candidate:
    name: str
    predicted_s: float | None
    workspace_bytes: int
    note: str = ""  # why it is not eligible ("" when it is)
    correction: float = 1.0  # the local correction included in predicted_s
    rough: float | None = None  # the uncalibrated estimate, where there is no prediction


def _bytes(value: int) -> str:
    """A byte count as people read it: 0 B, 980 B, 3.3 MiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


@dataclass
class Choice:
    """The algorithm ``auto`` runs, with every candidate it weighed and the reason."""

    algorithm: registry.Algorithm
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    model: str = ""
    calibration_note: str = ""

    def __str__(self) -> str:
        lines = [f"{'algorithm':12s} {'predicted ms':>12s} {'correction':>10s} "
                 f"{'workspace':>12s}  note"]
        for c in self.candidates:
            pred = f"{c.predicted_s * 1e3:12.3f}" if c.predicted_s is not None else f"{'-':>12s}"
            corr = f"x{c.correction:9.2f}" if c.predicted_s is not None else f"{'':10s}"
            mark = "  <- pick" if c.name == self.algorithm.name else ""
            lines.append(f"{c.name:12s} {pred} {corr} {_bytes(c.workspace_bytes):>12s}  "
                         f"{c.note}{mark}")
        lines.append(f"pick: {self.algorithm.name}: {self.reason}")
        lines.append(f"model: {self.model}")
        if self.calibration_note:
            lines.append(f"note: {self.calibration_note}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the cost model

_model: CostModel | None = None
_model_stamp: tuple | None = None
_model_checked = -1.0


def _calibration_stamp() -> tuple:
    path = costmodel.calibration_path()
    try:
        st = path.stat()
        return (costmodel.generation(), str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return (costmodel.generation(), str(path), None, None)


def model() -> CostModel:
    """The cost model in use, reloaded when the calibration file changes (looked at no more
    often than every MODEL_CHECK_S seconds)."""
    global _model, _model_stamp, _model_checked
    now = time.monotonic()
    if (_model is None or now - _model_checked > MODEL_CHECK_S
            or _model_stamp[0] != costmodel.generation()):
        _model_checked = now
        stamp = _calibration_stamp()
        if _model is None or stamp != _model_stamp:
            _model, _model_stamp = CostModel.load(), stamp
            _MEMO.clear()
    return _model


def reload_model() -> None:
    """Forget the loaded model and every remembered choice (the next call reloads)."""
    global _model
    _model = None
    _MEMO.clear()


# --------------------------------------------------------------------------- model-only choice


@dataclass
class _Remembered:
    choice: Choice
    ranked: list[registry.Algorithm]  # eligible, best first
    valid_from: int  # the choice holds while valid_from <= limit < valid_below
    valid_below: float


_MEMO: OrderedDict[tuple, _Remembered] = OrderedDict()


def _rank_key(c: Candidate) -> tuple:
    """Predicted candidates by prediction; the rest after them by rough cost."""
    if c.predicted_s is not None:
        return (0, c.predicted_s)
    return (1, c.rough if c.rough is not None else float("inf"))


def _model_choice(spec, device: str, limit: int) -> _Remembered:
    cm = model()
    cands: list[tuple[registry.Algorithm, Candidate]] = []
    for algo in registry.algorithms(spec.op, device, peers=False):
        if not algo.supports(spec):
            cands.append((algo, Candidate(algo.name, None, 0, f"unsupported: {algo.limits}")))
            continue
        need = algo.workspace_bytes(spec)
        base = cm.linear(algo, spec)
        corr = cm.correction(algo, spec) if base is not None else 1.0
        rough = algo.rough_cost(spec) if base is None and algo.rough_cost else None
        note = "" if need <= limit else f"workspace over the {limit}-byte limit"
        pred = None if base is None else base * corr
        cands.append((algo, Candidate(algo.name, pred, need, note, corr, rough)))
    info = [c for _, c in cands]
    supported = [(a, c) for a, c in cands if not c.note.startswith("unsupported")]
    eligible = sorted(((a, c) for a, c in supported if not c.note), key=lambda p: _rank_key(p[1]))
    if not eligible:
        reasons = "; ".join(f"{c.name}: {c.note}" for c in info)
        raise ValueError(f"no algorithm can run {spec.label()} on {device}: {reasons}; "
                         f"raise {ENV_LIMIT} or change the layer")
    best_algo, best = eligible[0]
    # the choice stands while the pick fits and every better candidate kept out by the limit
    # stays out
    better_out = [c.workspace_bytes for _, c in supported
                  if c.note and _rank_key(c) < _rank_key(best)]
    valid_below = min(better_out) if better_out else float("inf")
    if len(eligible) == 1:
        reason = "the only eligible algorithm"
    elif best.predicted_s is not None:
        runner = eligible[1][1]
        nxt = (f"; next {runner.predicted_s * 1e3:.3g} ms" if runner.predicted_s is not None
               else "")
        reason = f"fastest predicted ({best.predicted_s * 1e3:.3g} ms{nxt})"
    else:
        reason = (f"lowest rough cost: no calibrated cost model for {device}; run "
                  f"`python -m convbench calibrate{' --device cuda' if device == 'cuda' else ''}`")
    choice = Choice(best_algo, reason, info, cm.source)
    return _Remembered(choice, [a for a, _ in eligible], best.workspace_bytes, valid_below)


def _remembered(spec, device: str) -> _Remembered:
    model()  # reloads (and clears the memo) if the calibration changed
    key = (spec, device, registry.version())
    entry = _MEMO.get(key)
    # a choice that needs no workspace and passed over nothing for lack of it holds at any
    # limit: the limit (an environment variable and /proc/meminfo) is read only otherwise
    limit = 0 if entry is not None and entry.valid_from == 0 and (
        entry.valid_below == float("inf")) else max_workspace_bytes()
    if entry is None or not entry.valid_from <= limit < entry.valid_below:
        limit = max_workspace_bytes()
        entry = _model_choice(spec, device, limit)
        _MEMO[key] = entry
        if len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    else:
        _MEMO.move_to_end(key)
    return entry


# --------------------------------------------------------------------------- inputs


def _magnitude(a) -> float:
    """Largest |value| of a host array; NaN when it holds a NaN or an Inf (one parallel pass)."""
    if a is None or not isinstance(a, np.ndarray) or a.size == 0:
        return 0.0
    return largest_magnitude(a)


def _transform_risk(algo: registry.Algorithm, spec, x, w) -> str:
    """Why a transform algorithm must not run these inputs ('' when it may)."""
    if algo.transform_growth is None or x is None:
        return ""
    mx, mw = _magnitude(x), _magnitude(w)
    if not (np.isfinite(mx) and np.isfinite(mw)):
        return "the inputs hold NaN or Inf, which a transform would spread"
    largest = float(np.finfo(np.dtype(spec.dtype)).max)
    taps = spec.c * spec.kh * spec.kw if w is not None else 1
    if mx * max(mw, 1.0 if w is None else 0.0) * taps * algo.transform_growth(spec) > (
            largest / OVERFLOW_MARGIN):
        return "the inputs are large enough for transform intermediates to overflow"
    return ""


def checked_call(algo: registry.Algorithm, run, spec, device: str, measure: bool | None,
                 x, w, b):
    """``auto``'s call of its pick, ``run()``: a transform algorithm's host result is checked
    for a NaN or an Inf (its inputs held one, which the transform spread over a tile or a
    plane, or its intermediates overflowed) and, where it holds one, redone by the algorithm
    :func:`choose` steers to with the inputs in hand; NumPy's warnings about the NaN or
    overflow meanwhile held back.
    A finite result needs no look at the inputs: a deep layer's weights are twenty times its
    output at batch 1, and scanning them first cost a tenth of the call."""
    if algo.transform_growth is None:
        return run()
    with np.errstate(invalid="ignore", over="ignore"):
        out = run()
    top = largest_magnitude(out) if isinstance(out, np.ndarray) else 0.0  # (device: not read)
    if top == top:  # finite
        return out
    safe = choose(spec, device, measure, x, w).algorithm
    return out if safe is algo else safe.call(x, w, spec, b)


# --------------------------------------------------------------------------- choosing


def pick(spec, device: str = "cpu", measure: bool | None = None) -> registry.Algorithm:
    """``choose(spec, device, measure).algorithm`` without the inputs: the call's own path,
    where building a Choice for every call of a small layer cost a third of its kernel."""
    if measure is None:
        measure = settings.flag(ENV_AUTOTUNE, False)
    if measure:
        return choose(spec, device, measure).algorithm
    return _remembered(spec, device).choice.algorithm


def choose(spec, device: str = "cpu", measure: bool | None = None, x=None, w=None, *,
           use_cache: bool = True) -> Choice:
    """The algorithm ``auto`` runs for ``spec`` on ``device``, with the reason. Passing the
    inputs (``x``, ``w``) lets it steer away from transform algorithms for non-finite or huge
    values. ``use_cache=False`` measures afresh without reading or writing the tuning cache
    (the harness's independent check of the measured choice)."""
    if measure is None:
        measure = settings.flag(ENV_AUTOTUNE, False)
    entry = _remembered(spec, device)
    choice, ranked = entry.choice, entry.ranked
    if measure:
        choice = _measured(spec, device, ranked[:MEASURE_TOP], choice, use_cache)
    risk = _transform_risk(choice.algorithm, spec, x, w)
    if risk:
        safe = [a for a in ranked if a.transform_growth is None]
        if safe:
            choice = replace(choice, algorithm=safe[0],
                             reason=f"{choice.algorithm.name} passed over: {risk}; next best")
    return choice


def _cache_key(spec, device: str) -> str:
    return f"{device}|{spec.op}|{spec.label()}|{spec.dtype}"


def _measured(spec, device: str, top: list[registry.Algorithm], modelled: Choice,
              use_cache: bool = True) -> Choice:
    """Time the top candidates (or reuse a cached verdict) and keep the fastest, unless the
    model's pick is within the noise of it."""
    names = {a.name: a for a in top}
    hit = tuning.lookup(_cache_key(spec, device)) if use_cache else None
    if hit and hit["algorithm"] in names:
        times = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in hit["times"].items())
        return replace(modelled, algorithm=names[hit["algorithm"]],
                       reason=f"measured earlier on this machine ({times})")
    if len(top) < 2:
        return modelled
    x, w, b = random_inputs(spec)
    if device == "cuda":
        from numba import cuda

        x, w = cuda.to_device(x), (cuda.to_device(w) if w is not None else None)
    fns = {a.name: a.bound(spec, x, w, b) for a in top}
    for fn in fns.values():
        fn()  # compile and warm up, untimed
    repeat = timing.repeat_for(device)
    timings = timing.measure(fns, min_rounds=5, max_rounds=15, target_seconds=0.005,
                             budget_s=2.0, repeat=repeat)
    medians = {n: t.median for n, t in timings.items()}
    best = min(medians, key=medians.get)
    pick = modelled.algorithm.name
    if best != pick and pick in timings:
        ratio = 1.0 / timing.median_round_ratio(timings[pick].rounds, timings[best].rounds)
        noise = max(timings[pick].rel_spread, timings[best].rel_spread)
        if ratio - 1.0 <= noise:
            best = pick  # not separable from the model's pick: keep it
    if use_cache:
        tuning.store(_cache_key(spec, device), {"algorithm": best, "times": medians})
    listed = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in medians.items())
    verdict = "fastest" if best != pick or medians[best] == min(medians.values()) else (
        "the model's pick, within the noise of the fastest")
    return replace(modelled, algorithm=names[best],
                   reason=f"measured now, {verdict} of the top {len(top)} predicted "
                          f"({listed}){'; cached' if use_cache else ''}")


def explain(x_shape, w_shape=None, *, stride=None, padding=0, dilation=1, flip=False,
            dtype="float32", device="cpu", pool: str | None = None, size=None,
            measure: bool = False, groups: int = 1, bias: bool = False) -> Choice:
    """Every candidate's predicted time and workspace for a layer, the pick, and why.

    For a convolution pass ``x_shape`` (N, C, H, W) and ``w_shape`` (K, C/groups, kh, kw)
    (``stride`` defaults to 1; ``bias``: whether one is added); for pooling pass
    ``pool="max"`` or ``"avg"`` and ``size`` instead of ``w_shape`` (``stride`` defaults to
    the size, as in ``max_pool2d``). ``print()`` the result for a table.
    """
    from .devices import check_device

    if pool is not None:
        if w_shape is not None:
            raise ValueError("give either w_shape (convolution) or pool with size (pooling)")
        if size is None:
            raise ValueError("pooling needs size (the window)")
        spec = pool_spec(pool, x_shape, size, stride=stride, padding=padding, dtype=dtype)
    else:
        if w_shape is None:
            raise ValueError("a convolution needs w_shape (K, C, kh, kw); for pooling pass pool")
        spec = conv_spec(x_shape, w_shape, stride=1 if stride is None else stride,
                         padding=padding, dilation=dilation, flip=flip, dtype=dtype,
                         groups=groups, bias=bias)
    check_device(device)
    return replace(choose(spec, device, measure), calibration_note=model().note(device))
