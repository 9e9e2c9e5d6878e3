"""Winograd minimal filtering for 3x3 convolutions on the CPU (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2015).

F(m x m, 3x3) computes an m x m output tile from an a x a input tile (a = m + 2) with a*a
multiplications per (input channel, output channel) instead of 9*m*m:

    Y = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A

registered as ``winograd`` (F(4x4, 3x3): 36 products for 16 outputs, 4x fewer than direct) and
``winograd_f2`` (F(2x2, 3x3): 16 for 4, 2.25x fewer, and more accurate: the transforms of the
larger tile amplify rounding more; ``tolerance.py`` bounds both). Stride 1, dilation 1, any
padding, both flips, float32 and float64.

The kernels are transformed once per call (U, a*a x C x Kp, by the same folded tile transform
as the inputs; Kp: K padded to the micro-kernel's columns), or once for all by the prepared
form. The input is staged once as a zero-padded channel-last copy, so every tile is read
without bounds checks and its channels are contiguous. Then each thread carries a block of
tiles through all three stages while it stays in L2 (at most BLOCK_BYTES of V and M):

1. input transform (``winograd_tiles``, vectorised across channels): V, a*a x block x C;
2. the a*a products M[xi] = V[xi] @ U[xi] on the register-blocked micro-kernel
   (``microkernel``), M: a*a x block x Kp;
3. output transform, the bias added, each tile's outputs stored straight into the
   (N, K, Ho, Wo) result.

The stages are fused per block of tiles so that V and M stay in L2: as separate passes over
whole images (batched GEMMs of small a*a products) V and M would cross memory three times,
and small GEMMs through BLAS run far below the micro-kernel's speed.
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
from .vector.microkernel import MR, gemm, nr
from .vector.ir import TARGET
from .vector.transpose import block, transpose_into
from .vector.winograd_tiles import transform

BLOCK_BYTES = 1 << 20  # V and M of one thread's block of tiles, at most (but MR tiles)
DEEP_BLOCK_BYTES = 3 << 20  # V and M of a deep layer's block per thread, about
U_FROM_MEMORY_BYTES = 16 << 20  # a chunk of U this large crosses memory, not the L3, per block
CHUNKS_PER_THREAD = 2  # output-channel chunks a thread's share of tiles is split into (deep layers)

_input_f2, _input_f4 = (transform(matrices(m)[0], scatter=False, biased=False) for m in (2, 4))
_output_f2, _output_f4 = (transform(matrices(m)[2], scatter=True, biased=True) for m in (2, 4))
_kernels_f2, _kernels_f4 = (transform(matrices(m)[1], scatter=False, biased=False) for m in (2, 4))


@njit(inline="always")
def _input_tile(m, src, s_off, s_row, s_col, dst, d_off, d_row, d_col, length):
    """B^T d B of one tile, every channel (F(m x m) chosen at run time: the intrinsics are
    compiled per matrix)."""
    a = m + 2
    if m == 4:
        _input_f4(src, s_off, s_row, s_col, dst, d_off, d_row, d_col, 1, src, a, a, length)
    else:
        _input_f2(src, s_off, s_row, s_col, dst, d_off, d_row, d_col, 1, src, a, a, length)


@njit(inline="always")
def _output_tile(m, src, s_off, s_row, s_col, dst, d_off, d_row, d_chan, bias, rows, cols,
                 length):
    """A^T M A (+ bias) of one tile into rows x cols outputs of every channel's plane."""
    if m == 4:
        _output_f4(src, s_off, s_row, s_col, dst, d_off, d_row, 1, d_chan, bias, rows, cols,
                   length)
    else:
        _output_f2(src, s_off, s_row, s_col, dst, d_off, d_row, 1, d_chan, bias, rows, cols,
                   length)


