"""Implicit GEMM on the CPU: the convolution as a GEMM on the register-blocked micro-kernel,
its unfolded operand never written.

out[n, k, oh, ow] = sum_r w[k, r] x(r, (oh, ow)) with r = (c, i, j): a GEMM of the weights
(K x C*kh*kw) and the unfolded input. At stride 1, the unfolded row r of a band of output rows
is a contiguous run of the zero-padded input: output (oh, ow) reads staged (oh + i*dh)*Wp +
ow + j*dw, so with positions t = oh*Wp + ow (the "wide row" of ``direct`` v3; Wp - Wo garbage
columns per row are computed and dropped) row r starts at offset c*plane + i*dh*Wp + j*dw.
The micro-kernel (``microkernel.block_indexed``) reads B's rows through that offset table, so
the band is staged once and never unfolded, and each block of outputs (6 output channels x 64
positions in float32 on AVX-512; 4 x 96 or 8 x 48 where that pads K/groups less) stays in
registers across a slice of the reduction: 24 multiply-adds per 4 loads of the input and 6
broadcast weights, where ``direct`` v3 loads and stores its accumulators every five taps.

Task = (image, group, band of output rows). Without padding, B's rows are read from the input
itself; otherwise the band's input rows are staged channel by channel, zero padding included.
The weights are packed once per call (or once for all by the prepared form) as (groups,
C/groups*kh*kw, K/groups rounded up to whole blocks); the reduction runs in slices of
REDUCTION_SLICE rows so that a panel of B stays in L1 while every block of output channels
passes over it; the band's outputs are copied out of the accumulator rows with the bias (for
1x1 layers, whose wide rows are the output's rows, whole blocks accumulate in the output
itself). Strided layers (dilation 1) run on their space-to-depth phases, as ``direct`` does,
but through an offset table over the layer's own taps, so the phase kernel's zero taps cost
nothing; strided and dilated layers are left to ``direct``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from .. import workspace
from ..arith import ceil_div
from ..bias import kernel_bias
from ..registry import Algorithm, register
from ..spec import ConvSpec
from .direct import phase_spec, phased, split_phases, stage_padded_rows
from .microkernel import best_rows, block_indexed, nr

REDUCTION_SLICE = 128  # rows of B per pass: 128 x 64 float32 = 32 KiB, an L1's worth
BAND_TARGET = 512  # positions per task: the accumulator rows (Kp x positions) stay in L2


def supports(spec: ConvSpec) -> bool:
    """Stride 1 with any dilation, or any stride with dilation 1 (on the phases)."""
    return spec.stride == (1, 1) or spec.dilation == (1, 1)


class Plan(NamedTuple):
    """What a layer's run needs, worked out once per spec and thread count."""
    target: ConvSpec  # the stride-1 layer computed: the layer, or its space-to-depth form
    band: int  # output rows per task
    plane: int  # distance between channels in B's source (input image or staged band)
    positions: int  # wide-row positions per band, padded to whole blocks
    stage_len: int  # per-thread staging buffer
    offsets: np.ndarray  # B's row r = (c, i, j) starts at b_off + offsets[r]
    rows: int  # micro-kernel block height (output channels per block)
    n_r: int  # micro-kernel block width (positions per block)
    k_pad: int  # output channels per group, padded to whole blocks


def _k_padded(spec: ConvSpec) -> int:
    """Output channels per group rounded up to whole micro-kernel blocks."""
    rows = best_rows(spec.kg)
    return ceil_div(spec.kg, rows) * rows


