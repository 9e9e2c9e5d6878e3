"""Thread-index helpers shared by the kernels (device functions)."""
from numba import cuda


@cuda.jit(device=True)
def split_row(row, inner, middle):
    """Split a flattened (outer, middle, inner) row index: kernels put the output width on the
    fastest grid axis (coalesced) and every other output axis on one flattened row axis."""
    return row // (inner * middle), (row // inner) % middle, row % inner
