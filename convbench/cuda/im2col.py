"""im2col + GEMM on the GPU: an unfold kernel, then our shared-memory tiled GEMM.

Both work on a chunk of images per launch (grid z = image), as many as fit CHUNK_BYTES of
unfolded matrices: one launch per image cost ~40 us each from Python on an H100, more than the
arithmetic of a small layer. The GEMM out[n] (K x Ho*Wo) = w (K x C*kh*kw) @ cols[n]
(C*kh*kw x Ho*Wo) uses 2-D block tiling:
a block of 16 x 16 threads computes a 64 x 64 tile of the product, staging 64 x 16 slices of
both operands in shared memory per step; each thread accumulates a 4 x 4 register tile, so every
staged value is read from shared memory once per 4 multiply-adds.
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

CHUNK_BYTES = 64 << 20  # unfolded matrices of the images of one launch, at most (but one image)


@lru_cache(maxsize=None)
def _make_unfold(dtype_name: str):
    zero = np.dtype(dtype_name).type(0)

    @cuda.jit
    def unfold(x, n0, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
        """cols[m, (c, i, j), (oh, ow)] = padded x[n0 + m, c, ...] for the chunk's images."""
        p, r = cuda.grid(2)  # p: output pixel (oh, ow), consecutive threads -> coalesced writes
        m = cuda.blockIdx.z
        rows, pixels = cols.shape[1], cols.shape[2]
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
        cols[m, r, p] = x[n0 + m, c, ih, iw] if inside else zero

    return unfold


@lru_cache(maxsize=None)
def _make_gemm(dtype_name: str, bt: int, rt: int, bk: int):
    zero = np.dtype(dtype_name).type(0)
    nb_type = numba_type(dtype_name)
    bm = bt * rt  # rows (and columns) of the block's output tile

    @cuda.jit
    def gemm(a, b, c):
        """c[z] = a[z or 0] @ b[z] for row-major a[.] (M x R), b[z] (R x P), c[z] (M x P),
        z = blockIdx.z: one a for every batch (im2col's weights) or one per batch (Winograd's
        transformed kernels)."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        z = cuda.blockIdx.z
        za = z if a.shape[0] > 1 else 0
        m_rows, depth = a.shape[1], a.shape[2]
        p_cols = b.shape[2]
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
                a_s[kk, m] = a[za, gr, gk] if gr < m_rows and gk < depth else zero  # ragged edges
                kk2, col = idx // bm, idx % bm  # ... and along b's columns: coalesced
                gk2, gc = k0 + kk2, col0 + col
                b_s[kk2, col] = b[z, gk2, gc] if gk2 < depth and gc < p_cols else zero
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
                    c[z, r, col] = acc[u, v]

    return gemm


def gemm(a, b, out) -> None:
    """out[z] = a[z] @ b[z] on device arrays with the tiled kernel (b, out: batches of
    matrices; a: one matrix for all, or a batch of them)."""
    if len(a.shape) == 2:
        a = a.reshape(1, *a.shape)
    batch, m, p = out.shape
    g = launch.current()
    tile = g.gemm_threads * g.gemm_register_tile
    blocks = (ceil_div(p, tile), ceil_div(m, tile), batch)
    kernel = _make_gemm(np.dtype(out.dtype).name, g.gemm_threads, g.gemm_register_tile,
                        g.gemm_depth)
    kernel[blocks, (g.gemm_threads, g.gemm_threads)](a, b, out)


def images_per_chunk(spec: ConvSpec) -> int:
    """Images unfolded per launch: as many as fit CHUNK_BYTES (at least one)."""
    ho, wo = spec.out_size
    per_image = spec.c * spec.kh * spec.kw * ho * wo * spec.itemsize
    return max(1, min(spec.n, CHUNK_BYTES // max(per_image, 1)))


def im2col_workspace_bytes(spec: ConvSpec) -> int:
    """The unfolded matrices (C*kh*kw x Ho*Wo) of one chunk of images, reused chunk by chunk."""
    ho, wo = spec.out_size
    return images_per_chunk(spec) * spec.c * spec.kh * spec.kw * ho * wo * spec.itemsize


def im2col_conv2d(x, w, spec: ConvSpec):
    """Unfold a chunk of images on the GPU, then one batched tiled GEMM writing their outputs."""
    ho, wo = spec.out_size
    rows = spec.c * spec.kh * spec.kw
    chunk = images_per_chunk(spec)
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    cols = device_empty((chunk, rows, ho * wo), np.dtype(spec.dtype))
    wmat = w.reshape(spec.k, rows)
    out3 = out.reshape(spec.n, spec.k, ho * wo)
    unfold = _make_unfold(spec.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    for n0 in range(0, spec.n, chunk):
        m = min(chunk, spec.n - n0)
        (bx, by), threads = grid_2d(rows, ho * wo, launch.current().unfold_block)
        unfold[(bx, by, m), threads](x, n0, cols, ho, wo, spec.kh, spec.kw, sh, sw,
                                     spec.pad[0], spec.pad[2], dh, dw, spec.flip)
        gemm(wmat, cols[:m], out3[n0:n0 + m])
    return out


def im2col_cost_features(spec: ConvSpec) -> list[float]:
    """Values unfolded, GEMM FLOPs, and chunks of images (two launches each)."""
    ho, wo = spec.out_size
    depth, pixels = spec.c * spec.kh * spec.kw, ho * wo
    return [1.0, spec.n * depth * pixels, 2.0 * spec.n * spec.k * depth * pixels,
            ceil_div(spec.n, images_per_chunk(spec))]


register(Algorithm(
    name="im2col", op="conv2d", device="cuda", run=host_or_device(im2col_conv2d),
    workspace_bytes=im2col_workspace_bytes, cost_features=im2col_cost_features,
    rough_cost=lambda s: 1.5 * s.flops, bound_by="blas",
    supports=lambda spec: spec.groups == 1, limits="groups = 1 only",
    description="unfold kernel + shared-memory tiled GEMM (4x4 register tiles)",
))
