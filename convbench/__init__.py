"""convbench: which convolution or pooling algorithm is fastest for this layer, and why.

The public API, loaded on first use: ``import convbench`` imports nothing heavy and changes
nothing in the process (``convbench.process`` documents the one thing the CPU kernels do, and
what :func:`configure_for_benchmarks` does when asked).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "algorithms": "ops", "avg_pool2d": "ops", "conv2d": "ops", "convolve2d": "ops",
    "correlate2d": "ops", "max_pool2d": "ops", "workspace_bytes": "ops",
    "choose": "auto", "explain": "auto",
    "ConvSpec": "spec", "PoolSpec": "spec", "conv_spec": "spec", "pool_spec": "spec",
    "configure_for_benchmarks": "process",
    "Conv2d": "layers",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from .auto import choose, explain
    from .ops import (algorithms, avg_pool2d, conv2d, convolve2d, correlate2d, max_pool2d,
                      workspace_bytes)
    from .layers import Conv2d
    from .process import configure_for_benchmarks
    from .spec import ConvSpec, PoolSpec, conv_spec, pool_spec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
