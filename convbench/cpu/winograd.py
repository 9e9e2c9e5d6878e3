"""Winograd minimal filtering for 3x3 convolutions on the CPU (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2015).

F(m x m, 3x3) computes an m x m output tile from an a x a input tile (a = m + 2) with a*a
multiplications per (input channel, output channel) instead of 9*m*m:

    Y = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A

registered as ``winograd`` (F(4x4, 3x3): 36 products for 16 outputs, 4x fewer than direct) and
``winograd_f2`` (F(2x2, 3x3): 16 for 4, 2.25x fewer, and more accurate: the transforms of the
larger tile amplify rounding more; ``tolerance.py`` bounds both). Stride 1, dilation 1, any
padding, both flips, float32 and float64.

The three stages: kernels are transformed once per call (U, a*a x C x K, in float64 then
rounded); the input is read channel-last (one transposed copy) so that every transform runs
along contiguous channels, giving V (a*a x tiles x C); the a*a products are batched GEMMs
V[xi] @ U[xi] on BLAS (M, a*a x tiles x K); the output transform writes each tile's outputs
straight into the (N, K, Ho, Wo) result. Images are processed in chunks so that V and M stay
within CHUNK_BYTES.
"""
from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange
import numba

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from ..winograd_transforms import growth, matrices, supports

CHUNK_BYTES = 48 << 20  # V and M of one chunk of images, at most (but one image)

@njit(fastmath={"contract"}, inline="always")
def _apply(mat, src, dst, rows, length):
    """dst[r, :length] = sum_j mat[r, j] * src[j, :length] for r < rows, skipping zeros (the
    transforms are sparse); the channel axis is contiguous, so every pass is a vector loop."""
    for r in range(rows):
        for t in range(length):
            dst[r, t] = 0.0
        for j in range(mat.shape[1]):
            coef = mat[r, j]
            if coef != 0.0:
                for t in range(length):
                    dst[r, t] += coef * src[j, t]


@njit(parallel=True, cache=True)
def _input_transform(xh, bt, v, n0, tiles_h, tiles_w, m, pt, pl, ws):
    """v[xi*a + nu, p, :] = (B^T d B)[xi, nu] of tile p (images n0.., channel-last xh)."""
    _, h, wid, c_in = xh.shape
    a = bt.shape[0]
    tiles = tiles_h * tiles_w
    for p in prange(v.shape[1]):
        n = n0 + p // tiles
        th = (p % tiles) // tiles_w
        tw = p % tiles_w
        d, t, col, res = ws[get_thread_id(), 0], ws[get_thread_id(), 1], ws[
            get_thread_id(), 2], ws[get_thread_id(), 3]
        for i in range(a):
            ih = th * m - pt + i
            for j in range(a):
                iw = tw * m - pl + j
                if 0 <= ih < h and 0 <= iw < wid:  # the tile reaches into the zero padding
                    for c in range(c_in):
                        d[i * a + j, c] = xh[n, ih, iw, c]
                else:
                    for c in range(c_in):
                        d[i * a + j, c] = 0.0
        for i in range(a):  # along each tile row: t[i, nu] = sum_j B^T[nu, j] d[i, j]
            _apply(bt, d[i * a:(i + 1) * a], t[i * a:(i + 1) * a], a, c_in)
        for nu in range(a):  # down each column: v[xi, nu] = sum_i B^T[xi, i] t[i, nu]
            for i in range(a):
                for c in range(c_in):
                    col[i, c] = t[i * a + nu, c]
            _apply(bt, col, res, a, c_in)
            for xi in range(a):
                for c in range(c_in):
                    v[xi * a + nu, p, c] = res[xi, c]


@njit(parallel=True, cache=True)
def _output_transform(mm, at, out, n0, tiles_h, tiles_w, ws):
    """out[n, :, th*m + i, tw*m + j] = (A^T M A)[i, j] of tile p, within the output (written
    straight into the (N, K, Ho, Wo) result: cheaper than a channel-last copy transposed)."""
    _, k_out, ho, wo = out.shape
    m, a = at.shape
    tiles = tiles_h * tiles_w
    for p in prange(mm.shape[1]):
        n = n0 + p // tiles
        th = (p % tiles) // tiles_w
        tw = p % tiles_w
        s, t, col, res = ws[get_thread_id(), 0], ws[get_thread_id(), 1], ws[
            get_thread_id(), 2], ws[get_thread_id(), 3]
        for xi in range(a):  # along each row of products: t[xi, j] = sum_nu A^T[j, nu] M[xi, nu]
            for nu in range(a):
                for k in range(k_out):
                    s[nu, k] = mm[xi * a + nu, p, k]
            _apply(at, s, t[xi * m:(xi + 1) * m], m, k_out)
        for j in range(m):  # down each column: y[i, j] = sum_xi A^T[i, xi] t[xi, j]
            for xi in range(a):
                for k in range(k_out):
                    col[xi, k] = t[xi * m + j, k]
            _apply(at, col, res, m, k_out)
            ow = tw * m + j
            if ow >= wo:  # the last tiles overhang the output
                continue
            for i in range(m):
                oh = th * m + i
                if oh < ho:
                    for k in range(k_out):
                        out[n, k, oh, ow] = res[i, k]


def _tiles(spec: ConvSpec, m: int) -> tuple[int, int]:
    ho, wo = spec.out_size
    return ceil_div(ho, m), ceil_div(wo, m)


