"""Depthwise convolution on channel-last blocks: a vector of channels per tap, several output
pixels held in registers. Made for the depthwise layers of small planes, large kernels and
strides (EfficientNet's 5x5 on 7x7 and 14x14, MobileNet's 3x3 on 7x7, strided ones), where
``depthwise``'s plane-wide rows are short and a strided plane is computed at stride 1 first.

A task is (image, block of ``lanes`` channels, band of output rows). It stages its band's input
rows channel-last with their zero padding, ``stage[(r*Wp + q)*lanes + c]``, so one vector holds
one pixel's channels (the rows are contiguous runs of each channel's plane, so that is lanes x
lanes transposes in registers, then one copy per row into the padded stage); every output pixel
of a row is then ``kh*kw`` lane-by-lane multiply-adds of a weight vector and an input vector
(``vector.channel_taps``: eight output pixels' sums in registers across the whole kernel).
Stride and dilation are only the distances between the vectors read: no stride-1 result is
computed and thrown away. The band's outputs go back to (N, K, Ho, Wo) planes by the same
transposes. Channels past the last whole block are staged as zeros and not written. Channel
multiplier 1 (K = C) only; ``depthwise`` takes the others.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from .staging.rows import stage_row
from .vector.channel_taps import PIXELS, row_taps
from .vector.ir import TARGET
from .vector.transpose import block

ROWS_TARGET = 4096  # staged values per task and lane: a band's input stays in L1/L2


def supports(spec: ConvSpec) -> bool:
    """Depthwise with one output channel per input channel."""
    return spec.depthwise and spec.k == spec.c


class Plan(NamedTuple):
    lanes: int  # channels per block (one vector)
    blocks: int  # channel blocks
    band: int  # output rows per task
    bands: int
    rows_in: int  # staged input rows per band
    pitch: int  # staged row length in pixels (padded width)
    left: int  # staged columns before the image's (zeros, as are those from ``right`` on)
    right: int  # the first staged column past the image's
    offsets: np.ndarray  # tap t reads the staged pixel offset offsets[t] (in elements)


@lru_cache(maxsize=256)
def plan(spec: ConvSpec, threads: int) -> Plan:
    """Bands of output rows: about ROWS_TARGET staged pixels per task, and at least two tasks
    per thread where the images and channel blocks alone give fewer."""
    lanes = TARGET.lanes(spec.dtype)
    blocks = ceil_div(spec.c, lanes)
    (ho, wo), (sh, sw), (dh, dw) = spec.out_size, spec.stride, spec.dilation
    ekh, ekw = spec.effective_kernel
    pitch = max(spec.w + spec.pad[2] + spec.pad[3], (wo - 1) * sw + ekw)
    band = max(1, min(ho, ROWS_TARGET // (pitch * sh)))
    while band > 1 and spec.n * blocks * ceil_div(ho, band) < 2 * threads:
        band = (band + 1) // 2
    rows_in = (band - 1) * sh + ekh
    i, j = np.meshgrid(np.arange(spec.kh), np.arange(spec.kw), indexing="ij")
    offsets = ((i * dh * pitch + j * dw) * lanes).reshape(-1).astype(np.int64)
    offsets.setflags(write=False)
    left = max(0, min(pitch, spec.pad[2]))
    right = max(0, min(pitch, spec.pad[2] + spec.w))
    return Plan(lanes, blocks, band, ceil_div(ho, band), rows_in, pitch, left, right, offsets)


def pack_weights(w: np.ndarray, spec: ConvSpec, b: np.ndarray | None, lanes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, taps, lanes) weights (rotated for true convolution) and the bias padded to
    whole blocks, zeros past the last channel."""
    blocks = ceil_div(spec.c, lanes)
    packed = workspace.empty((blocks, spec.kh * spec.kw, lanes), w.dtype)
    bias = np.zeros(blocks * lanes, w.dtype)
    _pack(np.ascontiguousarray(w).reshape(spec.c, -1), packed, spec.flip)
    if b is not None:
        bias[:spec.c] = b
    return packed, bias


