"""``python -m convbench warmup``: compile every CPU kernel of ours ahead of use, in parallel
processes, into Numba's on-disk cache.

Numba compiles a kernel on its first call with a new signature and, with ``cache=True``, keeps
the machine code beside the source, so a later process loads it in milliseconds. On a fresh
checkout or machine nothing is cached yet: the first run, or the test suite, compiles some
fifty kernels once per dtype, one after another on one core (about four minutes on a 2-core
AVX2 EPYC). Here each algorithm runs, in both dtypes, on small layers that take its code
paths (padding, stride, dilation, groups, depthwise, true convolution, bias, tiny and stacked
planes, 1x1 and strided 1x1, the prepared form), the (algorithm, dtype) units shared out
among worker processes. A unit's kernels are saved by the process that compiled them; where
two processes save the same kernel at once one entry may be lost, and that kernel is then
compiled again on first use: slower, never wrong.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from .machine import usable_cores

DTYPES = ("float32", "float64")


def _conv_cases(dtype: str) -> list:
    from .spec import conv_spec

    def c(x, w, **kw):
        return conv_spec(x, w, dtype=dtype, **kw)

    return [
        c((2, 3, 13, 11), (4, 3, 3, 3), padding=1, bias=True),
        c((1, 4, 12, 12), (4, 4, 3, 3)),  # unpadded: read in place
        c((2, 8, 14, 14), (8, 8, 3, 3), stride=2, padding=1),
        c((1, 2, 12, 10), (3, 2, 3, 2), stride=2, padding=(1, 0, 2, 1), dilation=(2, 1)),
        c((1, 1, 9, 9), (1, 1, 9, 9), flip=True),
        c((2, 4, 16, 16), (5, 4, 5, 5), padding=2),
        c((2, 16, 7, 7), (24, 16, 1, 1), bias=True),  # 1x1, small planes: gathered tails
        c((8, 16, 7, 7), (32, 16, 1, 1)),
        c((8, 600, 7, 7), (64, 600, 1, 1)),  # every image's last pixels in shared columns
        c((6, 40, 3, 3), (24, 40, 2, 2)),  # tiny images stacked, staged once for all tasks
        c((8, 64, 7, 7), (64, 64, 3, 3), padding=1),  # several images per GEMM
        c((1, 8, 16, 16), (8, 8, 1, 1), stride=2),  # strided 1x1: gathered pixels
        c((2, 8, 10, 10), (8, 4, 3, 3), groups=2, padding=1),
        c((2, 8, 14, 14), (8, 1, 3, 3), groups=8, padding=1, bias=True),  # depthwise
        c((2, 8, 14, 14), (8, 1, 5, 5), groups=8, padding=2, stride=2),
        c((1, 16, 7, 7), (16, 1, 7, 7), groups=16, padding=3),
        c((1, 3, 32, 32), (8, 3, 7, 7), stride=2, padding=3),  # a first layer
    ]


def _pool_cases(dtype: str) -> list:
    from .spec import pool_spec

    return [pool_spec(kind, (2, 3, 11, 10), size, stride=stride, padding=pad, dtype=dtype)
            for kind in ("max", "avg") for size, stride, pad in ((3, 2, 1), (2, 2, 0))]


def warm_unit(name: str, dtype: str) -> tuple[str, str, int, float]:
    """Run one algorithm on every warm-up case it supports, called and prepared; returns
    (name, dtype, cases run, seconds)."""
    from . import registry
    from .reference import random_inputs

    start, ran = time.perf_counter(), 0
    for algo in registry.algorithms(device="cpu"):
        if algo.name != name or algo.is_peer:
            continue
        cases = _conv_cases(dtype) if algo.op == "conv2d" else _pool_cases(dtype)
        for spec in cases:
            if spec.op != algo.op or not algo.supports(spec):
                continue
            x, w, b = random_inputs(spec)
            algo.bound(spec, x, w, b)()
            if algo.prepare is not None and w is not None:
                algo.prepared(w, spec, b)(x)
            ran += 1
    return name, dtype, ran, time.perf_counter() - start


def _warm_auto(dtype: str) -> tuple[str, str, int, float]:
    """``algorithm='auto'`` and the prepared form's own checks (the finite check, bias)."""
    import convbench as cb

    from .reference import random_inputs

    start = time.perf_counter()
    cases = _conv_cases(dtype)[:3]
    for spec in cases:
        x, w, b = random_inputs(spec)
        args = dict(stride=spec.stride, padding=spec.pad, dilation=spec.dilation,
                    groups=spec.groups, flip=spec.flip)
        cb.conv2d(x, w, b, **args)
        cb.Conv2d(w, b, **args)(x)
    return "auto", dtype, len(cases), time.perf_counter() - start


def _run(unit: tuple[str, str]) -> tuple[str, str, int, float]:
    name, dtype = unit
    return _warm_auto(dtype) if name == "auto" else warm_unit(name, dtype)


def units() -> list[tuple[str, str]]:
    """(algorithm, dtype) for every CPU algorithm of ours that compiles; one dtype's units
    before the other's, so the two dtypes of one algorithm seldom compile at once."""
    from . import registry

    names = list(dict.fromkeys(a.name for a in registry.algorithms(device="cpu")
                               if not a.is_peer and a.compiles))
    return [(n, d) for d in DTYPES for n in names + ["auto"]]


def warm(jobs: int | None = None, say=print) -> float:
    """Compile everything ``units`` names in ``jobs`` processes (default: one per core);
    returns the seconds taken."""
    jobs = jobs or usable_cores()
    start = time.perf_counter()
    todo = units()
    # spawned, not forked: a fork of a process whose threading layer already started is unsafe
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        for name, dtype, ran, seconds in pool.map(_run, todo):
            say(f"{name:14s} {dtype:8s} {ran:2d} cases  {seconds:6.1f} s")
    took = time.perf_counter() - start
    say(f"compiled {len(todo)} (algorithm, dtype) units in {took:.0f} s on {jobs} processes")
    return took
