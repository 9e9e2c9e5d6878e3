"""algorithm='auto': the cost model, explain(), the workspace limit, and the measured cache."""
import json

import numpy as np
import pytest

import convbench as cb
from convbench import auto, costmodel, registry, tuning
from convbench.bench import costfit
from convbench.cli import main
from convbench.spec import conv_spec


def _algo(name: str):
    return registry.get("conv2d", "cpu", name)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own cache directory and a freshly loaded model."""
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVBENCH_AUTOTUNE", raising=False)
    auto.reload_model()
    yield
    auto.reload_model()


def test_explain_lists_every_candidate_and_picks_the_fastest_prediction():
    choice = cb.explain((4, 16, 64, 64), (16, 16, 9, 9))
    names = {c.name for c in choice.candidates}
    assert {"direct", "im2col", "fft", "fft_tiled"} <= names
    eligible = [c for c in choice.candidates if not c.note and c.predicted_s is not None]
    assert choice.algorithm.name == min(eligible, key=lambda c: c.predicted_s).name
    assert all(c.workspace_bytes == cb.workspace_bytes(c.name, conv_spec(
        (4, 16, 64, 64), (16, 16, 9, 9))) for c in eligible)
    text = str(choice)
    assert "pick:" in text and "predicted ms" in text and "shipped defaults" in text


def test_model_orders_the_obvious_cases():
    """A 1x1 layer is a GEMM; a 31x31 kernel on a large image belongs to the FFT family."""
    assert cb.explain((8, 192, 28, 28), (64, 192, 1, 1)).algorithm.name in ("im2col",
                                                                              "implicit_gemm")
    assert cb.explain((1, 1, 512, 512), (1, 1, 31, 31)).algorithm.name in ("fft", "fft_tiled")


def test_auto_respects_the_workspace_limit(monkeypatch):
    spec_args = ((4, 16, 64, 64), (16, 16, 15, 15))
    unlimited = cb.explain(*spec_args)
    assert unlimited.algorithm.name in ("fft", "fft_tiled", "im2col")
    monkeypatch.setenv("CONVBENCH_MAX_WORKSPACE", "200K")
    limited = cb.explain(*spec_args)
    assert limited.algorithm.workspace_bytes(conv_spec(*spec_args)) <= 200 * 1024
    over = [c for c in limited.candidates if "limit" in c.note]
    assert over and all(c.workspace_bytes > 200 * 1024 for c in over)
    x = np.random.default_rng(0).standard_normal(spec_args[0]).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(spec_args[1]).astype(np.float32)
    y = cb.conv2d(x, w)  # auto under the limit still computes the right thing
    np.testing.assert_allclose(y, cb.conv2d(x, w, algorithm="direct"), rtol=1e-3, atol=1e-3)


def fake_timer(cost: dict, timed: list, spread: float = 0.0):
    """A stand-in for timing.measure: each algorithm takes cost[name] seconds in every round
    (times 1 + spread on alternate rounds)."""
    from convbench.timing import Timing

    def measure(fns, **kwargs):
        timed.extend(fns)
        return {n: Timing(rounds=[cost.get(n, 10.0) * (1 + spread * (i % 2)) for i in range(5)])
                for n in fns}

    return measure


def test_measured_choice_is_cached_across_processes(monkeypatch):
    timed = []
    cost = {"direct": 3.0, "im2col": 1.0, "fft": 2.0, "fft_tiled": 2.5}
    monkeypatch.setattr(auto.timing, "measure", fake_timer(cost, timed))
    spec = conv_spec((2, 8, 16, 16), (8, 8, 3, 3))
    first = auto.choose(spec, "cpu", measure=True)
    assert len(timed) == auto.MEASURE_TOP and "measured now" in first.reason
    assert first.algorithm.name == min(list(timed), key=lambda n: cost.get(n, 10.0))
    auto.reload_model()  # as a new process would: only the file remains
    tuning._memo = None
    again = auto.choose(spec, "cpu", measure=True)
    assert len(timed) == auto.MEASURE_TOP  # nothing timed the second time
    assert again.algorithm.name == first.algorithm.name and "earlier" in again.reason


def test_measured_choice_keeps_the_model_pick_within_noise(monkeypatch):
    """A candidate faster than the model's pick only by less than the rounds' spread does not
    overturn the pick; one clearly faster does."""
    spec = conv_spec((2, 8, 16, 16), (8, 8, 3, 3))
    modelled = auto.choose(spec, "cpu").algorithm.name
    others = [a.name for a in cb.algorithms("conv2d", "cpu") if not a.is_peer]
    cost = {n: 1.0 for n in others}
    cost[modelled] = 1.02  # 2% slower, inside a 10% spread
    monkeypatch.setattr(auto.timing, "measure", fake_timer(cost, [], spread=0.2))
    assert auto.choose(spec, "cpu", measure=True, use_cache=False).algorithm.name == modelled
    cost[modelled] = 3.0
    assert auto.choose(spec, "cpu", measure=True, use_cache=False).algorithm.name != modelled


def test_cache_is_invalidated_when_the_machine_or_version_changes(monkeypatch):
    calls = []
    monkeypatch.setattr(auto.timing, "measure",
                        fake_timer({a.name: 1.0 for a in cb.algorithms("conv2d", "cpu")}, calls))
    spec = conv_spec((1, 4, 12, 12), (4, 4, 3, 3))
    auto.choose(spec, "cpu", measure=True)
    n = len(calls)
    monkeypatch.setattr(tuning, "model_id", lambda: "another machine|convbench 9.9")
    auto.choose(spec, "cpu", measure=True)
    assert len(calls) == 2 * n


@pytest.mark.parametrize("value,measured", [("1", True), ("yes", True), ("ON", True),
                                            ("0", False), ("false", False), ("off", False),
                                            ("", False)])
def test_autotune_environment_variable(monkeypatch, value, measured):
    monkeypatch.setattr(auto.timing, "measure",
                        fake_timer({a.name: 1.0 for a in cb.algorithms("conv2d", "cpu")}, []))
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", value)
    reason = auto.choose(conv_spec((1, 2, 8, 8), (2, 2, 3, 3)), "cpu").reason
    assert ("measured" in reason) == measured


def test_fit_recovers_known_constants():
    rng = np.random.default_rng(0)
    truth = np.array([1e-5, 2e-9, 5e-11])
    samples = []
    for _ in range(40):
        f = [1.0, rng.uniform(1e3, 1e6), rng.uniform(1e5, 1e8)]
        samples.append((f, float(np.dot(truth, f))))
    np.testing.assert_allclose(costfit.fit(samples), truth, rtol=1e-3)


def test_local_correction_follows_the_nearest_calibration_errors():
    """Layers near calibration layers that ran 2x slower than the linear model get a factor of
    about 2; layers near ones the model got right get about 1; a left-out row is not used."""
    spec_near = conv_spec((8, 32, 28, 28), (16, 32, 7, 7), stride=2, padding=3)
    spec_far = conv_spec((1, 1, 512, 512), (1, 1, 3, 3))
    near, far = costmodel.descriptor(spec_near), costmodel.descriptor(spec_far)
    rows = ([near + [np.log(2.0)]] * costmodel.NEIGHBOURS
            + [far + [0.0]] * costmodel.NEIGHBOURS)
    table = np.array(rows)
    assert costmodel.local_factor(table, near) == pytest.approx(2.0)
    assert costmodel.local_factor(table, far) == pytest.approx(1.0)
    single = np.array([near + [np.log(3.0)], far + [0.0]])
    assert costmodel.local_factor(single, near, skip=0) < 1.5  # only the far row is left

    direct = _algo("direct")
    model = costmodel.CostModel({"cpu/conv2d/direct": [1e-6] * len(
        direct.cost_features(spec_near))}, "test", {"cpu/conv2d/direct": rows})
    linear = model.linear(direct, spec_near)
    assert model.predict(direct, spec_near) == pytest.approx(2.0 * linear)


def test_residuals_are_the_log_errors_of_the_linear_fit():
    spec = conv_spec((2, 3, 16, 16), (4, 3, 3, 3))
    f = _algo("im2col").cost_features(spec)
    coeffs = [1e-6] + [0.0] * (len(f) - 1)  # predicts 1 us
    (row,) = costfit.residuals(coeffs, [(f, 4e-6, costmodel.descriptor(spec))])
    assert row[:-1] == pytest.approx(costmodel.descriptor(spec), abs=1e-4)
    assert row[-1] == pytest.approx(np.log(4.0), abs=1e-4)


def test_calibration_of_an_older_model_version_is_ignored(monkeypatch):
    """Features changed with the model version: constants fitted for older ones would be read
    against the wrong features, so the shipped defaults apply instead."""
    path = costmodel.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = costmodel.model_id().replace(f"model {costmodel.MODEL_VERSION}", "model 1")
    path.write_text(json.dumps({"machine": stale, "constants": {"cpu/conv2d/direct": [1.0]}}))
    model = costmodel.CostModel.load()
    assert "shipped defaults" in model.source and "calibration" not in model.source
    assert len(model.constants["cpu/conv2d/direct"]) == len(
        _algo("direct").cost_features(conv_spec((1, 1, 8, 8), (1, 1, 3, 3))))


def test_calibration_is_saved_and_used(tmp_path):
    from convbench.bench.calibrate import calibrate

    doc = calibrate(count=8, say=lambda *a: None)
    path = costmodel.calibration_path()
    assert path.exists() and json.loads(path.read_text())["machine"] == costmodel.model_id()
    assert set(doc["constants"]) >= {"cpu/conv2d/direct", "cpu/conv2d/im2col"}
    assert len(doc["residuals"]["cpu/conv2d/direct"]) == doc["quality"]["cpu/conv2d/direct"][
        "samples"]
    assert "calibration" in costmodel.CostModel.load().source


def test_malformed_residuals_leave_that_algorithm_uncorrected():
    spec = conv_spec((2, 3, 16, 16), (4, 3, 3, 3))
    direct = _algo("direct")
    coeffs = {"cpu/conv2d/direct": [1e-6] * len(direct.cost_features(spec))}
    for bad in ("garbage", [[1.0, 2.0]], [[None] * 9], [[float("nan")] * 9], []):
        model = costmodel.CostModel(coeffs, "test", {"cpu/conv2d/direct": bad})
        assert model.predict(direct, spec) == pytest.approx(model.linear(direct, spec))


def test_constants_of_the_wrong_length_are_left_out_with_a_warning():
    spec = conv_spec((2, 3, 16, 16), (4, 3, 3, 3))
    model = costmodel.CostModel({"cpu/conv2d/direct": [1e-6, 2e-6]}, "test")
    with pytest.warns(UserWarning, match="cpu/conv2d/direct"):
        assert model.linear(_algo("direct"), spec) is None
    assert auto.choose(spec).algorithm.name  # the chooser still picks (by the others)


@pytest.mark.parametrize("content", ["{not json", "[]", '"a string"', '{"machine": 3}',
                                     '{"machine": "x", "constants": {"cpu/conv2d/direct": '
                                     '["a", "b"]}}'])
def test_damaged_calibration_falls_back_to_defaults_with_one_warning(content):
    path = costmodel.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    costmodel._damaged_warned.clear()
    with pytest.warns(UserWarning, match="cost_model.json"):
        assert "shipped defaults" in costmodel.CostModel.load().source
    spec = conv_spec((1, 2, 8, 8), (2, 2, 3, 3))
    x = np.random.default_rng(0).standard_normal(spec.x_shape).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(spec.w_shape).astype(np.float32)
    assert cb.conv2d(x, w).shape == spec.out_shape


def test_explain_command_line(capsys):
    assert main(["explain", "--x", "8,64,56,56", "--w", "64,64,3,3", "--padding", "1"]) == 0
    out = capsys.readouterr().out
    assert "pick:" in out and "im2col" in out and "fft_tiled" in out
    assert main(["explain", "--x", "8,64,56,56", "--pool", "max", "--size", "2"]) == 0
    assert main(["explain", "--x", "8,sixty", "--w", "1,1,1,1"]) == 2


def test_explain_says_when_the_calibration_comes_from_another_machine(monkeypatch):
    shipped = costmodel.CostModel.load().machines["cpu"]
    monkeypatch.setattr(costmodel.machine, "device_identity",
                        lambda device: "Some Other CPU|x86_64|8 cores|8 threads|convbench 0")
    text = str(cb.explain((1, 3, 16, 16), (4, 3, 3, 3)))
    assert f"calibrated on {shipped.split('|')[0]}" in text and "convbench calibrate" in text
    monkeypatch.setattr(costmodel.machine, "device_identity", lambda device: shipped)
    auto.reload_model()  # the shipped CPU set that applies follows the machine
    assert "note:" not in str(cb.explain((1, 3, 16, 16), (4, 3, 3, 3)))


def test_a_calibration_from_the_same_cpu_model_names_what_differs(monkeypatch):
    shipped = costmodel.CostModel.load().machines["cpu"]
    fields = shipped.split("|")
    fields[4] = "openblas SomeOtherKernel"
    monkeypatch.setattr(costmodel.machine, "device_identity", lambda device: "|".join(fields))
    text = str(cb.explain((1, 3, 16, 16), (4, 3, 3, 3)))
    assert f"BLAS kernel {shipped.split('|')[4]} there, openblas SomeOtherKernel here" in text


def _fake_calibration(machine_id: str, scale: float) -> dict:
    """A calibration document for ``machine_id``: the shipped CPU constants times ``scale``."""
    shipped = json.loads(costmodel.DEFAULTS.read_text())
    cpu = {k: v for k, v in shipped["constants"].items() if k.startswith("cpu/")}
    return {"machine": machine_id + "|model 0", "machines": {"cpu": machine_id},
            "constants": {k: [c * scale for c in v] for k, v in cpu.items()},
            "residuals": {k: [] for k in cpu}, "quality": {k: {} for k in cpu}}


def test_one_cpu_calibration_ships_per_vector_target(tmp_path, monkeypatch):
    """Shipping a calibration of another vector target adds it beside the main CPU set (and
    replaces it when shipped again); each machine loads the set of its own target, whatever
    the CPU model; shipping one of the main set's target replaces the main set."""
    defaults = tmp_path / "cost_defaults.json"
    defaults.write_text(costmodel.DEFAULTS.read_text())
    monkeypatch.setattr(costmodel, "DEFAULTS", defaults)
    monkeypatch.setattr(costfit, "DEFAULTS", defaults)
    main_id = json.loads(defaults.read_text())["machines"]["cpu"]
    fields = main_id.split("|")
    other = "|".join(["Another CPU", fields[1], fields[2], "sse", *fields[4:]])
    key = "cpu/conv2d/im2col"
    main_constants = json.loads(defaults.read_text())["constants"][key]
    before = len(json.loads(defaults.read_text()).get("cpu_alternatives", []))
    costfit.ship(_fake_calibration(other, 3.0), ("cpu",), "the SSE one")
    costfit.ship(_fake_calibration(other, 2.0), ("cpu",), "the SSE one, again")
    shipped = json.loads(defaults.read_text())
    assert shipped["machines"]["cpu"] == main_id and shipped["constants"][key] == main_constants
    sse = [a["source"] for a in shipped["cpu_alternatives"] if a["machine"].split("|")[3] == "sse"]
    assert sse == ["the SSE one, again"] and len(shipped["cpu_alternatives"]) == before + 1
    sse_here = "|".join([fields[0], fields[1], fields[2], "sse", *fields[4:]])
    for here, expected, made_on in ((main_id, main_constants, main_id),
                                    (sse_here, [2.0 * c for c in main_constants], other)):
        monkeypatch.setattr(costmodel.machine, "device_identity", lambda device, h=here: h)
        model = costmodel.CostModel.load()
        assert model.constants[key] == pytest.approx(expected) and model.machines["cpu"] == made_on
    costfit.ship(_fake_calibration(main_id, 0.5), ("cpu",), "the main one, again")
    shipped = json.loads(defaults.read_text())
    assert shipped["constants"][key] == pytest.approx([0.5 * c for c in main_constants])
    assert len(shipped["cpu_alternatives"]) == before + 1
    assert "cuda/conv2d/direct" in shipped["constants"]


def test_closeness_puts_the_vector_target_before_the_cpu_model():
    here = "AMD EPYC|x86_64|2 cores|avx2|openblas Haswell|2 threads|convbench 0"
    same_target = "Intel Xeon|x86_64|2 cores|avx2|openblas Haswell|2 threads|convbench 0"
    same_model = "AMD EPYC|x86_64|2 cores|avx512|openblas Haswell|2 threads|convbench 0"
    assert costmodel.machine.closeness(same_target, here) > costmodel.machine.closeness(
        same_model, here)
    assert all(costmodel.machine.closeness(here, here))
