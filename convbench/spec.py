"""Validated problem descriptions: one frozen spec per convolution or pooling problem.

A spec is built only through :func:`conv_spec` / :func:`pool_spec`, which check every
argument and raise ``ValueError``/``TypeError`` naming it, so kernels can trust their input.
The spec also knows the output shape, the FLOP count and the bytes an ideal kernel moves,
which the harness uses for GFLOP/s and GB/s.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DTYPE_NAMES = "float32, float64"


class _Layer:
    """What convolution and pooling specs share: an (N, C, H, W) input of one dtype."""

    n: int
    c: int
    h: int
    w: int
    dtype: str

    @cached_property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def _cached_hash(self) -> int:
        """The fields' hash, computed once: specs key every per-call cache (the choice, the
        checks, the kernels' plans), and a frozen dataclass's own hash rehashes all fields on
        every lookup (it is installed as both specs' __hash__ below). The shapes are cached
        properties for the same reason (a frozen dataclass still has an instance dict)."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached


@dataclass(frozen=True)
class ConvSpec(_Layer):
    """A 2-D convolution layer: x (N, C, H, W) with w (K, C/groups, kh, kw) -> y (N, K, Ho, Wo).

    ``pad`` is (top, bottom, left, right) so that scipy's "same" centring for even kernels,
    which is asymmetric, is representable. ``flip`` selects true convolution. ``groups`` splits
    the channels as PyTorch does: output channel k sees only the C/groups input channels of its
    group (groups = C is a depthwise convolution). ``bias``: a (K,) bias is added.
    """

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    flip: bool = False
    dtype: str = "float32"
    groups: int = 1
    bias: bool = False

    @property
    def op(self) -> str:
        return "conv2d"

    @property
    def cg(self) -> int:
        """Input channels each output channel sees (C / groups)."""
        return self.c // self.groups

    @property
    def kg(self) -> int:
        """Output channels per group (K / groups)."""
        return self.k // self.groups

    @property
    def depthwise(self) -> bool:
        """One input channel per group (groups = C), each giving K / C output channels (a
        single-channel layer is one, trivially)."""
        return self.groups == self.c

    @cached_property
    def effective_kernel(self) -> tuple[int, int]:
        """Extent of the dilated kernel: d*(k-1)+1 per axis."""
        return (self.dilation[0] * (self.kh - 1) + 1, self.dilation[1] * (self.kw - 1) + 1)

    @cached_property
    def padded_size(self) -> tuple[int, int]:
        return (self.h + self.pad[0] + self.pad[1], self.w + self.pad[2] + self.pad[3])

    @cached_property
    def out_size(self) -> tuple[int, int]:
        (hp, wp), (ekh, ekw) = self.padded_size, self.effective_kernel
        return ((hp - ekh) // self.stride[0] + 1, (wp - ekw) // self.stride[1] + 1)

    @cached_property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.cg, self.kh, self.kw)

    @cached_property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.k) + self.out_size

    @property
    def flops(self) -> int:
        """Multiply-adds of the direct method counted as 2 FLOPs: 2*N*K*(C/groups)*Ho*Wo*kh*kw
        (plus one addition per output for a bias)."""
        ho, wo = self.out_size
        return (2 * self.n * self.k * self.cg * ho * wo * self.kh * self.kw
                + (self.n * self.k * ho * wo if self.bias else 0))

    @property
    def min_bytes(self) -> int:
        """Bytes an ideal kernel must move: read x, w (and the bias) once, write y once."""
        elems = (np.prod(self.x_shape) + np.prod(self.w_shape) + np.prod(self.out_shape)
                 + (self.k if self.bias else 0))
        return int(elems) * self.itemsize

    def label(self) -> str:
        """Short human-readable description used in tables and plots."""
        s = f"N{self.n} C{self.c} {self.h}x{self.w} K{self.k} {self.kh}x{self.kw}"
        if self.stride != (1, 1):
            s += f" s{self.stride[0]},{self.stride[1]}"
        if any(self.pad):  # as short as it says all: p1, p1,2 (rows, columns) or all four
            pt, pb, pl, pr = self.pad
            parts = (pt,) if len(set(self.pad)) == 1 else (pt, pl) if (pt, pl) == (pb, pr) else (
                self.pad)
            s += " p" + ",".join(map(str, parts))
        if self.dilation != (1, 1):
            s += f" d{self.dilation[0]},{self.dilation[1]}"
        if self.groups > 1:
            s += " dw" if self.depthwise and self.k == self.c else f" g{self.groups}"
        if self.bias:
            s += " +b"
        return s + (" flip" if self.flip else "")


