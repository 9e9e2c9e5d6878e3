"""Winograd's minimal filtering F(m x m, 3x3), what the CPU and GPU versions share: the
transform matrices (exact in float64), which layers it supports, and how much the transforms
can grow a value (for the error bound in ``tolerance.py``)."""
from __future__ import annotations

import numpy as np

from .spec import ConvSpec

# Transform matrices (points 0, +-1, +-2 for F(4x4); 0, +-1 for F(2x2)), exact in float64.
MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m x m, 3x3)."""
    return MATRICES[m]


def supports(spec: ConvSpec) -> bool:
    """3x3 kernels at stride 1, dilation 1, one group: the layers the tiles cover exactly."""
    return ((spec.kh, spec.kw) == (3, 3) and spec.stride == (1, 1) and spec.dilation == (1, 1)
            and spec.groups == 1)


def growth(m: int):
    """How much larger than a direct sum a transformed intermediate can be: the products of the
    transforms' absolute row sums."""
    bt, g, at = matrices(m)
    factor = float(np.abs(bt).sum(1).max() ** 2 * np.abs(g).sum(1).max() ** 2
                   * np.abs(at).sum(1).max() ** 2)
    return lambda spec: factor
