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

Without padding, B's rows are read from the input itself, a task being (image, group, band
of output rows). Otherwise the images are staged as one tall image, stacked with shared
padding (a row's trailing zeros are the next row's leading ones, an image's bottom padding
the next one's top: pitch W + max(pl, pr), H + max(pt, pb) rows per image), and a task's band
of rows may span several images: a 7x7 layer with padding 1 computes 64 positions per image
for its 49 outputs (81 unshared), and small images share each pass over the weights. Where
that leaves fewer than two tasks per thread, the output channels are split into chunks (if the
weights outweigh a staged band) or the bands shortened. The weights are packed, once per call
or once for all by the prepared form, into one panel per block of output channels, each
reduction step's weights of the block contiguous (BLIS's packed A: a block's pass over a slice
reads one run, where columns of all K output channels put every step a page apart on deep
layers); a call on a GEMM of few columns (a 7x7 or 14x14 layer at batch 1) reads
the layer's own weights, rows of the reduction, in place instead (packing would cost a fifth of
its time), unless a block would need zero padding or the kernel rotating for true convolution.
The reduction runs in slices of REDUCTION_SLICE rows so that a panel of B stays in L1 while
every block of output channels passes over it; the band's outputs are copied out of per-thread
accumulator rows with the bias. A layer read in place whose reduction is one slice (a shallow
1x1 layer, whose wide rows are the output's rows) writes its whole blocks straight into the
output, once each, each block of output channels running over a group of position blocks
whose B panels fit GROUP_BYTES before the next block of channels: every output row is then
written in runs of the group rather than one block's width at a time across all K rows,
which on a large output left each store waiting on its line (N8 C16 112x112 K96 1.64x faster,
C24 56x56 K144 1.53x, C64 56x56 K256 1.12x, smaller outputs unchanged, on the 2-core AVX2
EPYC); a deeper one accumulates per slice in the compact accumulator rows (in the
output, rows H*W apart and off the cache lines, a 1x1 layer at batch 8 ran 1.5x slower on 2
threads). A stride-1 unpadded 1x1 layer runs as one on images of H*W one-pixel rows, so its
bands are runs of pixels in whole micro-kernel blocks. Strided layers (dilation 1) run on their
space-to-depth phases, as ``direct`` does, but through an offset table over the layer's own
taps, so the phase kernel's zero taps cost nothing; strided and dilated layers are left to
``direct``.

Small planes: an unpadded layer whose image fills too little of its blocks of positions has
its images stacked like padded ones, unless it is a 1x1 layer (a 7x7 image's 49 pixels in 72
computed cost less than the staging copy of the input: N8 C960 7x7 K160 ran 1.3x slower
stacked, N8 C832 7x7 K32 2.2x, on a 2-core AVX2 EPYC), and where several tasks would
stage the same band (chunks of output channels) the stacked images are staged once, in
parallel, for all of them; the output channels are then split until a task's accumulator rows
fit beside the panels in L2. A strided or padded 1x1 layer runs on the pixels it reads,
gathered into a stride-1 unpadded layer: a quarter of the input at stride 2, where the phases
copy all of it.

Band ends: where a band's last block of positions would compute a vector or more for nothing,
the band ends in one-vector columns of tall blocks (``microkernel.column_indexed``: 12 output
channels x 8 positions on AVX2, across the packed panels) instead. A 1x1 layer's images of one
band each go further: every image's positions past its last whole block are gathered, all
images together, into shared columns (the 49th pixel of 8 images: one column of 8, where each
image's own computed 7 lanes for nothing). Measured on the 2-core AVX2 EPYC, N8 7x7 1x1
layers (C320-1152, K128-1280) went from 0.66-0.80x torch to 0.92-0.98x.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
from numba import get_thread_id, njit, prange
from numba.extending import register_jitable

from .. import workspace
from ..arith import ceil_div
from ..bias import kernel_bias
from ..registry import Algorithm, register
from ..spec import ConvSpec, conv_spec
from .staging.phases import phase_spec, phased, split_phases
from .vector.ir import TARGET
from .vector.microkernel import (COLUMN_COST, best_block, best_rows, block_indexed,
                                 column_indexed, computed_positions, nr, tail_start,
                                 tail_start_jit, tall_rows)
from .staging.rows import stage_row

REDUCTION_SLICE = 128  # rows of B per pass: 128 x 64 float32 = 32 KiB, an L1's worth
BAND_TARGET = 512  # positions per task: the accumulator rows (Kp x positions) stay in L2
# an unpadded layer's images (not a 1x1 layer's) are stacked, blocks of positions running on
# across images, where that computes this much less: a 2x2 kernel on 3x3 images computes 6
# useful positions of a block of 24 per image; a 5x5 kernel on 14x14 images drops 4 rows of
# 14 stacked, so it stays
STACK_GAIN = 4 / 3
# the images' last positions are gathered into shared columns where each image's own last
# block or columns would compute this much more (the gather copies them)
GATHER_GAIN = 1.2
# ... and where that saves at least this many multiply-adds (the gather is a parallel pass of
# its own: some 20-40 us; N8 C32 7x7 K64 1x1, gathered, ran in 95 us, not 49)
GATHER_MIN_SAVED = 2_500_000
# a shared stage splits the output channels further (a chunk costs no restaging), until a
# task's accumulator rows fit a third of a typical L2 beside the panels of A and B
ACC_TARGET_BYTES = 320 << 10
# a layer that writes its blocks straight into the output runs each block of output channels
# over a group of position blocks whose B panels fit half of a 32 KiB L1 (see the docstring)
GROUP_BYTES = 16 << 10


def supports(spec: ConvSpec) -> bool:
    """Stride 1 with any dilation, or any stride with dilation 1 (on the phases)."""
    return spec.stride == (1, 1) or spec.dilation == (1, 1)


class Plan(NamedTuple):
    """What a layer's run needs, worked out once per spec and thread count."""
    target: ConvSpec  # the stride-1 layer computed: the layer, or its space-to-depth form
    read_input: bool  # B read from the input itself (bands inside each image), else staged
    pitch: int  # wide-row pitch: W + max(pl, pr) staged (rows share their padding), W read
    slot: int  # rows per image in the stacked images: H + max(pt, pb) staged, H read
    band: int  # output rows per task
    bands: int  # tasks per (image when read, else all images) and group, before the K split
    k_chunk: int  # output channels per task (a whole number of blocks)
    halo: int  # input rows staged beyond a band's output rows
    plane: int  # distance between channels in B's source (input image or staged band)
    positions: int  # wide-row positions per band, padded to whole blocks
    stage_len: int  # per-thread staging buffer, or the shared one's length
    shared: bool  # the stacked images staged once for all tasks (not per task)
    offsets: np.ndarray  # B's row r = (c, i, j) starts at b_off + offsets[r]
    rows: int  # micro-kernel block height (output channels per block)
    n_r: int  # micro-kernel block width (positions per block)
    k_pad: int  # output channels per group, padded to whole blocks
    gathered: int  # positions per image gathered from all images into one-vector columns


def pointwise_gathered(spec: ConvSpec) -> bool:
    """A 1x1 layer with stride or padding: it equals a stride-1 unpadded 1x1 layer on the
    input pixels it reads (:func:`gather_pointwise`), a quarter of the input at stride 2
    where the phases would copy all of it."""
    return spec.kh == spec.kw == 1 and (spec.stride != (1, 1) or spec.pad != (0, 0, 0, 0))


@lru_cache(maxsize=256)
def gathered_spec(spec: ConvSpec) -> ConvSpec:
    """The stride-1 unpadded 1x1 layer on the gathered pixels of ``spec``."""
    ho, wo = spec.out_size
    return conv_spec((spec.n, spec.c, ho, wo), spec.w_shape, groups=spec.groups,
                     dtype=spec.dtype)


def flattens(spec: ConvSpec) -> bool:
    """A stride-1 unpadded 1x1 layer on images wider than one column: it is the same layer on
    images of H*W rows of one pixel (:func:`flattened_spec`), the GEMM over all its pixels."""
    return ((spec.kh, spec.kw, spec.stride) == (1, 1, (1, 1)) and spec.pad == (0, 0, 0, 0)
            and spec.w > 1)


@lru_cache(maxsize=256)  # (validating a spec costs more than a small layer's GEMM)
def flattened_spec(spec: ConvSpec) -> ConvSpec:
    """``spec`` on (N, C, H*W, 1) images: its bands are runs of pixels, not of image rows, so
    a task's positions fill whole micro-kernel blocks (a 56x56 image's 504 of a band, not 9
    rows of 56 in 512 computed) and the tasks split finer."""
    return conv_spec((spec.n, spec.c, spec.h * spec.w, 1), spec.w_shape, groups=spec.groups,
                     dtype=spec.dtype)


@njit(parallel=True, cache=True)
def gather_pointwise(x, xg, sh, sw, pt, pl):
    """xg[n, c, oh, ow] = x[n, c, oh*sh - pt, ow*sw - pl], zero outside the input."""
    n_img, c_in, h, wid = x.shape
    ho, wo = xg.shape[2], xg.shape[3]
    src, dst = x.reshape(-1), xg.reshape(-1)
    lo = min(wo, max(0, (pl + sw - 1) // sw))  # columns whose input column lies in [0, wid)
    hi = max(lo, min(wo, (wid - 1 + pl) // sw + 1))
    for plane in prange(n_img * c_in):
        for oh in range(ho):
            ih = oh * sh - pt
            if ih < 0 or ih >= h:
                stage_row(dst, (plane * ho + oh) * wo, wo, wo, wo, src, 0, 1)
            else:
                stage_row(dst, (plane * ho + oh) * wo, wo, lo, hi, src,
                          (plane * h + ih) * wid + lo * sw - pl, sw)


def reads_input(spec: ConvSpec) -> bool:
    """Whether B's rows are read from the input itself (a stride-1 ``spec`` without padding:
    its wide rows are the image's rows), not from a staged copy."""
    return spec.pad == (0, 0, 0, 0)


def _shared(size: int, before: int, after: int, out: int) -> int:
    """Pitch of padded lines that share their padding (a line's trailing zeros are the next
    one's leading ones): size + max(before, after), where the output line still fits."""
    shared = size + max(before, after)
    return shared if out <= shared else size + before + after


@lru_cache(maxsize=256)
def plan(spec: ConvSpec, threads: int) -> Plan:
    """The plan of ``spec`` (see the module docstring). Staged layers stack their images (with
    shared padding) into one tall image whose bands may span several images, so small images
    share each pass over the weights; where that leaves fewer tasks than 2 per thread, the
    output channels are split into chunks too. A strided layer runs on its phases, but only
    over its own taps: tap (i, j) of input channel c reads phase (i mod sh, j mod sw) of c at
    (i div sh, j div sw), so the zero taps that the phase kernel would add (7 of 16 for 3x3 at
    stride 2) cost nothing."""
    if pointwise_gathered(spec):
        return plan(gathered_spec(spec), threads)
    if flattens(spec):
        return plan(flattened_spec(spec), threads)
    target = phase_spec(spec) if phased(spec) else spec
    (ekh, ekw), (dh, dw) = target.effective_kernel, target.dilation
    (ho, wo), read = target.out_size, reads_input(target)
    rows = best_rows(target.kg)
    n_r = nr(spec.dtype, rows)
    per_image = ho * target.w / (ceil_div(ho * target.w, n_r) * n_r)  # useful positions
    pointwise = target.kh == target.kw == 1  # (flattened: images of one-pixel rows)
    if read and target.n > 1 and not pointwise and ho / target.h >= STACK_GAIN * per_image:
        read = False  # small images: stacked, so that blocks run on across images
    pt, pb, pl, pr = target.pad
    pitch = target.w if read else _shared(target.w, pl, pr, wo)
    slot = target.h if read else _shared(target.h, pt, pb, ho)
    lines = ho if read else (target.n - 1) * slot + ho  # output rows a band may start in
    band = max(1, min(lines, BAND_TARGET // pitch))
    rows = best_block(target.kg, band * pitch, spec.dtype)
    n_r = nr(spec.dtype, rows)
    whole_blocks = pitch == 1  # a flattened 1x1 layer's bands: whole micro-kernel blocks
    if whole_blocks:
        band = min(lines, max(n_r, BAND_TARGET // n_r * n_r))
    units = target.n * target.groups if read else target.groups
    k_pad = ceil_div(target.kg, rows) * rows  # output channels per group, whole blocks
    # too few tasks: split the output channels where the weights outweigh the staged band
    # (each chunk restages the band), else the rows (each band re-reads the weights)
    weights_first = spec.cg * spec.kh * spec.kw * k_pad > target.cg * (band + ekh - 1) * pitch
    chunks = 1
    while units * ceil_div(lines, band) * chunks < 2 * threads:
        if weights_first and chunks < k_pad // rows:
            chunks += 1
        elif whole_blocks and band > n_r:  # halved in whole blocks, rounding down: a short
            # last band evens out the threads (17 blocks as 4 4 4 4 1, not 5 5 5 2), where
            # even_band below finds no even split (here it does: 3 3 3 3 3 2)
            band = max(1, ceil_div(band, n_r) // 2) * n_r
        elif band > 1:
            band = (band + 1) // 2
        else:
            break
    if whole_blocks:
        band = even_band(lines, band, n_r, units * chunks, threads)
    k_chunk = ceil_div(k_pad // rows, chunks) * rows
    # the kernel's reach, and with shared row padding one row more: the last row's right
    # padding is the leading zeros of the row after it
    halo = ekh - 1 + (0 if read or pitch == target.padded_size[1] else 1)
    # staged once for all tasks where several tasks would stage the same band (chunks of
    # output channels) or where small images were stacked: then B's plane is every row
    shared = not read and (chunks > 1 or reads_input(target))
    bands = ceil_div(lines, band)
    plane = target.h * target.w if read else ((bands * band if shared else band) + halo) * pitch
    positions = ceil_div(band * pitch, n_r) * n_r  # (the band may have been halved)
    if shared:
        itemsize = np.dtype(spec.dtype).itemsize
        while k_chunk > rows and k_chunk * positions * itemsize > ACC_TARGET_BYTES:
            chunks += 1
            k_chunk = ceil_div(k_pad // rows, chunks) * rows
    (sh, sw) = spec.stride if phased(spec) else (1, 1)
    c, i, j = np.meshgrid(np.arange(spec.cg), np.arange(spec.kh), np.arange(spec.kw),
                          indexing="ij")
    channel = (c * sh + i % sh) * sw + j % sw
    offsets = (channel * plane + (i // sh) * dh * pitch + (j // sw) * dw).reshape(-1)
    offsets = offsets.astype(np.int64)
    offsets.setflags(write=False)
    stage_len = (target.c if shared else target.cg) * plane + ekw + n_r
    # images of one-pixel rows, each one band: the positions past each image's last whole
    # block are gathered from all images into shared one-vector columns where that computes
    # less than each image's own last block or columns
    whole, lanes = ho // n_r * n_r, TARGET.lanes(spec.dtype)
    own = (positions - whole if tail_start(ho, n_r, lanes) == positions
           else (computed_positions(ho, n_r, lanes) - whole) * COLUMN_COST)
    saved = (own - (ho - whole) * COLUMN_COST) * target.n * k_pad * target.cg
    gathered = ho - whole if (read and pitch == 1 and bands == 1 and target.n > 1
                              and own > GATHER_GAIN * (ho - whole) * COLUMN_COST
                              and saved >= GATHER_MIN_SAVED) else 0
    return Plan(target, read, pitch, slot, band, bands, k_chunk, halo, plane, positions,
                stage_len, shared, offsets, rows, n_r, k_pad, gathered)


def even_band(lines: int, band: int, n_r: int, per_band: int, threads: int) -> int:
    """A flattened 1x1 layer's band of ``lines`` pixels, resized in whole blocks of ``n_r`` so
    that its tasks (``per_band`` per band) are a whole number per thread and its bands of one
    length but the last (shorter by fewer blocks than there are bands), where no more than
    twice as many bands do it; else the band stays. One image of 3136 pixels ran as 7 bands
    of 504 on 2 threads, one thread taking four of them; as 8 of 408, the median of five
    interleaved runs on the 2-core AVX2 EPYC: N1 C64 56x56 K256 and C256 56x56 K64 1.09x,
    C24 56x56 K144 1.05x, C144 56x56 K24 0.95x; 784 pixels as 2 bands of 408 and 376, not
    504 and 280: N1 C128 28x28 K512 and C256 28x28 K512 1.00x."""
    bands = ceil_div(lines, band)
    # an image's one band stays (its last pixels may be gathered with the other images')
    if bands == 1 or threads <= 1:
        return band
    blocks = ceil_div(lines, n_r)
    for wanted in range(bands, 2 * bands + 1):
        size = ceil_div(blocks, wanted)
        if ceil_div(blocks, size) * per_band % threads == 0:
            return min(lines, size * n_r)
    return band  # (an odd count of blocks in few bands: a short last band evens them out)


def pack_weights(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(groups, Kp/rows, C/groups*kh*kw, rows): A as the micro-kernel reads it, one panel per
    block of ``rows`` output channels, each reduction step's ``rows`` weights contiguous, so a
    block's pass over a slice of the reduction reads one contiguous run (zero past K/groups;
    the kernel rotated for true convolution)."""
    if spec.flip:
        w = w[:, :, ::-1, ::-1]
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    weights = np.ascontiguousarray(w).reshape(spec.groups, spec.kg, -1)
    packed = workspace.empty((spec.groups, layer.k_pad // layer.rows, weights.shape[2],
                              layer.rows), w.dtype)
    pack = _pack_panels if weights.size >= PARALLEL_PACK_FROM else _pack_panels_serial
    pack(weights, packed)
    return packed


@njit(inline="always")
def _pack_panel(weights, packed, task):
    """Panel ``task`` (group, block): packed[g, kb, r, i] = weights[g, kb*rows + i, r], zero
    past the group's channels."""
    kg, reduction = weights.shape[1], weights.shape[2]
    blocks, rows = packed.shape[1], packed.shape[3]
    g, kb = task // blocks, task % blocks
    panel = packed[g, kb]
    for i in range(rows):
        k = kb * rows + i
        if k < kg:
            for r in range(reduction):
                panel[r, i] = weights[g, k, r]
        else:
            for r in range(reduction):
                panel[r, i] = 0.0


@njit(parallel=True, cache=True)
def _pack_panels(weights, packed):
    for task in prange(packed.shape[0] * packed.shape[1]):
        _pack_panel(weights, packed, task)


@njit(cache=True)
def _pack_panels_serial(weights, packed):
    for task in range(packed.shape[0] * packed.shape[1]):
        _pack_panel(weights, packed, task)


PARALLEL_PACK_FROM = 1 << 16  # weights below which starting the threads costs more than the
# copy they share


@njit(cache=True)
def _stage_stacked(stage, x, c0, cg, first, count, plane, pitch, slot, pt, pl):
    """stage[c*plane + r*pitch + q]: row ``first + r`` of channel c0 + c of the stacked image
    (image n's row ih at n*slot + pt + ih, column iw at pl + iw; zeros around), flat and at
    unsigned offsets (a view or slice assignment per row made staging a tenth of the time).
    Without column padding (pitch W) an image's rows are one run in both, copied at once: a
    7x7 image's rows one by one ran at a fifth of the copy's speed; the rows past the last
    image are zeroed as one run (one by one, a division each, they took 0.37 of 0.53 ms of N1
    C384 28x28 K16 1x1 on one core, whose short last band is staged)."""
    n_img, _, h, wid = x.shape
    src = x.reshape(-1)
    for c in range(cg):
        r = 0
        while r < count:
            n, ih = (first + r) // slot, (first + r) % slot - pt
            at = c * plane + r * pitch
            if n >= n_img:  # past the last image: the rest zeroed as one run
                stage_row(stage, at, pitch * (count - r), 0, 0, src, 0, 1)
                break
            if ih < 0 or ih >= h:
                stage_row(stage, at, pitch, pitch, pitch, src, 0, 1)
                r += 1
                continue
            run = min(h - ih, count - r) if pitch == wid else 1  # rows copied as one
            stage_row(stage, at, pitch * run, pl, pl + wid * run, src,
                      ((n * x.shape[1] + c0 + c) * h + ih) * wid, 1)
            r += run


@njit(parallel=True, cache=True)
def _stage_shared(stage, x, count, plane, pitch, slot, pt, pl):
    """Every channel's ``count`` stacked rows into stage[c*plane:], channels in parallel; the
    reach past the last plane zeroed."""
    c_in = x.shape[1]
    for c in prange(c_in):
        _stage_stacked(stage[c * plane:(c + 1) * plane], x, c, 1, 0, count, plane, pitch, slot,
                       pt, pl)
    stage[c_in * plane:] = 0.0


@njit(cache=True)
def _stage_shared_serial(stage, x, count, plane, pitch, slot, pt, pl):
    """:func:`_stage_shared` on the calling thread: for a stage smaller than
    PARALLEL_STAGE_BYTES, waking the other threads costs more than the copy."""
    c_in = x.shape[1]
    for c in range(c_in):
        _stage_stacked(stage[c * plane:(c + 1) * plane], x, c, 1, 0, count, plane, pitch, slot,
                       pt, pl)
    stage[c_in * plane:] = 0.0


@njit(parallel=True, cache=True)
def _implicit_gemm(x, weights, panels, groups, mr, k_pad, offsets, out, b, pt, pl, pitch, slot,
                   band, bands, k_chunk, halo, plane, read_input, shared, stage_ws, acc_ws, n_r,
                   slice_rows, lanes, tall, gathered):
    """Each task: a band of output rows and a chunk of output channels of one group. B is the
    input itself (bands inside one image) or the band staged from the stacked images; the
    micro-kernel runs over (reduction slice, block of positions, block of output channels);
    the band's rows are copied out of the accumulator rows with the bias. ``shared``: every
    band was staged beforehand into stage_ws[0] (all rows of a channel in one plane). A is
    ``weights``, flat: packed panels (``panels``: :func:`pack_weights`) or the layer's own
    weights, rows of the reduction (k_pad = K/groups then); both put a block of output
    channels at (g*k_pad + k0) * reduction. A band whose last block would compute a vector
    or more of positions for nothing ends in one-vector columns (``lanes`` positions) of
    ``tall`` output channels (``microkernel.tail_start``); the last ``gathered`` positions of
    each image are left to :func:`_gathered_columns`."""
    n_img, c_in, h, wid = x.shape
    reduction = offsets.shape[0]
    _, k_out, ho, wo = out.shape
    kg, cg = k_out // groups, c_in // groups
    chunks = (k_pad + k_chunk - 1) // k_chunk
    units = n_img * groups if read_input else groups
    ldc = acc_ws.shape[2]
    source, flat_out = x.reshape(-1), out.reshape(-1)
    direct_out = writes_in_place(read_input, pitch, wo, reduction, slice_rows)
    lines = ho if read_input else (n_img - 1) * slot + ho
    for task in prange(units * bands * chunks):
        kc0 = (task % chunks) * k_chunk
        kc1 = min(k_pad, kc0 + k_chunk)
        line0 = (task // chunks % bands) * band  # first output row, in its image or stacked
        unit = task // (chunks * bands)
        g = unit % groups
        rows = min(band, lines - line0)
        first = line0 + unit // groups * slot if read_input else line0  # stacked row
        length = rows * pitch - gathered  # (those computed by _gathered_columns)
        positions = (length + n_r - 1) // n_r * n_r
        columns_from = tail_start_jit(length, n_r, lanes)
        me = get_thread_id()
        stage, acc = stage_ws[0 if shared else me], acc_ws[me]
        n = unit // groups
        b_off = ((n * c_in + g * cg) * h + line0) * wid
        if shared:
            rows_from = stage_ws[0]
            b_off = g * cg * plane + line0 * pitch
        elif read_input and b_off + offsets[-1] + positions <= source.shape[0]:
            rows_from = source
        else:  # staged: padded, or the image's last block would read past the input
            rows_from = stage
            b_off = 0
            # every row of the plane, also past a short last band: no stale row is read
            _stage_stacked(stage, x, g * cg, cg, first, band + halo, plane, pitch, slot, pt, pl)
            stage[cg * plane:] = 0.0  # the last blocks' reach past the last plane
        c_flat = acc.reshape(-1)
        a_base = g * k_pad * reduction
        out_base = ((n * k_out + g * kg) * ho + line0) * wo
        for r0 in range(0, reduction, slice_rows):
            count = min(slice_rows, reduction - r0)
            rows_at = offsets[r0:r0 + count]
            if direct_out:  # each block of output channels over a group of position blocks
                group = position_group(count, n_r, source.itemsize)
                for tg in range(0, columns_from, group):
                    t_end = min(tg + group, columns_from)
                    for k0 in range(kc0, kc1, mr):
                        for t0 in range(tg, t_end, n_r):
                            _whole_block(weights, panels, mr, n_r, reduction, a_base, r0, k0,
                                         kc0, kg, rows_from, b_off + t0, rows_at, count, t0,
                                         length, flat_out, out_base + k0 * ho * wo + t0,
                                         ho * wo, c_flat, ldc, True)
            else:  # every block of output channels over one block of positions, then the next
                for t0 in range(0, columns_from, n_r):
                    for k0 in range(kc0, kc1, mr):
                        _whole_block(weights, panels, mr, n_r, reduction, a_base, r0, k0, kc0,
                                     kg, rows_from, b_off + t0, rows_at, count, t0, length,
                                     flat_out, 0, 0, c_flat, ldc, False)
            for t0 in range(columns_from, length, lanes):  # the band's last positions
                _columns(weights, panels, mr, tall, a_base, reduction, r0, kc0, kc1, rows_from,
                         b_off + t0, rows_at, c_flat, t0 - kc0 * ldc, ldc, count)
        biased = b.shape[0] > 0
        for k in range(kc0, min(kc1, kg)):
            channel = g * kg + k
            # (in the array's type: a 0.0 default would widen every sum)
            bias = b[channel] if biased else c_flat[0] * 0
            if direct_out:  # whole blocks are in place: their bias, then the edges copied
                done = length // n_r * n_r if k // mr * mr + mr <= kg else 0
                at = out_base + k * ho * wo
                if biased:
                    _copy_out(flat_out, at, flat_out, at, done, bias, biased)
                _copy_out(flat_out, at + done, c_flat, (k - kc0) * ldc + done, length - done,
                          bias, biased)
                continue
            r = 0
            while r < rows:
                image, oh = (first + r) // slot, (first + r) % slot
                if oh >= ho:  # a row of the padding between stacked images
                    r += 1
                    continue
                # rows without column padding are one run in both: copied at once
                run = min(ho - oh, rows - r) if pitch == wo else 1
                _copy_out(flat_out, ((image * k_out + channel) * ho + oh) * wo, c_flat,
                          (k - kc0) * ldc + r * pitch, wo * run, bias, biased)
                r += run


@njit(inline="always")
def _whole_block(weights, panels, mr, n_r, reduction, a_base, r0, k0, kc0, kg, b, b_off,
                 rows_at, count, t0, length, out, out_at, out_ld, acc, ldc, direct):
    """One whole block: output channels k0.. by positions t0.. over the reduction slice from
    row r0, written straight into ``out`` at ``out_at`` (``direct``, where the block lies
    inside the layer's channels and the band) or into the accumulator rows ``acc``, added to
    them after the first slice."""
    # A's panel of this block of output channels, from reduction row r0 on
    a_at = a_base + k0 * reduction + (r0 * mr if panels else r0)
    if direct and k0 + mr <= kg and t0 + n_r <= length:
        c_out, c_at, c_ld, c_add = out, out_at, out_ld, 0
    else:
        c_out, c_at, c_ld, c_add = acc, (k0 - kc0) * ldc + t0, ldc, r0 > 0
    # A's strides as literals in each branch: LLVM folds them into the loads (a stride read
    # at run time made the block 2x slower)
    if panels:
        block_indexed(mr, weights, a_at, 1, mr, b, b_off, rows_at, c_out, c_at, c_ld, count,
                      c_add)
    else:
        block_indexed(mr, weights, a_at, reduction, 1, b, b_off, rows_at, c_out, c_at, c_ld,
                      count, c_add)


@njit(inline="always")
def _columns(weights, panels, mr, tall, a_base, reduction, r0, k0, k1, b, b_off, rows_at, c,
             c_base, ldc, count):
    """Output channels k0..k1 of one one-vector column over the reduction slice from row r0:
    blocks of ``tall`` channels, then one panel of ``mr`` at a time; channel k's sums at
    c[c_base + k*ldc], added to them after the first slice."""
    k = k0
    while k < k1:
        whole = k + tall <= k1
        a_at = a_base + k * reduction + (r0 * mr if panels else r0)
        # A's strides as literals in each branch, as for the whole blocks
        if panels:
            column_indexed(mr, whole, weights, a_at, 1, mr, mr * reduction, b, b_off, rows_at,
                           c, c_base + k * ldc, ldc, count, r0 > 0)
        else:
            column_indexed(mr, whole, weights, a_at, reduction, 1, mr * reduction, b, b_off,
                           rows_at, c, c_base + k * ldc, ldc, count, r0 > 0)
        k += tall if whole else mr


@njit(parallel=True, cache=True)
def _gathered_columns(x, weights, panels, groups, mr, k_pad, out, b, count, tails, acc,
                      offsets, tall, lanes, slice_rows):
    """The last ``count`` positions of every image (pixels of images of one-pixel rows),
    gathered into tails[g, c, n*count + q] (zero past the last; B's row c at offsets[c] =
    c * width), computed as one-vector columns of ``tall`` output channels and scattered into
    the output with the bias: the 49th pixels of 8 7x7 images make one column of 8, where each
    image's own column computed 7 lanes for nothing."""
    n_img, c_in, p = x.shape[0], x.shape[1], x.shape[2]
    k_out = out.shape[1]
    kg, cg = k_out // groups, c_in // groups
    width = tails.shape[2]
    start = p - count
    used = n_img * count
    reduction = cg
    for plane in prange(groups * cg):
        g, c = plane // cg, plane % cg
        for n in range(n_img):
            for q in range(count):
                tails[g, c, n * count + q] = x[n, g * cg + c, start + q, 0]
        for t in range(used, width):
            tails[g, c, t] = 0.0
    source, acc_flat = tails.reshape(-1), acc.reshape(-1)
    blocks = (k_pad + tall - 1) // tall
    biased = b.shape[0] > 0
    for task in prange(groups * blocks):
        g, k0 = task // blocks, task % blocks * tall
        k1 = min(k_pad, k0 + tall)
        a_base = g * k_pad * reduction
        for r0 in range(0, reduction, slice_rows):
            rows_count = min(slice_rows, reduction - r0)
            rows_at = offsets[r0:r0 + rows_count]
            for t0 in range(0, width, lanes):
                _columns(weights, panels, mr, tall, a_base, reduction, r0, k0, k1, source,
                         g * cg * width + t0, rows_at, acc_flat, g * k_pad * width + t0, width,
                         rows_count)
        for k in range(k0, min(k1, kg)):
            channel = g * kg + k
            for n in range(n_img):
                for q in range(count):
                    if biased:
                        out[n, channel, start + q, 0] = acc[g, k, n * count + q] + b[channel]
                    else:
                        out[n, channel, start + q, 0] = acc[g, k, n * count + q]


@njit(inline="always")
def _copy_out(dst, d_at, src, s_at, count, bias, biased):
    """dst[d_at + q] = src[s_at + q] (+ bias) for q < count, at unsigned offsets (a view per
    output row cost more than the copy on small planes)."""
    to, origin = np.uint64(d_at), np.uint64(s_at)
    if biased:
        for q in range(count):
            dst[to + np.uint64(q)] = src[origin + np.uint64(q)] + bias
    else:
        for q in range(count):
            dst[to + np.uint64(q)] = src[origin + np.uint64(q)]


def _scratch_shapes(layer: Plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per thread the staged band (or one shared stage) and the accumulator rows (a chunk of
    output channels x positions)."""
    threads = numba.config.NUMBA_NUM_THREADS
    return ((1 if layer.shared else threads, layer.stage_len),
            (threads, layer.k_chunk, layer.positions))


def _gathered_shapes(layer: Plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The gathered positions (groups, C/groups, width) and their sums (groups, Kp, width),
    width: every image's gathered positions, in whole vectors."""
    target = layer.target
    lanes = TARGET.lanes(target.dtype)
    width = ceil_div(target.n * layer.gathered, lanes) * lanes
    return (target.groups, target.cg, width), (target.groups, layer.k_pad, width)


# a call reads the weights in place, rather than packing them, for GEMMs of at most this many
# columns: each packed weight serves N*Ho*Wo of them, and with few the packing pass costs
# more than the packed panels save, however long the reduction (2-core AVX2 EPYC, per call,
# packing -> in place: N1 C512 7x7 K512 3x3 2.12 -> 1.67 ms, N1 C512 14x14 K512 3x3 6.13 ->
# 5.71, N1 C1024 7x7 K1024 3x3 12.1 -> 8.5; prepared, packed once: 1.61, 5.79, 6.98)
IN_PLACE_COLUMNS = 256

# a shared stage smaller than this is copied on the calling thread, where starting a parallel
# region (about 5 us to wake the pool) cost more than it saved (2-core AVX2 EPYC, parallel ->
# serial: N1 C32 7x7 pad 1, 10 KB, 9.2 -> 4.0 us; N1 C64 14x14, 64 KB, 16 -> 12 us; N8 C64
# 7x7, 135 KB, 29 -> 35 us)
PARALLEL_STAGE_BYTES = 1 << 17


def weights_read_in_place(spec: ConvSpec) -> bool:
    """Whether a call reads A from the layer's own weights (rows of the reduction) rather than
    packing them first: a GEMM of few columns, where no block of output channels needs zero
    padding and the kernel no rotation. (Measured on a 2-core AVX2 EPYC: packing N1 C2048 7x7
    K512 1x1 took 0.30 ms beside its 1.0 ms GEMM; in place the GEMM took 1.2 ms and nothing
    else.)"""
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    ho, wo = spec.out_size
    return (not spec.flip and layer.k_pad == layer.target.kg
            and spec.n * ho * wo <= IN_PLACE_COLUMNS)


def implicit_gemm_workspace_bytes(spec: ConvSpec) -> int:
    """Packed weights (unless read in place), per-thread staging and accumulators, the
    gathered last positions of the images and their sums; for a strided layer also its
    phases. While the weights are packed for true convolution, their
    rotated copy beside the packed ones."""
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    stage, acc = _scratch_shapes(layer)
    packed = 0 if weights_read_in_place(spec) else workspace.nbytes(
        (spec.groups, spec.cg * spec.kh * spec.kw, layer.k_pad), spec.dtype)
    total = packed + sum(workspace.nbytes(shape, spec.dtype) for shape in (stage, acc))
    if layer.gathered:
        total += sum(workspace.nbytes(shape, spec.dtype) for shape in _gathered_shapes(layer))
    if pointwise_gathered(spec):
        total += workspace.nbytes(layer.target.x_shape, spec.dtype)
    elif phased(spec):
        total += workspace.nbytes(phase_spec(spec).x_shape, spec.dtype)
    rotated = workspace.nbytes(spec.w_shape, spec.dtype) if spec.flip else 0
    return max(total, packed + rotated)


def implicit_gemm_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                         b: np.ndarray | None = None,
                         packed: np.ndarray | None = None) -> np.ndarray:
    """Implicit GEMM convolution (see the module docstring), the bias ``b`` added as the
    outputs are copied out; ``packed``: the packed weights, when prepared beforehand."""
    if pointwise_gathered(spec) and spec.n:
        target = gathered_spec(spec)
        xg = workspace.empty(target.x_shape, x.dtype)
        gather_pointwise(np.ascontiguousarray(x), xg, spec.stride[0], spec.stride[1],
                         spec.pad[0], spec.pad[2])
        return implicit_gemm_conv2d(xg, w, target, b, packed)
    if flattens(spec):
        target = flattened_spec(spec)
        flat = implicit_gemm_conv2d(np.ascontiguousarray(x).reshape(target.x_shape), w, target,
                                    b, packed)
        return flat.reshape(spec.out_shape)
    out = np.empty(spec.out_shape, dtype=x.dtype)
    if spec.n == 0:
        return out
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    panels = True
    if packed is None:
        if weights_read_in_place(spec):
            packed, panels = np.ascontiguousarray(w), False
        else:
            packed = pack_weights(w, spec)
    target = layer.target
    pt, pl = spec.pad[0], spec.pad[2]
    if phased(spec):
        xs = workspace.empty(target.x_shape, x.dtype)
        split_phases(x, xs, spec.stride[0], spec.stride[1], pt, pl)
        x, pt, pl = xs, 0, 0
    stage_shape, acc_shape = _scratch_shapes(layer)
    stage, acc = workspace.empty(stage_shape, x.dtype), workspace.empty(acc_shape, x.dtype)
    x = np.ascontiguousarray(x)
    if layer.shared:
        stager = (_stage_shared if stage.nbytes >= PARALLEL_STAGE_BYTES
                  else _stage_shared_serial)
        stager(stage[0], x, layer.plane // layer.pitch, layer.plane, layer.pitch, layer.slot,
               pt, pl)
    weights, bias = packed.reshape(-1), kernel_bias(b, x.dtype)
    lanes, tall = TARGET.lanes(x.dtype), tall_rows(layer.rows)
    if layer.gathered < layer.target.out_size[0]:  # (else every position is gathered)
        _implicit_gemm(x, weights, panels, spec.groups, layer.rows, layer.k_pad, layer.offsets,
                       out, bias, pt, pl, layer.pitch, layer.slot, layer.band, layer.bands,
                       layer.k_chunk, layer.halo, layer.plane, layer.read_input, layer.shared,
                       stage, acc, layer.n_r, REDUCTION_SLICE, lanes, tall, layer.gathered)
    if layer.gathered:
        tails_shape, tails_acc_shape = _gathered_shapes(layer)
        _gathered_columns(x, weights, panels, spec.groups, layer.rows, layer.k_pad, out, bias,
                          layer.gathered, workspace.empty(tails_shape, x.dtype),
                          workspace.empty(tails_acc_shape, x.dtype),
                          np.arange(tails_shape[1], dtype=np.int64) * tails_shape[2],
                          tall, lanes, REDUCTION_SLICE)
    return out


def _prepared(w: np.ndarray, spec: ConvSpec, b: np.ndarray | None = None):
    """The weights packed once."""
    packed = pack_weights(w, spec)
    return lambda x: implicit_gemm_conv2d(x, w, spec, b, packed)


@register_jitable
def position_group(count, n_r, itemsize):
    """Positions per group of whole blocks that a block of output channels runs over before
    the next block of channels, for a layer writing straight into the output: as many blocks
    as keep their B panels (``count`` rows of ``n_r``) within GROUP_BYTES, at least one."""
    return max(1, GROUP_BYTES // (count * n_r * itemsize)) * n_r


@register_jitable
def writes_in_place(read_input, pitch, wo, reduction, slice_rows):
    """Whether the kernel writes its whole blocks straight into the output, once each, with no
    copy-out pass: a one-slice reduction whose wide rows are the output's rows (a shallow 1x1
    layer read in place). The kernel and its cost features ask the same question."""
    return read_input and pitch == wo and reduction <= slice_rows


def _band_lengths(layer: Plan) -> list[int]:
    """Wide-row positions of each band of a task unit (an image when read in place, else the
    stacked images): whole bands, then the last one's rows."""
    ho = layer.target.out_size[0]
    lines = ho if layer.read_input else (layer.target.n - 1) * layer.slot + ho
    last = lines - (layer.bands - 1) * layer.band
    # (a band of one image whose last positions are gathered computes the rest)
    return [layer.band * layer.pitch] * (layer.bands - 1) + [last * layer.pitch
                                                             - layer.gathered]


def implicit_gemm_cost_features(spec: ConvSpec, biased: bool | None = None) -> list[float]:
    """The micro-kernel's multiply-adds as computed (output channels padded to whole blocks,
    positions to whole blocks of the wide rows and one-vector columns, these weighted by
    their slower rate, the rows of padding between stacked images),
    the staged input values, the micro-kernel calls, the outputs copied out of the
    accumulators (a shallow 1x1 layer's whole blocks are written in place: only their edges,
    or every output where a bias is added after), and the phases' copy for a strided layer.
    ``biased``: the layer's own bias flag where ``spec`` is the form it runs as."""
    biased = spec.bias if biased is None else biased
    if flattens(spec):
        return implicit_gemm_cost_features(flattened_spec(spec), biased)
    layer = plan(spec, numba.config.NUMBA_NUM_THREADS)
    target = layer.target
    if pointwise_gathered(spec):
        gathered = implicit_gemm_cost_features(target, biased)
        gathered[5] = float(spec.n * spec.c * target.h * target.w)  # the gather's copy
        return gathered
    units = target.n * target.groups if layer.read_input else target.groups
    chunks = ceil_div(layer.k_pad, layer.k_chunk)
    tasks = units * layer.bands * chunks
    reduction = spec.cg * spec.kh * spec.kw
    # per band: positions in whole blocks, and one-vector columns (weighted by their rate)
    lanes, tall = TARGET.lanes(spec.dtype), tall_rows(layer.rows)
    blocks = columns = 0.0
    for length in _band_lengths(layer):
        whole = tail_start(length, layer.n_r, lanes)
        blocks += whole
        columns += computed_positions(length, layer.n_r, lanes) - whole
    blocks, columns = units * blocks, units * columns
    gathered = 0
    if layer.gathered:  # every image's last positions, in the columns they share
        (groups, cg, width), _ = _gathered_shapes(layer)
        columns += groups * width
        gathered = groups * cg * width
    column_calls = columns / lanes * (layer.k_pad // tall + layer.k_pad % tall // layer.rows)
    calls = ceil_div(reduction, REDUCTION_SLICE) * (
        blocks / layer.n_r * (layer.k_pad // layer.rows) + column_calls)
    if layer.shared:
        staged = target.c * layer.plane
    else:
        staged = gathered if layer.read_input else tasks * target.cg * (
            layer.band + layer.halo) * layer.pitch
    phases = float(target.n * target.c * target.h * target.w) if phased(spec) else 0.0
    copied = float(spec.n * spec.k * spec.out_size[0] * spec.out_size[1])
    if not biased and writes_in_place(layer.read_input, layer.pitch, target.out_size[1],
                                      reduction, REDUCTION_SLICE):
        copied -= layer.target.kg // layer.rows * layer.rows * blocks
    return [1.0, float(layer.k_pad * (blocks + COLUMN_COST * columns) * reduction),
            float(staged), float(calls), copied, phases]


register(Algorithm(
    name="implicit_gemm", op="conv2d", device="cpu", run=implicit_gemm_conv2d,
    prepare=_prepared, fused_bias=True, supports=supports,
    limits="strided layers with dilation > 1 are left to direct",
    workspace_bytes=implicit_gemm_workspace_bytes,
    cost_features=implicit_gemm_cost_features, rough_cost=lambda spec: 0.5 * spec.flops,
    description="GEMM on the register-blocked micro-kernel, B read from the staged band "
                "through an offset table"))
