"""The one list of algorithms. Kernel modules register themselves here on import.

The CLI, the harness, the tests and the benchmarks all iterate this registry, so adding an
algorithm means one new module plus one line in ``_MODULES``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

OPS = ("conv2d", "max_pool2d", "avg_pool2d")
DEVICES = ("cpu", "cuda")


def _always(spec: Any) -> bool:
    return True


def _no_workspace(spec: Any) -> int:
    return 0


@dataclass(frozen=True)
class Algorithm:
    """One way to compute one op on one device.

    ``run(x, w, spec)`` (or ``run(x, spec)`` for pooling) takes C-contiguous arrays of the spec's
    dtype and returns the output; ``workspace_bytes(spec)`` is the memory it allocates beyond
    input and output; ``supports(spec)`` says whether it can handle the case, ``limits`` says
    in words what it cannot.
    """

    name: str
    op: str
    device: str
    run: Callable[..., Any]
    workspace_bytes: Callable[[Any], int] = _no_workspace
    supports: Callable[[Any], bool] = _always
    is_peer: bool = False
    description: str = ""
    limits: str = ""
    error_model: str = "sum"  # "sum" or "fft": which bound in tolerance.py applies
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.op, self.device, self.name)

    def bound(self, spec: Any, x: Any, w: Any = None) -> Callable[[], Any]:
        """A no-argument call of this algorithm on fixed inputs (``w`` is None for pooling)."""
        if w is None:
            return lambda: self.run(x, spec)
        return lambda: self.run(x, w, spec)


_REGISTRY: dict[tuple[str, str, str], Algorithm] = {}
_MODULES = (
    "convbench.cpu.direct",
    "convbench.cpu.pool",
    "convbench.cpu.im2col",
    "convbench.cpu.fft",
    "convbench.cpu.fft_tiled",
    "convbench.peers",
)
_CUDA_MODULES = (  # registered only where numba.cuda imports (a GPU is needed to run them)
    "convbench.cuda.direct",
    "convbench.cuda.pool",
    "convbench.cuda.im2col",
    "convbench.cuda.fft",
    "convbench.peers_cuda",
)
_loaded = False


def register(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm; registering the same (op, device, name) twice is a bug."""
    if algorithm.op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {algorithm.op!r}")
    if algorithm.device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {algorithm.device!r}")
    if algorithm.key in _REGISTRY:
        raise ValueError(f"algorithm {algorithm.key} is already registered")
    _REGISTRY[algorithm.key] = algorithm
    return algorithm


def unregister(op: str, device: str, name: str) -> None:
    """Remove an algorithm (used by tests that plant a temporary one)."""
    _REGISTRY.pop((op, device, name), None)


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _MODULES:
            importlib.import_module(module)
        try:
            import numba.cuda  # noqa: F401  (numba-cuda: the `cuda` extra)
        except ImportError:
            return
        for module in _CUDA_MODULES:
            importlib.import_module(module)


def algorithms(op: str | None = None, device: str | None = None,
               peers: bool | None = None) -> list[Algorithm]:
    """Registered algorithms, filtered by op, device and peer status, in registration order."""
    _load()
    if op is not None and op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    if device is not None and device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return [
        a for a in _REGISTRY.values()
        if (op is None or a.op == op) and (device is None or a.device == device)
        and (peers is None or a.is_peer == peers)
    ]


def get(op: str, device: str, name: str) -> Algorithm:
    """Look up one algorithm; the error lists the names that exist for this op and device."""
    _load()
    try:
        return _REGISTRY[(op, device, name)]
    except KeyError:
        names = [a.name for a in algorithms(op, device)]
        raise ValueError(
            f"algorithm {name!r} is not available for {op} on {device}; "
            f"choose one of: {', '.join(['auto'] + names)}"
        ) from None
