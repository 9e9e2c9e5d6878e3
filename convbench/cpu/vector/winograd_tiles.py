"""Winograd's tile transforms, Y = L X L^T for every channel of a tile, as vector code.

X is an a x a tile of one channel, L a constant matrix (B^T for the input, A^T for the
output); the transform is emitted with L's coefficients folded in (its zeros skipped, its +-1s
as additions), vectorised across channels: the a*a values of 16 (AVX-512, float32) channels
sit in registers at once. Written as Numba intrinsics because the same loop in Numba, 36 loads
and 36 stores per channel through computed offsets, was left scalar by LLVM (it could not prove
the stores independent of the loads) and took ~2.5 us per 64-channel tile on VGG, longer than
the tile's products.

``transform(L, scatter, biased)`` returns the intrinsic

    f(src, s_off, s_row, s_col, dst, d_off, d_row, d_col, d_chan, bias, rows, cols, length)

which for c < length reads X[i, j] = src[s_off + i*s_row + j*s_col + c] and writes
Y[r, s] (+ bias[c] when made ``biased``) to dst[d_off + r*d_row + s*d_col + c*d_chan]
for r < rows, s < cols (the output's last tiles overhang it). With ``scatter`` False the
destination is contiguous across channels (``d_chan`` is taken as 1); with it True (the
output transform writing planes of (N, K, Ho, Wo)) each lane is stored on its own.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from .ir import I64, bits, const, is_float_array, lanes, load, muladd, store, transpose, \
    vector_intrinsic


def _combine(builder, coefs, values, fma):
    """sum_j coefs[j] * values[j], zeros skipped, +-1 as additions and subtractions."""
    total = None
    for coef, value in zip(coefs, values):
        if coef == 0.0:
            continue
        if total is None:
            if coef == 1.0:
                total = value
            elif coef == -1.0:
                total = builder.fneg(value)
            else:
                total = builder.fmul(ir.Constant(value.type, _lanes_of(value.type, coef)), value)
        elif coef == 1.0:
            total = builder.fadd(total, value)
        elif coef == -1.0:
            total = builder.fsub(total, value)
        else:
            total = builder.call(fma, [ir.Constant(value.type, _lanes_of(value.type, coef)),
                                       value, total])
    return total if total is not None else ir.Constant(values[0].type, None)


def _scatter(builder, values, dst, targets, chan, d_chan, rows, cols, nbits):
    """Each lane (channel) of Y[r, s] stored on its own at dst + targets[r][s] + chan + lane *
    d_chan, where r < rows and s < cols (Y a vector, or a scalar in the channel tail)."""
    out_rows = len(values)
    for r in range(out_rows):
        for s in range(out_rows):
            inside = builder.and_(builder.icmp_signed("<", const(r), rows),
                                  builder.icmp_signed("<", const(s), cols))
            with builder.if_then(inside, likely=True):
                at = builder.gep(dst, [builder.add(targets[r][s], chan)])
                value = values[r][s]
                if not isinstance(value.type, ir.VectorType):
                    store(builder, value, at, nbits)
                    continue
                for lane in range(value.type.count):
                    store(builder, builder.extract_element(value, ir.Constant(ir.IntType(32),
                                                                              lane)),
                          builder.gep(at, [builder.mul(const(lane), d_chan)]), nbits)


def _store_transposed(builder, values, dst, targets, chan, d_chan, nbits):
    """A whole m x m tile whose m*m outputs fill a vector's lanes (F(4x4) in float32 on
    AVX-512), its rows contiguous: the m*m vectors (one per output, lanes = channels) are
    transposed in registers into one vector per channel (lanes = outputs, row-major), and each
    tile row is stored as one m-wide store: a quarter of the stores of lane-by-lane scattering,
    and no lane extracts."""
    out_rows = len(values)
    vectors = transpose(builder, [values[r][s] for r in range(out_rows) for s in range(out_rows)])
    row_mask = ir.VectorType(ir.IntType(32), out_rows)
    for lane, tile in enumerate(vectors):  # vectors[lane]: the tile of channel c + lane
        undef = ir.Constant(tile.type, ir.Undefined)
        plane = builder.add(chan, builder.mul(const(lane), d_chan))
        for r in range(out_rows):
            row = builder.shuffle_vector(tile, undef, ir.Constant(
                row_mask, [r * out_rows + s for s in range(out_rows)]))
            store(builder, row, builder.gep(dst, [builder.add(targets[r][0], plane)]), nbits)


def _lanes_of(vtype, value: float):
    return [value] * vtype.count if isinstance(vtype, ir.VectorType) else value


def transform(left: np.ndarray, scatter: bool, biased: bool):
    """The intrinsic for Y = L X L^T with this constant L (rows x a); see the module docstring.
    ``biased``: bias[c] is added (it must then hold ``length`` values; else it is not read)."""
    out_rows, a = left.shape
    coefs = [[float(v) for v in row] for row in left]

    @vector_intrinsic
    def tile_transform(typingctx, src, s_off, s_row, s_col, dst, d_off, d_row, d_col, d_chan,
                       bias, rows, cols, length):
        if not (is_float_array(src) and dst == src and bias == src):
            return None
        sig = types.void(src, s_off, s_row, s_col, dst, d_off, d_row, d_col, d_chan, bias,
                         rows, cols, length)

        def emit(v):
            builder = v.builder
            s_row_v, s_col_v, d_row_v, d_col_v, d_chan_v, rows_v, cols_v, length_v = v.ints(
                "s_row", "s_col", "d_row", "d_col", "d_chan", "rows", "cols", "length")
            src_ptr, dst_ptr, bias_ptr = v.at("src", "s_off"), v.at("dst", "d_off"), v.at("bias")
            nbits, width = bits(src), lanes(src)
            elem = v.element("src")
            vec = v.vector("src")
            offsets = [[builder.add(builder.mul(const(i), s_row_v), builder.mul(const(j), s_col_v))
                        for j in range(a)] for i in range(a)]
            targets = [[builder.add(builder.mul(const(r), d_row_v), builder.mul(const(s), d_col_v))
                        for s in range(out_rows)] for r in range(out_rows)]

            def body(c, vtype):
                fma = muladd(builder, vtype, nbits)
                x = [[load(builder, vtype, builder.gep(src_ptr, [builder.add(offsets[i][j], c)]),
                           nbits) for j in range(a)] for i in range(a)]
                t = [[_combine(builder, coefs[s], x[i], fma) for s in range(out_rows)]
                     for i in range(a)]  # along each tile row
                y = [[_combine(builder, coefs[r], [t[i][s] for i in range(a)], fma)
                      for s in range(out_rows)] for r in range(out_rows)]  # down each column
                add = (load(builder, vtype, builder.gep(bias_ptr, [c]), nbits) if biased
                       else ir.Constant(vtype, None))
                values = [[builder.fadd(y[r][s], add) if biased else y[r][s]
                           for s in range(out_rows)] for r in range(out_rows)]
                if not scatter:
                    for r in range(out_rows):
                        for s in range(out_rows):
                            store(builder, values[r][s],
                                  builder.gep(dst_ptr, [builder.add(targets[r][s], c)]), nbits)
                    return
                chan = builder.mul(c, d_chan_v)
                if not (isinstance(vtype, ir.VectorType) and vtype.count == out_rows ** 2):
                    _scatter(builder, values, dst_ptr, targets, chan, d_chan_v, rows_v, cols_v,
                             nbits)
                    return
                whole_tile = builder.and_(
                    builder.and_(builder.icmp_signed("==", rows_v, const(out_rows)),
                                 builder.icmp_signed("==", cols_v, const(out_rows))),
                    builder.icmp_signed("==", d_col_v, const(1)))
                with builder.if_else(whole_tile, likely=True) as (then, otherwise):
                    with then:
                        _store_transposed(builder, values, dst_ptr, targets, chan, d_chan_v,
                                          nbits)
                    with otherwise:
                        _scatter(builder, values, dst_ptr, targets, chan, d_chan_v, rows_v,
                                 cols_v, nbits)

            whole = builder.sub(length_v, builder.srem(length_v, const(width)))
            with cgutils.for_range_slice(builder, const(0), whole, const(width), intp=I64) as (
                    c, _):
                body(c, vec)
            with cgutils.for_range_slice(builder, whole, length_v, const(1), intp=I64) as (
                    c, _):
                body(c, elem)

        return sig, emit

    return tile_transform
