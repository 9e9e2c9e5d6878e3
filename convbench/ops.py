"""Public functions: validate the arguments, choose an algorithm, dispatch. No kernels here.

A call costs little beyond its kernel: a NumPy call whose arguments were validated before
(the same shapes, dtypes and options, C-contiguous native arrays) goes straight to its
algorithm; otherwise validated specs are remembered per argument set, the named algorithm's
checks per spec, and ``auto``'s model-only choice per shape (``auto.py``). On a
squeeze-excitation 1x1 layer (N1 C480 1x1 K20, a 7 us GEMM) validating every call cost more
than the kernel.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import registry
from .auto import checked_call, choose, pick
from .devices import check_device
from .spec import ConvSpec, PoolSpec, check_dtype, conv_spec, pool_spec
from .workspace import ENV_LIMIT, max_workspace_bytes

MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm")  # scipy.signal.correlate2d's boundary conditions
_NUMPY_PAD = {"wrap": "wrap", "symm": "symmetric"}


def _is_device_array(value) -> bool:
    return hasattr(value, "__cuda_array_interface__") or type(value).__name__ == "FakeCUDAArray"


def _as_array(name: str, value, device: str = "cpu"):
    """A NumPy array in native byte order, or (for device="cuda") a C-contiguous device
    array as given."""
    if isinstance(value, np.ndarray):
        if not value.dtype.isnative:  # big-endian data: compute on a native copy
            return value.astype(value.dtype.newbyteorder("="))
        return value
    if _is_device_array(value):
        if device != "cuda":
            raise TypeError(f"{name} is a CUDA device array; pass device='cuda' "
                            "(or a NumPy array for the CPU)")
        if hasattr(value, "is_c_contiguous") and not value.is_c_contiguous():
            raise TypeError(f"{name} is a non-contiguous device array; make it C-contiguous")
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of float32 or float64, got {type(value)}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    return _as_array(name, arr, device)


def _contiguous(a):
    return np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a


def _exact(*options) -> bool:
    """Whether every option is an int, a string or a non-empty tuple of ints, the forms a
    remembered argument set holds. (1.0 and True equal 1 as keys, but validation refuses them,
    so they must not find what 1 left.) Element by element: with a set of the types per tuple
    the check of a call's six options took 1.2 us, element by element 0.7."""
    for value in options:
        kind = type(value)
        if kind is tuple:
            if not value:
                return False
            for item in value:
                if type(item) is not int:
                    return False
        elif kind is not int and kind is not str:
            return False
    return True


@lru_cache(maxsize=1024)
def _conv_spec(x_shape, w_shape, stride, padding, dilation, flip, dtype, groups,
               bias) -> ConvSpec:
    return conv_spec(x_shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                     flip=flip, dtype=dtype, groups=groups, bias=bias)


def _bias(b, spec_k: int, dtype, device: str):
    """The bias as an array of the output channels' count and the inputs' dtype (or None)."""
    if b is None:
        return None
    b = _as_array("bias", b, device)
    if tuple(b.shape) != (spec_k,):
        raise ValueError(f"bias must have shape ({spec_k},) (one value per output channel), "
                         f"got {tuple(b.shape)}")
    if isinstance(b, np.ndarray):
        if b.dtype.kind not in "fiu":
            raise TypeError(f"bias must be a real array, got dtype {b.dtype}")
        return np.ascontiguousarray(b, dtype=dtype)
    return b


def _named(op: str, device: str, name: str, spec) -> tuple[registry.Algorithm, int]:
    """The named algorithm after checking it supports ``spec``, and its declared workspace."""
    return _checked(registry.get(op, device, name), spec)


@lru_cache(maxsize=1024)
def _checked(algo: registry.Algorithm, spec) -> tuple[registry.Algorithm, int]:
    op, device, name = algo.key
    if not algo.supports(spec):
        able = [a.name for a in registry.algorithms(op, device) if a.supports(spec)]
        raise ValueError(
            f"algorithm {name!r} does not support this case ({spec.label()}): "
            f"{algo.limits or 'unsupported parameters'}; algorithms that do: {', '.join(able)}"
        )
    return algo, algo.workspace_bytes(spec)


