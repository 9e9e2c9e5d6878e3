"""Winograd F(2x2, 3x3) on the GPU (Lavin & Gray, 2015), the CPU ``winograd_f2``'s twin.

Each 2x2 output tile comes from a 4x4 input tile with 16 multiplications per (input, output
channel) instead of 36. Four launches, each simple and coalesced:

1. kernel transform, one thread per (k, c): U[xi*4 + nu, k, c] = (G g G^T)[xi, nu];
2. input transform, one thread per (channel, tile): V[xi*4 + nu, c, p] = (B^T d B)[xi, nu],
   consecutive threads on consecutive tiles p (N*th*tw of them over the whole batch);
3. 16 GEMMs in one launch, M[e] (K x P) = U[e] (K x C) @ V[e] (C x P): the tiled im2col GEMM
   with one left operand per batch entry;
4. output transform, one thread per (k, tile): y = A^T M A, written into (N, K, Ho, Wo).

The transforms are additions and halvings only (points 0, +-1), so the elementwise stage
carries almost all the arithmetic; U, V and M are the workspace, declared exactly.
Stride 1, dilation 1, groups 1, any padding, both flips, float32 and float64.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from ..winograd_transforms import growth, supports
from . import launch
from .arrays import device_empty, grid_2d, host_or_device, numba_type
from .bias import device_bias
from .im2col import gemm


@cuda.jit(device=True)
def _tile_of(p, tiles_h, tiles_w):
    """(image, tile row, tile column) of tile p of the batch."""
    tiles = tiles_h * tiles_w
    n = p // tiles
    rest = p - n * tiles
    th = rest // tiles_w
    return n, th, rest - th * tiles_w


@lru_cache(maxsize=None)
def _make_transforms(dtype_name: str):
    zero = np.dtype(dtype_name).type(0)
    half = np.dtype(dtype_name).type(0.5)
    nb_type = numba_type(dtype_name)

    @cuda.jit
    def kernel_transform(w, u, flip):
        """u[xi*4 + nu, k, c] = (G g G^T)[xi, nu] with G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],
        [0,0,1]]; g rotated for true convolution."""
        c, k = cuda.grid(2)
        if k >= w.shape[0] or c >= w.shape[1]:
            return
        g = cuda.local.array((3, 3), nb_type)
        t = cuda.local.array((4, 3), nb_type)
        for i in range(3):
            for j in range(3):
                g[i, j] = w[k, c, 2 - i, 2 - j] if flip else w[k, c, i, j]
        for j in range(3):  # t = G g (rows of the 4-point transform, per kernel column)
            t[0, j] = g[0, j]
            t[1, j] = half * (g[0, j] + g[1, j] + g[2, j])
            t[2, j] = half * (g[0, j] - g[1, j] + g[2, j])
            t[3, j] = g[2, j]
        for xi in range(4):  # (G g) G^T
            u[xi * 4 + 0, k, c] = t[xi, 0]
            u[xi * 4 + 1, k, c] = half * (t[xi, 0] + t[xi, 1] + t[xi, 2])
            u[xi * 4 + 2, k, c] = half * (t[xi, 0] - t[xi, 1] + t[xi, 2])
            u[xi * 4 + 3, k, c] = t[xi, 2]

    @cuda.jit
    def input_transform(x, v, tiles_h, tiles_w, pt, pl):
        """v[xi*4 + nu, c, p] = (B^T d B)[xi, nu] of tile p, B^T = [[1,0,-1,0],[0,1,1,0],
        [0,-1,1,0],[0,1,0,-1]]; d the 4x4 input tile at (2*th - pt, 2*tw - pl), zero padded."""
        p, c = cuda.grid(2)
        if p >= v.shape[2] or c >= v.shape[1]:
            return
        n, th, tw = _tile_of(p, tiles_h, tiles_w)
        d = cuda.local.array((4, 4), nb_type)
        h, wid = x.shape[2], x.shape[3]
        for i in range(4):
            ih = 2 * th - pt + i
            for j in range(4):
                iw = 2 * tw - pl + j
                d[i, j] = x[n, c, ih, iw] if 0 <= ih < h and 0 <= iw < wid else zero
        for j in range(4):  # down the columns: B^T d
            r0 = d[0, j] - d[2, j]
            r1 = d[1, j] + d[2, j]
            r2 = d[2, j] - d[1, j]
            r3 = d[1, j] - d[3, j]
            d[0, j], d[1, j], d[2, j], d[3, j] = r0, r1, r2, r3
        for xi in range(4):  # along the rows: (B^T d) B
            v[xi * 4 + 0, c, p] = d[xi, 0] - d[xi, 2]
            v[xi * 4 + 1, c, p] = d[xi, 1] + d[xi, 2]
            v[xi * 4 + 2, c, p] = d[xi, 2] - d[xi, 1]
            v[xi * 4 + 3, c, p] = d[xi, 1] - d[xi, 3]

    @cuda.jit
    def output_transform(m, out, tiles_h, tiles_w, bias, has_bias):
        """out[n, k, 2*th + i, 2*tw + j] = (A^T M A)[i, j], A^T = [[1,1,1,0],[0,1,-1,-1]]."""
        p, k = cuda.grid(2)
        if p >= m.shape[2] or k >= m.shape[1]:
            return
        n, th, tw = _tile_of(p, tiles_h, tiles_w)
        s = cuda.local.array((2, 4), nb_type)
        for nu in range(4):  # A^T M, column by column
            m0, m1 = m[nu, k, p], m[4 + nu, k, p]
            m2, m3 = m[8 + nu, k, p], m[12 + nu, k, p]
            s[0, nu] = m0 + m1 + m2
            s[1, nu] = m1 - m2 - m3
        start = bias[k] if has_bias else zero
        ho, wo = out.shape[2], out.shape[3]
        for i in range(2):
            oh = 2 * th + i
            if oh < ho:
                y0 = s[i, 0] + s[i, 1] + s[i, 2]
                y1 = s[i, 1] - s[i, 2] - s[i, 3]
                out[n, k, oh, 2 * tw] = start + y0
                if 2 * tw + 1 < wo:
                    out[n, k, oh, 2 * tw + 1] = start + y1

    return kernel_transform, input_transform, output_transform


def _tiles(spec: ConvSpec) -> tuple[int, int]:
    ho, wo = spec.out_size
    return ceil_div(ho, 2), ceil_div(wo, 2)


def _workspace_shapes(spec: ConvSpec) -> list[tuple[int, int, int]]:
    th, tw = _tiles(spec)
    tiles = spec.n * th * tw
    return [(16, spec.k, spec.c), (16, spec.c, tiles), (16, spec.k, tiles)]  # U, V, M


def winograd_workspace_bytes(spec: ConvSpec) -> int:
    """U, V and M (16 matrices each)."""
    return sum(int(np.prod(s)) for s in _workspace_shapes(spec)) * spec.itemsize


def winograd_f2_conv2d(x, w, spec: ConvSpec, b=None):
    """Kernel and input transforms, 16 GEMMs in one launch, output transform (bias fused)."""
    dtype = np.dtype(spec.dtype)
    out = device_empty(spec.out_shape, dtype)
    if spec.n == 0:
        return out
    kernel_t, input_t, output_t = _make_transforms(spec.dtype)
    block = launch.current().unfold_block
    th, tw = _tiles(spec)
    u_shape, v_shape, m_shape = _workspace_shapes(spec)
    u, v, m = (device_empty(s, dtype) for s in (u_shape, v_shape, m_shape))
    blocks, threads = grid_2d(spec.k, spec.c, block)
    kernel_t[blocks, threads](w, u, spec.flip)
    blocks, threads = grid_2d(spec.c, v_shape[2], block)
    input_t[blocks, threads](x, v, th, tw, spec.pad[0], spec.pad[2])
    gemm(u, v, m)
    blocks, threads = grid_2d(spec.k, m_shape[2], block)
    output_t[blocks, threads](m, out, th, tw, device_bias(b, dtype), b is not None)
    return out


def _cost_features(spec: ConvSpec) -> list[float]:
    """Values transformed in and out, the GEMMs' FLOPs, and launches (four)."""
    th, tw = _tiles(spec)
    tiles = spec.n * th * tw
    return [1.0, 16.0 * tiles * (spec.c + spec.k), 32.0 * tiles * spec.c * spec.k, 4.0]


register(Algorithm(
    name="winograd_f2", op="conv2d", device="cuda", run=host_or_device(winograd_f2_conv2d),
    workspace_bytes=winograd_workspace_bytes, supports=supports,
    limits="3x3 kernels, stride 1, dilation 1, groups = 1 only", error_model="winograd_f2",
    cost_features=_cost_features, transform_growth=growth(2), fused_bias=True, bound_by="blas",
    rough_cost=lambda s: 32.0 * s.n * _tiles(s)[0] * _tiles(s)[1] * s.c * s.k,
    description="F(2x2,3x3): transforms, 16 batched tiled GEMMs, output transform with bias"))
