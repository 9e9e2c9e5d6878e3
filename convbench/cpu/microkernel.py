"""A register-blocked GEMM micro-kernel for the CPU kernels, written as a Numba intrinsic.

C[MR x NR] (+)= A[MR x kc] @ B[kc x NR], the block of C held in vector registers for the whole
reduction: per step of k, NR/width vector loads of B's row, MR broadcasts of A's column and
MR*NR/width fused multiply-adds (the layout of BLIS's and oneDNN's GEMM kernels). Written out
in LLVM IR because Numba cannot keep an array block in registers: a loop over an accumulator
array loads and stores it every step (LLVM cannot prove it does not alias the operands), which
ran these small GEMMs at a fifth of the machine's peak.

A is read at ``a[a_off + i*a_row + k*a_col]`` (any strides: packed panels or rows), B's rows and
C's rows are contiguous runs of NR values at pitches ``ldb`` and ``ldc``; the caller pads its
operands to whole MR x NR blocks. The vector width follows the host (AVX-512: 16 float32, else
8); ``MR`` x ``nr(dtype)`` uses 24 of AVX-512's 32 vector registers for accumulators (12 of
AVX2's 16).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from .vector_ir import (VECTOR_BYTES, I64, bits, const, data_at, int64, is_float_array, lanes,
                        load, muladd, splat, store)

MR = 6  # rows of C per block
_VECTORS = 4 if VECTOR_BYTES == 64 else 2  # vectors per row of C's block


def nr(dtype) -> int:
    """Columns of C per block for this element type."""
    return _VECTORS * VECTOR_BYTES // np.dtype(dtype).itemsize


@intrinsic
def _block(typingctx, a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc):
    """C block = A panel @ B panel (overwrites C; see the module docstring)."""
    if not (is_float_array(a) and b == a and c == a):
        return None
    sig = types.void(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc)

    def codegen(context, builder, signature, args):
        a_v, a_off_v, a_row_v, a_col_v, b_v, b_off_v, ldb_v, c_v, c_off_v, ldc_v, kc_v = args
        tys = signature.args
        a_row_v, a_col_v, ldb_v, ldc_v, kc_v = (
            int64(context, builder, args[i], tys[i]) for i in (2, 3, 6, 9, 10))
        a_ptr, b_ptr, c_ptr = (data_at(context, builder, a, args[i], int64(
            context, builder, args[i + 1], tys[i + 1])) for i in (0, 4, 7))
        width, nbits = lanes(a), bits(a)
        vec = ir.VectorType(context.get_data_type(a.dtype), width)
        fma = muladd(builder, vec, nbits)
        zero = ir.Constant(vec, None)
        before = builder.basic_block
        loop = builder.append_basic_block("microkernel.loop")
        done = builder.append_basic_block("microkernel.done")
        builder.cbranch(builder.icmp_signed(">", kc_v, const(0)), loop, done)

        builder.position_at_end(loop)  # one step of k: C block += A column x B row
        k = builder.phi(I64)
        acc = [[builder.phi(vec) for _ in range(_VECTORS)] for _ in range(MR)]
        b_row = builder.gep(b_ptr, [builder.mul(k, ldb_v)])
        b_vecs = [load(builder, vec, builder.gep(b_row, [const(j * width)]), nbits)
                  for j in range(_VECTORS)]
        a_column = builder.gep(a_ptr, [builder.mul(k, a_col_v)])
        summed = []
        for i in range(MR):
            scalar = builder.load(builder.gep(a_column, [builder.mul(const(i), a_row_v)]))
            broadcast = splat(builder, scalar, vec)
            summed.append([builder.call(fma, [broadcast, b_vecs[j], acc[i][j]])
                           for j in range(_VECTORS)])
        k_next = builder.add(k, const(1))
        k.add_incoming(const(0), before)
        k.add_incoming(k_next, loop)
        for i in range(MR):
            for j in range(_VECTORS):
                acc[i][j].add_incoming(zero, before)
                acc[i][j].add_incoming(summed[i][j], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, kc_v), loop, done)

        builder.position_at_end(done)  # phis first, then the stores
        results = []
        for i in range(MR):
            for j in range(_VECTORS):
                result = builder.phi(vec)
                result.add_incoming(zero, before)
                result.add_incoming(summed[i][j], loop)
                results.append((i, j, result))
        for i, j, result in results:
            offset = builder.add(builder.mul(const(i), ldc_v), const(j * width))
            store(builder, result, builder.gep(c_ptr, [offset]), nbits)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def gemm(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, rows, cols, kc, n_r):
    """C[rows x cols] = A[rows x kc] @ B[kc x cols] over flat arrays, block by block (rows a
    multiple of MR, cols of ``n_r`` = nr(dtype)); each B panel (kc x n_r) stays in L1 while
    every row block of A passes over it."""
    for j0 in range(0, cols, n_r):
        for i0 in range(0, rows, MR):
            _block(a, a_off + i0 * a_row, a_row, a_col, b, b_off + j0, ldb,
                   c, c_off + i0 * ldc + j0, ldc, kc)
