"""im2col + GEMM on the CPU (the cuDNN "GEMM" algorithm).

For each image, a Numba kernel unfolds every receptive field into a column of a
(C*kh*kw) x (Ho*Wo) matrix, then one BLAS GEMM ``w.reshape(K, C*kh*kw) @ cols`` writes the
image's K output planes in place. Stride, padding and dilation are applied while unfolding
(padding becomes zeros in the matrix); ``flip`` unfolds the taps in reverse order, so the
kernel is never copied. A 1x1 stride-1 unpadded layer (the inception bottleneck) needs no
unfold at all: the image already is the matrix, and the layer is a plain GEMM. With channel
groups, each group is its own (C/groups*kh*kw)-row unfold and GEMM.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec


@njit(cache=True)
def _unfold_image(x, n, c0, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
    """cols[(c, i, j), (oh, ow)] = padded x[n, c0 + c, oh*sh + i*dh, ow*sw + j*dw] for the
    cols.shape[0] // (kh*kw) channels from c0 (taps reversed when ``flip``).

    Serial on purpose: the GEMM that follows runs on OpenBLAS's threads, and workers of a
    parallel unfold that keep spinning after it would take the cores from the GEMM; the unfold
    is a small part of the time.
    """
    h, wid = x.shape[2], x.shape[3]
    for row in range(cols.shape[0]):
        c = c0 + row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        ti, tj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
        for oh in range(ho):
            ih = oh * sh - pt + ti * dh
            base = oh * wo
            if ih < 0 or ih >= h:  # the whole output row of this tap reads zero padding
                for ow in range(wo):
                    cols[row, base + ow] = 0.0
                continue
            for ow in range(wo):
                iw = ow * sw - pl + tj * dw
                cols[row, base + ow] = x[n, c, ih, iw] if 0 <= iw < wid else 0.0


def _is_pointwise(spec: ConvSpec) -> bool:
    """A 1x1, stride-1, unpadded layer: the input already is the GEMM operand."""
    return (spec.kh, spec.kw, spec.stride) == (1, 1, (1, 1)) and not any(spec.pad)


def im2col_workspace_bytes(spec: ConvSpec) -> int:
    """One group of one image's unfolded matrix, reused for every group and image; nothing
    for a pointwise layer."""
    if _is_pointwise(spec):
        return 0
    ho, wo = spec.out_size
    return workspace.nbytes((spec.cg * spec.kh * spec.kw, ho * wo), spec.dtype)


def im2col_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Unfold each image (each group of its channels), then one GEMM per image and group into
    the output (no output copy)."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    pointwise = _is_pointwise(spec)
    if pointwise and spec.n == 1 and spec.groups == 1:  # one GEMM, nothing to unfold
        np.dot(w.reshape(spec.k, spec.c), x.reshape(spec.c, spec.h * spec.w),
               out=out.reshape(spec.k, spec.h * spec.w))
        return out
    ho, wo = spec.out_size
    cg, kg = spec.cg, spec.kg
    wmat = w.reshape(spec.k, cg * spec.kh * spec.kw)
    cols = None if pointwise else workspace.empty((cg * spec.kh * spec.kw, ho * wo), x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    for n in range(spec.n):
        for g in range(spec.groups):
            if pointwise:  # the group's channels of the image already are the matrix
                cols = x[n, g * cg:(g + 1) * cg].reshape(cg, spec.h * spec.w)
            else:
                _unfold_image(x, n, g * cg, cols, ho, wo, spec.kh, spec.kw, sh, sw,
                              spec.pad[0], spec.pad[2], dh, dw, spec.flip)
            np.dot(wmat[g * kg:(g + 1) * kg], cols,  # BLAS writes in place
                   out=out[n, g * kg:(g + 1) * kg].reshape(kg, ho * wo))
    return out


L2_BYTES = 1 << 20  # an unfolded matrix larger than this (a typical L2) streams through memory


def im2col_cost_features(spec: ConvSpec) -> list[float]:
    """The serial unfold per value (strided reads cost more; past L2 the matrix is written and
    read again from memory) and per (tap, output row) loop, then the GEMM: FLOPs, FLOPs with
    the output channels padded to OpenBLAS's 16-row kernel (small K wastes it), bytes of its
    operands, and a fixed cost per image (per GEMM call for a 1x1 layer, which needs no
    unfold)."""
    n, g, kg = spec.n, spec.groups, spec.kg
    ho, wo = spec.out_size
    pointwise = _is_pointwise(spec)
    depth, pixels = spec.cg * spec.kh * spec.kw, ho * wo
    unfold = 0 if pointwise else n * g * depth * pixels
    spills = depth * pixels * spec.itemsize > L2_BYTES
    calls = n * g  # one GEMM per image and group
    return [1.0, unfold, unfold if spec.stride != (1, 1) else 0.0, unfold if spills else 0.0,
            0 if pointwise else calls * depth * ho,
            2.0 * calls * kg * depth * pixels, 2.0 * calls * 16 * ceil_div(kg, 16) * depth * pixels,
            calls * (kg * depth + depth * pixels + kg * pixels),
            0 if pointwise else calls, calls if pointwise else 0]


register(Algorithm(
    name="im2col", op="conv2d", device="cpu", run=im2col_conv2d,
    workspace_bytes=im2col_workspace_bytes, cost_features=im2col_cost_features,
    rough_cost=lambda spec: spec.flops * (0.5 if _is_pointwise(spec) else 1.0),
    bound_by="blas",
    description="unfold + one BLAS GEMM per image; 1x1 layers are a plain GEMM",
))
