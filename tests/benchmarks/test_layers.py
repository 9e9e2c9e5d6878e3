"""pytest-benchmark benchmarks: every registered CPU algorithm (peers included) on the fixed
layer suite, one benchmarked function per test, grouped by layer so each group's table puts
ours beside the peers. With --benchmark-disable (the default in CI) each body runs once and the
output is checked against the reference, so the suite doubles as a correctness test at full size
(of every algorithm of ours; of the peers on the CI subset of layers).

Run them for real with:  pytest tests/benchmarks --benchmark-enable --benchmark-group-by=group
"""
import numpy as np
import pytest

from convbench import registry
from convbench.bench.suite import LAYERS
from convbench.reference import random_inputs, reference
from convbench.tolerance import check_close, error_bound

# A peer (SciPy, NumPy, torch) on a large layer checks the peer, not us, and SciPy's channel
# loops take tens of seconds there: with --benchmark-disable (CI) those cases are deselected
# (conftest.py) and the peers are checked on the CI subset of layers only.
CASES = [pytest.param(layer, algo, id=f"{layer.name}-{algo.name}",
                      marks=[pytest.mark.peer_large] if algo.is_peer and not layer.ci else [])
         for layer in LAYERS for algo in registry.algorithms(layer.spec.op, "cpu")
         if algo.supports(layer.spec)]


@pytest.fixture(scope="module")
def references():
    return {}


@pytest.mark.parametrize("layer,algo", CASES)
def test_layer(benchmark, layer, algo, control_seconds, references):
    spec = layer.spec
    x, w, b = random_inputs(spec)
    fn = algo.bound(spec, x, w, b)
    fn()  # JIT compilation stays out of the measurement
    benchmark.group = layer.name
    benchmark.extra_info.update(
        algorithm=algo.name, peer=algo.is_peer, layer=spec.label(),
        workspace_bytes=algo.workspace_bytes(spec), flops=spec.flops)
    out = benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # absent with --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(gflops=spec.flops / median / 1e9, control=algo.bound_by,
                                    time_over_control=median / control_seconds(algo.bound_by))
    if layer.name not in references:
        references[layer.name] = reference(spec, x, w, b)
    ok, ratio = check_close(out, references[layer.name],
                            error_bound(spec, x, w, algo.error_model, b))
    assert ok, f"{algo.name} on {layer.name}: error/bound {ratio:.3g}"
    assert np.isfinite(out).all()
