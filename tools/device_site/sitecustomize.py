"""Put on PYTHONPATH by tools/gpu_check.sh only, so it runs first in every Python process there
(pytest's subprocesses too). numba-cuda 0.30.4 registers an overload for ``np.row_stack`` while
importing its compiler, and NumPy 2.5 removed that alias, so on the device image (numpy 2.5.2)
every kernel compilation failed with "module 'numpy' has no attribute 'row_stack'". Give NumPy
the alias back (as its own function, so the overload does not collide with np.vstack's)."""
import numpy

if not hasattr(numpy, "row_stack"):
    def row_stack(tup, *, dtype=None, casting="same_kind"):
        return numpy.vstack(tup, dtype=dtype, casting=casting)

    numpy.row_stack = row_stack
