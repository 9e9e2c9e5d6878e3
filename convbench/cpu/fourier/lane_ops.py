"""The vector pieces of convbench's own FFT (``real_fft2``), as Numba intrinsics.

A complex vector is two host vectors, its real parts then its imaginary parts (``lanes`` values
each, contiguous). Three operations:

* ``butterfly_dif(x, a, b, wr, wi)`` / ``butterfly_dit``: the radix-2 butterflies of the
  complex vectors at x[a] and x[b], lane by lane, with the twiddle w = wr + i wi: decimation
  in frequency (X[a] + X[b], (X[a] - X[b]) w) and in time (X[a] + X[b] w, X[a] - X[b] w).
  Written as intrinsics so that each is always four vector loads, a few vector operations and
  four vector stores (a Numba loop over the lanes of one array at two offsets is left scalar
  or guarded by alias checks).
* ``lane_dft(x, x_off, tw, tw_off, y, y_off)``: the DFT *across the lanes* of one complex
  vector, after multiplying it lane by lane by the complex vector tw[tw_off]: log2(lanes)
  decimation-in-frequency stages, each one shuffle of the real and one of the imaginary parts
  and a multiply by constant twiddles. The result is in bit-reversed lane order.
* ``lane_idft(x, x_off, tw, tw_off, y, y_off)``: its inverse (unnormalised): decimation in
  time from bit-reversed lanes to natural ones, then the product with conj(tw[tw_off]).
* ``real_split`` / ``real_merge``: a real line of 2n samples is transformed as n complex
  samples (even + i odd); ``real_split`` makes the real line's spectrum X[v] from that
  transform's values at v and n - v, ``real_merge`` the reverse.
"""
from __future__ import annotations

import cmath

from llvmlite import ir
from numba.core import types
from ..vector.ir import (bits, const, is_float_array, lanes, load, muladd, splat, store,
                         vector_intrinsic)


def _vector(builder, elem, values):
    return ir.Constant(ir.VectorType(elem, len(values)), [float(v) for v in values])


def _complex_mul(builder, fma, ar, ai, br, bi):
    """(ar + i ai) (br + i bi), lane by lane."""
    real = builder.call(fma, [ar, br, builder.fneg(builder.fmul(ai, bi))])
    imag = builder.call(fma, [ar, bi, builder.fmul(ai, br)])
    return real, imag


def _load_pair(builder, vec, ptr, nbits):
    """The complex vector at ``ptr``: its real parts, then its imaginary parts."""
    return (load(builder, vec, ptr, nbits),
            load(builder, vec, builder.gep(ptr, [const(vec.count)]), nbits))


def _store_pair(builder, re, im, ptr, nbits):
    store(builder, re, ptr, nbits)
    store(builder, im, builder.gep(ptr, [const(re.type.count)]), nbits)


def _partner(builder, value, half):
    """Each lane swapped with the lane ``half`` away in its pair (lane i <-> i ^ half)."""
    count = value.type.count
    mask = ir.Constant(ir.VectorType(ir.IntType(32), count), [i ^ half for i in range(count)])
    return builder.shuffle_vector(value, ir.Constant(value.type, ir.Undefined), mask)


def _stage_constants(count: int, half: int, inverse: bool):
    """Per lane: the sign (+1 in a pair's low half, -1 in its high half) and the twiddle
    (1 in the low half, W_{2 half}^(i mod half) in the high half, conjugated for the inverse)."""
    sign, wr, wi = [], [], []
    for i in range(count):
        high = bool(i & half)
        w = cmath.exp((2j if inverse else -2j) * cmath.pi * (i % half) / (2 * half)) \
            if high else 1.0
        sign.append(-1.0 if high else 1.0)
        wr.append(w.real)
        wi.append(w.imag)
    return sign, wr, wi


def _lane_transform(inverse: bool):
    @vector_intrinsic
    def transform(typingctx, x, x_off, tw, tw_off, y, y_off):
        if not (is_float_array(x) and is_float_array(tw) and tw.dtype == x.dtype and y == x):
            return None
        sig = types.void(x, x_off, tw, tw_off, y, y_off)

        def emit(v):
            builder = v.builder
            x_ptr, tw_ptr, y_ptr = v.at("x", "x_off"), v.at("tw", "tw_off"), v.at("y", "y_off")
            nbits, count = bits(x), lanes(x)
            elem = v.element("x")
            vec = v.vector("x")
            fma = muladd(builder, vec, nbits)
            re, im = _load_pair(builder, vec, x_ptr, nbits)
            w_re, w_im = _load_pair(builder, vec, tw_ptr, nbits)
            if inverse:
                w_im = builder.fneg(w_im)
            else:
                re, im = _complex_mul(builder, fma, re, im, w_re, w_im)
            halves = []
            half = count // 2
            while half:
                halves.append(half)
                half //= 2
            for half in (reversed(halves) if inverse else halves):
                sign, wr, wi = (_vector(builder, elem, v)
                                for v in _stage_constants(count, half, inverse))
                if inverse:  # DIT: twiddle the high lanes, then sum and difference
                    re, im = _complex_mul(builder, fma, re, im, wr, wi)
                    re = builder.call(fma, [sign, re, _partner(builder, re, half)])
                    im = builder.call(fma, [sign, im, _partner(builder, im, half)])
                else:  # DIF: sum and difference, then twiddle the high lanes
                    re = builder.call(fma, [sign, re, _partner(builder, re, half)])
                    im = builder.call(fma, [sign, im, _partner(builder, im, half)])
                    re, im = _complex_mul(builder, fma, re, im, wr, wi)
            if inverse:
                re, im = _complex_mul(builder, fma, re, im, w_re, w_im)
            _store_pair(builder, re, im, y_ptr, nbits)

        return sig, emit

    return transform


