"""Tiled FFT convolution on the CPU by overlap-add (the cuDNN FFT_TILING idea).

The image is cut into B x B' blocks; each block's full correlation with the kernel is taken by
FFTs of size P x Q = B + ek - 1 (chosen per axis from the dilated kernel extent ek: a power of
two, for convbench's own FFT, near 2x-16x ek minimising the axis's transform work), and the
overlapping tails of neighbouring blocks are added. Blocks are processed a few block-rows at a time, so the workspace is the kernel
spectra's factors plus one chunk of tiles instead of whole-image spectra: far less than ``fft``
for small kernels on large images. The transforms and products are ``fft``'s (``spectra``), the
tiles being further planes of each image. Stride, padding and flip are handled as in ``fft``
(strided sampling of the stride-1 result, padding as an index shift, the kernel rotated before
its DFT).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from .fourier.spectra import (Layout, image_spectra, kernel_spectra, kernel_spectra_bytes, layout,
                      output_planes, pipeline_peak, spectral_products)
from .fourier.sizes import fft_cost_features, fft_growth, fft_rough_cost, power_of_two, ungrouped

CHUNK_ELEMS = 1 << 16  # real elements of staged tiles per chunk (256 KiB in float32: L2-sized)


TRANSFORM_OVERHEAD = 200  # per-transform cost in units of P*log2(P): with it the plan picks the
# fastest of the measured tile lengths (2-core Xeon: 128 of 64/128/256 for 11x11 on one 512x512
# channel, 64 of 64/128 for 7x7 on N2 C8 128x128, 32 of 32/64 for 9x9 on N4 C16 64x64)


def tile_length(ek: int, size: int) -> int:
    """FFT length for one axis, a power of two (convbench's own FFT: 1.3-2x faster than
    pocketfft's fast lengths on the measured layers): minimises the axis's transform work,
    tiles x (P*log2(P) + overhead), over [max(16, 2*ek), 16*ek] and the length that covers
    the whole axis in one tile."""
    whole = power_of_two(size + ek - 1)
    def cost(p: int) -> float:
        return ceil_div(size, p - ek + 1) * (p * math.log2(p) + TRANSFORM_OVERHEAD)

    best = whole
    p = power_of_two(max(16, 2 * ek))
    while p < whole and p <= 16 * ek:
        if cost(p) < cost(best):
            best = p
        p *= 2
    return best


def plan(spec: ConvSpec) -> tuple[int, int, int, int, int]:
    """(P, Q, block rows B, block cols B', block-rows per chunk)."""
    ekh, ekw = spec.effective_kernel
    p, q = tile_length(ekh, spec.h), tile_length(ekw, spec.w)
    bh, bw = p - ekh + 1, q - ekw + 1
    tiles_w = ceil_div(spec.w, bw)
    per_row = spec.n * spec.c * tiles_w * p * q
    rows = max(1, min(ceil_div(spec.h, bh), CHUNK_ELEMS // max(1, per_row)))
    return p, q, bh, bw, rows


@njit(parallel=True, cache=True)
def _stage_tiles(x, buf, r0_tile, bh, bw):
    """buf[n, c, t] = block t of the chunk starting at block-row ``r0_tile`` (zeros past the
    image; the transform zero-extends the block to P x Q)."""
    n_img, c_in, h, wid = x.shape
    n_tiles = buf.shape[2]
    tiles_w = ceil_div(wid, bw)
    for task in prange(n_img * c_in * n_tiles):
        t = task % n_tiles
        c = (task // n_tiles) % c_in
        n = task // (n_tiles * c_in)
        r0 = (r0_tile + t // tiles_w) * bh
        c0 = (t % tiles_w) * bw
        rows, cols = min(bh, h - r0), min(bw, wid - c0)
        buf[n, c, t, :, :] = 0.0
        buf[n, c, t, :rows, :cols] = x[n, c, r0:r0 + rows, c0:c0 + cols]


@njit(parallel=True, cache=True)
def _overlap_add(z, out, r0_tile, n_tile_rows, tiles_w, bh, bw, ekh, ekw, sh, sw, pt, pl):
    """Add each tile's full correlation into the outputs it touches (race-free: one task per
    output row gathers from the tiles that cover it).

    Full-correlation row m (of H + ekh - 1) is output row oh when m = oh*sh - pt + ekh - 1; tile
    row block b starting at r0 holds rows m in [r0, r0 + bh + ekh - 1) at circular index
    (m - r0 - (ekh - 1)) mod P.
    """
    n_img, k_out, ho, wo = out.shape
    p, q = z.shape[3], z.shape[4]
    for task in prange(n_img * k_out * ho):
        oh = task % ho
        k = (task // ho) % k_out
        n = task // (ho * k_out)
        m = oh * sh - pt + ekh - 1
        for tr in range(n_tile_rows):
            r0 = (r0_tile + tr) * bh
            u = m - r0
            if u < 0 or u >= bh + ekh - 1:  # this block-row does not reach output row oh
                continue
            zr = (u - (ekh - 1)) % p
            for tc in range(tiles_w):
                t = tr * tiles_w + tc
                # full-correlation columns of this tile are v in [a, a + bw + ekw - 1) with
                # v = ow*sw + a0; only the output columns in that window are visited
                a = tc * bw + pl - (ekw - 1)
                lo = max(0, ceil_div(a, sw))
                hi = min(wo, ceil_div(a + bw + ekw - 1, sw))
                for ow in range(lo, hi):
                    v = ow * sw - a  # column within the tile's full correlation
                    out[n, k, oh, ow] += z[n, k, t, zr, (v - (ekw - 1)) % q]


def _layout(spec: ConvSpec) -> Layout:
    p, q = plan(spec)[:2]
    return layout(p, q, spec.dtype)


def fft_tiled_workspace_bytes(spec: ConvSpec) -> int:
    """The kernel spectra's factors plus the peak of one chunk of tiles (its staged blocks
    beside the transforms)."""
    bh, bw, rows = plan(spec)[2:]
    lay = _layout(spec)
    tiles = rows * ceil_div(spec.w, bw)
    making, kept = kernel_spectra_bytes(spec, lay)
    staged = workspace.nbytes((spec.n, spec.c, tiles, bh, bw), spec.dtype)
    return max(making, kept + pipeline_peak(spec, lay, tiles, staged))


def fft_tiled_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec, ws=None) -> np.ndarray:
    """Overlap-add FFT convolution over chunks of tile rows (``ws``: the kernel spectra,
    when prepared beforehand)."""
    bh, bw, rows = plan(spec)[2:]
    lay = _layout(spec)
    ekh, ekw = spec.effective_kernel
    tiles_w, tiles_h = ceil_div(spec.w, bw), ceil_div(spec.h, bh)
    out = np.zeros(spec.out_shape, dtype=x.dtype)  # first, so the measured peak is out + workspace
    if ws is None:
        ws = kernel_spectra(w, spec, lay)
    for r0 in range(0, tiles_h, rows):
        n_rows = min(rows, tiles_h - r0)
        tiles = n_rows * tiles_w
        buf = workspace.empty((spec.n, spec.c, tiles, bh, bw), x.dtype)
        _stage_tiles(x, buf, r0, bh, bw)
        xs = image_spectra(buf, lay)
        del buf
        ys = spectral_products(xs, ws, spec.k, lay)
        del xs
        z = output_planes(ys, lay)
        del ys
        _overlap_add(z, out, r0, n_rows, tiles_w, bh, bw, ekh, ekw, spec.stride[0],
                     spec.stride[1], spec.pad[0], spec.pad[2])
        del z
    return out


def _tiling(spec: ConvSpec) -> tuple[int, int, int, int]:
    """(P, Q, tiles, chunks) of the plan."""
    p, q, bh, bw, rows = plan(spec)
    tiles_h = ceil_div(spec.h, bh)
    return p, q, tiles_h * ceil_div(spec.w, bw), ceil_div(tiles_h, rows)


def fft_tiled_cost_features(spec: ConvSpec) -> list[float]:
    """The FFT family's features, per tile, with two passes over the outputs (zeroing, then
    overlap-add)."""
    tiles, chunks = _tiling(spec)[2:]
    return fft_cost_features(spec, _layout(spec), tiles, chunks, read_out=2)


def prepare_fft_tiled(w: np.ndarray, spec: ConvSpec):
    """The kernel spectra of the tile size computed and stored once."""
    ws = kernel_spectra(w, spec, _layout(spec), store=True)
    return lambda x: fft_tiled_conv2d(x, w, spec, ws)


register(Algorithm(
    name="fft_tiled", op="conv2d", device="cpu", run=fft_tiled_conv2d, prepare=prepare_fft_tiled,
    supports=ungrouped, limits="groups = 1 only",
    workspace_bytes=fft_tiled_workspace_bytes, cost_features=fft_tiled_cost_features,
    rough_cost=lambda spec: fft_rough_cost(spec, *_tiling(spec)[:3]),
    transform_growth=fft_growth, error_model="fft", bound_by="numba",  # own FFT, as fft
    description="overlap-add: power-of-two FFTs of tiles ~2-16x the kernel, tails added; small "
                "workspace",
))