@dataclass(frozen=True)
class PoolSpec(_Layer):
    """A 2-D pooling layer over x (N, C, H, W); ``kind`` is "max" or "avg"."""

    kind: str
    n: int
    c: int
    h: int
    w: int
    size: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int] = (0, 0)
    count_include_pad: bool = True
    dtype: str = "float32"

    @property
    def op(self) -> str:
        return f"{self.kind}_pool2d"

    @cached_property
    def out_size(self) -> tuple[int, int]:
        return tuple(
            (dim + 2 * p - s) // st + 1
            for dim, p, s, st in zip((self.h, self.w), self.pad, self.size, self.stride)
        )

    @cached_property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c) + self.out_size

    @property
    def flops(self) -> int:
        """One comparison or addition per window element."""
        ho, wo = self.out_size
        return self.n * self.c * ho * wo * self.size[0] * self.size[1]

    @property
    def min_bytes(self) -> int:
        return (int(np.prod(self.x_shape)) + int(np.prod(self.out_shape))) * self.itemsize

    def label(self) -> str:
        s = f"{self.kind} N{self.n} C{self.c} {self.h}x{self.w} size{self.size[0]}x{self.size[1]}"
        s += f" s{self.stride[0]},{self.stride[1]}"
        return s + (f" p{self.pad[0]},{self.pad[1]}" if any(self.pad) else "")


ConvSpec.__hash__ = PoolSpec.__hash__ = _Layer._cached_hash  # over the generated ones


# --------------------------------------------------------------------------- validation


