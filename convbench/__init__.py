"""convbench: which convolution or pooling algorithm is fastest for this layer, and why.

Public API (see DESIGN.md section 1): re-exports only.
"""
from .auto import choose
from .ops import (
    algorithms,
    avg_pool2d,
    conv2d,
    convolve2d,
    correlate2d,
    max_pool2d,
    workspace_bytes,
)
from .spec import ConvSpec, PoolSpec, conv_spec, pool_spec

__version__ = "0.1.0"

__all__ = [
    "ConvSpec", "PoolSpec", "algorithms", "avg_pool2d", "choose", "conv2d", "conv_spec",
    "convolve2d", "correlate2d", "max_pool2d", "pool_spec", "workspace_bytes", "__version__",
]
