"""A depthwise convolution's taps across a vector of channels, several output pixels held in
registers: the inner block of ``depthwise_cl``.

With the input staged channel-last (a pixel's channels contiguous), one vector holds one pixel
of ``lanes`` channels, and every tap of a depthwise kernel is a lane-by-lane multiply-add:

    Y[p] = bias + sum_t W[t] * X[p*pix + offsets[t]]        (p < P, t < taps)

for P output pixels of a row (PIXELS, and one shorter block for a row's rest, so that every
pixel has a multiply-add chain of its own). The P sums stay in registers for the whole kernel:
per tap one load of the tap's weight vector (``W[t]`` at w[w_off + t*lanes]), P loads of input
and P fused multiply-adds, no load or store of Y until the end. A Numba loop over a small
accumulator array would load and store it at every tap (the reason ``microkernel`` gives), and
a loop over one image row's pixels with the channels outermost is what the plane-wise
``depthwise`` does well only on long rows.

``block(P)`` returns the intrinsic

    f(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)

reading X's pixel p, tap t at x[x_off + p*pix + offsets[t]], W[t] at w[w_off + t*lanes], the
starting value at bias[b_off] when ``biased`` is nonzero (else zero), and writing Y[p] to
y[y_off + p*y_pix]; each a vector of ``lanes`` channels.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit
from numba.core import types

from .ir import I64, bits, const, is_float_array, lanes, load, muladd, store, \
    vector_intrinsic

PIXELS = 8  # output pixels per block: 8 sums in registers, so 8 multiply-add chains hide the
# FMA's latency (4 chains ran at half the FMA rate); a row's last pixels form one shorter block


def _emitter(a, pixels: int):
    def emit(v):
        builder = v.builder
        pix, taps, y_pix, biased = v.ints("pix", "taps", "y_pix", "biased")
        x_ptr, w_ptr, y_ptr = v.at("x", "x_off"), v.at("w", "w_off"), v.at("y", "y_off")
        b_ptr = v.at("bias", "b_off")
        offsets_ty, offsets = v.type("offsets"), v.data("offsets")
        nbits, width = bits(a), lanes(a)
        vec = v.vector("x")
        fma = muladd(builder, vec, nbits)

        # the sums start from the bias vector or from zeros
        with builder.if_else(builder.icmp_signed("!=", biased, const(0))) as (then, otherwise):
            with then:
                from_bias = load(builder, vec, b_ptr, nbits)
                bias_block = builder.basic_block
            with otherwise:
                zero_block = builder.basic_block
        start = builder.phi(vec)
        start.add_incoming(from_bias, bias_block)
        start.add_incoming(ir.Constant(vec, None), zero_block)
        pixel_at = [builder.gep(x_ptr, [builder.mul(const(p), pix)]) for p in range(pixels)]

        before = builder.basic_block
        loop = builder.append_basic_block("channel_taps.loop")
        done = builder.append_basic_block("channel_taps.done")
        builder.cbranch(builder.icmp_signed(">", taps, const(0)), loop, done)

        builder.position_at_end(loop)  # one tap: every pixel's sum += W[t] * X[p, t]
        t = builder.phi(I64)
        sums = [builder.phi(vec) for _ in range(pixels)]
        offset = v.context.cast(builder, builder.load(builder.gep(offsets, [t])),
                                offsets_ty.dtype, types.int64)
        weight = load(builder, vec, builder.gep(w_ptr, [builder.mul(t, const(width))]), nbits)
        summed = [builder.call(fma, [weight, load(builder, vec, builder.gep(pixel_at[p],
                                                                            [offset]), nbits),
                                     sums[p]]) for p in range(pixels)]
        t_next = builder.add(t, const(1))
        t.add_incoming(const(0), before)
        t.add_incoming(t_next, loop)
        for p in range(pixels):
            sums[p].add_incoming(start, before)
            sums[p].add_incoming(summed[p], loop)
        builder.cbranch(builder.icmp_signed("<", t_next, taps), loop, done)

        builder.position_at_end(done)  # phis first, then the stores
        results = []
        for p in range(pixels):
            result = builder.phi(vec)
            result.add_incoming(start, before)
            result.add_incoming(summed[p], loop)
            results.append(result)
        for p, result in enumerate(results):
            store(builder, result, builder.gep(y_ptr, [builder.mul(const(p), y_pix)]), nbits)

    return emit


def block(pixels: int):
    """The intrinsic for blocks of ``pixels`` output pixels (see the module docstring)."""
    @vector_intrinsic
    def channel_taps(typingctx, x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y,
                     y_off, y_pix):
        if not (is_float_array(x) and w == x and bias == x and y == x
                and isinstance(offsets, types.Array)
                and isinstance(offsets.dtype, types.Integer)):
            return None
        return (types.void(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off,
                           y_pix), _emitter(x, pixels))

    return channel_taps


_blocks = tuple(block(pixels) for pixels in range(1, PIXELS + 1))  # compiled where used
_block1, _block2, _block3, _block4, _block5, _block6, _block7, _block8 = _blocks


@njit(inline="always")
def _tail(rest, x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix):
    """One block of ``rest`` (1 to PIXELS - 1) pixels: a row's remainder keeps one chain per
    pixel rather than running pixel after pixel."""
    if rest == 1:
        _block1(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 2:
        _block2(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 3:
        _block3(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 4:
        _block4(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 5:
        _block5(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 6:
        _block6(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)
    elif rest == 7:
        _block7(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix)


@njit(inline="always")
def row_taps(x, x_off, pix, offsets, w, w_off, taps, bias, b_off, biased, y, y_off, y_pix,
             count):
    """``count`` output pixels of a row, PIXELS at a time, then the rest as one block."""
    p = 0
    while p + PIXELS <= count:
        _block8(x, x_off + p * pix, pix, offsets, w, w_off, taps, bias, b_off, biased, y,
                y_off + p * y_pix, y_pix)
        p += PIXELS
    if p < count:
        _tail(count - p, x, x_off + p * pix, pix, offsets, w, w_off, taps, bias, b_off, biased,
              y, y_off + p * y_pix, y_pix)
