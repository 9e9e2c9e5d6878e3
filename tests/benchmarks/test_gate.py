"""The regression gate: it catches a planted slowdown, passes the real algorithm, says so
instead of comparing when this machine has no baseline, and a stored baseline is strict only
on the host that recorded it (gate --against, in test_gate_against.py, is what CI runs)."""
import dataclasses
import json
import time
from pathlib import Path

import pytest

from convbench import machine, registry
from convbench.bench import gate
from convbench.bench.suite import Layer
from convbench.cli import main
from convbench.spec import conv_spec

SMALL = [Layer("gate-test", conv_spec((4, 3, 24, 24), (4, 3, 3, 3)))]


def _ratios(measured: dict) -> dict:
    return {k: v["ratios"] for k, v in measured.items()}


def test_gate_fails_on_planted_slowdown_and_passes_the_real_one():
    real = registry.get("conv2d", "cpu", "direct")
    baseline = {"threshold": 1.0, "samples": _ratios(gate.measure(SMALL, repeats=7))}

    def slowed(x, w, spec):
        # ~10x the layer's real time, busy: with a sleep here the core went idle, and the
        # im2col call after it once ran over 2x slower (a clean CI clone), flagged as well
        until = time.perf_counter() + 0.003
        while time.perf_counter() < until:
            pass
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


def test_no_baseline_for_this_machine_is_a_one_line_error_pointing_to_against(tmp_path, capsys):
    assert main(["gate", "--subset", "ci", "--baseline", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "no stored baseline" in err and "--against" in err and "\n" not in err.strip()


def _stored(tmp_path) -> Path:
    env = {"cpu": "?", "cores": 2}
    return gate.save_baseline(_ratios(gate.measure(SMALL, repeats=3)), env,
                              tmp_path / "b.json")


def test_a_stored_baseline_is_strict_on_its_host_advisory_elsewhere_foreign_across_targets(
        tmp_path, monkeypatch):
    baseline = gate.load_baseline(_stored(tmp_path))
    assert gate.standing(baseline) == "strict"
    monkeypatch.setattr(machine, "host_id", lambda: "another-host")
    assert gate.standing(baseline) == "advisory"
    parts = baseline["machine"].split("|")
    parts[3] = "avx2" if parts[3] != "avx2" else "avx512"  # the vector target
    assert gate.standing({**baseline, "machine": "|".join(parts)}) == "foreign"


def test_another_identity_exits_2_and_another_host_never_fails(tmp_path, monkeypatch, capsys):
    path = _stored(tmp_path)
    data = json.loads(path.read_text())
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({**data, "machine": "Some CPU|x86_64|64 cores|avx2|openblas "
                                                      "Haswell|64 threads|convbench 0"}))
    assert main(["gate", "--baseline", str(foreign)]) == 2
    assert "not comparable" in capsys.readouterr().err
    monkeypatch.setattr(machine, "host_id", lambda: "another-host")
    real = registry.get("conv2d", "cpu", "direct")

    def slowed(x, w, spec):
        time.sleep(0.003)
        return real.run(x, w, spec)

    monkeypatch.setattr("convbench.bench.suite.layers", lambda subset: SMALL)
    with registry.registered(dataclasses.replace(real, run=slowed)):
        assert main(["gate", "--baseline", str(path), "--repeats", "5"]) == 0
    assert "advisory" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["gate", "--threshold", "-5"], ["gate", "--threshold", "x"],
                                  ["gate", "--repeats", "1"]])
def test_bad_gate_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("convbench: error:")
