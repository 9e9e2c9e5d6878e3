"""The regression gate: it catches a planted slowdown, passes the real algorithm, and the
committed baseline holds on the CI subset within a generous threshold (only real regressions,
not a noisy neighbour, should fail CI)."""
import time

from convbench import registry
from convbench.bench import gate
from convbench.bench.suite import Layer, layers
from convbench.registry import Algorithm
from convbench.spec import conv_spec

SMALL = [Layer("gate-test", conv_spec((4, 3, 24, 24), (4, 3, 3, 3)))]
CI_THRESHOLD = 2.0  # +200%: a shared 2-core machine varies up to ~2x between runs


def _only(name):
    """Keep only one conv2d algorithm registered while measuring."""
    return {k: v for k, v in registry._REGISTRY.items() if k[0] != "conv2d" or k[2] == name}


def test_gate_fails_on_planted_slowdown_and_passes_the_real_one(monkeypatch):
    registry.algorithms()  # load every module before narrowing the registry
    real = registry.get("conv2d", "cpu", "direct")
    monkeypatch.setattr(registry, "_REGISTRY", _only("direct"))
    baseline = {"threshold": 0.25, "ratios": gate.measure(SMALL, repeats=5)}

    def slowed(x, w, spec):
        time.sleep(0.003)  # ~10x the layer's real time
        return real.run(x, w, spec)

    registry._REGISTRY[real.key] = Algorithm("direct", "conv2d", "cpu", slowed)
    failures = gate.check(gate.measure(SMALL, repeats=5), baseline)
    assert len(failures) == 1
    assert "direct on gate-test" in failures[0] and "baseline" in failures[0]

    registry._REGISTRY[real.key] = real
    assert gate.check(gate.measure(SMALL, repeats=5), baseline, threshold=1.0) == []


def test_per_layer_threshold_overrides_default():
    baseline = {"threshold": 0.25, "layer_thresholds": {"a": 1.0},
                "ratios": {"a|x": 1.0, "b|x": 1.0}}
    failures = gate.check({"a|x": 1.5, "b|x": 1.5}, baseline)
    assert failures == [f for f in failures if "on b" in f] and len(failures) == 1


def test_new_algorithm_without_baseline_passes():
    assert gate.check({"a|new": 100.0}, {"ratios": {}}) == []


def test_committed_baseline_holds_on_ci_subset():
    baseline = gate.load_baseline()
    failures = gate.check(gate.measure(layers("ci"), repeats=5), baseline, CI_THRESHOLD)
    assert not failures, "\n".join(failures)