def _resolve(op: str, spec, algorithm: str, device: str, measure: bool | None = None
             ) -> registry.Algorithm:
    """Pick the algorithm (``auto`` or by name), check it supports ``spec`` and fits memory."""
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a string, got {algorithm!r}")
    check_device(device)
    if algorithm == "auto":  # the chooser picks among those that support it, within the limit
        return choose(spec, device, measure).algorithm
    algo, need = _named(op, device, algorithm, spec)
    if need:
        limit = max_workspace_bytes()
        if need > limit:
            raise ValueError(
                f"algorithm {algo.name!r} needs {need} bytes of workspace for {spec.label()}, "
                f"more than the limit of {limit} bytes ({ENV_LIMIT} or half of the available "
                f"memory); choose another algorithm or raise {ENV_LIMIT}"
            )
    return algo


class _Known(NamedTuple):
    """A validated argument set: its spec, and its algorithm unless ``auto`` chooses."""

    spec: ConvSpec
    named: registry.Algorithm | None
    workspace: int  # the named algorithm's declared workspace
    version: int  # the registry's, when remembered (an algorithm replaced since: not valid)


_KNOWN: dict[tuple, _Known] = {}
KNOWN_SIZE = 1024  # argument sets remembered (all forgotten when full: a new working set)


def _known_key(x, w, bias, stride, padding, dilation, groups, flip, algorithm, device):
    """The key of a call that may skip validation, or None: NumPy arrays, C-contiguous, a
    bias that is None or such an array of x's dtype, options of exact types."""
    if type(x) is not np.ndarray or type(w) is not np.ndarray or not (
            x.flags.c_contiguous and w.flags.c_contiguous):
        return None
    if bias is not None and (type(bias) is not np.ndarray or bias.dtype != x.dtype
                             or not bias.flags.c_contiguous):
        return None
    if not _exact(stride, padding, dilation, groups, algorithm, device) or type(flip) is not bool:
        return None
    return (x.shape, w.shape, x.dtype, w.dtype, None if bias is None else bias.shape,
            stride, padding, dilation, groups, flip, algorithm, device)


def _remember(key, spec, algorithm: str, device: str) -> None:
    """Remember a validated argument set (and, when named, its algorithm's checks)."""
    if key is None:
        return
    if len(_KNOWN) >= KNOWN_SIZE:
        _KNOWN.clear()
    if algorithm == "auto":
        _KNOWN[key] = _Known(spec, None, 0, registry.version())
    else:
        algo, need = _named("conv2d", device, algorithm, spec)
        _KNOWN[key] = _Known(spec, algo, need, registry.version())


def _known_call(known: _Known, x, w, b, device: str, measure):
    """A remembered argument set's call: the workspace limit checked for a named algorithm
    that needs one, ``auto``'s pick asked again (it changes with the calibration, the limit
    and CONVBENCH_AUTOTUNE)."""
    spec, algo = known.spec, known.named
    if algo is not None:
        if known.workspace and known.workspace > max_workspace_bytes():
            _resolve("conv2d", spec, algo.name, device)  # raises: over the limit
        return algo.call(x, w, spec, b)
    return _auto_call(pick(spec, device, measure), x, w, spec, b, device, measure)


def _auto_call(algo: registry.Algorithm, x, w, spec, b, device: str, measure):
    """auto's call of its pick: through ``checked_call`` where the pick is a transform
    algorithm whose result it checks, else directly (no closure for it to hold)."""
    if algo.transform_growth is None:
        return algo.call(x, w, spec, b)
    return checked_call(algo, lambda: algo.call(x, w, spec, b), spec, device, measure, x, w, b)


