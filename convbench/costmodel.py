"""A cost model per algorithm: predicted seconds = sum of non-negative constants x features.

The features are the work each algorithm really does (multiply-adds on padded rows, values
unfolded, GEMM FLOPs, FFT sizes and counts, spectral multiply-accumulates, calls); the constants
are fitted per machine by ``python -m convbench calibrate`` (non-negative least squares on
relative error over a random layer set) and stored in the user's cache directory. Without a
calibration, the constants fitted on the project's 2-core CPU (``cost_defaults.json``) apply.
"""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np

from ._version import __version__
from .spec import ConvSpec, PoolSpec

DEFAULTS = Path(__file__).with_name("cost_defaults.json")
L2_BYTES = 1 << 20  # cache size from which a streamed buffer is charged extra (typical L2)


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
            f"{config.NUMBA_NUM_THREADS} threads|convbench {__version__}")


def _log2(n: float) -> float:
    return math.log2(max(2.0, n))


def features(name: str, spec, device: str = "cpu") -> list[float] | None:
    """Feature vector of algorithm ``name`` on ``spec`` (None: no model for it)."""
    if isinstance(spec, PoolSpec):
        ho, wo = spec.out_size
        return [1.0, spec.n * spec.c * ho * wo * spec.size[0] * spec.size[1]]
    s: ConvSpec = spec
    if device == "cuda":
        return _cuda_features(name, s)
    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    hp, wp = s.padded_size
    k_round = 4 * -(-k // 4)
    if name == "direct":
        if s.stride == (1, 1):  # v3 computes wide rows (Wp columns) for 4 channels at a time
            macs = n * k_round * c * s.kh * s.kw * ho * wp
        else:
            macs = n * k_round * c * s.kh * s.kw * ho * wo
        return [1.0, macs, n * -(-k // 4) * c * hp * wp]
    if name == "im2col":
        pointwise = (s.kh, s.kw, s.stride) == (1, 1, (1, 1)) and not any(s.pad)
        depth, pixels = c * s.kh * s.kw, ho * wo
        unfold = 0 if pointwise else n * depth * pixels
        # an unfolded matrix past the L2 cache costs more per element to write and read again
        spills = depth * pixels * s.itemsize > L2_BYTES
        # GEMM: FLOPs, and the matrices it reads and writes (small GEMMs are memory-bound)
        return [1.0, unfold, unfold if spills else 0.0, 2.0 * n * k * depth * pixels,
                n * (k * depth + depth * pixels + k * pixels), n]
    if name in ("fft", "fft_tiled"):
        if name == "fft":
            if device == "cuda":
                from .cuda.fft import transform_shape
            else:
                from .cpu.fft import transform_shape
            p, q = transform_shape(s)
            tiles, chunks = 1, 1
        else:
            from .cpu.fft_tiled import plan

            p, q, bh, bw, rows = plan(s)
            tiles_h = -(-s.h // bh)
            tiles = tiles_h * -(-s.w // bw)
            chunks = -(-tiles_h // rows)
        plane = p * q
        planes = n * c * tiles + k * c + n * k * tiles
        transforms = planes * plane * _log2(plane)
        lines = planes * (p + q // 2 + 1)  # 1-D transforms: each has a fixed cost too
        mac = n * k * c * tiles * p * (q // 2 + 1)
        return [1.0, transforms, lines, mac, n * k * ho * wo * (1 if name == "fft" else 2),
                chunks]
    return None


def _cuda_features(name: str, s: ConvSpec) -> list[float] | None:
    """Work of the CUDA kernels: multiply-adds, values unfolded, GEMM FLOPs, butterflies, and
    kernel launches (each costs microseconds whatever its size)."""
    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    if name in ("direct", "direct_v1"):
        from .cuda.direct import K_PER_THREAD, v2_fits

        staged = name == "direct" and v2_fits(s)  # v2 computes K_PER_THREAD channels per block
        k_work = K_PER_THREAD * -(-k // K_PER_THREAD) if staged else k
        return [1.0, n * k_work * c * s.kh * s.kw * ho * wo, n * k * ho * wo]
    if name == "im2col":
        depth, pixels = c * s.kh * s.kw, ho * wo
        return [1.0, n * depth * pixels, 2.0 * n * k * depth * pixels, n]
    if name == "fft":
        from .cuda.fft import transform_shape

        p, q = transform_shape(s)
        passes = _log2(p) + _log2(q)
        planes = n * c + k * c + n * k
        return [1.0, planes * p * q * passes, n * k * c * p * q, 3 * passes]
    return None


class CostModel:
    """Fitted constants per (device, op, algorithm)."""

    def __init__(self, constants: dict, source: str):
        self.constants = constants  # {"cpu/conv2d/direct": [c0, c1, ...], ...}
        self.source = source

    @staticmethod
    def key(device: str, op: str, name: str) -> str:
        return f"{device}/{op}/{name}"

    def predict(self, name: str, spec, device: str = "cpu") -> float | None:
        """Predicted seconds, or None when the model has no constants for the algorithm."""
        coeffs = self.constants.get(self.key(device, spec.op, name))
        f = features(name, spec, device)
        if coeffs is None or f is None or len(coeffs) != len(f):
            return None
        return float(np.dot(coeffs, f))

    @classmethod
    def load(cls) -> "CostModel":
        """This machine's calibration if there is one for this machine and version, else the
        shipped defaults."""
        defaults = json.loads(DEFAULTS.read_text())
        constants = dict(defaults["constants"])
        source = f"shipped defaults ({defaults.get('machine', '?')})"
        path = calibration_path()
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("machine") == machine_id():
                    # a CPU-only calibration keeps the shipped GPU constants, and vice versa
                    constants.update(data["constants"])
                    source = f"calibration {path}, else {source}"
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a corrupt file is ignored: the defaults still work
        return cls(constants, source)


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
