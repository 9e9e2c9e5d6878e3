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
operands to whole MR x NR blocks. The vector width and register count are the target's
(``convbench.target``: 16 float32 lanes and 32 registers on AVX-512, 8 and 16 on AVX2); a block
keeps three quarters of the registers for accumulators: on AVX-512 6 x 4 vectors by default,
and for the implicit GEMM also 4 x 6 and 8 x 3, so that 16 or 32 output channels need no
padding; on AVX2 6 x 2 and 4 x 3. A band's last few positions take one-vector columns
(``column_indexed``) as tall as the accumulators allow, reading A across its packed panels.
"""
from __future__ import annotations

from functools import lru_cache

from llvmlite import ir
from numba import njit
from numba.core import types
from .ir import (TARGET, I64, bits, const, is_float_array, lanes, load, muladd, splat, store,
                 vector_intrinsic)

MR = 6  # rows of C per block (the default shape)
# vector registers that hold C's block: three quarters of the target's (24 of AVX-512's 32,
# 12 of AVX2's 16), the rest for B's row and A's broadcasts
_ACCUMULATORS = TARGET.registers * 3 // 4
# the shapes of block_indexed, rows x (accumulators / rows) vectors: those of at least two
# vectors per row (8 x 1 on 16 registers would load B once per multiply-add)
ROW_CHOICES = tuple(rows for rows in (4, 6, 8) if _ACCUMULATORS // rows >= 2)


def vectors(rows: int = MR) -> int:
    """Vectors per row of C's block of ``rows`` rows."""
    return max(1, _ACCUMULATORS // rows)


def nr(dtype, rows: int = MR) -> int:
    """Columns of C per block of ``rows`` rows, for this element type."""
    return vectors(rows) * TARGET.lanes(dtype)


def _emitter(a, indexed: bool, rows: int = MR, nvec: int | None = None,
             panel_rows: int | None = None):
    """Emit the block for arrays of type ``a``, ``rows`` x ``nvec`` (default vectors(rows))
    vectors; ``indexed``: B's row k starts at b_off + b_rows[k] (an offset table), else at
    b_off + k*ldb. ``panel_rows``: A's rows come in panels of that many, ``a_panel`` apart
    (row i at (i // panel_rows)*a_panel + (i % panel_rows)*a_row), so that a tall block can
    span several of the packed panels."""
    nvec = vectors(rows) if nvec is None else nvec

    def emit(v):
        context, builder = v.context, v.builder
        a_row_v, a_col_v, ldc_v, kc_v, accumulate_v = v.ints("a_row", "a_col", "ldc", "kc",
                                                              "accumulate")
        a_panel_v = v.int("a_panel") if panel_rows else None
        a_ptr, b_ptr, c_ptr = v.at("a", "a_off"), v.at("b", "b_off"), v.at("c", "c_off")
        if indexed:
            rows_ty = v.type("b_rows")
            b_rows = v.data("b_rows")
        else:
            ldb_v = v.int("ldb")
        width, nbits = lanes(a), bits(a)
        vec = ir.VectorType(context.get_data_type(a.dtype), width)
        fma = muladd(builder, vec, nbits)
        c_at = [[builder.gep(c_ptr, [builder.add(builder.mul(const(i), ldc_v),
                                                 const(j * width))])
                 for j in range(nvec)] for i in range(rows)]

        # the sums start from C's block or from zeros
        with builder.if_else(builder.icmp_signed("!=", accumulate_v, const(0))) as (
                then, otherwise):
            with then:
                loaded = [[load(builder, vec, c_at[i][j], nbits) for j in range(nvec)]
                          for i in range(rows)]
                from_c = builder.basic_block
            with otherwise:
                from_zero = builder.basic_block
        init = []
        for i in range(rows):
            row = []
            for j in range(nvec):
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
        acc = [[builder.phi(vec) for _ in range(nvec)] for _ in range(rows)]
        if indexed:
            row_offset = context.cast(builder, builder.load(builder.gep(b_rows, [k])),
                                      rows_ty.dtype, types.int64)
        else:
            row_offset = builder.mul(k, ldb_v)
        b_row = builder.gep(b_ptr, [row_offset])
        b_vecs = [load(builder, vec, builder.gep(b_row, [const(j * width)]), nbits)
                  for j in range(nvec)]
        a_column = builder.gep(a_ptr, [builder.mul(k, a_col_v)])
        summed = []
        for i in range(rows):
            a_at = builder.mul(const(i if not panel_rows else i % panel_rows), a_row_v)
            if panel_rows and i >= panel_rows:
                a_at = builder.add(a_at, builder.mul(const(i // panel_rows), a_panel_v))
            scalar = builder.load(builder.gep(a_column, [a_at]))
            broadcast = splat(builder, scalar, vec)
            summed.append([builder.call(fma, [broadcast, b_vecs[j], acc[i][j]])
                           for j in range(nvec)])
        k_next = builder.add(k, const(1))
        k.add_incoming(const(0), before)
        k.add_incoming(k_next, loop)
        for i in range(rows):
            for j in range(nvec):
                acc[i][j].add_incoming(init[i][j], before)
                acc[i][j].add_incoming(summed[i][j], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, kc_v), loop, done)

        builder.position_at_end(done)  # phis first, then the stores
        results = []
        for i in range(rows):
            for j in range(nvec):
                result = builder.phi(vec)
                result.add_incoming(init[i][j], before)
                result.add_incoming(summed[i][j], loop)
                results.append((i, j, result))
        for i, j, result in results:
            store(builder, result, c_at[i][j], nbits)

    return emit


@vector_intrinsic
def _block(typingctx, a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc, accumulate):
    """C block (+)= A panel @ B panel, B's rows ``ldb`` apart (see the module docstring)."""
    if not (is_float_array(a) and b == a and c == a):
        return None
    return (types.void(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, kc, accumulate),
            _emitter(a, indexed=False))


def _indexed(rows: int):
    @vector_intrinsic
    def block(typingctx, a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc,
              accumulate):
        if not (is_float_array(a) and b == a and c == a and isinstance(b_rows, types.Array)
                and isinstance(b_rows.dtype, types.Integer)):
            return None
        return (types.void(a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc,
                           accumulate), _emitter(a, indexed=True, rows=rows))

    return block


_indexed4, _indexed6, _indexed8 = (_indexed(rows) for rows in (4, 6, 8))  # compiled if used


@njit(inline="always")
def block_indexed(rows, a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc,
                  accumulate):
    """C block (+)= A panel @ B panel for a block of ``rows`` (one of ROW_CHOICES) x
    nr(dtype, rows), B's row k at b_off + b_rows[k]: the rows an implicit GEMM reads straight
    from the (staged) input through its offset table."""
    if rows == 4:
        _indexed4(a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc, accumulate)
    elif rows == 8:
        _indexed8(a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc, accumulate)
    else:
        _indexed6(a, a_off, a_row, a_col, b, b_off, b_rows, c, c_off, ldc, kc, accumulate)


# time per multiply-add of a one-vector column block against a whole block's (12 x 1 at 75
# GFLOP/s, 4 x 3 at 92, on one core of the 2-core AVX2 EPYC)
COLUMN_COST = 1.25


def tall_rows(panel_rows: int) -> int:
    """Rows of a one-vector column block over panels of ``panel_rows``: as many whole panels
    as the accumulators hold (12 rows on AVX2, 24 on AVX-512), so that its multiply-adds are
    independent enough to keep both FMA units busy (a 4 x 1 block waits on each sum)."""
    return max(panel_rows, _ACCUMULATORS // panel_rows * panel_rows)


def _column(panel_rows: int, tall: bool):
    """One-vector column blocks over A's panels of ``panel_rows`` rows: ``tall`` ones of
    tall_rows(panel_rows) rows, else one panel's."""
    rows = tall_rows(panel_rows) if tall else panel_rows

    @vector_intrinsic
    def block(typingctx, a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
              accumulate):
        if not (is_float_array(a) and b == a and c == a and isinstance(b_rows, types.Array)
                and isinstance(b_rows.dtype, types.Integer)):
            return None
        return (types.void(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                           accumulate), _emitter(a, indexed=True, rows=rows, nvec=1,
                                                 panel_rows=panel_rows))

    return block


(_column4, _column6, _column8), (_tall4, _tall6, _tall8) = (
    tuple(_column(rows, tall) for rows in (4, 6, 8)) for tall in (False, True))


@njit(inline="always")
def column_indexed(panel_rows, tall, a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c,
                   c_off, ldc, kc, accumulate):
    """C block (+)= A panels @ B column for a block of one vector's columns and, ``tall``,
    tall_rows(panel_rows) rows of A (panels ``a_panel`` apart), else one panel's
    ``panel_rows``: the last few positions of a band, which a whole block of nr(dtype,
    panel_rows) columns would mostly compute for nothing (a 7x7 image's 49 positions as 72)."""
    if tall:
        if panel_rows == 4:
            _tall4(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                   accumulate)
        elif panel_rows == 8:
            _tall8(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                   accumulate)
        else:
            _tall6(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                   accumulate)
    elif panel_rows == 4:
        _column4(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                 accumulate)
    elif panel_rows == 8:
        _column8(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                 accumulate)
    else:
        _column6(a, a_off, a_row, a_col, a_panel, b, b_off, b_rows, c, c_off, ldc, kc,
                 accumulate)


def tail_start(length: int, n_r: int, lanes: int) -> int:
    """Where a band of ``length`` positions stops running whole blocks of ``n_r`` and runs
    one-vector columns of ``lanes`` to its end: at its last whole block where the block after
    it would compute at least one vector for nothing (a 7x7 image's 49 positions on AVX2: 48
    in whole blocks and one column of 8, not 64 or 72), else at the end."""
    positions = (length + n_r - 1) // n_r * n_r
    return length // n_r * n_r if positions - length >= lanes else positions


tail_start_jit = njit(inline="always")(tail_start)  # the same, inside the kernels


def computed_positions(length: int, n_r: int, lanes: int) -> int:
    """Positions the micro-kernel computes for a band of ``length``: whole blocks, then
    one-vector columns (:func:`tail_start`)."""
    start = tail_start(length, n_r, lanes)
    return start + -(-max(0, length - start) // lanes) * lanes


@lru_cache(maxsize=None)
def best_rows(count: int) -> int:
    """The block height of ROW_CHOICES that pads ``count`` rows least; on a tie the one with
    fewer loads per multiply-add: the taller on 32 registers (8 x 3: 3 B loads and 8
    broadcasts per 24 FMAs), the shorter on 16 (4 x 3: 7 loads per 12 FMAs against 6 x 2's 8).
    Measured on the project's AVX-512 machine: 8 x 3 2-10% faster than 4 x 6; compiled for
    AVX2 there, 4 x 3 0-10% faster than 6 x 2."""
    taller = 1 if TARGET.registers >= 32 else -1
    return min(ROW_CHOICES, key=lambda rows: (-(-count // rows) * rows, -taller * rows))


def best_block(count: int, positions: int, dtype) -> int:
    """The block height of ROW_CHOICES that computes least for ``count`` rows of C by
    ``positions`` columns, the rows padded to whole blocks, the columns to whole blocks and
    one-vector columns (:func:`computed_positions`; a 14x14 image's 196 on AVX2: 200 with
    both shapes). :func:`best_rows`'s choice, the faster shape per multiply-add, unless
    another computes over a tenth less."""
    preferred = best_rows(count)
    lanes = TARGET.lanes(dtype)

    def computed(rows: int) -> float:
        width = nr(dtype, rows)
        whole = tail_start(positions, width, lanes)
        # a one-vector column runs at about four fifths of a whole block's rate
        columns = (computed_positions(positions, width, lanes) - whole) * COLUMN_COST
        work = -(-count // rows) * rows * (whole + columns)
        return work * (1.0 if rows == preferred else 1.1)

    return min(ROW_CHOICES, key=computed)


@njit(inline="always")
def gemm(a, a_off, a_row, a_col, b, b_off, ldb, c, c_off, ldc, rows, cols, kc, n_r):
    """C[rows x cols] = A[rows x kc] @ B[kc x cols] over flat arrays, block by block (rows a
    multiple of MR, cols of ``n_r`` = nr(dtype)); each B panel (kc x n_r) stays in L1 while
    every row block of A passes over it."""
    for j0 in range(0, cols, n_r):
        for i0 in range(0, rows, MR):
            _block(a, a_off + i0 * a_row, a_row, a_col, b, b_off + j0, ldb,
                   c, c_off + i0 * ldc + j0, ldc, kc, 0)
