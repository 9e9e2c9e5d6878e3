"""Direct convolution on the GPU.

v1 (registered as ``direct_v1``, the teaching version): one thread per output element, every
input and weight read from global memory.
v2 (registered as ``direct``): a block of TILE x TILE threads computes a TILE x TILE output tile
for K_PER_THREAD output channels. Per input channel the block stages the input tile with its
halo and the kernels' weights in shared memory once; each thread then reuses every staged input
value for K_PER_THREAD accumulators held in registers. Cases whose tile or weights exceed the
fixed shared arrays fall back to v1.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from . import launch
from .arrays import device_empty, grid_2d, host_or_device, numba_type
from .indexing import split_row

K_PER_THREAD = 4  # v2: output channels accumulated per thread from each staged input value
SHARED_EDGE = 40  # v2: staged input tile edge, (TILE - 1) * stride + dilated kernel <= 40
SHARED_WEIGHTS = 1024  # v2: K_PER_THREAD * kh * kw weights of one input channel


@lru_cache(maxsize=None)
def _make_v1(dtype_name: str):
    zero = np.dtype(dtype_name).type(0)

    @cuda.jit
    def direct_v1(x, w, out, sh, sw, pt, pl, dh, dw, flip, groups):
        ow, row = cuda.grid(2)
        n_img, k_out, ho, wo = out.shape
        if ow >= wo or row >= n_img * k_out * ho:  # the grid is rounded up to whole blocks
            return
        n, k, oh = split_row(row, ho, k_out)
        h, wid = x.shape[2], x.shape[3]
        cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
        c0 = (k // (k_out // groups)) * cg  # the input channels of k's group
        acc = zero  # accumulate in the input precision (a float64 literal would be slow)
        for c in range(cg):
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h:  # tap in the zero padding
                    continue
                wi = kh - 1 - i if flip else i
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    if 0 <= iw < wid:
                        wj = kw - 1 - j if flip else j
                        acc += x[n, c0 + c, ih, iw] * w[k, c, wi, wj]
        out[n, k, oh, ow] = acc

    return direct_v1


@lru_cache(maxsize=None)
def _make_v2(dtype_name: str, tile: int):
    zero = np.dtype(dtype_name).type(0)
    nb_type = numba_type(dtype_name)

    @cuda.jit
    def direct_v2(x, w, out, sh, sw, pt, pl, dh, dw, flip, groups):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_img, k_out, ho, wo = out.shape
        h, wid = x.shape[2], x.shape[3]
        cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
        k_blocks = ceil_div(k_out, K_PER_THREAD)
        n = cuda.blockIdx.z // k_blocks
        k0 = (cuda.blockIdx.z % k_blocks) * K_PER_THREAD
        nk = min(K_PER_THREAD, k_out - k0)
        c_base = (k0 // (k_out // groups)) * cg  # v2_fits: a block lies inside one group
        oh = cuda.blockIdx.y * tile + ty
        ow = cuda.blockIdx.x * tile + tx
        # first input row/column of this block's tile, in unpadded coordinates
        ih0 = cuda.blockIdx.y * tile * sh - pt
        iw0 = cuda.blockIdx.x * tile * sw - pl
        ext_h = (tile - 1) * sh + dh * (kh - 1) + 1
        ext_w = (tile - 1) * sw + dw * (kw - 1) + 1
        taps = kh * kw
        xs = cuda.shared.array((SHARED_EDGE, SHARED_EDGE), nb_type)  # constant shape: required
        ws = cuda.shared.array(SHARED_WEIGHTS, nb_type)
        me = ty * tile + tx
        acc0 = zero
        acc1 = zero
        acc2 = zero
        acc3 = zero
        for c in range(cg):
            # cooperative, coalesced staging of the input tile with its halo
            for idx in range(me, ext_h * ext_w, tile * tile):
                r = idx // ext_w
                q = idx % ext_w
                ih = ih0 + r
                iw = iw0 + q
                inside = 0 <= ih < h and 0 <= iw < wid  # bounds guard: zero padding
                xs[r, q] = x[n, c_base + c, ih, iw] if inside else zero
            for idx in range(me, nk * taps, tile * tile):
                kk = idx // taps
                i = (idx % taps) // kw
                j = idx % kw
                wi = kh - 1 - i if flip else i
                wj = kw - 1 - j if flip else j
                ws[idx] = w[k0 + kk, c, wi, wj]
            cuda.syncthreads()  # the tile and weights are complete before anyone reads them
            if oh < ho and ow < wo:
                for i in range(kh):
                    for j in range(kw):
                        xv = xs[ty * sh + i * dh, tx * sw + j * dw]
                        t = i * kw + j
                        acc0 += xv * ws[t]
                        if nk > 1:
                            acc1 += xv * ws[taps + t]
                        if nk > 2:
                            acc2 += xv * ws[2 * taps + t]
                        if nk > 3:
                            acc3 += xv * ws[3 * taps + t]
            cuda.syncthreads()  # all reads done before the next channel overwrites the tiles
        if oh < ho and ow < wo:  # threads of the ragged edge tile stage data but write nothing
            out[n, k0, oh, ow] = acc0
            if nk > 1:
                out[n, k0 + 1, oh, ow] = acc1
            if nk > 2:
                out[n, k0 + 2, oh, ow] = acc2
            if nk > 3:
                out[n, k0 + 3, oh, ow] = acc3

    return direct_v2


def v2_fits(spec: ConvSpec, tile: int | None = None) -> bool:
    """Whether the staged tile and weights fit v2's fixed shared arrays, and each block of
    K_PER_THREAD output channels lies inside one channel group."""
    tile = tile or launch.current().direct_tile
    ekh, ekw = spec.effective_kernel
    return ((tile - 1) * spec.stride[0] + ekh <= SHARED_EDGE
            and (tile - 1) * spec.stride[1] + ekw <= SHARED_EDGE
            and K_PER_THREAD * spec.kh * spec.kw <= SHARED_WEIGHTS
            and (spec.groups == 1 or spec.kg % K_PER_THREAD == 0))


def _args(spec: ConvSpec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    return sh, sw, spec.pad[0], spec.pad[2], dh, dw, spec.flip, spec.groups


def direct_v1(x, w, spec: ConvSpec):
    """v1 on device arrays: one thread per output element."""
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    ho, wo = spec.out_size
    blocks, threads = grid_2d(spec.n * spec.k * ho, wo, launch.current().direct_v1_block)
    _make_v1(spec.dtype)[blocks, threads](x, w, out, *_args(spec))
    return out


def direct_v2(x, w, spec: ConvSpec):
    """v2 on device arrays (v1 when the case does not fit the shared tiles)."""
    tile = launch.current().direct_tile
    if not v2_fits(spec, tile):
        return direct_v1(x, w, spec)
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    ho, wo = spec.out_size
    blocks = (ceil_div(wo, tile), ceil_div(ho, tile), spec.n * ceil_div(spec.k, K_PER_THREAD))
    _make_v2(spec.dtype, tile)[blocks, (tile, tile)](x, w, out, *_args(spec))
    return out


def _cost_features(staged: bool):
    """Multiply-adds (v2 computes K_PER_THREAD channels per block, padded) and outputs."""

    def features(spec: ConvSpec) -> list[float]:
        ho, wo = spec.out_size
        k_work = K_PER_THREAD * ceil_div(spec.k, K_PER_THREAD) if staged and v2_fits(
            spec) else spec.k
        return [1.0, spec.n * k_work * spec.c * spec.kh * spec.kw * ho * wo,
                spec.n * spec.k * ho * wo]

    return features


register(Algorithm(name="direct", op="conv2d", device="cuda", run=host_or_device(direct_v2),
                   cost_features=_cost_features(True), rough_cost=lambda s: float(s.flops),
                   description="v2: shared-memory input and weight tiles, 4 channels per thread"))
register(Algorithm(name="direct_v1", op="conv2d", device="cuda", run=host_or_device(direct_v1),
                   cost_features=_cost_features(False), rough_cost=lambda s: 4.0 * s.flops,
                   description="v1: one thread per output element (teaching version)"))