lane_dft = _lane_transform(inverse=False)
lane_idft = _lane_transform(inverse=True)


def _butterfly(frequency: bool):
    @vector_intrinsic
    def butterfly(typingctx, x, a, b, wr, wi):
        if not (is_float_array(x) and isinstance(wr, types.Float)
                and isinstance(wi, types.Float)):
            return None
        sig = types.void(x, a, b, wr, wi)

        def emit(v):
            builder = v.builder
            nbits = bits(x)
            vec = v.vector("x")
            fma = muladd(builder, vec, nbits)
            a_ptr, b_ptr = v.at("x", "a"), v.at("x", "b")
            w_re, w_im = (splat(builder, v.scalar(name, "x"), vec) for name in ("wr", "wi"))
            (ar, ai), (br, bi) = (_load_pair(builder, vec, ptr, nbits) for ptr in (a_ptr, b_ptr))
            if frequency:  # X[a] + X[b], (X[a] - X[b]) w
                sum_r, sum_i = builder.fadd(ar, br), builder.fadd(ai, bi)
                low_r, low_i = _complex_mul(builder, fma, builder.fsub(ar, br),
                                            builder.fsub(ai, bi), w_re, w_im)
            else:  # X[a] + X[b] w, X[a] - X[b] w
                tr, ti = _complex_mul(builder, fma, br, bi, w_re, w_im)
                sum_r, sum_i = builder.fadd(ar, tr), builder.fadd(ai, ti)
                low_r, low_i = builder.fsub(ar, tr), builder.fsub(ai, ti)
            _store_pair(builder, sum_r, sum_i, a_ptr, nbits)
            _store_pair(builder, low_r, low_i, b_ptr, nbits)

        return sig, emit

    return butterfly


butterfly_dit = _butterfly(frequency=False)  # X[a] += X[b] w; X[b] = X[a] - X[b] w
butterfly_dif = _butterfly(frequency=True)  # X[a] += X[b]; X[b] = (X[a] - X[b]) w


def _real_step(inverse: bool):
    @vector_intrinsic
    def step(typingctx, x, a_off, c_off, wr, wi, scale, y, y_off):
        if not (is_float_array(x) and y == x and all(
                isinstance(t, types.Float) for t in (wr, wi, scale))):
            return None
        sig = types.void(x, a_off, c_off, wr, wi, scale, y, y_off)

        def emit(v):
            builder = v.builder
            nbits = bits(x)
            vec = v.vector("x")
            fma = muladd(builder, vec, nbits)
            a_ptr, c_ptr, y_ptr = v.at("x", "a_off"), v.at("x", "c_off"), v.at("y", "y_off")
            w_re, w_im, f = (splat(builder, v.scalar(name, "x"), vec)
                             for name in ("wr", "wi", "scale"))
            (ar, ai), (cr, ci) = (_load_pair(builder, vec, ptr, nbits) for ptr in (a_ptr, c_ptr))
            er = builder.fmul(f, builder.fadd(ar, cr))  # E = f (a + conj c)
            ei = builder.fmul(f, builder.fsub(ai, ci))
            if inverse:  # O = f (a - conj c) conj(w); Z = E + i O
                dr = builder.fmul(f, builder.fsub(ar, cr))
                di = builder.fmul(f, builder.fadd(ai, ci))
                o_r = builder.call(fma, [dr, w_re, builder.fmul(di, w_im)])
                o_i = builder.call(fma, [di, w_re, builder.fneg(builder.fmul(dr, w_im))])
                yr, yi = builder.fsub(er, o_i), builder.fadd(ei, o_r)
            else:  # O = -i f (a - conj c); X = E + w O
                o_r = builder.fmul(f, builder.fadd(ai, ci))
                o_i = builder.fmul(f, builder.fsub(cr, ar))
                tr, ti = _complex_mul(builder, fma, o_r, o_i, w_re, w_im)
                yr, yi = builder.fadd(er, tr), builder.fadd(ei, ti)
            _store_pair(builder, yr, yi, y_ptr, nbits)

        return sig, emit

    return step


# X[v] of a real line from the half-length complex transform Z of (even + i odd) samples:
# real_split(z, a_off = Z[v mod n], c_off = Z[(n - v) mod n], Re W_2n^v, Im W_2n^v, 0.5, y, ...)
real_split = _real_step(inverse=False)
# and back: Z[v] from X[v] (a_off) and X[n - v] (c_off), scaled by ``scale`` (2 x 0.5 undoes
# the split; a smaller scale folds the inverse transforms' normalisation in)
real_merge = _real_step(inverse=True)
