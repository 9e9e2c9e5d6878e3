"""Compile every convbench CUDA kernel to PTX (and, with ptxas, to sm_90 machine code) on a
machine with no GPU, to catch what the simulator accepts but a real GPU rejects (non-constant
shared-array shapes, typing of mixed scalars) before spending device time.

Needs libnvvm and libnvrtc (a CUDA toolkit, or the ``cuda-compile`` extra: the
nvidia-cuda-nvcc-cu12 / nvidia-cuda-nvrtc-cu12 wheels, whose ptxas it uses first); run without
NUMBA_ENABLE_CUDASIM:  python tools/compile_cuda.py [--ptxas]
With --ptxas, a missing ptxas is a failure, not a skipped check.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)

from numba import cuda, types  # noqa: E402
from numba.cuda import dispatcher  # noqa: E402

from convbench.cuda import (  # noqa: E402
    bias, depthwise, direct, fft, im2col, implicit_gemm, launch, pool, winograd)

CC = (9, 0)


class _Hopper:
    compute_capability = CC


# Device functions (split_row) are compiled for "the current device", which needs a driver:
# answer with the H100's compute capability instead.
dispatcher.get_current_device = _Hopper
I = types.int64
B = types.boolean


def arr(dtype, ndim):
    return types.Array(dtype, ndim, "C")


def kernels():
    """(name, python function, argument types) for every kernel, float32 and float64, at the
    default launch geometry."""
    g = launch.DEFAULT
    for f, c in ((types.float32, types.complex64), (types.float64, types.complex128)):
        name = str(f)
        x4, c4, c3, c1 = arr(f, 4), arr(c, 4), arr(c, 3), arr(c, 1)
        conv_args = (x4, x4, x4, I, I, I, I, I, I, B, I)
        yield f"direct_v1 {name}", direct._make_v1(name).py_func, conv_args
        yield f"direct_v2 {name}", direct._make_v2(name, g.direct_tile).py_func, conv_args
        yield (f"unfold {name}", im2col._make_unfold(name).py_func,
               (x4, I, arr(f, 3), I, I, I, I, I, I, I, I, I, I, B))
        yield (f"gemm {name}", im2col._make_gemm(name, g.gemm_threads, g.gemm_register_tile,
                                                  g.gemm_depth).py_func,
               (arr(f, 3), arr(f, 3), arr(f, 3)))
        for has_bias in (False, True):
            yield (f"implicit_gemm{' +bias' if has_bias else ''} {name}",
                   implicit_gemm._make_kernel(name, *g.igemm_threads, *g.igemm_register_tile,
                                              g.igemm_depth, has_bias).py_func,
                   (x4, arr(f, 2), arr(types.int32, 2), arr(f, 1), x4, I, I, I, I, I, I, I, I))
        kernel_t, input_t, output_t = winograd._make_transforms(name)
        yield f"winograd kernel_transform {name}", kernel_t.py_func, (x4, arr(f, 3), B)
        yield f"winograd input_transform {name}", input_t.py_func, (x4, arr(f, 3), I, I, I, I)
        yield (f"winograd output_transform {name}", output_t.py_func,
               (arr(f, 3), x4, I, I, arr(f, 1), B))
        yield f"stockham {name}", fft._stockham_pass.py_func, (c1, c1, I, I, I, I)
        yield (f"line_fft {name}", fft._make_line_fft(str(c), g.fft_max_line).py_func,
               (c1, I, I, I, I))
        yield f"stage_images {name}", fft._stage_images.py_func, (x4, c4)
        yield f"stage_kernels {name}", fft._stage_kernels.py_func, (x4, c4, I, I, B)
        yield f"spectral_mac {name}", fft._spectral_mac.py_func, (c3, c3, c3)
        yield (f"read_out {name}", fft._read_out.py_func,
               (c4, x4, I, I, I, I, types.float64))
        for staged in (True, False):
            yield (f"depthwise{' staged' if staged else ''} {name}",
                   depthwise._make(name, g.direct_tile, staged).py_func,
                   (x4, x4, x4, I, I, I, I, I, I, B, arr(f, 1), B))
        yield f"add_bias {name}", bias._add_bias.py_func, (x4, arr(f, 1))
        yield f"max_pool {name}", pool._max_pool.py_func, (x4, x4, I, I, I, I, I, I)
        yield f"avg_pool {name}", pool._avg_pool.py_func, (x4, x4, I, I, I, I, I, I, B)


def find_ptxas() -> str | None:
    """ptxas of the nvidia-cuda-nvcc wheel if installed, else the one on PATH."""
    try:
        import nvidia.cuda_nvcc as wheel

        candidate = os.path.join(list(wheel.__path__)[0], "bin", "ptxas")
        if os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    return shutil.which("ptxas")


def main() -> int:
    ptxas = find_ptxas() if "--ptxas" in sys.argv else None
    if "--ptxas" in sys.argv and not ptxas:
        print("FAIL ptxas not found: install the cuda-compile extra (pip install -e "
              "'.[cuda-compile]') or a CUDA toolkit")
        return 1
    failed = 0
    for label, fn, sig in kernels():
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=CC)
        except Exception as exc:
            failed += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:2000]}")
            continue
        note = f"{len(ptx)} chars of PTX"
        if ptxas:
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(ptx)
            res = subprocess.run([ptxas, "-arch=sm_90", "-v", f.name, "-o", os.devnull],
                                 capture_output=True, text=True)
            os.unlink(f.name)
            if res.returncode:
                failed += 1
                print(f"FAIL {label}: ptxas: {res.stderr[-1500:]}")
                continue
            info = [ln.split("ptxas info    :")[-1].strip() for ln in res.stderr.splitlines()
                    if "Used" in ln or "spill" in ln]
            note = "; ".join(info)
        print(f"ok   {label}: {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
