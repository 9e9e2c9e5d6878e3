"""The regression gate: it catches a planted slowdown, passes the real algorithm, says so
instead of comparing when this machine has no baseline, and this machine's committed baseline
holds on the CI subset within a generous threshold (only real regressions, not a noisy
neighbour, should fail CI)."""
import dataclasses
import time

import pytest

from convbench import registry
from convbench.bench import gate
from convbench.bench.suite import Layer, layers
from convbench.cli import main
from convbench.spec import conv_spec

SMALL = [Layer("gate-test", conv_spec((4, 3, 24, 24), (4, 3, 3, 3)))]
CI_THRESHOLD = 2.0  # +200%: a shared 2-core machine varies up to ~2x between runs


def _ratios(measured: dict) -> dict:
    return {k: v["ratios"] for k, v in measured.items()}


def test_gate_fails_on_planted_slowdown_and_passes_the_real_one():
    real = registry.get("conv2d", "cpu", "direct")
    baseline = {"threshold": 1.0, "samples": _ratios(gate.measure(SMALL, repeats=7))}

    def slowed(x, w, spec):
        time.sleep(0.003)  # ~10x the layer's real time
        return real.run(x, w, spec)

    with registry.registered(dataclasses.replace(real, run=slowed)):
        results = gate.check(gate.measure(SMALL, repeats=7), baseline)
    failed = [(r.layer, r.algorithm) for r in results if r.verdict == "regression"]
    assert failed == [("gate-test", "direct")]
    assert "REGRESSION" in gate.format_results(results)
    again = gate.check(gate.measure(SMALL, repeats=7), baseline)
    assert not [r for r in again if r.verdict == "regression"]


def test_each_algorithm_is_timed_against_a_control_of_its_own_kind():
    measured = gate.measure(SMALL, repeats=3)
    for key, got in measured.items():
        algo = registry.get("conv2d", "cpu", key.split("|")[1])
        assert got["control"] == algo.bound_by and len(got["ratios"]) == 3


def test_per_layer_threshold_overrides_default():
    baseline = {"threshold": 0.25, "layer_thresholds": {"a": 1.0},
                "samples": {"a|x": [1.0, 1.01, 0.99], "b|x": [1.0, 1.01, 0.99]}}
    new = {k: {"control": "numba", "ratios": [1.5, 1.52, 1.49]} for k in ("a|x", "b|x")}
    verdicts = {r.layer: r.verdict for r in gate.check(new, baseline)}
    assert verdicts == {"a": "ok", "b": "regression"}


def test_new_algorithm_without_baseline_is_new_not_a_failure():
    results = gate.check({"a|new": {"control": "blas", "ratios": [100.0] * 3}}, {"samples": {}})
    assert [r.verdict for r in results] == ["new"]


def test_no_baseline_for_this_machine_is_said_not_failed(tmp_path, capsys):
    assert main(["gate", "--subset", "ci", "--baseline", str(tmp_path / "none.json")]) == 0
    assert "no baseline for this machine" in capsys.readouterr().out


def test_committed_baseline_holds_on_ci_subset():
    baseline = gate.load_baseline()
    if baseline is None:  # another machine kind: the gate must say so rather than compare
        assert main(["gate", "--subset", "ci"]) == 0
        return
    results = gate.check(gate.measure(layers("ci"), repeats=7), baseline, CI_THRESHOLD)
    failed = [r for r in results if r.verdict == "regression"]
    assert not failed, gate.format_results(results)


@pytest.mark.parametrize("argv", [["gate", "--threshold", "-5"], ["gate", "--threshold", "x"],
                                  ["gate", "--repeats", "1"]])
def test_bad_gate_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("convbench: error:")
