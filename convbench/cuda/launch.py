"""Launch geometry of every CUDA kernel (threads per block, tile edges, FFT line lengths) in
one value. The wrappers read the current geometry and pass it to the kernel factories; the
simulator tests switch to tiny blocks with ``use(...)`` so that tiny shapes still span
several blocks in every grid dimension."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Geometry:
    direct_tile: int = 16  # direct v2: output tile edge = threads per block edge
    direct_v1_block: tuple[int, int] = (32, 8)  # threads along the output width, along rows
    gemm_threads: int = 16  # im2col GEMM: threads per block edge
    gemm_register_tile: int = 4  # each thread computes this many x this many outputs
    gemm_depth: int = 16  # depth of the staged operand slices
    unfold_block: tuple[int, int] = (32, 8)
    igemm_threads: tuple[int, int] = (16, 16)  # implicit GEMM: threads along pixels, channels
    igemm_register_tile: tuple[int, int] = (8, 8)  # outputs per thread: channels x pixels
    igemm_depth: int = 8  # reduction values per staged slice
    fft_threads: int = 256  # threads per block of the pass-per-launch FFT
    fft_block: tuple[int, int] = (32, 8)  # staging, multiply-accumulate and read-out kernels
    fft_max_line: int = 1024  # longest line transformed whole in shared memory
    fft_line_threads: int = 256  # threads per block of the whole-line FFT
    pool_block: tuple[int, int] = (32, 8)  # one warp along the output width


DEFAULT = Geometry()
_current: ContextVar[Geometry] = ContextVar("convbench_cuda_geometry", default=DEFAULT)


def current() -> Geometry:
    return _current.get()


@contextlib.contextmanager
def use(geometry: Geometry) -> Iterator[Geometry]:
    """Run the CUDA wrappers with ``geometry`` inside a ``with`` block."""
    token = _current.set(geometry)
    try:
        yield geometry
    finally:
        _current.reset(token)
