"""Strided layers as stride-1 ones: the space-to-depth phases that ``direct`` and
``implicit_gemm`` run a strided layer (dilation 1) on.

A layer of stride (sh, sw) equals a stride-1 layer on its padded input split into the sh x sw
phases x[r*sh + pi, q*sw + pj], stacked as channels, with its kernel's taps distributed over
the phases (:func:`phase_spec`, :func:`phase_weights`): one copy of the input
(:func:`split_phases`), then long vector rows instead of short strided ones.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ... import workspace
from ...arith import ceil_div
from ...spec import ConvSpec, conv_spec
from .rows import stage_row


def phased(spec: ConvSpec) -> bool:
    """Whether the layer runs as its space-to-depth stride-1 form."""
    return spec.stride != (1, 1) and spec.dilation == (1, 1)


def phase_spec(spec: ConvSpec) -> ConvSpec:
    """The stride-1 layer a strided one (dilation 1) equals: its padded input split into the
    sh x sw phases x[r*sh + pi, q*sw + pj] as channels (C*sh*sw of them, group by group) and
    its kernel's taps distributed over the phases (ceil(kh/sh) x ceil(kw/sw)). Its output
    covers the strided layer's, which is computed directly into the right size."""
    sh, sw = spec.stride
    hp, wp = spec.padded_size
    phases = sh * sw
    return conv_spec((spec.n, spec.c * phases, ceil_div(hp, sh), ceil_div(wp, sw)),
                     (spec.k, spec.cg * phases, ceil_div(spec.kh, sh), ceil_div(spec.kw, sw)),
                     groups=spec.groups, dtype=spec.dtype)


@njit(parallel=True, cache=True)
def split_phases(x, xs, sh, sw, pt, pl):
    """xs[n, c*sh*sw + pi*sw + pj, r, q] = padded x[n, c, r*sh + pi, q*sw + pj] (zeros outside).

    Row by row on flat arrays at unsigned offsets: each phase row is its zero margins and one
    strided read of an input row (a bounds test per element would keep the copy scalar)."""
    n_img, c_in, h, wid = x.shape
    phases, hs, ws = xs.shape[1] // c_in, xs.shape[2], xs.shape[3]
    src, dst = x.reshape(-1), xs.reshape(-1)
    for plane in prange(n_img * c_in):
        n, c = plane // c_in, plane % c_in
        for pi in range(sh):
            for pj in range(sw):
                # columns q whose input column q*sw + pj - pl lies in [0, wid)
                lo = min(ws, max(0, (pl - pj + sw - 1) // sw))
                hi = max(lo, min(ws, (wid - 1 - pj + pl) // sw + 1))
                out0 = ((n * c_in + c) * phases + pi * sw + pj) * hs * ws
                for r in range(hs):
                    ih = r * sh + pi - pt
                    if ih < 0 or ih >= h:
                        stage_row(dst, out0 + r * ws, ws, ws, ws, src, 0, 1)
                    else:
                        stage_row(dst, out0 + r * ws, ws, lo, hi, src,
                                  ((n * c_in + c) * h + ih) * wid + lo * sw + pj - pl, sw)


def phase_weights(w: np.ndarray, spec: ConvSpec, target: ConvSpec) -> np.ndarray:
    """The kernel on the phases: tap (a, b) of phase (pi, pj) is tap (a*sh + pi, b*sw + pj) of
    the (rotated, for true convolution) kernel, zero past its edge."""
    sh, sw = spec.stride
    wk = w[:, :, ::-1, ::-1] if spec.flip else w
    _, _, kh2, kw2 = target.w_shape
    grown = workspace.zeros((spec.k, spec.cg, kh2 * sh, kw2 * sw), w.dtype)
    grown[:, :, :spec.kh, :spec.kw] = wk
    out = workspace.empty(target.w_shape, w.dtype)
    # (k, c, a, pi, b, pj) -> (k, c, pi, pj, a, b) -> (k, c*sh*sw + pi*sw + pj, a, b)
    out.reshape(spec.k, spec.cg, sh, sw, kh2, kw2)[...] = grown.reshape(
        spec.k, spec.cg, kh2, sh, kw2, sw).transpose(0, 1, 3, 5, 2, 4)
    return out
