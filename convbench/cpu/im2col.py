"""im2col + GEMM on the CPU (the cuDNN "GEMM" algorithm).

For each image, a Numba kernel unfolds every receptive field into a column of a
(C*kh*kw) x (Ho*Wo) matrix, then one BLAS GEMM ``w.reshape(K, C*kh*kw) @ cols`` writes the
image's K output planes in place. Where an image has few output pixels (the 7x7 and 14x14
layers of deep networks at batch > 1), a GEMM that narrow runs BLAS far below its speed, so
several images are unfolded side by side into one matrix of at least GEMM_COLUMNS columns
(a parallel unfold), one GEMM computes them all, and their outputs are copied into place. Stride, padding and dilation are applied while unfolding
(padding becomes zeros in the matrix); ``flip`` unfolds the taps in reverse order, so the
kernel is never copied. A 1x1 stride-1 unpadded layer (the inception bottleneck) needs no
unfold at all: the image already is the matrix, and the layer is a plain GEMM. With channel
groups, each group is its own (C/groups*kh*kw)-row unfold and GEMM.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec


@njit(cache=True)
def _unfold_image(x, n, c0, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
    """cols[(c, i, j), (oh, ow)] = padded x[n, c0 + c, oh*sh + i*dh, ow*sw + j*dw] for the
    cols.shape[0] // (kh*kw) channels from c0 (taps reversed when ``flip``).

    Serial on purpose: the GEMM that follows runs on OpenBLAS's threads, and workers of a
    parallel unfold that keep spinning after it would take the cores from the GEMM; the unfold
    is a small part of the time.
    """
    h, wid = x.shape[2], x.shape[3]
    for row in range(cols.shape[0]):
        c = c0 + row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        ti, tj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
        for oh in range(ho):
            ih = oh * sh - pt + ti * dh
            base = oh * wo
            if ih < 0 or ih >= h:  # the whole output row of this tap reads zero padding
                for ow in range(wo):
                    cols[row, base + ow] = 0.0
                continue
            for ow in range(wo):
                iw = ow * sw - pl + tj * dw
                cols[row, base + ow] = x[n, c, ih, iw] if 0 <= iw < wid else 0.0


@njit(parallel=True, cache=True)
def _unfold_images(x, n0, count, c0, cols, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, flip):
    """cols[(c, i, j), img*Ho*Wo + (oh, ow)] for the ``count`` images from n0 side by side,
    in parallel over (row, image)."""
    h, wid = x.shape[2], x.shape[3]
    pixels = ho * wo
    depth = cols.shape[0]
    for task in prange(depth * count):
        row, img = task // count, task % count
        c = c0 + row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        ti, tj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
        n, base = n0 + img, img * pixels
        for oh in range(ho):
            ih = oh * sh - pt + ti * dh
            at = base + oh * wo
            if ih < 0 or ih >= h:
                for ow in range(wo):
                    cols[row, at + ow] = 0.0
                continue
            for ow in range(wo):
                iw = ow * sw - pl + tj * dw
                cols[row, at + ow] = x[n, c, ih, iw] if 0 <= iw < wid else 0.0


@njit(parallel=True, cache=True)
def _place(product, out, n0, count, k0):
    """out[n0 + img, k0 + k] = the image's columns of product[k] (K x count*Ho*Wo)."""
    kg = product.shape[0]
    pixels = out.shape[2] * out.shape[3]
    for task in prange(count * kg):
        img, k = task // kg, task % kg
        plane = out[n0 + img, k0 + k].reshape(pixels)
        plane[:] = product[k, img * pixels:(img + 1) * pixels]


GEMM_COLUMNS = 512  # columns a GEMM needs for BLAS to run near its speed (measured: 7x7 and
# 14x14 layers at batch 8 ran 1.1-1.4x faster as one GEMM over several images)


SIDE_BY_SIDE_FROM = 1 << 16  # matrix values below which starting parallel regions costs more
# than the narrow GEMMs lose (squeeze-excitation layers ran 3.7x slower side by side)


def images_per_gemm(spec: ConvSpec) -> int:
    """Images unfolded side by side into one GEMM: enough for GEMM_COLUMNS columns, where the
    matrix is large enough to be worth the parallel unfold and copy."""
    pixels = spec.out_size[0] * spec.out_size[1]
    if spec.n <= 1 or pixels >= GEMM_COLUMNS:
        return 1
    images = min(spec.n, ceil_div(GEMM_COLUMNS, pixels))
    if spec.cg * spec.kh * spec.kw * images * pixels < SIDE_BY_SIDE_FROM:
        return 1
    return images


def _is_pointwise(spec: ConvSpec) -> bool:
    """A 1x1, stride-1, unpadded layer: the input already is the GEMM operand."""
    return (spec.kh, spec.kw, spec.stride) == (1, 1, (1, 1)) and not any(spec.pad)


def _fully_connected(spec: ConvSpec) -> bool:
    """A pointwise layer on images of one pixel, without groups (squeeze-excitation layers):
    one GEMM over all the images, where one per image left BLAS a matrix-vector product each
    (N8 C20 1x1 K480: 8 of them took 34 us)."""
    return _is_pointwise(spec) and spec.h == spec.w == 1 and spec.groups == 1


def im2col_workspace_bytes(spec: ConvSpec) -> int:
    """One group of one image's unfolded matrix, reused for every group and image (nothing
    for a pointwise layer); or, for several images per GEMM, their matrix and product."""
    if _fully_connected(spec):
        return 0
    ho, wo = spec.out_size
    images = images_per_gemm(spec)
    if images > 1:  # several images' matrix and their product
        return (workspace.nbytes((spec.cg * spec.kh * spec.kw, images * ho * wo), spec.dtype)
                + workspace.nbytes((spec.kg, images * ho * wo), spec.dtype))
    if _is_pointwise(spec):
        return 0
    return workspace.nbytes((spec.cg * spec.kh * spec.kw, ho * wo), spec.dtype)


