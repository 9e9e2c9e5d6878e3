"""pytest-benchmark: the whole call on a layer small enough that the call is what costs, N1 C3
32x32 K8 3x3 padding 1, through the public API (validation, the algorithm choice or lookup,
workspace, kernel) beside torch's whole call. One group, so the table shows the ratios:

    pytest tests/benchmarks/test_call_overhead.py --benchmark-enable

With --benchmark-disable (CI) each body runs once and its result is checked.
"""
import numpy as np
import pytest

import convbench as cb
from convbench import registry
from convbench.reference import random_inputs, reference
from convbench.spec import conv_spec
from convbench.tolerance import check_close, error_bound

SPEC = conv_spec((1, 3, 32, 32), (8, 3, 3, 3), padding=1)


def _torch_call():
    torch = pytest.importorskip("torch")
    x, w, _ = random_inputs(SPEC)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    return lambda: torch.nn.functional.conv2d(tx, tw, padding=1).numpy()


def _ours(kind: str):
    x, w, _ = random_inputs(SPEC)
    if kind == "prepared":
        layer = cb.Conv2d(w, padding=1)
        return lambda: layer(x)
    return lambda: cb.conv2d(x, w, padding=1, algorithm=kind)


@pytest.mark.parametrize("kind", ["auto", "direct", "im2col", "prepared", "torch"])
def test_call(benchmark, kind):
    call = _torch_call() if kind == "torch" else _ours(kind)
    call()  # compilation and the first choice stay out of the measurement
    benchmark.group = f"call overhead {SPEC.label()}"
    out = benchmark.pedantic(call, rounds=200, iterations=5, warmup_rounds=20)
    x, w, _ = random_inputs(SPEC)
    name = (cb.explain(SPEC.x_shape, SPEC.w_shape, padding=1).algorithm.name
            if kind in ("auto", "prepared") else kind)
    model = registry.get("conv2d", "cpu", name).error_model
    ok, ratio = check_close(np.asarray(out), reference(SPEC, x, w),
                            error_bound(SPEC, x, w, model))
    assert ok, f"{kind}: error/bound {ratio:.3g}"
