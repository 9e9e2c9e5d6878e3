"""``python -m convbench check``: verify every registered algorithm on the devices present,
then (on a real GPU) time each CUDA algorithm beside cuDNN and cuFFT with CUDA events.

Nothing is timed unless everything verified: "All results match. Starting benchmarks."
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from .. import registry, timing
from ..devices import simulator_enabled
from ..reference import random_inputs, reference
from ..spec import conv_spec, pool_spec
from ..tolerance import check_close, error_bound
from . import gpu_monitor
from .suite import LAYERS, Layer

SMALL_CASES = [  # odd sizes, stride, padding, dilation, flip, batch 1, one channel
    conv_spec((2, 3, 13, 11), (4, 3, 3, 3), padding=1),
    conv_spec((1, 1, 9, 9), (1, 1, 9, 9), flip=True),
    conv_spec((1, 2, 12, 10), (3, 2, 3, 2), stride=2, padding=(1, 0, 2, 1), dilation=(2, 1)),
    conv_spec((2, 4, 16, 16), (5, 4, 5, 5), dtype="float64"),
]
SIM_CASES = [conv_spec((1, 2, 6, 5), (2, 2, 3, 2), padding=1),
             conv_spec((1, 1, 5, 5), (1, 1, 2, 3), stride=2, flip=True)]
POOL_CASES = [pool_spec("max", (2, 3, 11, 10), 3, stride=2, padding=1),
              pool_spec("avg", (2, 3, 11, 10), 2)]
EXTRA_GPU_LAYERS = (
    [Layer(f"layer-64-{k}x{k}", conv_spec((4, 16, 64, 64), (16, 16, k, k))) for k in (7, 11)]
    + [Layer(f"single-512-{k}x{k}", conv_spec((1, 1, 512, 512), (1, 1, k, k))) for k in (15, 31)]
)


def verify(devices: list[str], say=print) -> bool:
    """Check every algorithm (peers included) on small cases; True when all match."""
    all_ok = True
    for device in devices:
        sim = device == "cuda" and simulator_enabled()
        for op in registry.OPS:
            cases = (SIM_CASES if sim else SMALL_CASES) if op == "conv2d" else POOL_CASES
            for algo in registry.algorithms(op, device):
                for spec in cases:
                    if op != "conv2d" and spec.op != op:
                        continue
                    if not algo.supports(spec):
                        continue
                    x, w, b = random_inputs(spec)
                    try:
                        out = algo.bound(spec, x, w, b)()
                        bound = error_bound(spec, x, w, algo.error_model, b)
                        ok, ratio = check_close(out, reference(spec, x, w, b), bound)
                        note = f"error/bound {ratio:.2g}"
                    except Exception as exc:  # report and keep checking the others
                        ok, note = False, f"{type(exc).__name__}: {exc}"
                    all_ok &= ok
                    say(f"{'ok  ' if ok else 'FAIL'} {device:4s} {op:10s} {algo.name:12s} "
                        f"{spec.label():42s} {note}")
    return all_ok


def copy_bandwidth_gbps(nbytes: int = 1 << 28) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second)."""
    from numba import cuda

    src = cuda.device_array(nbytes // 4, np.float32)
    dst = cuda.device_array(nbytes // 4, np.float32)
    fn = lambda: dst.copy_to_device(src)  # noqa: E731
    seconds = min(timing.cuda_repeat(fn, 5) for _ in range(3))
    return 2 * nbytes / seconds / 1e9


# FP32 lanes (FMA units) per SM by compute capability: Volta, Turing and A100 have 64; GA10x,
# Ada and Hopper 128 (NVIDIA's architecture whitepapers). Tensor cores are not counted: our
# kernels and cuDNN with TF32 off run on these lanes.
FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128,
                     (9, 0): 128}


def fp32_peak_gflops(sms: int, clock_khz: int, compute_capability: tuple[int, int]) -> float:
    """Peak FP32 GFLOP/s without tensor cores: SMs x lanes x 2 (an FMA) x boost clock; 0 for an
    architecture not in the table (no fraction is then reported)."""
    lanes = FP32_LANES_PER_SM.get(tuple(compute_capability), 0)
    return sms * lanes * 2 * clock_khz / 1e6


def device_fp32_peak_gflops() -> float:
    from numba import cuda

    dev = cuda.get_current_device()
    return fp32_peak_gflops(dev.MULTIPROCESSOR_COUNT, dev.CLOCK_RATE, dev.compute_capability)


def benchmark_cuda(out_csv: Path | None, say=print, repeats: int = 5,
                   caches: tuple[str, ...] = ("warm",)) -> list[dict]:
    """Median CUDA-event time of every CUDA algorithm per layer and cache mode, with ratios to
    the peers, the GPU's clocks, heat and power meanwhile, and a throttled flag."""
    from numba import cuda

    rows = []
    bandwidth = copy_bandwidth_gbps()
    peak = device_fp32_peak_gflops()
    say(f"device copy bandwidth: {bandwidth:.0f} GB/s; fp32 peak (no tensor cores) "
        f"{peak / 1e3:.1f} TFLOP/s")
    for layer in LAYERS + EXTRA_GPU_LAYERS:
        spec = layer.spec
        x, w, b = random_inputs(spec)
        dx = cuda.to_device(x)
        dw = cuda.to_device(w) if w is not None else None
        fns, libraries = {}, {}
        for algo in registry.algorithms(spec.op, "cuda"):
            if not algo.supports(spec):
                continue
            fn = algo.bound(spec, dx, dw, b)
            try:
                fn()
                fns[algo.name], libraries[algo.name] = fn, algo.library
            except Exception as exc:
                say(f"{layer.name}: {algo.name} failed: {type(exc).__name__}: {exc}")
        for cache in caches:
            with gpu_monitor.sampler_for("cuda") as gpu:
                timings = timing.measure(fns, min_rounds=repeats, target_seconds=0.02,
                                         repeat=timing.repeat_for("cuda", cache), budget_s=10.0)
            rows += _layer_rows(layer, timings, libraries, cache, gpu.summary(), bandwidth, peak)
    if out_csv:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k)
                      if k in rows[0] else 99)
        with out_csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    return rows