def im2col_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Unfold each image (each group of its channels), then one GEMM per image and group into
    the output (no output copy)."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    pointwise = _is_pointwise(spec)
    if pointwise and spec.n == 1 and spec.groups == 1:  # one GEMM, nothing to unfold
        np.dot(w.reshape(spec.k, spec.c), x.reshape(spec.c, spec.h * spec.w),
               out=out.reshape(spec.k, spec.h * spec.w))
        return out
    if _fully_connected(spec):  # the images' pixels as rows: X @ W^T is the output as it lies
        np.dot(x.reshape(spec.n, spec.c), w.reshape(spec.k, spec.c).T,
               out=out.reshape(spec.n, spec.k))
        return out
    ho, wo = spec.out_size
    cg, kg = spec.cg, spec.kg
    wmat = w.reshape(spec.k, cg * spec.kh * spec.kw)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    images = images_per_gemm(spec)
    if images > 1:
        return _several_per_gemm(x, wmat, spec, out, images)
    cols = None if pointwise else workspace.empty((cg * spec.kh * spec.kw, ho * wo), x.dtype)
    for n in range(spec.n):
        for g in range(spec.groups):
            if pointwise:  # the group's channels of the image already are the matrix
                cols = x[n, g * cg:(g + 1) * cg].reshape(cg, spec.h * spec.w)
            else:
                _unfold_image(x, n, g * cg, cols, ho, wo, spec.kh, spec.kw, sh, sw,
                              spec.pad[0], spec.pad[2], dh, dw, spec.flip)
            np.dot(wmat[g * kg:(g + 1) * kg], cols,  # BLAS writes in place
                   out=out[n, g * kg:(g + 1) * kg].reshape(kg, ho * wo))
    return out


def _several_per_gemm(x, wmat, spec: ConvSpec, out: np.ndarray, images: int) -> np.ndarray:
    """``images`` images per unfold and GEMM (the last chunk may hold fewer), per group."""
    ho, wo = spec.out_size
    pixels, cg, kg = ho * wo, spec.cg, spec.kg
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    cols = workspace.empty((cg * spec.kh * spec.kw, images * pixels), x.dtype)
    product = workspace.empty((kg, images * pixels), x.dtype)
    for n0 in range(0, spec.n, images):
        count = min(images, spec.n - n0)
        these, made = (cols, product) if count == images else (
            np.ascontiguousarray(cols[:, :count * pixels]), product[:, :count * pixels])
        for g in range(spec.groups):
            _unfold_images(x, n0, count, g * cg, these, ho, wo, spec.kh, spec.kw, sh, sw,
                           spec.pad[0], spec.pad[2], dh, dw, spec.flip)
            if count == images:
                np.dot(wmat[g * kg:(g + 1) * kg], these, out=made)
            else:
                made = np.dot(wmat[g * kg:(g + 1) * kg], these)
            _place(made, out, n0, count, g * kg)
    return out


L2_BYTES = 1 << 20  # an unfolded matrix larger than this (a typical L2) streams through memory


def im2col_cost_features(spec: ConvSpec) -> list[float]:
    """The serial unfold per value (strided reads cost more; past L2 the matrix is written and
    read again from memory) and per (tap, output row) loop, then the GEMM: FLOPs, FLOPs with
    the output channels padded to OpenBLAS's 16-row kernel (small K wastes it), bytes of its
    operands, and a fixed cost per image (per GEMM call for a 1x1 layer, which needs no
    unfold; one for a fully connected layer's images together); with several images per
    GEMM, the parallel unfold's values and the outputs copied into place."""
    n, g, kg = spec.n, spec.groups, spec.kg
    ho, wo = spec.out_size
    connected = _fully_connected(spec)  # one GEMM of all the images, as the pointwise one
    images = spec.n if connected else images_per_gemm(spec)
    pointwise = _is_pointwise(spec) and (images == 1 or connected)
    depth, pixels = spec.cg * spec.kh * spec.kw, ho * wo
    serial = 0 if pointwise or images > 1 else n * g * depth * pixels
    parallel = n * g * depth * pixels if images > 1 and not connected else 0  # unfolded
    spills = depth * pixels * images * spec.itemsize > L2_BYTES
    calls = ceil_div(n, images) * g  # one GEMM per image (or chunk of images) and group
    columns = images * pixels
    return [1.0, serial, serial if spec.stride != (1, 1) else 0.0, serial if spills else 0.0,
            0 if pointwise or images > 1 else calls * depth * ho,
            2.0 * n * g * kg * depth * pixels,
            2.0 * calls * 16 * ceil_div(kg, 16) * depth * columns,
            calls * (kg * depth + depth * columns + kg * columns),
            0 if pointwise else calls, calls if pointwise else 0,
            parallel, float(n * spec.k * pixels) if images > 1 and not connected else 0.0]


register(Algorithm(
    name="im2col", op="conv2d", device="cpu", run=im2col_conv2d,
    workspace_bytes=im2col_workspace_bytes, cost_features=im2col_cost_features,
    rough_cost=lambda spec: spec.flops * (0.5 if _is_pointwise(spec) else 1.0),
    bound_by="blas",
    description="unfold + one BLAS GEMM per image; 1x1 layers are a plain GEMM",
))
