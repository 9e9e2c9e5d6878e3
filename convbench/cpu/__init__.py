"""CPU kernels in Numba: one module per algorithm, each registering itself."""
