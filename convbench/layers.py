"""Prepared layers: the shape- and weight-dependent work done once, for the common case of
fixed weights applied to many inputs (inference), as oneDNN reorders weights once and NNPACK
precomputes kernel transforms.

    layer = cb.Conv2d(w, padding=1)      # validates the weights and the settings
    y = layer(x)                         # first call per input shape: spec, algorithm choice,
                                         # and the algorithm's prepare() (kernel spectra for
                                         # fft, transformed kernels for winograd); later calls
                                         # only run the kernel
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .auto import checked_call
from .ops import _as_array, _bias, _contiguous, _empty_batch, _resolve
from .spec import check_dtype, conv_spec


class Conv2d:
    """A conv2d with fixed weights ``w`` (K, C/groups, kh, kw) and bias (K,) or None; the
    other arguments as in :func:`convbench.conv2d`. Calling it with an input (N, C, H, W)
    returns the output."""

    def __init__(self, w, bias=None, *, stride=1, padding=0, dilation=1, groups: int = 1,
                 flip: bool = False, algorithm: str = "auto", device: str = "cpu"):
        w = _as_array("w", w, device)
        self.dtype = check_dtype("w", w)
        if w.ndim != 4:
            raise ValueError(f"w must be 4-D (K, C/groups, kh, kw), got shape "
                             f"{tuple(w.shape)}")
        # the settings are validated now, on a stand-in input the (dilated) kernel fits
        k, cg, kh, kw = w.shape
        extent = max(kh, kw) * (max(dilation) if isinstance(dilation, (tuple, list)) else
                                dilation if isinstance(dilation, int) else 1)
        groups_ok = groups if isinstance(groups, int) and groups >= 1 else 1
        conv_spec((1, cg * groups_ok, 4 * max(extent, 1), 4 * max(extent, 1)), w.shape,
                  stride=stride, padding=padding, dilation=dilation, flip=flip,
                  dtype=self.dtype, groups=groups, bias=bias is not None)
        self.w = _contiguous(w)
        self.b = _bias(bias, k, self.dtype, device)
        self.options = dict(stride=stride, padding=padding, dilation=dilation, flip=flip,
                            groups=groups, bias=bias is not None)
        self.algorithm, self.device = algorithm, device
        self._plans: dict[tuple, tuple] = {}

    def plan(self, x_shape: tuple[int, ...]):
        """(spec, algorithm, prepared call) for inputs of this shape, made on first use."""
        key = tuple(x_shape)
        if key not in self._plans:
            spec = conv_spec(key, self.w.shape, dtype=self.dtype, **self.options)
            if spec.n == 0:
                self._plans[key] = (spec, None, None)
            else:
                algo = _resolve("conv2d", spec, self.algorithm, self.device)
                with (np.errstate(invalid="ignore", over="ignore")  # weights auto may
                      if self.algorithm == "auto" else nullcontext()):  # steer around
                    prepared = algo.prepared(self.w, spec, self.b)
                self._plans[key] = (spec, algo, prepared)
        return self._plans[key]

    def __call__(self, x):
        x = _as_array("x", x, self.device)
        if check_dtype("x", x) != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {self.dtype}")
        spec, algo, run = self.plan(x.shape)
        if algo is None:
            return _empty_batch(spec, x)
        x = _contiguous(x)
        if self.algorithm != "auto":
            return run(x)
        # a spoiled result (inputs a transform cannot take) is redone the unprepared way
        return checked_call(algo, lambda: run(x), spec, self.device, False, x, self.w, self.b)

    def __repr__(self) -> str:
        return (f"Conv2d(w={tuple(self.w.shape)}, {self.options}, algorithm={self.algorithm!r}, "
                f"device={self.device!r}, {len(self._plans)} prepared shapes)")