def _layer_rows(layer: Layer, timings: dict, libraries: dict, cache: str, gpu: dict,
                bandwidth: float, peak: float) -> list[dict]:
    """One row per algorithm timed on a layer in one cache mode."""
    spec = layer.spec
    medians = {n: t.median for n, t in timings.items()}
    # the library peers each CUDA algorithm is compared with: cuDNN (torch), cuFFT (CuPy)
    refs = {lib: next((n for n in medians if libraries[n] == lib), None)
            for lib in ("torch", "cupy")}
    rows = []
    for name, med in medians.items():
        row = {"layer": layer.name, "case": spec.label(), "algorithm": name, "cache": cache,
               "median_ms": med * 1e3, "gflops": spec.flops / med / 1e9,
               "gbps": spec.min_bytes / med / 1e9, "unsettled": timings[name].unsettled, **gpu}
        for peer in refs.values():
            if peer:
                row[f"x_{peer}"] = timing.median_round_ratio(timings[name].rounds,
                                                             timings[peer].rounds)
        if spec.op != "conv2d":
            row["fraction_of_copy_bw"] = row["gbps"] / bandwidth
        elif peak and spec.dtype == "float32":
            row["fraction_of_fp32_peak"] = row["gflops"] / peak
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["layer", "algorithm", "cache", "median_ms", "gflops", "x_cudnn", "x_torch",
            "x_cufft", "fraction_of_fp32_peak", "fraction_of_copy_bw", "throttled"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["  ".join(f"{c:>14s}" for c in cols)]
    for r in rows:
        cells = [f"{r[c]:14.3g}" if isinstance(r.get(c), float) else f"{str(r.get(c, '')):>14s}"
                 for c in cols]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run_check(devices: list[str], out_dir: Path, say=print, cache: str = "warm") -> int:
    """Verify, then benchmark CUDA on a real GPU; exit status 0 when all verified."""
    if "cuda" in devices and not simulator_enabled():
        from ..cuda import memory

        memory.install()  # count device bytes from the first allocation on
    start = time.perf_counter()
    if not verify(devices, say):
        say("Some results do NOT match the reference: no benchmark run.")
        return 1
    say(f"All results match ({time.perf_counter() - start:.1f} s). Starting benchmarks.")
    if "cuda" not in devices:
        say("no CUDA device: nothing to benchmark (the CPU harness is `python -m convbench run`)")
        return 0
    if simulator_enabled():
        say("CUDA simulator: kernels verified; timings would be meaningless, none taken")
        return 0
    caches = ("warm", "cold") if cache == "both" else (cache,)
    rows = benchmark_cuda(out_dir / f"check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.csv",
                          say, caches=caches)
    say(format_table(rows))
    return 0