def band_rows(spec: ConvSpec, threads: int) -> int:
    """Output rows per task (``spec`` at stride 1): about BAND_TARGET positions, but enough
    tasks for every thread."""
    ho = spec.out_size[0]
    pitch = spec.padded_size[1]
    band = max(1, min(ho, BAND_TARGET // pitch))
    while band > 1 and spec.n * spec.groups * ceil_div(ho, band) < 2 * threads:
        band = (band + 1) // 2
    return band


def reads_input(spec: ConvSpec) -> bool:
    """Whether B's rows are read from the input itself (a stride-1 ``spec`` without padding:
    its wide rows are the image's rows), not from a staged copy."""
    return spec.pad == (0, 0, 0, 0)


@lru_cache(maxsize=256)
def plan(spec: ConvSpec, threads: int) -> Plan:
    """The plan of ``spec``. The plane is the image's (H*W) when B is read from the input,
    otherwise a staged band's (band + halo rows of pitch Wp). A strided layer runs on its
    phases, but only over its own taps: tap (i, j) of input channel c reads phase
    (i mod sh, j mod sw) of c at (i div sh, j div sw), so the zero taps that the phase kernel
    would add (7 of 16 for 3x3 at stride 2) cost nothing."""
    target = phase_spec(spec) if phased(spec) else spec
    band = band_rows(target, threads)
    (ekh, ekw), (dh, dw) = target.effective_kernel, target.dilation
    pitch = target.padded_size[1]
    plane = target.h * target.w if reads_input(target) else (band + ekh - 1) * pitch
    rows = best_rows(target.kg)
    n_r = nr(spec.dtype, rows)
    positions = ceil_div(band * pitch, n_r) * n_r
    (sh, sw) = spec.stride if phased(spec) else (1, 1)
    c, i, j = np.meshgrid(np.arange(spec.cg), np.arange(spec.kh), np.arange(spec.kw),
                          indexing="ij")
    channel = (c * sh + i % sh) * sw + j % sw
    offsets = (channel * plane + (i // sh) * dh * pitch + (j // sw) * dw).reshape(-1)
    offsets = offsets.astype(np.int64)
    offsets.setflags(write=False)
    return Plan(target, band, plane, positions, target.cg * plane + ekw + n_r, offsets, rows,
                n_r, _k_padded(target))


def pack_weights(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(groups, C/groups*kh*kw, Kp): A's columns, output channels contiguous, zero past K/groups
    (the kernel rotated for true convolution)."""
    if spec.flip:
        w = w[:, :, ::-1, ::-1]
    k_pad = plan(spec, numba.config.NUMBA_NUM_THREADS).k_pad
    packed = workspace.zeros((spec.groups, spec.cg * spec.kh * spec.kw, k_pad), w.dtype)
    packed[:, :, :spec.kg] = w.reshape(spec.groups, spec.kg, -1).transpose(0, 2, 1)
    return packed


@njit(cache=True)
def _stage_band(stage, x, n, c0, cg, ih0, rows, plane, pitch, pl):
    """stage[c*plane + r*pitch + q] = zero-padded x[n, c0 + c, ih0 + r, q - pl], channel by
    channel through direct's row stager (flat, unsigned: a view or a slice assignment per row
    made this copy a tenth of the convolution's time)."""
    h, wid = x.shape[2], x.shape[3]
    for c in range(cg):
        stage_padded_rows(stage[c * plane:], x[n, c0 + c].reshape(h * wid), h, wid, ih0, rows,
                          pitch, pl)


@njit(parallel=True, cache=True)
def _implicit_gemm(x, packed, offsets, out, b, pt, pl, pitch, band, halo, plane, read_input,
                   stage_ws, acc_ws, mr, n_r, slice_rows):
    """Each task: its band of input (staged, or the input itself), the micro-kernel over
    (reduction slice, block of positions, block of output channels), then the outputs copied out of the
    accumulator rows with the bias. Where the wide rows are the output's rows (pitch = Wo),
    whole blocks are accumulated in the output itself and only the edges go through the
    accumulator rows."""
    n_img, c_in, h, wid = x.shape
    groups, reduction, k_pad = packed.shape
    _, k_out, ho, wo = out.shape
    kg, cg = k_out // groups, c_in // groups
    n_bands = (ho + band - 1) // band
    ldc = acc_ws.shape[2]
    weights, source, dst = packed.reshape(-1), x.reshape(-1), out.reshape(-1)
    in_place = pitch == wo
    for task in prange(n_img * groups * n_bands):
        n = task // (groups * n_bands)
        g = (task // n_bands) % groups
        oh0 = (task % n_bands) * band
        rows = min(band, ho - oh0)
        length = rows * pitch
        positions = (length + n_r - 1) // n_r * n_r
        me = get_thread_id()
        stage, acc = stage_ws[me], acc_ws[me]
        b_off = ((n * c_in + g * cg) * h + oh0) * wid
        if read_input and b_off + offsets[-1] + positions <= source.shape[0]:
            rows_from = source
        else:  # staged: padded, or the image's last block would read past the input
            rows_from = stage
            b_off = 0
            _stage_band(stage, x, n, g * cg, cg, oh0 - pt, rows + halo, plane, pitch, pl)
            stage[cg * plane:] = 0.0  # the last blocks' reach past the last plane
        c_flat = acc.reshape(-1)
        out_base = ((n * k_out + g * kg) * ho + oh0) * wo
        a_base = g * reduction * k_pad
        for r0 in range(0, reduction, slice_rows):
            count = min(slice_rows, reduction - r0)
            rows_at = offsets[r0:r0 + count]
            for t0 in range(0, positions, n_r):
                for k0 in range(0, k_pad, mr):
                    a_at = a_base + r0 * k_pad + k0
                    if in_place and k0 + mr <= kg and t0 + n_r <= length:
                        block_indexed(mr, weights, a_at, 1, k_pad, rows_from, b_off + t0, rows_at,
                                      dst, out_base + k0 * ho * wo + t0, ho * wo, count, r0 > 0)
                    else:
                        block_indexed(mr, weights, a_at, 1, k_pad, rows_from, b_off + t0, rows_at,
                                      c_flat, k0 * ldc + t0, ldc, count, r0 > 0)
        for k in range(kg):
            done = length // n_r * n_r if in_place and k // mr * mr + mr <= kg else 0
            plane_out = out[n, g * kg + k].reshape(-1)[oh0 * wo:]
            if b.shape[0]:  # (in the array's type: a 0.0 default would widen every sum)
                plane_out[:done] += b[g * kg + k]
                acc[k, done:length] += b[g * kg + k]
            if in_place:
                plane_out[done:length] = acc[k, done:length]
            else:
                for r in range(rows):
                    plane_out[r * wo:(r + 1) * wo] = acc[k, r * pitch:r * pitch + wo]


def _scratch_shapes(spec: ConvSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per thread: the staged band and the accumulator rows (Kp x positions)."""
    threads = numba.config.NUMBA_NUM_THREADS
    layer = plan(spec, threads)
    return (threads, layer.stage_len), (threads, layer.k_pad, layer.positions)


def implicit_gemm_workspace_bytes(spec: ConvSpec) -> int:
    """Packed weights, per-thread staging and accumulators; for a strided layer also its
    phases."""
    stage, acc = _scratch_shapes(spec)
    k_pad = plan(spec, numba.config.NUMBA_NUM_THREADS).k_pad
    packed = (spec.groups, spec.cg * spec.kh * spec.kw, k_pad)
    total = sum(workspace.nbytes(shape, spec.dtype) for shape in (stage, acc, packed))
    if phased(spec):
        total += workspace.nbytes(phase_spec(spec).x_shape, spec.dtype)
    return total


def implicit_gemm_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                         b: np.ndarray | None = None,
                         packed: np.ndarray | None = None) -> np.ndarray:
    """Implicit GEMM convolution (see the module docstring), the bias ``b`` added as the
    outputs are copied out; ``packed``: the packed weights, when prepared beforehand."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    if spec.n == 0:
        return out
    if packed is None:
        packed = pack_weights(w, spec)
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    target = layer.target
    pt, pl = spec.pad[0], spec.pad[2]
    if phased(spec):
        xs = workspace.empty(target.x_shape, x.dtype)
        split_phases(x, xs, spec.stride[0], spec.stride[1], pt, pl)
        x, pt, pl = xs, 0, 0
    stage_shape, acc_shape = _scratch_shapes(spec)
    stage, acc = workspace.empty(stage_shape, x.dtype), workspace.empty(acc_shape, x.dtype)
    _implicit_gemm(np.ascontiguousarray(x), packed, layer.offsets, out, kernel_bias(b, x.dtype),
                   pt, pl, target.padded_size[1], layer.band, target.effective_kernel[0] - 1,
                   layer.plane, reads_input(target), stage, acc, layer.rows, layer.n_r,
                   REDUCTION_SLICE)
    return out


def _prepared(w: np.ndarray, spec: ConvSpec, b: np.ndarray | None = None):
    """The weights packed once."""
    packed = pack_weights(w, spec)
    return lambda x: implicit_gemm_conv2d(x, w, spec, b, packed)


def implicit_gemm_cost_features(spec: ConvSpec) -> list[float]:
    """The micro-kernel's multiply-adds as computed (output channels padded to whole blocks,
    positions to whole blocks of the wide rows), the staged input values, the micro-kernel
    calls, the outputs copied out, and the phases' copy for a strided layer."""
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    target = layer.target
    tasks = target.n * target.groups * ceil_div(target.out_size[0], layer.band)
    reduction = spec.cg * spec.kh * spec.kw
    calls = tasks * ceil_div(reduction, REDUCTION_SLICE) * (layer.positions // layer.n_r) * (
        layer.k_pad // layer.rows)
    staged = tasks * target.cg * (layer.band + target.effective_kernel[0] - 1) * (
        target.padded_size[1])
    phases = float(target.n * target.c * target.h * target.w) if phased(spec) else 0.0
    return [1.0, float(tasks * layer.k_pad * layer.positions * reduction), float(staged),
            float(calls), float(spec.n * spec.k * spec.out_size[0] * spec.out_size[1]), phases]


register(Algorithm(
    name="implicit_gemm", op="conv2d", device="cpu", run=implicit_gemm_conv2d,
    prepare=_prepared, fused_bias=True, supports=supports,
    limits="strided layers with dilation > 1 are left to direct",
    workspace_bytes=implicit_gemm_workspace_bytes,
    cost_features=implicit_gemm_cost_features, rough_cost=lambda spec: 0.5 * spec.flops,
    description="GEMM on the register-blocked micro-kernel, B read from the staged band "
                "through an offset table"))