def _positive_pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """Accept an int or a pair of ints >= minimum; raise naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_dtype(name: str, arr: np.ndarray) -> np.dtype:
    """Return the array's dtype (in native byte order) if convbench supports it, else raise
    TypeError naming ``name``."""
    if arr.dtype in SUPPORTED_DTYPES and arr.dtype.isnative:  # the usual case, no new dtype
        return arr.dtype
    dtype = np.dtype(arr.dtype).newbyteorder("=")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {np.dtype(arr.dtype).name}; supported dtypes are "
                        f"{_DTYPE_NAMES}")
    return dtype


def _spec_dtype(dtype) -> str:
    """The name of a supported dtype given as a string, type or dtype; TypeError otherwise."""
    try:
        resolved = np.dtype(dtype).newbyteorder("=")
    except TypeError:
        raise TypeError(f"dtype must be one of {_DTYPE_NAMES}, got {dtype!r}") from None
    if resolved not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {_DTYPE_NAMES}, got {resolved.name}")
    return resolved.name


def _shape(name: str, shape, meaning: str) -> tuple[int, int, int, int]:
    """A 4-D shape of integers (numbers like 8.0 or 8.7 are refused, not truncated)."""
    try:
        values = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a shape {meaning}, got {shape!r}") from None
    if len(values) != 4:
        raise ValueError(f"{name} must be 4-D {meaning}, got shape {values}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
               for v in values):
        raise TypeError(f"{name} shape must hold integers, got {values}")
    return tuple(int(v) for v in values)


def conv_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride=1,
    padding=0,
    dilation=1,
    flip: bool = False,
    dtype="float32",
    groups=1,
    bias: bool = False,
) -> ConvSpec:
    """Validate a conv2d problem (PyTorch semantics) and return its :class:`ConvSpec`.

    ``padding`` is an int, a pair (symmetric per axis), a 4-tuple (top, bottom, left, right),
    or "valid" / "same" (stride 1 only, as in PyTorch). ``groups`` divides both C and K;
    ``w_shape`` is then (K, C/groups, kh, kw). ``bias`` says whether a (K,) bias is added.
    """
    n, c, h, w = x_shape = _shape("x", x_shape, "(N, C, H, W)")
    k, cw, kh, kw = w_shape = _shape("w", w_shape, "(K, C, kh, kw)")
    if n < 0 or min(c, h, w) < 1:
        raise ValueError(f"x must have C, H, W >= 1 and N >= 0, got shape {x_shape}")
    if min(w_shape) < 1:
        raise ValueError(f"w must have every dimension >= 1, got shape {w_shape}")
    dtype = _spec_dtype(dtype)
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    groups = int(groups)
    if c % groups or k % groups:
        raise ValueError(f"groups must divide the input channels ({c}, x.shape[1]) and the "
                         f"output channels ({k}, w.shape[0]), got groups={groups}")
    if cw != c // groups:
        raise ValueError(
            f"w has {cw} input channels (w.shape[1]) but x has {c} (x.shape[1])"
            + (f" in {groups} groups of {c // groups}" if groups > 1 else "")
            + f"; w.shape[1] must be {c // groups}"
        )
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"flip must be a bool, got {flip!r}")
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be a bool (whether a bias is added), got {bias!r}")
    stride = _positive_pair("stride", stride)
    dilation = _positive_pair("dilation", dilation)
    pad = _conv_padding(padding, stride, dilation, (kh, kw))
    spec = ConvSpec(n, c, h, w, k, kh, kw, stride, pad, dilation, bool(flip), dtype, groups,
                    bool(bias))
    ho, wo = spec.out_size
    if ho < 1 or wo < 1 or spec.padded_size[0] < spec.effective_kernel[0] or (
        spec.padded_size[1] < spec.effective_kernel[1]
    ):
        raise ValueError(
            f"output would be smaller than 1x1: padded input {spec.padded_size} is smaller than "
            f"the dilated kernel {spec.effective_kernel} (x {tuple(x_shape)}, w {tuple(w_shape)}, "
            f"padding {pad}, dilation {dilation})"
        )
    return spec


def _conv_padding(padding, stride, dilation, ksize) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
            pads = []
            for d, kk in zip(dilation, ksize):
                total = d * (kk - 1)  # PyTorch puts the odd extra pixel at the end
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in padding):
            raise TypeError(f"padding must be ints, got {padding!r}")
        if min(padding) < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        return tuple(int(v) for v in padding)
    ph, pw = _positive_pair("padding", padding, minimum=0)
    return (ph, ph, pw, pw)


def pool_spec(kind: str, x_shape, size, *, stride=None, padding=0, count_include_pad=True,
              dtype="float32") -> PoolSpec:
    """Validate a pooling problem (PyTorch semantics) and return its :class:`PoolSpec`.

    Padding may be at most half the window (PyTorch's rule); padded cells never win a max
    and, for average pooling, count in the divisor when ``count_include_pad`` (PyTorch's default).
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
    n, c, h, w = x_shape = _shape("x", x_shape, "(N, C, H, W)")
    if n < 0 or min(c, h, w) < 1:
        raise ValueError(f"x must have C, H, W >= 1 and N >= 0, got shape {x_shape}")
    dtype = _spec_dtype(dtype)
    size = _positive_pair("size", size)
    stride = size if stride is None else _positive_pair("stride", stride)
    pad = _positive_pair("padding", padding, minimum=0)
    if pad[0] > size[0] // 2 or pad[1] > size[1] // 2:
        raise ValueError(
            f"padding must be at most half the pool size (as in PyTorch), got padding {pad} "
            f"for size {size}"
        )
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    spec = PoolSpec(kind, n, c, h, w, size, stride, pad, bool(count_include_pad), dtype)
    if min(spec.out_size) < 1:
        raise ValueError(
            f"output would be smaller than 1x1: input {h}x{w} with padding {pad} is smaller "
            f"than the pool size {size}"
        )
    return spec
