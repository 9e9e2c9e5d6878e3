"""What every peer does to express a spec with its library's plain convolution: the padded
input and the (flipped, dilated) kernel. Works on NumPy and CuPy arrays alike (``xp``)."""
from __future__ import annotations

import numpy as np

from ..spec import ConvSpec


def padded(x, spec: ConvSpec, xp=np):
    """The input with the spec's (top, bottom, left, right) zero padding."""
    pt, pb, pl, pr = spec.pad
    return xp.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if any(spec.pad) else x


def dilated_kernel(w, spec: ConvSpec, xp=np):
    """The kernel rotated by 180 degrees when ``spec.flip``, with dilation-1 zeros between
    taps: a plain correlation of the padded input with it is the spec's convolution."""
    w = w[:, :, ::-1, ::-1] if spec.flip else w
    if spec.dilation == (1, 1):
        return w
    ekh, ekw = spec.effective_kernel
    out = xp.zeros(tuple(w.shape[:2]) + (ekh, ekw), w.dtype)
    out[:, :, ::spec.dilation[0], ::spec.dilation[1]] = w
    return out


def padded_bytes(spec: ConvSpec) -> int:
    """Bytes of the padded copy of the input (0 without padding)."""
    if not any(spec.pad):
        return 0
    hp, wp = spec.padded_size
    return spec.n * spec.c * hp * wp * spec.itemsize