@njit(cache=True)
def _pack(w, packed, flip):
    """packed[c // lanes, t, c % lanes] = w[c, t] (tap order reversed when ``flip``). On the
    calling thread: a depthwise layer's weights are a few ten thousand values, and starting a
    parallel region cost more than packing them (N8 C672 K672 5x5, per call: 29-38 us
    in parallel)."""
    channels, taps = w.shape
    blocks, _, lanes = packed.shape
    for c in range(channels):  # each channel's taps read in a run
        blk, lane = c // lanes, c % lanes
        for t in range(taps):
            packed[blk, t, lane] = w[c, taps - 1 - t if flip else t]
    for lane in range(channels - (blocks - 1) * lanes, lanes):  # the last block's spare lanes
        for t in range(taps):
            packed[blocks - 1, t, lane] = 0.0


@njit(inline="always")
def _to_channels_last(src, s_off, s_pitch, dst, count, lanes, valid):
    """dst[p*lanes + c] = src[s_off + c*s_pitch + p] for p < count, c < valid: ``valid``
    channels' runs of ``count`` pixels, pixel-major. Whole lanes x lanes blocks are transposed
    in registers when every lane is a channel; the rest element by element."""
    whole = count - count % lanes if valid == lanes else 0
    for p0 in range(0, whole, lanes):
        block(src, s_off + p0, s_pitch, dst, p0 * lanes, lanes)
    for c in range(valid):
        for p in range(whole, count):
            dst[p * lanes + c] = src[s_off + c * s_pitch + p]


@njit(inline="always")
def _to_planes(src, dst, d_off, d_pitch, count, lanes, valid):
    """dst[d_off + c*d_pitch + p] = src[p*lanes + c]: back from pixel-major to channel runs."""
    whole = count - count % lanes if valid == lanes else 0
    for p0 in range(0, whole, lanes):
        block(src, p0 * lanes, lanes, dst, d_off + p0, d_pitch)
    for c in range(valid):
        for p in range(whole, count):
            dst[d_off + c * d_pitch + p] = src[p * lanes + c]


@njit(parallel=True, cache=True)
def _depthwise_cl(x, packed, bias, biased, out, offsets, sh, sw, pt, pl, band, bands, rows_in,
                  pitch, lo, hi, stage_ws, rows_ws, out_ws):
    n_img, c_in, h, wid = x.shape
    _, _, ho, wo = out.shape
    blocks, taps, lanes = packed.shape
    flat_w, flat_x, flat_out = packed.reshape(-1), x.reshape(-1), out.reshape(-1)
    for task in prange(n_img * blocks * bands):
        n = task // (blocks * bands)
        blk = task // bands % blocks
        oh0 = task % bands * band
        rows = min(band, ho - oh0)
        c0 = blk * lanes
        valid = min(lanes, c_in - c0)
        me = get_thread_id()
        stage, cl, ys = stage_ws[me], rows_ws[me], out_ws[me]
        # the band's input rows inside the image, channel-last (unpadded) ...
        ih0 = oh0 * sh - pt
        first, last = max(0, ih0), min(h, ih0 + rows_in)
        count = max(0, last - first) * wid
        if valid < lanes:
            cl[:count * lanes] = 0.0  # the channels past the last one stay zero
        _to_channels_last(flat_x, ((n * c_in + c0) * h + first) * wid, h * wid, cl, count,
                          lanes, valid)
        # ... then placed in the zero-padded stage, one contiguous run per row: the margins,
        # the same columns in every task, were zeroed once per call (_zero_margins) and only
        # rows of padding are zeroed here (a view and a libc memset or memmove per run of a few
        # pixels, as slice assignments, cost 10-20% of a small plane's layer)
        row_len = pitch * lanes
        for r in range(rows_in):
            ih = ih0 + r
            at = r * row_len
            if ih < first or ih >= last:
                stage_row(stage, at, row_len, row_len, row_len, cl, 0, 1)
            else:
                stage_row(stage, at + lo * lanes, (hi - lo) * lanes, 0, (hi - lo) * lanes, cl,
                          (ih - first) * wid * lanes + (lo - pl) * lanes, 1)
        # every output row of the band, eight pixels' sums in registers at a time
        for r in range(rows):
            row_taps(stage, r * sh * row_len, sw * lanes, offsets, flat_w,
                     blk * taps * lanes, taps, bias, c0, biased, ys, r * wo * lanes, lanes, wo)
        # back to the planes: the band's rows of a channel are one contiguous run
        _to_planes(ys, flat_out, ((n * c_in + c0) * ho + oh0) * wo, ho * wo, rows * wo, lanes,
                   valid)


