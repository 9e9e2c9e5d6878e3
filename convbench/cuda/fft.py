"""FFT convolution on the GPU with our own FFT kernels.

Transforms are radix-2 Stockham passes (self-sorting, no bit reversal). A line of up to
``fft_max_line`` points (see ``launch.py``) is transformed whole by one block in shared
memory, every line of every plane in one launch (rows, then columns: two launches per 2-D
transform), because each launch from Python costs tens of microseconds. Longer lines take one
launch per pass over global memory, ping-ponging between two buffers. Sizes are powers of two
at least the padded image. Input planes and kernels are transformed once; a
multiply-accumulate kernel sums X[n, c] * conj(W[k, c]) over input channels (correlation; true
convolution rotates the kernel once while staging it); one inverse transform per output plane;
a read-out kernel applies padding as a cyclic shift, stride as sampling, and the 1/(P*Q)
normalisation.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import cuda

from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from . import launch
from .arrays import device_empty, grid_1d, grid_2d, host_or_device, numba_type
from .indexing import split_row


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def transform_shape(spec: ConvSpec) -> tuple[int, int]:
    hp, wp = spec.padded_size
    return pow2(hp), pow2(wp)


def _complex(dtype) -> np.dtype:
    return np.dtype(np.complex64 if np.dtype(dtype) == np.float32 else np.complex128)


@cuda.jit
def _stockham_pass(src, dst, n, inner, ns, sign):
    """One radix-2 Stockham pass over arrays viewed as (batch, n, inner), transforming along n.

    Thread t handles butterfly j of one (batch, inner) line: it reads elements j and j + n/2,
    twiddles the second by exp(sign * 2*pi*i * (j mod ns) / (2 ns)) and writes the sum and
    difference to positions that leave the output in natural order after the last pass.
    """
    t = cuda.grid(1)
    half = n // 2
    if t >= (src.size // n) * half:  # the grid is rounded up to whole blocks
        return
    col = t % inner
    j = (t // inner) % half
    b = t // (inner * half)
    base = b * n * inner + col
    v0 = src[base + j * inner]
    v1 = src[base + (j + half) * inner]
    angle = sign * math.pi * (j % ns) / ns  # twiddles in float64: exact to the last float32 bit
    v1 = v1 * complex(math.cos(angle), math.sin(angle))
    d = (j // ns) * ns * 2 + j % ns
    dst[base + d * inner] = v0 + v1
    dst[base + (d + ns) * inner] = v0 - v1


@lru_cache(maxsize=None)
def _make_line_fft(dtype_name: str, max_line: int):
    """The whole-line kernel with shared buffers of ``max_line`` points (a compile-time
    constant, as a real GPU requires)."""
    nb_type = numba_type(dtype_name)

    @cuda.jit
    def line_fft(data, n, inner, sign, lines):
        """Whole in-place FFTs of ``blockDim.y`` lines per block of ``data`` viewed as
        (batch, n, inner): each line loaded once into shared memory, log2(n) Stockham passes
        between two shared buffers (a barrier after each), written back once."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        step = cuda.blockDim.x
        line = cuda.blockIdx.x * cuda.blockDim.y + ty
        active = line < lines  # the last block's spare rows of threads still meet the barriers
        half = n // 2
        base = (line // inner) * n * inner + line % inner
        off = ty * n  # this line's slice of the shared buffers
        a = cuda.shared.array(max_line, nb_type)  # constant shapes: required on a real GPU
        b = cuda.shared.array(max_line, nb_type)
        if active:
            for i in range(tx, n, step):
                a[off + i] = data[base + i * inner]
        cuda.syncthreads()
        ns = 1
        in_a = True
        while ns < n:
            if active:
                for j in range(tx, half, step):
                    v0 = a[off + j] if in_a else b[off + j]
                    v1 = a[off + j + half] if in_a else b[off + j + half]
                    angle = sign * math.pi * (j % ns) / ns  # float64 twiddles, as the passes
                    v1 = v1 * complex(math.cos(angle), math.sin(angle))
                    d = off + (j // ns) * ns * 2 + j % ns
                    if in_a:
                        b[d] = v0 + v1
                        b[d + ns] = v0 - v1
                    else:
                        a[d] = v0 + v1
                        a[d + ns] = v0 - v1
            cuda.syncthreads()  # this pass complete before the next reads it
            in_a = not in_a
            ns *= 2
        if active:
            for i in range(tx, n, step):
                data[base + i * inner] = a[off + i] if in_a else b[off + i]

    return line_fft


def _line_launch(n: int, lines: int, g: launch.Geometry) -> tuple[int, tuple[int, int]]:
    """(blocks, (threads per line, lines per block)): up to fft_line_threads threads per
    block, as many lines as fit the fft_max_line points of each shared buffer."""
    per_line = max(1, min(n // 2, g.fft_line_threads))
    per_block = max(1, min(g.fft_max_line // n, g.fft_line_threads // per_line, lines))
    return ceil_div(lines, per_block), (per_line, per_block)


def _complex_kind(dtype) -> str:
    return "complex64" if np.dtype(dtype) == np.complex64 else "complex128"


def fft2(buf, scratch, sign: int) -> None:
    """In-place, in-order 2-D FFT over the last two axes of ``buf`` (sign -1 forward, +1
    inverse, unnormalised). Lines up to the geometry's fft_max_line: one launch per axis;
    longer ones: one launch per pass, ping-ponging with ``scratch`` (at least ``buf.size``
    elements)."""
    g = launch.current()
    p, q = tuple(buf.shape)[-2:]  # (the simulator's shape object has no negative indexing)
    flat = buf.reshape(buf.size)
    for n, inner in ((q, 1), (p, q)):  # rows, then columns
        if n == 1:
            continue
        if n <= g.fft_max_line:
            lines = buf.size // n
            blocks, threads = _line_launch(n, lines, g)
            kernel = _make_line_fft(_complex_kind(buf.dtype), g.fft_max_line)
            kernel[blocks, threads](flat, n, inner, sign, lines)
            continue
        src, dst = flat, scratch.reshape(scratch.size)[: buf.size]
        blocks, threads = grid_1d(buf.size // 2, g.fft_threads)
        ns = 1
        while ns < n:
            _stockham_pass[blocks, threads](src, dst, n, inner, ns, sign)
            src, dst = dst, src
            ns *= 2
        if int(math.log2(n)) % 2:  # the result landed in the scratch buffer
            flat.copy_to_device(src)


@cuda.jit
def _stage_images(x, buf):
    q, row = cuda.grid(2)
    n_img, c_in, p, qq = buf.shape
    if q >= qq or row >= n_img * c_in * p:  # the grid is rounded up to whole blocks
        return
    n, c, r = split_row(row, p, c_in)
    inside = r < x.shape[2] and q < x.shape[3]  # zeros past the image absorb the padding
    buf[n, c, r, q] = x[n, c, r, q] if inside else 0


@cuda.jit
def _stage_kernels(w, buf, dh, dw, flip):
    q, row = cuda.grid(2)
    k_out, c_in, p, qq = buf.shape
    if q >= qq or row >= k_out * c_in * p:
        return
    k, c, r = split_row(row, p, c_in)
    kh, kw = w.shape[2], w.shape[3]
    value = 0
    if r % dh == 0 and q % dw == 0 and r // dh < kh and q // dw < kw:  # a (dilated) tap
        i, j = r // dh, q // dw
        value = w[k, c, kh - 1 - i, kw - 1 - j] if flip else w[k, c, i, j]
    buf[k, c, r, q] = value


@cuda.jit
def _spectral_mac(xf, wf, yf):
    """yf[n, k, f] = sum_c xf[n, c, f] * conj(wf[k, c, f]); one thread per (n, k, f)."""
    f, nk = cuda.grid(2)
    n_img, c_in, n_freq = xf.shape
    k_out = wf.shape[0]
    if f >= n_freq or nk >= n_img * k_out:  # the grid is rounded up to whole blocks
        return
    n, k = nk // k_out, nk % k_out
    acc = xf[n, 0, f] * wf[k, 0, f].conjugate()
    for c in range(1, c_in):
        acc += xf[n, c, f] * wf[k, c, f].conjugate()
    yf[n, k, f] = acc


@cuda.jit
def _read_out(z, out, sh, sw, pt, pl, scale):
    ow, row = cuda.grid(2)
    n_img, k_out, ho, wo = out.shape
    if ow >= wo or row >= n_img * k_out * ho:
        return
    n, k, oh = split_row(row, ho, k_out)
    p, q = z.shape[2], z.shape[3]
    out[n, k, oh, ow] = z[n, k, (oh * sh - pt) % p, (ow * sw - pl) % q].real * scale


def _needs_scratch(p: int, q: int) -> bool:
    """Lines longer than fft_max_line go pass by pass, ping-ponging through a scratch buffer."""
    return max(p, q) > launch.current().fft_max_line


def fft_workspace_bytes(spec: ConvSpec) -> int:
    """Input, kernel and output spectra, plus (for lines over fft_max_line points) one ping-pong
    buffer as large as the largest."""
    p, q = transform_shape(spec)
    item = _complex(spec.dtype).itemsize
    planes = spec.n * spec.c + spec.k * spec.c + spec.n * spec.k
    if _needs_scratch(p, q):
        planes += max(spec.n * spec.c, spec.k * spec.c, spec.n * spec.k)
    return planes * p * q * item


def fft_conv2d(x, w, spec: ConvSpec):
    """Whole-image FFT convolution on device arrays."""
    p, q = transform_shape(spec)
    cdt = _complex(spec.dtype)
    n, c, k = spec.n, spec.c, spec.k
    block = launch.current().fft_block
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    scratch = (device_empty((max(n * c, k * c, n * k) * p * q,), cdt)
               if _needs_scratch(p, q) else None)
    xf = device_empty((n, c, p, q), cdt)
    _stage_images[grid_2d(n * c * p, q, block)](x, xf)
    fft2(xf, scratch, -1)
    wf = device_empty((k, c, p, q), cdt)
    _stage_kernels[grid_2d(k * c * p, q, block)](w, wf, spec.dilation[0], spec.dilation[1],
                                                    spec.flip)
    fft2(wf, scratch, -1)
    yf = device_empty((n, k, p, q), cdt)
    _spectral_mac[grid_2d(n * k, p * q, block)](
        xf.reshape(n, c, p * q), wf.reshape(k, c, p * q), yf.reshape(n, k, p * q))
    fft2(yf, scratch, +1)
    ho, wo = spec.out_size
    _read_out[grid_2d(n * k * ho, wo, block)](yf, out, spec.stride[0], spec.stride[1],
                                                 spec.pad[0], spec.pad[2], 1.0 / (p * q))
    return out


def _log2(n: int) -> float:
    return math.log2(max(2, n))


def fft_cost_features(spec: ConvSpec) -> list[float]:
    """Butterflies (planes x P*Q x passes), spectral multiply-adds, and launches (one per axis
    for lines held in shared memory, one per pass for longer ones; three transforms)."""
    p, q = transform_shape(spec)
    planes = spec.n * spec.c + spec.k * spec.c + spec.n * spec.k
    max_line = launch.current().fft_max_line
    per_transform = sum(1 if m <= max_line else _log2(m) for m in (p, q))
    return [1.0, planes * p * q * (_log2(p) + _log2(q)), spec.n * spec.k * spec.c * p * q,
            3 * per_transform]


def _rough_cost(spec: ConvSpec) -> float:
    p, q = transform_shape(spec)
    planes = spec.n * spec.c + spec.k * spec.c + spec.n * spec.k
    return 5.0 * planes * p * q * (_log2(p) + _log2(q)) + 8.0 * spec.n * spec.k * spec.c * p * q


def _growth(spec: ConvSpec) -> float:
    """A spectrum sums a whole padded plane: its magnitude bound is that much larger."""
    hp, wp = spec.padded_size
    return float(hp * wp)


register(Algorithm(
    name="fft", op="conv2d", device="cuda", run=host_or_device(fft_conv2d),
    workspace_bytes=fft_workspace_bytes, cost_features=fft_cost_features,
    rough_cost=_rough_cost, transform_growth=_growth, error_model="fft", bound_by="fft",
    supports=lambda spec: spec.groups == 1, limits="groups = 1 only",
    description="own radix-2 Stockham FFT kernels, spectral MAC over channels, inverse, crop",
))
