"""Where the fixed cost of a CUDA call goes (host side): per-launch time of an empty kernel and
of a kernel with the direct kernel's arguments, a device allocation, a view through
__cuda_array_interface__, a whole tiny convolution per algorithm, and a cProfile of the tiny
direct and fft calls. Run on the device machine: python tools/gpu_overhead.py OUTDIR."""
from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import numpy as np
from numba import cuda

from convbench import registry
from convbench.reference import random_inputs
from convbench.devices import simulator_enabled
from convbench.spec import conv_spec

SIM = simulator_enabled()  # a dry run of this script off the GPU: two calls of each


@cuda.jit
def empty():
    pass


@cuda.jit
def ten_args(x, w, out, a, b, c, d, e, f, g):
    pass


def per_call_us(fn, n=2000):
    n = 2 if SIM else n
    fn()
    cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e6


def main(out_dir: str) -> None:
    x = cuda.to_device(np.ones((1, 1, 8, 8), np.float32))
    w = cuda.to_device(np.ones((1, 1, 3, 3), np.float32))
    o = cuda.device_array((1, 1, 6, 6), np.float32)
    rows = [("empty kernel launch", per_call_us(lambda: empty[1, 32]())),
            ("10-argument launch", per_call_us(lambda: ten_args[1, 32](x, w, o, 1, 1, 0, 0, 1, 1,
                                                                        False))),
            ("device_array 1 MiB", per_call_us(lambda: cuda.device_array(1 << 18, np.float32))),
            ("view via the interface", per_call_us(lambda: cuda.as_cuda_array(x))
                                        if not SIM else 0.0)]
    spec = conv_spec((1, 1, 8, 8), (1, 1, 3, 3))
    hx, hw, _ = random_inputs(spec)
    dx, dw = cuda.to_device(hx), cuda.to_device(hw)
    for algo in registry.algorithms("conv2d", "cuda"):
        fn = algo.bound(spec, dx, dw)
        rows.append((f"tiny conv {algo.name}", per_call_us(fn, 300)))
    report = "\n".join(f"{name:28s} {us:9.1f} us per call" for name, us in rows)
    for name in ("direct", "fft"):
        fn = next(a for a in registry.algorithms("conv2d", "cuda")
                  if a.name == name).bound(spec, dx, dw)
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200 if not SIM else 2):
            fn()
        cuda.synchronize()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        report += f"\n\n== cProfile of 200 tiny {name} calls (tottime)\n" + buf.getvalue()
    open(f"{out_dir}/overhead.txt", "w").write(report)
    print(report[:6000])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
