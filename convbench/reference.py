"""Ground truth in float64 NumPy: boring on purpose, shared by the tests and the harness."""
from __future__ import annotations

import numpy as np

from .arith import sampled
from .spec import ConvSpec, PoolSpec


def _taps(xpad: np.ndarray, spec: ConvSpec):
    """Yield (i, j, view) where view[n, c, oh, ow] = xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]."""
    (sh, sw), (dh, dw), (ho, wo) = spec.stride, spec.dilation, spec.out_size
    for i in range(spec.kh):
        for j in range(spec.kw):
            r0, c0 = i * dh, j * dw
            yield i, j, xpad[:, :, sampled(r0, ho, sh), sampled(c0, wo, sw)]


def conv2d_reference(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                     b: np.ndarray | None = None) -> np.ndarray:
    """Cross-correlation (or convolution when ``spec.flip``) in float64, PyTorch layout, with
    ``spec.groups`` channel groups and the bias ``b`` (None: none)."""
    pt, pb, pl, pr = spec.pad
    xpad = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    w64 = np.asarray(w, np.float64)
    if spec.flip:
        w64 = w64[:, :, ::-1, ::-1]
    out = np.zeros(spec.out_shape)
    cg, kg = spec.cg, spec.kg
    source = np.repeat(np.arange(spec.c), kg)  # one input channel per output (cg = 1)
    for i, j, view in _taps(xpad, spec):
        if cg == 1:  # depthwise and the like: each output channel scales its one input
            out += (view if kg == 1 else view[:, source]) * w64[None, :, 0, i, j, None, None]
            continue
        for g in range(spec.groups):  # output channels of group g see only its input channels
            # optimize: einsum hands the contraction over C to BLAS (10x on a VGG layer)
            out[:, g * kg:(g + 1) * kg] += np.einsum(
                "nchw,kc->nkhw", view[:, g * cg:(g + 1) * cg], w64[g * kg:(g + 1) * kg, :, i, j],
                optimize=cg * kg >= 16)
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def pool_reference(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Max or average pooling in float64 with PyTorch's padding rules."""
    ph, pw = spec.pad
    fill = -np.inf if spec.kind == "max" else 0.0
    xpad = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                  constant_values=fill)
    (sh, sw), (ho, wo) = spec.stride, spec.out_size
    views = [xpad[:, :, sampled(i, ho, sh), sampled(j, wo, sw)]
             for i in range(spec.size[0]) for j in range(spec.size[1])]
    stack = np.stack(views)
    if spec.kind == "max":
        return stack.max(axis=0)  # np.max propagates NaN, as PyTorch does
    total = stack.sum(axis=0)
    if spec.count_include_pad:
        return total / (spec.size[0] * spec.size[1])
    ones = np.pad(np.ones((1, 1, spec.h, spec.w)), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    count = sum(ones[:, :, sampled(i, ho, sh), sampled(j, wo, sw)]
                for i in range(spec.size[0]) for j in range(spec.size[1]))
    return total / count


def random_inputs(spec, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Fresh standard-normal input, kernel and bias (for a convolution with one; None
    otherwise) from ``seed``: never zeros, which some kernels would run faster on than on
    real data."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    if not isinstance(spec, ConvSpec):
        return x, None, None
    w = rng.standard_normal(spec.w_shape).astype(spec.dtype)
    b = rng.standard_normal(spec.k).astype(spec.dtype) if spec.bias else None
    return x, w, b


def reference(spec, x: np.ndarray, w: np.ndarray | None = None,
              b: np.ndarray | None = None) -> np.ndarray:
    """The float64 reference output for a conv or pool spec."""
    if isinstance(spec, ConvSpec):
        return conv2d_reference(x, w, spec, b)
    return pool_reference(x, spec)