def _empty_batch(spec, x):
    """The (0, ...) output of an empty batch, as torch returns it, on x's side."""
    if isinstance(x, np.ndarray):
        return np.empty(spec.out_shape, dtype=spec.dtype)
    from numba import cuda

    return cuda.device_array(spec.out_shape, dtype=spec.dtype)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups: int = 1,
           flip: bool = False, algorithm: str = "auto", device: str = "cpu",
           measure: bool | None = None):
    """2-D convolution with neural-network layer semantics (as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : array (N, C, H, W), float32 or float64 (N may be 0: an empty output comes back)
    w : array (K, C/groups, kh, kw), same dtype as ``x``
    bias : array (K,) added to every output channel, or None
    stride, dilation : int or pair
    padding : int, pair, (top, bottom, left, right), "valid" or "same" (stride 1)
    groups : divides C and K; output channel k sees the C/groups input channels of its group
        (groups = C: a depthwise convolution)
    flip : False for cross-correlation (the deep-learning convention), True for true
        convolution (kernel rotated by 180 degrees)
    algorithm : "auto" or a registered name (see ``convbench.algorithms("conv2d")``)
    measure : with "auto", time the best-predicted candidates on this shape once and cache the
        winner across processes (default: the CONVBENCH_AUTOTUNE environment variable)
    device : "cpu" or "cuda"; on "cuda" host inputs give a host result, device arrays (Numba,
        or anything with __cuda_array_interface__) a device result

    Returns
    -------
    array (N, K, Ho, Wo) of the input dtype
    """
    key = _known_key(x, w, bias, stride, padding, dilation, groups, flip, algorithm, device)
    known = _KNOWN.get(key) if key is not None else None
    if known is not None and known.version == registry.version():
        return _known_call(known, x, w, bias, device, measure)
    given = (x, w, bias)
    x, w = _as_array("x", x, device), _as_array("w", w, device)
    dtype = check_dtype("x", x)
    if check_dtype("w", w) != dtype:
        raise TypeError(f"w has dtype {w.dtype} but x has dtype {x.dtype}; they must match")
    if key is not None or (_exact(stride, padding, dilation, groups)
                           and type(flip) is bool):  # exact types: the cache confuses none
        spec = _conv_spec(x.shape, w.shape, stride, padding, dilation, flip, dtype, groups,
                          bias is not None)
    else:
        spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                         flip=flip, dtype=dtype, groups=groups, bias=bias is not None)
    b = _bias(bias, spec.k, dtype, device)
    if spec.n == 0:  # nothing to compute (and nothing to choose between)
        if algorithm != "auto":
            _resolve("conv2d", spec, algorithm, device)
        check_device(device)
        return _empty_batch(spec, x)
    algo = _resolve("conv2d", spec, algorithm, device, measure)
    x, w = _contiguous(x), _contiguous(w)
    if all(a is g for a, g in zip((x, w, b), given)):
        _remember(key, spec, algorithm, device)  # used as given: later calls may skip this
    if algorithm != "auto":
        return algo.call(x, w, spec, b)
    return _auto_call(algo, x, w, spec, b, device, measure)


