"""A register-blocked GEMM micro-kernel for the CPU kernels, written as a Numba intrinsic.

C[MR x NR] (+)= A[MR x kc] @ B[kc x NR] (added to C's block when ``accumulate``, else
overwriting it), the block of C held in vector registers for the whole
reduction: per step of k, NR/width vector loads of B's row, MR broadcasts of A's column and
MR*NR/width fused multiply-adds (the layout of BLIS's and oneDNN's GEMM kernels). Written out
in LLVM IR because Numba cannot keep an array block in registers: a loop over an accumulator
array loads and stores it every step (LLVM cannot prove it does not alias the operands), which
ran these small GEMMs at a fifth of the machine's peak.

A is read at ``a[a_off + i*a_row + k*a_col]`` (any strides: packed panels or rows), B's rows and
C's rows are contiguous runs of NR values, at pitches ``ldb`` and ``ldc`` (or B's rows through
an offset table: ``block_indexed``); the caller pads its
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


def _codegen(a, indexed: bool):
    """Emit the block for arrays of type ``a``; ``indexed``: B's row k starts at
    b_off + b_rows[k] (an offset table), else at b_off + k*ldb."""

    def codegen(context, builder, signature, args):
        tys = signature.args
        a_row_v, a_col_v, ldc_v, kc_v, accumulate_v = (
            int64(context, builder, args[i], tys[i]) for i in (2, 3, 9, 10, 11))
        a_ptr, b_ptr, c_ptr = (data_at(context, builder, a, args[i], int64(
            context, builder, args[i + 1], tys[i + 1])) for i in (0, 4, 7))
        if indexed:
            rows_ty = tys[6]
            b_rows = context.make_array(rows_ty)(context, builder, args[6]).data
        else:
            ldb_v = int64(context, builder, args[6], tys[6])
        width, nbits = lanes(a), bits(a)
        vec = ir.VectorType(context.get_data_type(a.dtype), width)
        fma = muladd(builder, vec, nbits)
        c_at = [[builder.gep(c_ptr, [builder.add(builder.mul(const(i), ldc_v),
                                                 const(j * width))])
                 for j in range(_VECTORS)] for i in range(MR)]

        # the sums start from C's block or from zeros
        with builder.if_else(builder.icmp_signed("!=", accumulate_v, const(0))) as (
                then, otherwise):
            with then:
                loaded = [[load(builder, vec, c_at[i][j], nbits) for j in range(_VECTORS)]
                          for i in range(MR)]
                from_c = builder.basic_block
            with otherwise:
                from_zero = builder.basic_block
        init = []
        for i in range(MR):
            row = []
            for j in range(_VECTORS):
                value = builder.phi(vec)
                value.add_incoming(loaded[i][j], from_c)
                value.add_incoming(ir.Constant(vec, None), from_zero)
                row.append(value)
            init.append(row)

        before = builder.basic_block
        loop = builder.append_basic_block("microkernel.loop")
        done = builder.append_basic_block("microkernel.done")
        builder.cbranch(builder.icmp_signed(">", kc_v, const(0)), loop, done)

        builder.position_at_end(loop)  # one step of k: C block += A column x B row
        k = builder.phi(I64)
        acc = [[builder.phi(vec) for _ in range(_VECTORS)] for _ in range(MR)]
        if indexed:
            row_offset = context.cast(builder, builder.load(builder.gep(b_rows, [k])),
                                      rows_ty.dtype, types.int64)
        else:
            row_offset = builder.mul(k, ldb_v)
        b_row = builder.gep(b_ptr, [row_offset])
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
                acc[i][j].add_incoming(init[i][j], before)
                acc[i][j].add_incoming(summed[i][j], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, kc_v), loop, done)

        builder.position_at_end(done)  # phis first, then the stores
        results = []
        for i in range(MR):
            for j in range(_VECTORS):
                result = builder.phi(vec)
                result.add_incoming(init[i][j], before)
                result.add_incoming(summed[i][j], loop)
                results.append((i, j, result))
        for i, j, result in results:
            store(builder, result, c_at[i][j], nbits)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _block(typingctx, a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc, accumulate):
    """C block (+)= A panel @ B panel, B's rows ``ldb`` apart (see the module docstring)."""
    if not (is_float_array(a) and b == a and c == a):
        return None
    return (types.void(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc, accumulate),
            _codegen(a, indexed=False))


@intrinsic
def block_indexed(typingctx, a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc,
                  accumulate):
    """C block (+)= A panel @ B panel, B's row k at b_off + b_rows[k]: the rows an implicit
    GEMM reads straight from the (staged) input through its offset table."""
    if not (is_float_array(a) and b == a and c == a and isinstance(b_rows, types.Array)
            and isinstance(b_rows.dtype, types.Integer)):
        return None
    return (types.void(a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc,
                       accumulate), _codegen(a, indexed=True))


@njit(inline="always")
def gemm(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, rows, cols, kc, n_r):
    """C[rows x cols] = A[rows x kc] @ B[kc x cols] over flat arrays, block by block (rows a
    multiple of MR, cols of ``n_r`` = nr(dtype)); each B panel (kc x n_r) stays in L1 while
    every row block of A passes over it."""
    for j0 in range(0, cols, n_r):
        for i0 in range(0, rows, MR):
            _block(a, a_off + i0 * a_row, a_row, a_col, b, b_off + j0, ldb,
                   c, c_off + i0 * ldc + j0, ldc, kc, 0)
