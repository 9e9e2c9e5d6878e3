"""im2col + GEMM on the GPU: an unfold kernel, then our shared-memory tiled GEMM.

The GEMM out[n] (K x Ho*Wo) = w (K x C*kh*kw) @ cols (C*kh*kw x Ho*Wo) uses 2-D block tiling:
a block of 16 x 16 threads computes a 64 x 64 tile of the product, staging 64 x 16 slices of
both operands in shared memory per step; each thread accumulates a 4 x 4 register tile, so every
staged value is read from shared memory once per 4 multiply-adds.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

from ..registry import Algorithm, register
from ..spec import ConvSpec
from .arrays import device_empty, grid_2d, host_or_device, numba_type

UNFOLD_BLOCK = (32, 8)
BT = 16  # threads per block edge of the GEMM
RT = 4  # register tile edge: each thread computes RT x RT outputs
BK = 16  # depth of the staged operand slices


@lru_cache(maxsize=None)
def _make_unfold(dtype_name: str):
    zero = np.dtype(dtype_name).type(0)

    @cuda.jit
    def unfold(x, n, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
        p, r = cuda.grid(2)  # p: output pixel (oh, ow), consecutive threads -> coalesced writes
        rows, pixels = cols.shape
        if p >= pixels or r >= rows:  # the grid is rounded up to whole blocks
            return
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        if flip:
            i = kh - 1 - i
            j = kw - 1 - j
        ih = (p // wo) * sh - pt + i * dh
        iw = (p % wo) * sw - pl + j * dw
        inside = 0 <= ih < x.shape[2] and 0 <= iw < x.shape[3]  # padding reads as zero
        cols[r, p] = x[n, c, ih, iw] if inside else zero

    return unfold


@lru_cache(maxsize=None)
def _make_gemm(dtype_name: str, bt: int, rt: int, bk: int):
    zero = np.dtype(dtype_name).type(0)
    nb_type = numba_type(dtype_name)
    bm = bt * rt  # rows (and columns) of the block's output tile

    @cuda.jit
    def gemm(a, b, c):
        """c = a @ b for row-major a (M x R), b (R x P), c (M x P)."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        m_rows, depth = a.shape
        p_cols = b.shape[1]
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bm
        a_s = cuda.shared.array((bk, bm), nb_type)  # a slice, transposed: a_s[kk, m]
        b_s = cuda.shared.array((bk, bm), nb_type)
        acc = cuda.local.array((rt, rt), nb_type)
        for u in range(rt):
            for v in range(rt):
                acc[u, v] = zero
        me = ty * bt + tx
        for k0 in range(0, depth, bk):
            for idx in range(me, bk * bm, bt * bt):
                kk, m = idx % bk, idx // bk  # consecutive threads walk along a's rows
                gr, gk = row0 + m, k0 + kk
                a_s[kk, m] = a[gr, gk] if gr < m_rows and gk < depth else zero  # ragged edges
                kk2, col = idx // bm, idx % bm  # ... and along b's columns: coalesced
                gk2, gc = k0 + kk2, col0 + col
                b_s[kk2, col] = b[gk2, gc] if gk2 < depth and gc < p_cols else zero
            cuda.syncthreads()  # both slices staged before any thread multiplies
            for kk in range(bk):
                for u in range(rt):
                    av = a_s[kk, ty + u * bt]
                    for v in range(rt):
                        acc[u, v] += av * b_s[kk, tx + v * bt]
            cuda.syncthreads()  # all reads done before the next slices overwrite them
        for u in range(rt):
            r = row0 + ty + u * bt
            for v in range(rt):
                col = col0 + tx + v * bt
                if r < m_rows and col < p_cols:  # the last tiles overhang the matrix
                    c[r, col] = acc[u, v]

    return gemm


def gemm(a, b, out) -> None:
    """out = a @ b on device arrays with the tiled kernel."""
    m, p = out.shape
    tile = BT * RT
    blocks = (-(-p // tile), -(-m // tile))
    _make_gemm(np.dtype(out.dtype).name, BT, RT, BK)[blocks, (BT, BT)](a, b, out)


def im2col_workspace_bytes(spec: ConvSpec) -> int:
    """One image's unfolded matrix (C*kh*kw x Ho*Wo), reused for every image."""
    ho, wo = spec.out_size
    return spec.c * spec.kh * spec.kw * ho * wo * spec.itemsize


def im2col_conv2d(x, w, spec: ConvSpec):
    """Unfold each image on the GPU, then one tiled GEMM per image writing the output."""
    ho, wo = spec.out_size
    rows = spec.c * spec.kh * spec.kw
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    cols = device_empty((rows, ho * wo), np.dtype(spec.dtype))
    wmat = w.reshape(spec.k, rows)
    unfold = _make_unfold(spec.dtype)
    blocks, threads = grid_2d(rows, ho * wo, UNFOLD_BLOCK)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    for n in range(spec.n):
        unfold[blocks, threads](x, n, cols, ho, wo, spec.kh, spec.kw, sh, sw, spec.pad[0],
                                spec.pad[2], dh, dw, spec.flip)
        gemm(wmat, cols, out[n].reshape(spec.k, ho * wo))
    return out


register(Algorithm(
    name="im2col", op="conv2d", device="cuda", run=host_or_device(im2col_conv2d),
    workspace_bytes=im2col_workspace_bytes,
    description="unfold kernel + shared-memory tiled GEMM (4x4 register tiles)",
))
