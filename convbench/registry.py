"""The one list of algorithms. Kernel modules register themselves here when imported.

The CLI, the harness, the chooser, the tests and the benchmarks all iterate this registry, so
adding an algorithm means its module plus one line in ``MODULES``. Modules are imported only
when their group is asked for: a CPU call never imports the CUDA kernels, and peers (SciPy,
NumPy, PyTorch, CuPy) load only when a caller asks for peers or names one.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator, Sequence

from .devices import DEVICES

OPS = ("conv2d", "max_pool2d", "avg_pool2d")
ERROR_MODELS = ("sum", "fft", "winograd_f2", "winograd_f4")  # which bound of tolerance.py applies
BOUND_BY = ("numba", "blas", "fft", "memory")  # the resource that limits an algorithm's speed

# (device, peers?) -> the modules that register that group
MODULES: dict[tuple[str, bool], tuple[str, ...]] = {
    ("cpu", False): (
        "convbench.cpu.direct",
        "convbench.cpu.pool",
        "convbench.cpu.im2col",
        "convbench.cpu.fft",
        "convbench.cpu.fft_tiled",
        "convbench.cpu.winograd",
        "convbench.cpu.depthwise",
        "convbench.cpu.depthwise_cl",
        "convbench.cpu.implicit_gemm",
    ),
    ("cpu", True): ("convbench.peers.cpu",),
    ("cuda", False): (
        "convbench.cuda.direct",
        "convbench.cuda.pool",
        "convbench.cuda.im2col",
        "convbench.cuda.implicit_gemm",
        "convbench.cuda.winograd",
        "convbench.cuda.fft",
        "convbench.cuda.depthwise",
    ),
    ("cuda", True): ("convbench.peers.gpu",),
}


def _always(spec: Any) -> bool:
    return True


def _no_workspace(spec: Any) -> int:
    return 0


@dataclass(frozen=True)
class Algorithm:
    """One way to compute one op on one device, and everything the rest of convbench needs to
    know about it (nothing else switches on its name).

    ``run(x, w, spec)`` (``run(x, spec)`` for pooling) takes C-contiguous arrays of the spec's
    dtype and returns the output. ``workspace_bytes(spec)``: the bytes it allocates beyond
    input and output. ``supports(spec)``: whether it can run the case; ``limits`` says in words
    what it cannot. ``error_model``: which bound of ``tolerance.py`` its rounding obeys.
    ``cost_features(spec)``: the work it does, as the vector its cost model weighs (None: not
    modelled); ``rough_cost(spec)``: an uncalibrated estimate in FLOP-equivalents, used to
    choose only where no calibration covers the algorithm. ``transform_growth(spec)``: set for
    algorithms that mix inputs through transforms (FFT, Winograd), so a NaN or Inf spreads past
    the outputs it touches and intermediate values grow by this factor over direct summation's;
    ``auto`` avoids them for such inputs. ``bound_by``: the resource that limits its speed
    (the gate's control for it is of the same kind). ``library``: whose code it is;
    ``memory_visible``: False where it allocates inside a compiled library that tracemalloc
    cannot see (its measured memory is then unknown, not zero). ``family``: the method a peer
    runs, as the name of ours that runs it too (plots draw a peer in its family's colour);
    ours are their own family. ``prepare(w, spec)``: the weight-dependent work done once,
    returning ``f(x)``. ``fused_bias``: the bias is added in the kernel, passed as
    ``run(x, w, spec, b)`` and ``prepare(w, spec, b)``; otherwise one pass adds it afterwards.
    """

    name: str
    op: str
    device: str
    run: Callable[..., Any]
    workspace_bytes: Callable[[Any], int] = _no_workspace
    supports: Callable[[Any], bool] = _always
    limits: str = ""
    is_peer: bool = False
    library: str = "convbench"
    description: str = ""
    error_model: str = "sum"
    cost_features: Callable[[Any], Sequence[float]] | None = None
    rough_cost: Callable[[Any], float] | None = None
    transform_growth: Callable[[Any], float] | None = None
    bound_by: str = "numba"
    memory_visible: bool = True
    family: str = ""
    compiles: bool = True
    prepare: Callable[..., Callable[[Any], Any]] | None = None
    fused_bias: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.error_model not in ERROR_MODELS:
            raise ValueError(f"error_model must be one of {ERROR_MODELS}, got "
                             f"{self.error_model!r}")
        if self.bound_by not in BOUND_BY:
            raise ValueError(f"bound_by must be one of {BOUND_BY}, got {self.bound_by!r}")

    @property
    def kind(self) -> str:
        """The family, or the name for an algorithm that is its own family."""
        return self.family or self.name

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.op, self.device, self.name)

    def call(self, x: Any, w: Any, spec: Any, b: Any = None) -> Any:
        """Run a convolution, with the bias ``b`` added (in the kernel when it fuses it)."""
        if b is None:
            return self.run(x, w, spec)
        if self.fused_bias:
            return self.run(x, w, spec, b)
        return _bias_adder()(self.run(x, w, spec), b)

    def prepared(self, w: Any, spec: Any, b: Any = None) -> Callable[[Any], Any]:
        """A call ``f(x)`` with the weight-dependent work done now, once."""
        if self.prepare is None:
            return lambda x: self.call(x, w, spec, b)
        if self.fused_bias:
            return self.prepare(w, spec, b)
        run = self.prepare(w, spec)
        if b is None:
            return run
        add_bias = _bias_adder()
        return lambda x: add_bias(run(x), b)

    def bound(self, spec: Any, x: Any, w: Any = None, b: Any = None) -> Callable[[], Any]:
        """A no-argument call of this algorithm on fixed inputs (``w`` is None for pooling)."""
        if w is None:
            return lambda: self.run(x, spec)
        return lambda: self.call(x, w, spec, b)


@lru_cache(maxsize=1)
def _bias_adder() -> Callable[[Any, Any], Any]:
    """``bias.add_bias``, imported on first use (it loads Numba) and then held: an import
    statement in the call cost 1 us of a 7 us small layer."""
    from .bias import add_bias

    return add_bias


_REGISTRY: dict[tuple[str, str, str], Algorithm] = {}
_loaded: set[tuple[str, bool]] = set()
_version = 0  # changes whenever the registry does: what callers key remembered choices with


def version() -> int:
    """A number that changes whenever an algorithm is registered or the registry restored."""
    return _version


def register(algorithm: Algorithm, *, replace: bool = False) -> Algorithm:
    """Add an algorithm; registering the same (op, device, name) twice is a bug unless
    ``replace``."""
    global _version
    if algorithm.key in _REGISTRY and not replace:
        raise ValueError(f"algorithm {algorithm.key} is already registered")
    _REGISTRY[algorithm.key] = algorithm
    _version += 1
    return algorithm


@contextlib.contextmanager
def registered(*planted: Algorithm) -> Iterator[None]:
    """Register algorithms for the duration of a ``with`` block (replacing any of the same
    key), then restore the registry: for tests and for timing a candidate beside the rest."""
    for algorithm in planted:
        _load(algorithm.device, algorithm.is_peer)
    global _version
    before = dict(_REGISTRY)
    try:
        for algorithm in planted:
            register(algorithm, replace=True)
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(before)
        _version += 1


def _cuda_importable() -> bool:
    try:
        import numba.cuda  # noqa: F401  (numba-cuda: the `cuda` extra)
    except ImportError:
        return False
    return True


def _load(device: str, peers: bool) -> None:
    """Import one group's modules, all or nothing: if one fails, the registry is left as it
    was, the group's modules imported so far are forgotten (so that the next call imports
    and registers them again), and the error raised."""
    global _version
    group = (device, peers)
    if group in _loaded:
        return
    if device == "cuda" and not _cuda_importable():
        _loaded.add(group)
        return
    before = dict(_REGISTRY)
    imported = set(sys.modules)
    try:
        for module in MODULES[group]:
            importlib.import_module(module)
    except BaseException:
        _REGISTRY.clear()
        _REGISTRY.update(before)
        for name in set(sys.modules) - imported:
            if name.startswith("convbench."):
                del sys.modules[name]
        _version += 1
        raise
    _loaded.add(group)


def _check(op: str | None, device: str | None) -> None:
    if op is not None and op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    if device is not None and device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")


def algorithms(op: str | None = None, device: str | None = None,
               peers: bool | None = None) -> list[Algorithm]:
    """Registered algorithms filtered by op and device; ``peers`` None: ours and the peers,
    False: ours only (peers are then not even imported), True: peers only. Ours come first,
    in registration order."""
    _check(op, device)
    for dev in (device,) if device else DEVICES:
        if peers is not True:
            _load(dev, False)
        if peers is not False:
            _load(dev, True)
    found = [a for a in _REGISTRY.values()
             if (op is None or a.op == op) and (device is None or a.device == device)
             and (peers is None or a.is_peer == peers)]
    return sorted(found, key=lambda a: (DEVICES.index(a.device), a.is_peer))


def get(op: str, device: str, name: str) -> Algorithm:
    """Look up one algorithm (peers are imported only if ``name`` is not one of ours); the
    error lists the names that exist for this op and device."""
    _check(op, device)
    _load(device, False)
    if (op, device, name) not in _REGISTRY:
        _load(device, True)
    try:
        return _REGISTRY[(op, device, name)]
    except KeyError:
        names = [a.name for a in algorithms(op, device)]
        raise ValueError(
            f"algorithm {name!r} is not available for {op} on {device}; "
            f"choose one of: {', '.join(['auto'] + names)}"
        ) from None
