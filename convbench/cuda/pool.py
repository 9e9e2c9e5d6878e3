"""Max and average pooling on the GPU: one thread per output element, threads of a warp on
consecutive output columns so that their loads and stores are coalesced along the width."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..registry import Algorithm, register
from ..spec import PoolSpec
from . import launch
from .arrays import device_empty, grid_2d, host_or_device
from .indexing import split_row


@cuda.jit
def _max_pool(x, out, sh, sw, ph, pw, size_h, size_w):
    ow, row = cuda.grid(2)
    n_img, c_in, ho, wo = out.shape
    if ow >= wo or row >= n_img * c_in * ho:  # the grid is rounded up to whole blocks
        return
    n, c, oh = split_row(row, ho, c_in)
    h, wid = x.shape[2], x.shape[3]
    best = -math.inf
    for i in range(size_h):
        ih = oh * sh - ph + i
        if ih < 0 or ih >= h:  # padding rows are -inf: they never win
            continue
        for j in range(size_w):
            iw = ow * sw - pw + j
            if 0 <= iw < wid:
                v = x[n, c, ih, iw]
                if v > best or v != v:  # NaN wins, as in PyTorch
                    best = v
    out[n, c, oh, ow] = best


@cuda.jit
def _avg_pool(x, out, sh, sw, ph, pw, size_h, size_w, count_include_pad):
    ow, row = cuda.grid(2)
    n_img, c_in, ho, wo = out.shape
    if ow >= wo or row >= n_img * c_in * ho:  # the grid is rounded up to whole blocks
        return
    n, c, oh = split_row(row, ho, c_in)
    h, wid = x.shape[2], x.shape[3]
    total = 0.0
    count = 0
    for i in range(size_h):
        ih = oh * sh - ph + i
        if ih < 0 or ih >= h:
            continue
        for j in range(size_w):
            iw = ow * sw - pw + j
            if 0 <= iw < wid:
                total += x[n, c, ih, iw]
                count += 1
    out[n, c, oh, ow] = total / (size_h * size_w if count_include_pad else count)


def _launch(kernel, x, spec: PoolSpec, *extra):
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    ho, wo = spec.out_size
    blocks, threads = grid_2d(spec.n * spec.c * ho, wo, launch.current().pool_block)
    kernel[blocks, threads](x, out, *spec.stride, *spec.pad, *spec.size, *extra)
    return out


def max_pool(x, spec: PoolSpec):
    """Max pooling on the GPU (padding as -inf, NaN propagates)."""
    return _launch(_max_pool, x, spec)


def avg_pool(x, spec: PoolSpec):
    """Average pooling on the GPU; the divisor follows ``spec.count_include_pad``."""
    return _launch(_avg_pool, x, spec, spec.count_include_pad)


register(Algorithm(name="direct", op="max_pool2d", device="cuda", run=host_or_device(max_pool),
                   bound_by="memory",
                   description="one thread per output, coalesced along the width"))
register(Algorithm(name="direct", op="avg_pool2d", device="cuda", run=host_or_device(avg_pool),
                   bound_by="memory",
                   description="one thread per output, coalesced along the width"))