@njit(cache=True)
def _zero_margins(stage_ws, rows_in, pitch, lanes, lo, hi):
    """Zero every thread's staged rows outside the image's columns ``lo``..``hi``: the tasks
    of a call write only those columns, or whole rows of padding."""
    row_len = pitch * lanes
    for stage in stage_ws:
        for r in range(rows_in):
            stage_row(stage, r * row_len, lo * lanes, lo * lanes, lo * lanes, stage, 0, 1)
            stage_row(stage, r * row_len + hi * lanes, row_len - hi * lanes, 0, 0, stage, 0, 1)


def _scratch_shapes(spec: ConvSpec, layer: Plan) -> tuple[tuple[int, int], ...]:
    """Per thread: the staged band (rows x pitch x lanes), its rows inside the image
    channel-last, and the band's channel-last outputs."""
    threads = numba.config.NUMBA_NUM_THREADS
    (_, wo), lanes = spec.out_size, layer.lanes
    return ((threads, layer.rows_in * layer.pitch * lanes),
            (threads, layer.rows_in * spec.w * lanes), (threads, layer.band * wo * lanes))


def depthwise_cl_workspace_bytes(spec: ConvSpec) -> int:
    """The packed weights and bias, and per thread the staged band and its outputs."""
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    packed = layer.blocks * layer.lanes * (spec.kh * spec.kw + 1)
    return (sum(workspace.nbytes(shape, spec.dtype) for shape in _scratch_shapes(spec, layer))
            + packed * spec.itemsize)


def depthwise_cl_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                        b: np.ndarray | None = None, packed=None) -> np.ndarray:
    """Depthwise convolution on channel-last blocks (see the module docstring); ``packed``:
    the weights and bias packed beforehand (the prepared form)."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    if spec.n == 0:
        return out
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    weights, bias = packed if packed is not None else pack_weights(w, spec, b, layer.lanes)
    stage, cl, ys = (workspace.empty(shape, x.dtype) for shape in _scratch_shapes(spec, layer))
    _zero_margins(stage, layer.rows_in, layer.pitch, layer.lanes, layer.left, layer.right)
    (sh, sw) = spec.stride
    _depthwise_cl(x, weights, bias, 1 if b is not None else 0, out, layer.offsets, sh, sw,
                  spec.pad[0], spec.pad[2], layer.band, layer.bands, layer.rows_in, layer.pitch,
                  layer.left, layer.right, stage, cl, ys)
    return out


def _prepared(w: np.ndarray, spec: ConvSpec, b: np.ndarray | None = None):
    packed = pack_weights(w, spec, b, plan(spec, numba.config.NUMBA_NUM_THREADS).lanes)
    return lambda x: depthwise_cl_conv2d(x, w, spec, b, packed)


def depthwise_cl_cost_features(spec: ConvSpec) -> list[float]:
    """Tasks (a fixed cost each), staged values, vector multiply-adds in whole blocks of
    PIXELS pixels, the taps of each row's shorter last block (its chains' latency, more than
    its width, sets its time), and outputs written back."""
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    ho, wo = spec.out_size
    tasks = spec.n * layer.blocks * layer.bands
    taps = spec.kh * spec.kw
    rows = spec.n * layer.blocks * ho
    return [1.0, float(tasks), float(tasks * layer.rows_in * layer.pitch * layer.lanes),
            float(rows * (wo // PIXELS) * PIXELS * taps), float(rows * (wo % PIXELS > 0) * taps),
            float(spec.n * spec.c * ho * wo)]


register(Algorithm(
    name="depthwise_cl", op="conv2d", device="cpu", run=depthwise_cl_conv2d,
    prepare=_prepared, fused_bias=True, supports=supports,
    limits="depthwise layers with one output channel per input channel (K = C = groups)",
    workspace_bytes=depthwise_cl_workspace_bytes, cost_features=depthwise_cl_cost_features,
    rough_cost=lambda spec: 2.0 * spec.min_bytes, bound_by="memory",
    description="depthwise on channel-last blocks: a vector of channels per tap, eight "
                "pixels' sums in registers"))