def _signal_array(name: str, value) -> np.ndarray:
    arr = _as_array(name, value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if arr.dtype.kind in "biu":  # integers and booleans are computed in float64, as scipy's fft path
        arr = arr.astype(np.float64)
    check_dtype(name, arr)
    return arr


def _fill_scalar(fillvalue):
    """A real number, or a 0-d or one-element array of one, as SciPy's ``fillvalue`` takes."""
    if isinstance(fillvalue, np.ndarray) and fillvalue.dtype.kind in "iuf":
        if fillvalue.size != 1:
            raise ValueError(f"fillvalue must be a number or an array of one element, got an "
                             f"array of shape {fillvalue.shape}")
        fillvalue = fillvalue.reshape(-1)[0]
    if isinstance(fillvalue, (bool, np.bool_)) or not isinstance(fillvalue, (int, float,
                                                                             np.integer,
                                                                             np.floating)):
        raise TypeError(f"fillvalue must be a real number, got {fillvalue!r}")
    return fillvalue


def _signal_conv(a, k, mode: str, flip: bool, algorithm: str, device: str,
                 boundary: str = "fill", fillvalue=0) -> np.ndarray:
    a, k = _signal_array("in1", a), _signal_array("in2", k)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    fillvalue = _fill_scalar(fillvalue)
    if min(a.shape) < 1 or min(k.shape) < 1:
        raise ValueError(f"in1 and in2 must not be empty, got shapes {a.shape} and {k.shape}")
    if mode == "valid":
        a_covers = a.shape[0] >= k.shape[0] and a.shape[1] >= k.shape[1]
        k_covers = k.shape[0] >= a.shape[0] and k.shape[1] >= a.shape[1]
        if not (a_covers or k_covers):
            raise ValueError(
                f"mode='valid' needs in1 {a.shape} or in2 {k.shape} to be at least as large as "
                f"the other in every dimension (as scipy.signal)"
            )
        if not a_covers:  # scipy swaps the inputs so that the larger one slides under the other
            z = _signal_conv(k, a, mode, flip, algorithm, device)
            return z if flip else z[::-1, ::-1].copy()
        boundary, fillvalue = "fill", 0  # nothing reaches past in1 in "valid" mode
    dtype = np.result_type(a.dtype, k.dtype)
    kh, kw = k.shape
    if mode == "full":
        pad = (kh - 1, kh - 1, kw - 1, kw - 1)
    elif mode == "valid":
        pad = (0, 0, 0, 0)
    elif flip:  # scipy centres "same" differently for convolution and correlation of even kernels
        pad = (kh // 2, (kh - 1) // 2, kw // 2, (kw - 1) // 2)
    else:
        pad = ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
    a = a.astype(dtype, copy=False)
    if boundary != "fill" or fillvalue != 0:  # extend in1 as SciPy does, then "valid"
        widths = ((pad[0], pad[1]), (pad[2], pad[3]))
        a = (np.pad(a, widths, mode=_NUMPY_PAD[boundary]) if boundary != "fill" else
             np.pad(a, widths, constant_values=fillvalue))
        pad = (0, 0, 0, 0)
    x4 = a.reshape(1, 1, *a.shape)
    w4 = k.astype(dtype, copy=False).reshape(1, 1, *k.shape)
    return conv2d(x4, w4, padding=pad, flip=flip, algorithm=algorithm, device=device)[0, 0]


def correlate2d(in1, in2, mode: str = "full", boundary: str = "fill", fillvalue=0, *,
                algorithm: str = "auto", device: str = "cpu") -> np.ndarray:
    """2-D cross-correlation with ``scipy.signal.correlate2d`` semantics.

    ``mode`` is "full", "same" (centred as scipy, also for even kernels) or "valid";
    ``boundary`` is "fill" (``fillvalue`` outside in1, 0 by default), "wrap" (circular) or
    "symm" (mirrored, the edge repeated), as SciPy's, positionally too. Integer inputs are
    computed in float64; mixed float32/float64 inputs in float64.
    """
    return _signal_conv(in1, in2, mode, False, algorithm, device, boundary, fillvalue)


def convolve2d(in1, in2, mode: str = "full", boundary: str = "fill", fillvalue=0, *,
               algorithm: str = "auto", device: str = "cpu") -> np.ndarray:
    """2-D true convolution with ``scipy.signal.convolve2d`` semantics (boundaries as in
    :func:`correlate2d`)."""
    return _signal_conv(in1, in2, mode, True, algorithm, device, boundary, fillvalue)


@lru_cache(maxsize=1024)
def _pool_spec(kind, x_shape, size, stride, padding, count_include_pad, dtype) -> PoolSpec:
    return pool_spec(kind, x_shape, size, stride=stride, padding=padding,
                     count_include_pad=count_include_pad, dtype=dtype)


def _pool(kind: str, x, size, stride, padding, count_include_pad, algorithm, device):
    x = _as_array("x", x, device)
    dtype = check_dtype("x", x)
    if _exact(size, padding, 0 if stride is None else stride) and (
            type(count_include_pad) is bool):
        spec = _pool_spec(kind, x.shape, size, stride, padding, count_include_pad, dtype.name)
    else:  # other types (lists; 1.0, which equals 1 as a key but is refused): no cache
        spec = pool_spec(kind, x.shape, size, stride=stride, padding=padding,
                         count_include_pad=count_include_pad, dtype=dtype)
    if spec.n == 0:
        if algorithm != "auto":
            _resolve(spec.op, spec, algorithm, device)
        check_device(device)
        return _empty_batch(spec, x)
    algo = _resolve(spec.op, spec, algorithm, device)
    return algo.run(_contiguous(x), spec)


def max_pool2d(x, size, *, stride=None, padding=0, algorithm: str = "auto",
               device: str = "cpu") -> np.ndarray:
    """Max pooling over (N, C, H, W) as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``size``; ``padding`` (at most half the window) counts as -inf.
    """
    return _pool("max", x, size, stride, padding, True, algorithm, device)


def avg_pool2d(x, size, *, stride=None, padding=0, count_include_pad: bool = True,
               algorithm: str = "auto", device: str = "cpu") -> np.ndarray:
    """Average pooling over (N, C, H, W) as ``torch.nn.functional.avg_pool2d``.

    Padded cells are zeros that count in the divisor when ``count_include_pad`` (PyTorch's
    default); with ``count_include_pad=False`` only in-range cells are averaged.
    """
    return _pool("avg", x, size, stride, padding, count_include_pad, algorithm, device)


def algorithms(op: str = "conv2d", device: str | None = None) -> list[registry.Algorithm]:
    """Registered algorithms for ``op`` (peers included), optionally for one device."""
    return registry.algorithms(op, device)


def workspace_bytes(name: str, spec: ConvSpec | PoolSpec, device: str = "cpu") -> int:
    """Declared extra memory of algorithm ``name`` for the problem ``spec``, in bytes."""
    return registry.get(spec.op, device, name).workspace_bytes(spec)