def images_per_chunk(spec: ConvSpec, m: int) -> int:
    """Images whose V and M fit CHUNK_BYTES (at least one)."""
    a = m + 2
    th, tw = _tiles(spec, m)
    per_image = a * a * th * tw * (spec.c + spec.k) * spec.itemsize
    return max(1, min(spec.n, CHUNK_BYTES // max(per_image, 1)))


def _scratch_shape(spec: ConvSpec, m: int) -> tuple[int, ...]:
    a = m + 2
    return (numba.config.NUMBA_NUM_THREADS, 4, a * a, max(spec.c, spec.k))


def _workspace_parts(spec: ConvSpec, m: int) -> list[tuple[tuple[int, ...], str]]:
    a = m + 2
    th, tw = _tiles(spec, m)
    chunk = images_per_chunk(spec, m) * th * tw
    return [((a * a, spec.c, spec.k), spec.dtype),  # U
            ((spec.n, spec.h, spec.w, spec.c), spec.dtype),  # channel-last input
            ((a * a, chunk, spec.c), spec.dtype),  # V
            ((a * a, chunk, spec.k), spec.dtype),  # M
            (_scratch_shape(spec, m), spec.dtype)]


def kernel_transform(w: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    """U[xi*a + nu, c, k] = (G g_kc G^T)[xi, nu], computed in float64 (the kernel rotated for
    true convolution)."""
    _, g, _ = matrices(m)
    a = m + 2
    wk = w[:, :, ::-1, ::-1] if spec.flip else w
    u = workspace.empty((a * a, spec.c, spec.k), w.dtype)
    transformed = g @ wk.astype(np.float64) @ g.T  # (K, C, a, a)
    u.reshape(a, a, spec.c, spec.k)[...] = transformed.transpose(2, 3, 1, 0)
    return u


def winograd_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec, m: int = 4,
                    u: np.ndarray | None = None) -> np.ndarray:
    """F(m x m, 3x3) Winograd convolution (see the module docstring); ``u``: the transformed
    kernels, when prepared beforehand."""
    out = np.empty(spec.out_shape, dtype=x.dtype)  # first: the measured peak is out + workspace
    bt, _, at = (mat.astype(x.dtype) for mat in matrices(m))
    a = m + 2
    th, tw = _tiles(spec, m)
    if u is None:
        u = kernel_transform(w, spec, m)
    xh = workspace.empty((spec.n, spec.h, spec.w, spec.c), x.dtype)
    np.copyto(xh, x.transpose(0, 2, 3, 1))
    chunk = images_per_chunk(spec, m)
    v = workspace.empty((a * a, chunk * th * tw, spec.c), x.dtype)
    mm = workspace.empty((a * a, chunk * th * tw, spec.k), x.dtype)
    ws = workspace.empty(_scratch_shape(spec, m), x.dtype)
    for n0 in range(0, spec.n, chunk):
        count = min(chunk, spec.n - n0) * th * tw
        _input_transform(xh, bt, v[:, :count], n0, th, tw, m, spec.pad[0], spec.pad[2], ws)
        np.matmul(v[:, :count], u, out=mm[:, :count])  # a*a GEMMs on BLAS
        _output_transform(mm[:, :count], at, out, n0, th, tw, ws)
    return out


def winograd_workspace_bytes(spec: ConvSpec, m: int = 4) -> int:
    """U, the channel-last input, V and M of one chunk, per-thread scratch."""
    return sum(workspace.nbytes(shape, dtype) for shape, dtype in _workspace_parts(spec, m))


def _prepared(w: np.ndarray, spec: ConvSpec, m: int):
    """The kernels transformed once."""
    u = kernel_transform(w, spec, m)
    return lambda x: winograd_conv2d(x, w, spec, m, u)


def _cost_features(m: int):
    def features(spec: ConvSpec) -> list[float]:
        """Transform work (a*a values per tile and input or output channel, and the kernels),
        the batched GEMMs' FLOPs and operand bytes, the transposed copies, and the chunks
        (a*a GEMM calls each)."""
        a = m + 2
        th, tw = _tiles(spec, m)
        tiles = spec.n * th * tw
        chunks = ceil_div(spec.n, images_per_chunk(spec, m))
        return [1.0, tiles * a * a * spec.c, tiles * a * a * spec.k, spec.k * spec.c * a * a,
                2.0 * a * a * tiles * spec.c * spec.k,
                a * a * (tiles * (spec.c + spec.k) + spec.c * spec.k),
                spec.n * (spec.c * spec.h * spec.w + spec.k * th * tw * m * m), chunks]

    return features


def _rough_cost(m: int):
    def cost(spec: ConvSpec) -> float:
        a = m + 2
        th, tw = _tiles(spec, m)
        tiles = spec.n * th * tw
        return 2.0 * a * a * tiles * spec.c * spec.k + 20.0 * tiles * a * a * (spec.c + spec.k)

    return cost


for _name, _m, _desc in (("winograd", 4, "F(4x4,3x3): 4x fewer multiplies, batched BLAS GEMMs"),
                         ("winograd_f2", 2, "F(2x2,3x3): 2.25x fewer multiplies, more accurate")):
    register(Algorithm(
        name=_name, op="conv2d", device="cpu",
        run=lambda x, w, spec, _m=_m: winograd_conv2d(x, w, spec, _m),
        prepare=lambda w, spec, _m=_m: _prepared(w, spec, _m),
        workspace_bytes=lambda spec, _m=_m: winograd_workspace_bytes(spec, _m),
        supports=supports, limits="3x3 kernels, stride 1, dilation 1, groups = 1 only",
        error_model=f"winograd_f{_m}",
        cost_features=_cost_features(_m), rough_cost=_rough_cost(_m),
        transform_growth=growth(_m), bound_by="blas", description=_desc))