@njit(parallel=True, cache=True)
def _winograd_blocks(xp, u, out, bias, m, tiles_h, tiles_w, vb, mb, n_r, k_chunk):
    """Every (block of tiles, chunk of output channels) in turn, all three stages while the
    block is in cache: the input transform of the padded channel-last input xp into vb
    (a*a x block x C), the a*a products on the micro-kernel into mb (a*a x block x Kp, against
    u: a*a x C x Kp) for the chunk's columns, the output transform of the chunk's channels
    (with the bias) into out."""
    n_img, hp, wp, c_in = xp.shape
    _, k_out, ho, wo = out.shape
    a = m + 2
    k_pad = u.shape[2]
    block = vb.shape[2]
    tiles = tiles_h * tiles_w
    total = n_img * tiles
    chunks = (k_pad + k_chunk - 1) // k_chunk
    src, uf, dst = xp.reshape(-1), u.reshape(-1), out.reshape(-1)
    for task in prange((total + block - 1) // block * chunks):
        me = get_thread_id()
        v, mm = vb[me].reshape(-1), mb[me].reshape(-1)
        first = task // chunks * block
        count = min(block, total - first)
        kc0 = task % chunks * k_chunk
        kc1 = min(k_pad, kc0 + k_chunk)
        for r in range(count):
            p = first + r
            n, th, tw = p // tiles, (p % tiles) // tiles_w, p % tiles_w
            at = ((n * hp + th * m) * wp + tw * m) * c_in
            _input_tile(m, src, at, wp * c_in, c_in, v, r * c_in, a * block * c_in,
                        block * c_in, c_in)
        for xi in range(a * a):  # the last block's missing tiles: zeros, not stale values
            for r in range(count, block):
                for c in range(c_in):
                    vb[me, xi, r, c] = 0.0
        for xi in range(a * a):
            gemm(v, xi * block * c_in, c_in, 1, uf, xi * c_in * k_pad + kc0, k_pad,
                 mm, xi * block * k_pad + kc0, k_pad, block, kc1 - kc0, c_in, n_r)
        channels = min(kc1, k_out) - kc0
        if channels <= 0:
            continue
        chunk_bias = bias[kc0:]
        for r in range(count):
            p = first + r
            n, th, tw = p // tiles, (p % tiles) // tiles_w, p % tiles_w
            at = ((n * k_out + kc0) * ho + th * m) * wo + tw * m
            rows, cols = min(m, ho - th * m), min(m, wo - tw * m)
            _output_tile(m, mm, r * k_pad + kc0, a * block * k_pad, block * k_pad, dst, at, wo,
                         ho * wo, chunk_bias, rows, cols, channels)


def _tiles(spec: ConvSpec, m: int) -> tuple[int, int]:
    ho, wo = spec.out_size
    return ceil_div(ho, m), ceil_div(wo, m)


def blocking(spec: ConvSpec, m: int) -> tuple[int, int]:
    """(tiles per block, output channels per chunk) of a thread's task. Where U (the
    transformed kernels) fits beside a block in L2, blocks keep V and M within BLOCK_BYTES and
    every task takes all output channels. Deeper layers (U of N8 C256 14x14: 9.4 MB) would
    stream U once per small block; there a thread takes its whole share of the tiles and the
    tasks split the output channels instead, so U crosses memory about once per thread; but
    where that share's V and M would spill far past the caches (large planes), it is cut into
    even blocks of about DEEP_BLOCK_BYTES, each reading its chunk of U again from the L3."""
    a = m + 2
    th, tw = _tiles(spec, m)
    threads = numba.config.NUMBA_NUM_THREADS
    k_pad, n_r = padded_k(spec), nr(spec.dtype)
    share = ceil_div(ceil_div(spec.n * th * tw, threads), MR) * MR
    if a * a * spec.c * k_pad * spec.itemsize <= BLOCK_BYTES:
        per_tile = a * a * (spec.c + k_pad) * spec.itemsize
        fit = max(MR, BLOCK_BYTES // per_tile // MR * MR)
        return max(MR, min(fit, share)), k_pad
    chunks = min(k_pad // n_r, CHUNKS_PER_THREAD)
    k_chunk = ceil_div(k_pad // n_r, chunks) * n_r
    # a large plane's share would spill V and M far past the caches (N8 C128 112x112, F(4x4):
    # 115 MB of each): split it into even blocks of about DEEP_BLOCK_BYTES, each reading its
    # chunk of U again, unless that chunk is too large to stay in the L3 between blocks
    per_tile = a * a * (spec.c + k_chunk) * spec.itemsize
    u_chunk = a * a * spec.c * k_chunk * spec.itemsize
    if u_chunk >= U_FROM_MEMORY_BYTES or share * per_tile <= 1.5 * DEEP_BLOCK_BYTES:
        return max(MR, share), k_chunk
    blocks = ceil_div(share * per_tile, DEEP_BLOCK_BYTES)
    return max(MR, ceil_div(ceil_div(share, blocks), MR) * MR), k_chunk


def padded_k(spec: ConvSpec) -> int:
    """Output channels rounded up to whole micro-kernel columns (U and M are padded)."""
    step = nr(spec.dtype)
    return ceil_div(spec.k, step) * step


def _padded_input_shape(spec: ConvSpec, m: int) -> tuple[int, int, int, int]:
    """(N, Hp, Wp, C): the input with its zero padding, extended so every tile lies inside."""
    th, tw = _tiles(spec, m)
    return spec.n, th * m + 2, tw * m + 2, spec.c


def _workspace_parts(spec: ConvSpec, m: int) -> list[tuple[tuple[int, ...], str]]:
    a = m + 2
    block = blocking(spec, m)[0]  # tiles a thread carries through all three stages at once
    threads = numba.config.NUMBA_NUM_THREADS
    return [((a * a, spec.c, padded_k(spec)), spec.dtype),  # U
            (_padded_input_shape(spec, m), spec.dtype),  # padded channel-last input
            ((threads, a * a, block, spec.c), spec.dtype),  # V, a block per thread
            ((threads, a * a, block, padded_k(spec)), spec.dtype)]  # M, a block per thread


@njit(parallel=True, cache=True)
def _transform_kernels(taps, m, flip, u):
    """u[xi*a + nu, c, k] = (G g_kc G^T)[xi, nu], the kernel rotated for true convolution;
    ``taps``: the kernels transposed to (C, 9, K), so one input channel's kernels form a 3x3
    tile whose values are contiguous across output channels, the layout the tile transform
    vectorises over (G's coefficients folded in, as for the input and output tiles). A
    rotated kernel is the same tile read backwards: from its last tap, rows and columns
    stepping down."""
    c_in, _, k_out = taps.shape
    a, kp = m + 2, u.shape[2]
    src, dst = taps.reshape(-1), u.reshape(-1)
    first, s_col = (8 * k_out, -k_out) if flip else (0, k_out)
    for c in prange(c_in):
        if m == 4:
            _kernels_f4(src, c * 9 * k_out + first, 3 * s_col, s_col, dst, c * kp,
                        a * c_in * kp, c_in * kp, 1, src, a, a, k_out)
        else:
            _kernels_f2(src, c * 9 * k_out + first, 3 * s_col, s_col, dst, c * kp,
                        a * c_in * kp, c_in * kp, 1, src, a, a, k_out)


def kernel_transform(w: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    """U (a*a x C x Kp): the transformed kernels, columns past K zero (the micro-kernel's
    padding). The kernels are first transposed to (C*9, K) in registers: read in their own
    (K, C, 3, 3) order, a deep layer's (512 x 512) transform loaded each tap a page apart
    and took 21 ms."""
    u = workspace.empty(((m + 2) ** 2, spec.c, padded_k(spec)), w.dtype)
    u[:, :, spec.k:] = 0.0
    taps = workspace.empty((spec.c * 9, spec.k), w.dtype)
    transpose_into(np.ascontiguousarray(w).reshape(spec.k, -1), taps)
    _transform_kernels(taps.reshape(spec.c, 9, spec.k), m, spec.flip, u)
    return u


@njit(inline="always")
def _block_starts(extent, step):
    """Starts of the whole blocks that cover 0..extent (the last one moved back to end at
    extent, overlapping its neighbour: rewriting a few values is cheaper than a scalar edge)."""
    return max(1, (extent + step - 1) // step), max(0, extent - step)


@njit(parallel=True, cache=True)
def _stage_rows(x, pt, pl, xp, lanes):
    """xp[n, pt + ih, pl + iw, c] = x[n, c, ih, iw], the rest of xp zero: one padded row of
    the channel-last copy per task, in lanes x lanes blocks (channels x pixels) transposed in
    registers; layers with fewer channels or pixels than a block copy element by element."""
    n_img, c_in, h, wid = x.shape
    hp, wp = xp.shape[1], xp.shape[2]
    src, dst = x.reshape(-1), xp.reshape(-1)
    for task in prange(n_img * hp):
        n, r = task // hp, task % hp
        row = xp[n, r]
        ih = r - pt
        if ih < 0 or ih >= h:
            row[:, :] = 0.0
            continue
        row[:pl, :] = 0.0
        row[pl + wid:, :] = 0.0
        if c_in < lanes or wid < lanes:
            plane = x[n]
            for iw in range(wid):  # contiguous stores, loads one plane apart
                pixel = row[pl + iw]
                for c in range(c_in):
                    pixel[c] = plane[c, ih, iw]
            continue
        c_blocks, c_last = _block_starts(c_in, lanes)
        w_blocks, w_last = _block_starts(wid, lanes)
        for cb in range(c_blocks):
            c0 = min(cb * lanes, c_last)
            for wb in range(w_blocks):
                w0 = min(wb * lanes, w_last)
                block(src, ((n * c_in + c0) * h + ih) * wid + w0, h * wid,
                      dst, ((n * hp + r) * wp + pl + w0) * c_in + c0, c_in)


def _stage_input(x: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    """The zero-padded, channel-last copy of the input every tile reads without bounds."""
    xp = workspace.empty(_padded_input_shape(spec, m), x.dtype)
    _stage_rows(x, spec.pad[0], spec.pad[2], xp, TARGET.lanes(x.dtype))
    return xp


def winograd_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec, m: int = 4,
                    b: np.ndarray | None = None, u: np.ndarray | None = None) -> np.ndarray:
    """F(m x m, 3x3) Winograd convolution (see the module docstring), the bias ``b`` added in
    the output transform; ``u``: the transformed kernels, when prepared beforehand."""
    out = np.empty(spec.out_shape, dtype=x.dtype)  # first: the measured peak is out + workspace
    if spec.n == 0:
        return out
    if u is None:
        u = kernel_transform(w, spec, m)
    xp = _stage_input(x, spec, m)
    vb, mb = (workspace.empty(*part) for part in _workspace_parts(spec, m)[2:])
    bias = np.zeros(spec.k, x.dtype) if b is None else np.ascontiguousarray(b, x.dtype)
    th, tw = _tiles(spec, m)
    _winograd_blocks(xp, u, out, bias, m, th, tw, vb, mb, nr(x.dtype), blocking(spec, m)[1])
    return out


def winograd_workspace_bytes(spec: ConvSpec, m: int = 4) -> int:
    """U, the padded channel-last input, V and M of one block per thread; while U is
    computed, U and the transposed kernels (freed before the rest)."""
    parts = [workspace.nbytes(shape, dtype) for shape, dtype in _workspace_parts(spec, m)]
    making = workspace.nbytes(spec.w_shape, spec.dtype)
    return max(sum(parts), parts[0] + making)


def _prepared(w: np.ndarray, spec: ConvSpec, m: int, b: np.ndarray | None = None):
    """The kernels transformed once."""
    u = kernel_transform(w, spec, m)
    return lambda x: winograd_conv2d(x, w, spec, m, b, u)


def _cost_features(m: int):
    def features(spec: ConvSpec) -> list[float]:
        """Transform work (a*a values per tile and input or output channel, and the kernels),
        the micro-kernel's FLOPs (K padded to its columns) and the operand bytes, the
        transposed copy and the output, and the tasks (blocks of tiles x chunks of output
        channels)."""
        a = m + 2
        th, tw = _tiles(spec, m)
        tiles = spec.n * th * tw
        block, k_chunk = blocking(spec, m)
        blocks = ceil_div(tiles, block) * ceil_div(padded_k(spec), k_chunk)
        return [1.0, tiles * a * a * spec.c, tiles * a * a * spec.k, spec.k * spec.c * a * a,
                2.0 * a * a * tiles * spec.c * padded_k(spec),
                a * a * (tiles * (spec.c + spec.k) + spec.c * spec.k),
                spec.n * (spec.c * spec.h * spec.w + spec.k * th * tw * m * m), blocks]

    return features


def _rough_cost(m: int):
    def cost(spec: ConvSpec) -> float:
        a = m + 2
        th, tw = _tiles(spec, m)
        tiles = spec.n * th * tw
        return 2.0 * a * a * tiles * spec.c * spec.k + 20.0 * tiles * a * a * (spec.c + spec.k)

    return cost


for _name, _m, _desc in (
        ("winograd", 4, "F(4x4,3x3): 4x fewer multiplies, stages fused per block of tiles"),
        ("winograd_f2", 2, "F(2x2,3x3): 2.25x fewer multiplies, more accurate")):
    register(Algorithm(
        name=_name, op="conv2d", device="cpu",
        run=lambda x, w, spec, b=None, _m=_m: winograd_conv2d(x, w, spec, _m, b),
        prepare=lambda w, spec, b=None, _m=_m: _prepared(w, spec, _m, b), fused_bias=True,
        workspace_bytes=lambda spec, _m=_m: winograd_workspace_bytes(spec, _m),
        supports=supports, limits="3x3 kernels, stride 1, dilation 1, groups = 1 only",
        error_model=f"winograd_f{_m}",
        cost_features=_cost_features(_m), rough_cost=_rough_cost(_m),
        transform_growth=growth(_m), bound_by="numba", description=_desc))
