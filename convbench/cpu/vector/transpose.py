"""Square blocks transposed in registers: the step from channel-first (N, C, H, W) planes to a
channel-last copy (pixels whose channels are contiguous), which Winograd's tile transforms read;
weights reordered with the output channels innermost (:func:`transpose_into`, for the implicit
GEMM's packing and Winograd's kernel transform); and the own FFT's blocks of image lines.

A plain Numba loop for that copy (``dst[pixel*C + c] = src[c*plane + pixel]``) loads one
element at a time from C planes; LLVM leaves it scalar (or gathers), about three cycles per
element. ``block(src, s_off, s_pitch, dst, d_off, d_pitch)`` instead loads one vector from each
of ``lanes`` rows of the source, transposes them with log2(lanes) stages of shuffles
(``ir.transpose``), and stores one vector to each of ``lanes`` rows of the destination:

    dst[d_off + j*d_pitch + i] = src[s_off + i*s_pitch + j]    for i, j < lanes

``lanes`` = ``TARGET.lanes(dtype)`` (16 float32 or 8 float64 on AVX-512). The caller copies what is left
at the edges (channels or pixels short of a whole block) element by element.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core import types
from .ir import TARGET, bits, const, is_float_array, lanes, load, store, \
    vector_intrinsic
from .ir import transpose as transpose_vectors


@vector_intrinsic
def block(typingctx, src, s_off, s_pitch, dst, d_off, d_pitch):
    """Transpose one lanes x lanes block from ``src`` into ``dst`` (see the module docstring);
    both flat arrays of the same float type."""
    if not (is_float_array(src) and dst == src):
        return None
    sig = types.void(src, s_off, s_pitch, dst, d_off, d_pitch)

    def emit(v):
        builder = v.builder
        s_pitch_v, d_pitch_v = v.ints("s_pitch", "d_pitch")
        src_ptr, dst_ptr = v.at("src", "s_off"), v.at("dst", "d_off")
        nbits, count = bits(src), lanes(src)
        vec = v.vector("src")
        rows = [load(builder, vec, builder.gep(src_ptr, [builder.mul(const(i), s_pitch_v)]),
                     nbits) for i in range(count)]
        for j, column in enumerate(transpose_vectors(builder, rows)):
            store(builder, column, builder.gep(dst_ptr, [builder.mul(const(j), d_pitch_v)]),
                  nbits)

    return sig, emit


def transpose_into(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[..., j, i] = src[..., i, j] for every matrix of the C-contiguous ``src`` (2-D, or a
    stack of matrices, all transposed in one parallel region); ``dst`` (C-contiguous) may be
    wider than src is tall: its other columns are left as they are."""
    rows, cols = src.shape[-2:]
    _transpose_into(src.reshape(-1, rows, cols), dst.reshape(-1, cols, dst.shape[-1]),
                    TARGET.lanes(src.dtype))


@njit(parallel=True, cache=True)
def _transpose_into(src, dst, lanes):
    """Whole lanes x lanes blocks in registers, in parallel over (matrix, column block of the
    source); the edges element by element."""
    count, rows, cols = src.shape
    pitch_s, pitch_d = cols, dst.shape[2]
    flat_s, flat_d = src.reshape(-1), dst.reshape(-1)
    whole_rows, whole_cols = rows - rows % lanes, cols - cols % lanes
    col_blocks = (cols + lanes - 1) // lanes
    for task in prange(count * col_blocks):
        m, j0 = task // col_blocks, task % col_blocks * lanes
        s0, d0 = m * rows * cols, m * cols * pitch_d
        if j0 < whole_cols:
            for i0 in range(0, whole_rows, lanes):
                block(flat_s, s0 + i0 * pitch_s + j0, pitch_s, flat_d, d0 + j0 * pitch_d + i0,
                      pitch_d)
            for i in range(whole_rows, rows):
                for j in range(j0, j0 + lanes):
                    dst[m, j, i] = src[m, i, j]
        else:
            for j in range(j0, cols):
                for i in range(rows):
                    dst[m, j, i] = src[m, i, j]
