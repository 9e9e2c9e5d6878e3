"""Depthwise convolution on the GPU (groups = C), the twin of ``cpu/depthwise.py``.

A block of TILE x TILE threads computes a TILE x TILE tile of one output plane: the input tile
with its halo is staged in shared memory once (coalesced), every thread then reads its taps
from there; the bias is the accumulator's starting value. One plane per grid z, so the layer is
one launch. Tiles whose staged input does not fit the fixed shared array (large strides or
dilations) read their taps from global memory instead.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from . import launch
from .arrays import device_empty, host_or_device, numba_type
from .bias import device_bias

SHARED_EDGE = 48  # staged input tile edge: (TILE - 1) * stride + dilated kernel <= 48


@lru_cache(maxsize=None)
def _make(dtype_name: str, tile: int, staged: bool):
    zero = np.dtype(dtype_name).type(0)
    nb_type = numba_type(dtype_name)

    @cuda.jit
    def depthwise(x, w, out, sh, sw, pt, pl, dh, dw, flip, b, has_bias):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_img, k_out, ho, wo = out.shape
        c_in, h, wid = x.shape[1], x.shape[2], x.shape[3]
        kh, kw = w.shape[2], w.shape[3]
        plane = cuda.blockIdx.z
        n, k = plane // k_out, plane % k_out
        c = k // (k_out // c_in)  # the one input channel of this output channel's group
        oh = cuda.blockIdx.y * tile + ty
        ow = cuda.blockIdx.x * tile + tx
        ih0 = cuda.blockIdx.y * tile * sh - pt  # first input row/column of the tile
        iw0 = cuda.blockIdx.x * tile * sw - pl
        acc = b[k] if has_bias else zero
        if staged:
            ext_h = (tile - 1) * sh + dh * (kh - 1) + 1
            ext_w = (tile - 1) * sw + dw * (kw - 1) + 1
            xs = cuda.shared.array((SHARED_EDGE, SHARED_EDGE), nb_type)  # constant shape
            for idx in range(ty * tile + tx, ext_h * ext_w, tile * tile):
                r = idx // ext_w
                q = idx % ext_w
                ih = ih0 + r
                iw = iw0 + q
                inside = 0 <= ih < h and 0 <= iw < wid  # bounds guard: zero padding
                xs[r, q] = x[n, c, ih, iw] if inside else zero
            cuda.syncthreads()  # the tile is complete before anyone reads it
            if oh < ho and ow < wo:  # threads of a ragged edge tile only stage
                for i in range(kh):
                    wi = kh - 1 - i if flip else i
                    for j in range(kw):
                        wj = kw - 1 - j if flip else j
                        acc += xs[ty * sh + i * dh, tx * sw + j * dw] * w[k, 0, wi, wj]
                out[n, k, oh, ow] = acc
            return
        if oh >= ho or ow >= wo:  # the grid is rounded up to whole tiles
            return
        for i in range(kh):
            ih = ih0 + ty * sh + i * dh
            if ih < 0 or ih >= h:  # tap in the zero padding
                continue
            wi = kh - 1 - i if flip else i
            for j in range(kw):
                iw = iw0 + tx * sw + j * dw
                if 0 <= iw < wid:
                    wj = kw - 1 - j if flip else j
                    acc += x[n, c, ih, iw] * w[k, 0, wi, wj]
        out[n, k, oh, ow] = acc

    return depthwise


def fits(spec: ConvSpec, tile: int) -> bool:
    """Whether a tile's input with its halo fits the shared array."""
    ekh, ekw = spec.effective_kernel
    return ((tile - 1) * spec.stride[0] + ekh <= SHARED_EDGE
            and (tile - 1) * spec.stride[1] + ekw <= SHARED_EDGE)


def depthwise_conv2d(x, w, spec: ConvSpec, b=None):
    """Depthwise convolution on device arrays, the bias added as the accumulator's start."""
    tile = launch.current().direct_tile
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    ho, wo = spec.out_size
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    bias = device_bias(b, spec.dtype)
    blocks = (ceil_div(wo, tile), ceil_div(ho, tile), spec.n * spec.k)
    _make(spec.dtype, tile, fits(spec, tile))[blocks, (tile, tile)](
        x, w, out, sh, sw, spec.pad[0], spec.pad[2], dh, dw, spec.flip, bias, b is not None)
    return out


def _cost_features(spec: ConvSpec) -> list[float]:
    """Multiply-adds, values read (staged tiles with their halos), outputs written."""
    ho, wo = spec.out_size
    outputs = spec.n * spec.k * ho * wo
    return [1.0, outputs * spec.kh * spec.kw, spec.n * spec.c * spec.h * spec.w, outputs]


register(Algorithm(
    name="depthwise", op="conv2d", device="cuda", run=host_or_device(depthwise_conv2d),
    supports=lambda spec: spec.depthwise, limits="depthwise layers only (groups = C)",
    cost_features=_cost_features, rough_cost=lambda spec: 4.0 * spec.min_bytes,
    fused_bias=True, bound_by="memory",
    description="depthwise: shared-memory input tile per block, one plane per grid z"))
