"""CUDA kernels in numba.cuda, module for module the twins of ``convbench/cpu``.

Every kernel runs unchanged in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) for checking,
and on a real GPU for speed. Shared arrays always have compile-time-constant shapes, which a real
GPU requires and the simulator does not check.
"""
