"""The spectral multiply-accumulate of the FFT algorithms as register-blocked vector code.

For one vector of frequencies f and a block of ``nk`` output channels,

    Y[k, f] = sum_c X[c, f] * conj(W[k, c, f])        (k < nk, c < c_in)

with the 2 * nk sums (real and imaginary parts) held in vector registers for the whole sum
over input channels: per channel one load of X's real and imaginary vectors, 2 * nk loads of
W and 4 * nk fused multiply-adds, no load or store of Y. Spectra are stored "row-planar": each
row of a spectrum holds its real parts, then its imaginary parts ``im`` elements later, so
real and imaginary vectors load without shuffles. Written as a Numba intrinsic for the reason
``microkernel`` gives: a Numba loop over an accumulator array loads and stores it at every
step, and the same multiply-accumulate over interleaved complex arrays ran at a sixth of this.

``block(nk)`` returns the intrinsic

    f(x, x_off, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off, y_out, c_in, im)

which reads X[c] at x[x_off + c*x_chan], W[k, c] at w[w_off + k*w_out + c*w_chan] and writes
Y[k] to y[y_off + k*y_out] (each a vector of ``lanes`` values, imaginary parts ``im`` later,
``w_im`` later in W).
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit
from numba.core import types

from .ir import TARGET, I64, bits, const, is_float_array, load, muladd, store, \
    vector_intrinsic

# output channels per block: nk blocks hold 2 * nk sums in registers beside X's two vectors
# and W's two, so 8 only where the target has 32 registers (16 would spill with it)
NK_CHOICES = (8, 4, 2, 1) if TARGET.registers >= 32 else (4, 2, 1)
NK_MAX = NK_CHOICES[0]


def _emitter(a, nk: int):
    def emit(v):
        builder = v.builder
        x_chan, w_chan, w_out, w_im, y_out, c_in, im = v.ints(
            "x_chan", "w_chan", "w_out", "w_im", "y_out", "c_in", "im")
        x_ptr, w_ptr, y_ptr = v.at("x", "x_off"), v.at("w", "w_off"), v.at("y", "y_off")
        nbits = bits(a)
        vec = v.vector("x")
        fma = muladd(builder, vec, nbits)
        zero = ir.Constant(vec, None)

        before = builder.basic_block
        loop = builder.append_basic_block("spectral.loop")
        done = builder.append_basic_block("spectral.done")
        builder.cbranch(builder.icmp_signed(">", c_in, const(0)), loop, done)

        builder.position_at_end(loop)  # one input channel: 2*nk sums += X[c] * conj(W[k, c])
        c = builder.phi(I64)
        sums = [(builder.phi(vec), builder.phi(vec)) for _ in range(nk)]
        x_at = builder.gep(x_ptr, [builder.mul(c, x_chan)])
        xr = load(builder, vec, x_at, nbits)
        xi = load(builder, vec, builder.gep(x_at, [im]), nbits)
        minus_xr = builder.fneg(xr)
        w_c = builder.gep(w_ptr, [builder.mul(c, w_chan)])
        summed = []
        for k, (sr, si) in enumerate(sums):
            w_at = builder.gep(w_c, [builder.mul(const(k), w_out)])
            wr = load(builder, vec, w_at, nbits)
            wi = load(builder, vec, builder.gep(w_at, [w_im]), nbits)
            # (xr + i xi)(wr - i wi) = xr wr + xi wi + i (xi wr - xr wi)
            re = builder.call(fma, [xi, wi, builder.call(fma, [xr, wr, sr])])
            imag = builder.call(fma, [minus_xr, wi, builder.call(fma, [xi, wr, si])])
            summed.append((re, imag))
        c_next = builder.add(c, const(1))
        c.add_incoming(const(0), before)
        c.add_incoming(c_next, loop)
        for (sr, si), (re, imag) in zip(sums, summed):
            sr.add_incoming(zero, before)
            sr.add_incoming(re, loop)
            si.add_incoming(zero, before)
            si.add_incoming(imag, loop)
        builder.cbranch(builder.icmp_signed("<", c_next, c_in), loop, done)

        builder.position_at_end(done)  # phis first, then the stores
        results = []
        for re, imag in summed:
            result_re, result_im = builder.phi(vec), builder.phi(vec)
            for phi, value in ((result_re, re), (result_im, imag)):
                phi.add_incoming(zero, before)
                phi.add_incoming(value, loop)
            results.append((result_re, result_im))
        for k, (re, imag) in enumerate(results):
            y_at = builder.gep(y_ptr, [builder.mul(const(k), y_out)])
            store(builder, re, y_at, nbits)
            store(builder, imag, builder.gep(y_at, [im]), nbits)

    return emit


def block(nk: int):
    """The intrinsic for blocks of ``nk`` output channels (see the module docstring)."""
    @vector_intrinsic
    def spectral_mac(typingctx, x, x_off, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off,
                       y_out, c_in, im):
        if not (is_float_array(x) and w == x and y == x):
            return None
        return (types.void(x, x_off, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off, y_out, c_in,
                           im), _emitter(x, nk))

    return spectral_mac


_block8, _block4, _block2, _block1 = (block(nk) for nk in (8, 4, 2, 1))  # compiled if used


@njit(inline="always")
def mac_channels(x, x_off, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off, y_out, c_in, im,
                 k_out):
    """Y[k] = sum_c X[c] conj(W[k, c]) for every k < k_out, in blocks of NK_CHOICES."""
    k = 0
    while k < k_out:
        left = k_out - k
        wk, yk = w_off + k * w_out, y_off + k * y_out
        if NK_MAX >= 8 and left >= 8:
            _block8(x, x_off, x_chan, w, wk, w_chan, w_out, w_im, y, yk, y_out, c_in, im)
            k += 8
        elif left >= 4:
            _block4(x, x_off, x_chan, w, wk, w_chan, w_out, w_im, y, yk, y_out, c_in, im)
            k += 4
        elif left >= 2:
            _block2(x, x_off, x_chan, w, wk, w_chan, w_out, w_im, y, yk, y_out, c_in, im)
            k += 2
        else:
            _block1(x, x_off, x_chan, w, wk, w_chan, w_out, w_im, y, yk, y_out, c_in, im)
            k += 1
