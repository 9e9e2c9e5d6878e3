"""im2col + GEMM on the CPU (the cuDNN "GEMM" algorithm).

For each image, a Numba kernel unfolds every receptive field into a column of a
(C*kh*kw) x (Ho*Wo) matrix, then one BLAS GEMM ``w.reshape(K, C*kh*kw) @ cols`` writes the
image's K output planes in place. Stride, padding and dilation are applied while unfolding
(padding becomes zeros in the matrix); ``flip`` unfolds the taps in reverse order, so the
kernel is never copied. A 1x1 stride-1 unpadded layer (the inception bottleneck) needs no
unfold at all: the image already is the matrix, and the layer is a plain GEMM.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec


@njit(cache=True)
def _unfold_image(x, n, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
    """cols[(c, i, j), (oh, ow)] = padded x[n, c, oh*sh + i*dh, ow*sw + j*dw] (taps reversed
    when ``flip``).

    Serial on purpose: the GEMM that follows runs on OpenBLAS's threads, and workers of a
    parallel unfold that keep spinning after it would take the cores from the GEMM; the unfold
    is a small part of the time.
    """
    c_in, h, wid = x.shape[1], x.shape[2], x.shape[3]
    for row in range(c_in * kh * kw):
        c = row // (kh * kw)
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
    """One image's unfolded matrix, reused for every image; nothing for a pointwise layer."""
    if _is_pointwise(spec):
        return 0
    ho, wo = spec.out_size
    return workspace.nbytes((spec.c * spec.kh * spec.kw, ho * wo), spec.dtype)


def im2col_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Unfold each image, then one GEMM per image into the output (no output copy)."""
    ho, wo = spec.out_size
    out = np.empty(spec.out_shape, dtype=x.dtype)
    wmat = w.reshape(spec.k, spec.c * spec.kh * spec.kw)
    if _is_pointwise(spec):
        for n in range(spec.n):
            np.dot(wmat, x[n].reshape(spec.c, spec.h * spec.w), out=out[n].reshape(spec.k, -1))
        return out
    cols = workspace.empty((spec.c * spec.kh * spec.kw, ho * wo), x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    for n in range(spec.n):
        _unfold_image(x, n, cols, ho, wo, spec.kh, spec.kw, sh, sw, spec.pad[0], spec.pad[2],
                      dh, dw, spec.flip)
        np.dot(wmat, cols, out=out[n].reshape(spec.k, ho * wo))  # BLAS writes in place
    return out


L2_BYTES = 1 << 20  # an unfolded matrix larger than this (a typical L2) streams through memory


def im2col_cost_features(spec: ConvSpec) -> list[float]:
    """The serial unfold per value (strided reads cost more; past L2 the matrix is written and
    read again from memory) and per (tap, output row) loop, then the GEMM: FLOPs, FLOPs with
    the output channels padded to OpenBLAS's 16-row kernel (small K wastes it), bytes of its
    operands, and a fixed cost per image (per GEMM call for a 1x1 layer, which needs no
    unfold)."""
    n, c, k = spec.n, spec.c, spec.k
    ho, wo = spec.out_size
    pointwise = _is_pointwise(spec)
    depth, pixels = c * spec.kh * spec.kw, ho * wo
    unfold = 0 if pointwise else n * depth * pixels
    spills = depth * pixels * spec.itemsize > L2_BYTES
    return [1.0, unfold, unfold if spec.stride != (1, 1) else 0.0, unfold if spills else 0.0,
            0 if pointwise else n * depth * ho,
            2.0 * n * k * depth * pixels, 2.0 * n * 16 * ceil_div(k, 16) * depth * pixels,
            n * (k * depth + depth * pixels + k * pixels),
            0 if pointwise else n, n if pointwise else 0]


register(Algorithm(
    name="im2col", op="conv2d", device="cpu", run=im2col_conv2d,
    workspace_bytes=im2col_workspace_bytes, cost_features=im2col_cost_features,
    rough_cost=lambda spec: spec.flops * (0.5 if _is_pointwise(spec) else 1.0),
    bound_by="blas",
    description="unfold + one BLAS GEMM per image; 1x1 layers are a plain GEMM",
))
