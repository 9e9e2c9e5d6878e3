"""The work each algorithm does on a layer, as the feature vector its cost model weighs.

Features are counts of what the kernels really do (multiply-adds on padded rows, values
unfolded, GEMM FLOPs, FFT sizes and counts, spectral multiply-accumulates, calls and launches);
``costmodel.py`` fits one non-negative constant per feature and machine. Also the layer's
descriptor: where it sits in layer space, for the local correction of the predictions.
"""
from __future__ import annotations

import math

from .spec import ConvSpec, PoolSpec

L2_BYTES = 1 << 20  # cache size from which a streamed buffer is charged extra (typical L2)


def _log2(n: float) -> float:
    return math.log2(max(2.0, n))


def features(name: str, spec, device: str = "cpu") -> list[float] | None:
    """Feature vector of algorithm ``name`` on ``spec`` (None: no model for it)."""
    if isinstance(spec, PoolSpec):
        ho, wo = spec.out_size
        return [1.0, spec.n * spec.c * ho * wo * spec.size[0] * spec.size[1]]
    s: ConvSpec = spec
    if device == "cuda":
        return _cuda_features(name, s)
    if name == "direct":
        return _direct_features(s)
    if name == "im2col":
        return _im2col_features(s)
    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    if name in ("fft", "fft_tiled"):
        if name == "fft":
            from .cpu.fft import transform_shape

            p, q = transform_shape(s)
            tiles, chunks = 1, 1
        else:
            from .cpu.fft_tiled import plan

            p, q, bh, bw, rows = plan(s)
            tiles_h = -(-s.h // bh)
            tiles = tiles_h * -(-s.w // bw)
            chunks = -(-tiles_h // rows)
        plane = p * q
        planes = n * c * tiles + k * c + n * k * tiles
        transforms = planes * plane * _log2(plane)
        lines = planes * (p + q // 2 + 1)  # 1-D transforms: each has a fixed cost too
        mac = n * k * c * tiles * p * (q // 2 + 1)
        return [1.0, transforms, lines, mac, n * k * ho * wo * (1 if name == "fft" else 2),
                chunks]
    return None


def _direct_features(s: ConvSpec) -> list[float]:
    """CPU direct: v3 (stride 1) and v2 (strided) are different loops, so each has its own
    terms: multiply-adds in blocks of 4 output channels and in the remainder (3 loads feed 12
    multiply-adds, or 3), staged input values (each band restages its kernel-height halo),
    calls of the inner vector loop (a fixed cost each, which dominates on small images), and
    outputs written."""
    import numba

    from .cpu.direct import K_BLOCK, band_rows

    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    ekh, ekw = s.effective_kernel
    k_blocks = -(-k // K_BLOCK)
    taps = c * s.kh * s.kw
    v3 = [0.0] * 4
    v2 = [0.0] * 3
    if s.stride == (1, 1):  # wide rows of pitch Wp
        pitch = s.padded_size[1]
        band = band_rows(s, numba.config.NUMBA_NUM_THREADS)
        n_bands = -(-ho // band)
        v3 = [n * (k // K_BLOCK) * K_BLOCK * taps * ho * pitch,
              n * (k % K_BLOCK) * taps * ho * pitch,
              n * k_blocks * n_bands * c * (band + ekh - 1) * pitch,
              n * k_blocks * n_bands * c * s.kh * -(-s.kw // 3)]
    else:
        row_len = (wo - 1) * s.stride[1] + ekw
        v2 = [n * k * taps * ho * wo, n * k_blocks * ho * c * s.kh * row_len,
              n * k_blocks * ho * taps]
    return [1.0, *v3, *v2, n * k * ho * wo]


def _im2col_features(s: ConvSpec) -> list[float]:
    """CPU im2col: the serial unfold per value (strided reads cost more; past L2 the matrix is
    written and read again from memory) and per (tap, output row) loop, then the GEMM: FLOPs,
    FLOPs with the output channels padded to OpenBLAS's 16-row kernel (small K wastes it),
    bytes of its operands, and a fixed cost per image (per GEMM call for a 1x1 layer, which
    needs no unfold)."""
    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    pointwise = (s.kh, s.kw, s.stride) == (1, 1, (1, 1)) and not any(s.pad)
    depth, pixels = c * s.kh * s.kw, ho * wo
    unfold = 0 if pointwise else n * depth * pixels
    spills = depth * pixels * s.itemsize > L2_BYTES
    return [1.0, unfold, unfold if s.stride != (1, 1) else 0.0, unfold if spills else 0.0,
            0 if pointwise else n * depth * ho,
            2.0 * n * k * depth * pixels, 2.0 * n * 16 * -(-k // 16) * depth * pixels,
            n * (k * depth + depth * pixels + k * pixels),
            0 if pointwise else n, n if pointwise else 0]


def _cuda_features(name: str, s: ConvSpec) -> list[float] | None:
    """Work of the CUDA kernels: multiply-adds, values unfolded, GEMM FLOPs, butterflies, and
    kernel launches (each costs microseconds whatever its size)."""
    n, c, k = s.n, s.c, s.k
    ho, wo = s.out_size
    if name in ("direct", "direct_v1"):
        from .cuda.direct import K_PER_THREAD, v2_fits

        staged = name == "direct" and v2_fits(s)  # v2 computes K_PER_THREAD channels per block
        k_work = K_PER_THREAD * -(-k // K_PER_THREAD) if staged else k
        return [1.0, n * k_work * c * s.kh * s.kw * ho * wo, n * k * ho * wo]
    if name == "im2col":
        from .cuda.im2col import images_per_chunk

        depth, pixels = c * s.kh * s.kw, ho * wo
        chunks = -(-n // images_per_chunk(s))  # two launches each
        return [1.0, n * depth * pixels, 2.0 * n * k * depth * pixels, chunks]
    if name == "fft":
        from .cuda.fft import MAX_LINE, transform_shape

        p, q = transform_shape(s)
        passes = _log2(p) + _log2(q)
        planes = n * c + k * c + n * k
        per_transform = sum(1 if m <= MAX_LINE else _log2(m) for m in (p, q))
        return [1.0, planes * p * q * passes, n * k * c * p * q, 3 * per_transform]
    return None


DESCRIPTOR_SIZE = 8


def descriptor(spec: ConvSpec) -> list[float]:
    """Log2 of batch, channels in and out, image, kernel and output size, with stride and padding
    flags: neighbours in this space share the model's systematic errors (calibrate.py)."""
    ho, wo = spec.out_size
    return [math.log2(spec.n), math.log2(spec.c), math.log2(spec.k),
            math.log2(spec.h * spec.w) / 2, math.log2(spec.kh * spec.kw) / 2,
            math.log2(ho * wo) / 2, 2.0 * (spec.stride != (1, 1)), 1.0 * any(spec.pad)]
