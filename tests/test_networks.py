"""Networks as a workload: the `networks` experiment, a user's layer file or torchvision model
(`run networks --layers/--model`), the per-network tables and pictures, and `bench`."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from convbench.bench import experiments, network_tables
from convbench.bench.rundir import AUTO, RunDirectory, typed
from convbench.cli import main

TINY = ('# two small layers\nmb1ic8ih12oc8oh12kh3ph1n"conv_a"*3\n'
        'g8mb1ic8ih12oc8oh6kh3sh2ph1n"dw_b" +bias\n')


def test_presets_scale_from_two_layers_per_network_to_both_batches_of_all():
    smoke, quick, full = (experiments.load("networks", p) for p in ("smoke", "quick", "full"))
    series = {s["label"] for s in full.series}
    assert series == {"ResNet-50", "MobileNetV2", "VGG-16", "GoogLeNet", "EfficientNet-B0"}
    assert len(smoke.cases()) == 2 * len(series)
    assert {c.spec.n for c in quick.cases()} == {1}
    assert {c.spec.n for c in full.cases()} == {1, 8}
    assert len(full.cases()) == 2 * len(quick.cases())
    resnet = [c for c in quick.cases() if c.series == "ResNet-50"]
    assert sum(c.count for c in resnet) == 53 and full.time_auto


@pytest.mark.parametrize("series,message", [
    ('layers = "resnet50"\nsweep = { kernel_size = [3] }', "only batch and dtype apply"),
    ('layers = "no_such_net"', "not a shipped network"),
    ('layers = "resnet50"\nrandom = { count = 2, seed = 1 }', "without random"),
])
def test_bad_layer_series_name_the_file_and_key(tmp_path, series, message):
    path = tmp_path / "mine.toml"
    path.write_text(f'name = "mine"\ndescription = "x"\n[[series]]\nop = "conv2d"\n{series}\n')
    with pytest.raises(experiments.ExperimentError) as err:
        experiments.load(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_layer_file_next_to_an_experiment_is_found(tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY)
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ndescription = "x"\n[[series]]\nop = "conv2d"\n'
                    'layers = "tiny.txt"\nsweep = { batch = [1, 2] }\n')
    cases = experiments.load(str(path)).cases()
    assert [(c.layer, c.count, c.spec.n) for c in cases] == [
        ("conv_a", 3, 1), ("dw_b", 1, 1), ("conv_a", 3, 2), ("dw_b", 1, 2)]
    assert len({c.case_id for c in cases}) == 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.txt").write_text(TINY)
    out = root / "out"
    assert main(["run", "--layers", str(root / "tiny.txt"), "--batch", "1", "2", "--preset",
                 "smoke", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    (run,) = out.iterdir()
    return run


def test_own_layer_file_runs_every_layer_with_auto_and_its_counts(tiny_run):
    df = RunDirectory(tiny_run).load()
    assert set(df["layer"]) == {"conv_a", "dw_b"} and set(df["n"]) == {1, 2}
    assert set(df.loc[df["layer"] == "conv_a", "count"]) == {3}
    auto = df[(df["algorithm"] == AUTO) & (df["status"] == "ok")]
    assert len(auto) == 4 and (auto["prepared_median_s"] > 0).all()
    assert (df["status"] != "mismatch").all()
    info = RunDirectory(tiny_run).info()
    assert info["network_label"] == "tiny" and (tiny_run / "layers.txt").exists()


def test_totals_count_every_layer_as_often_as_the_network_runs_it(tiny_run):
    df = RunDirectory(tiny_run).load()
    (one, two) = network_tables.networks(df)
    assert one[3] == 1 and two[3] == 2
    totals = network_tables.totals(df, one).set_index("way")
    rows = df[(df["n"] == 1) & (df["status"] == "ok")]
    auto = rows[rows["algorithm"] == AUTO]
    expected = float((auto["median_s"] * auto["count"]).sum()) * 1e3
    assert totals.loc[AUTO, "total_ms"] == pytest.approx(expected)
    ours = rows[~rows["is_peer"] & (rows["algorithm"] != AUTO)]
    best = ours.groupby("layer")["median_s"].min() * ours.groupby("layer")["count"].first()
    assert totals.loc[network_tables.ORACLE, "total_ms"] == pytest.approx(best.sum() * 1e3)
    assert totals.loc["depthwise", "layers"] == "1/2"  # it runs the depthwise layer only


def test_report_opens_with_the_networks_and_draws_the_pictures(tiny_run):
    report = (tiny_run / "report.md").read_text()
    assert report.index("## Networks") < report.index("## Plots")
    assert "### tiny, batch 1" in report and "### tiny, batch 2" in report
    plots = {p.name for p in (tiny_run / "plots").glob("*.png")}
    assert {"network_totals.png", "network_map-tiny-b1.png", "network_map-tiny-b2.png"} <= plots
    for name in plots:
        assert f"plots/{name}" in report


def test_resume_of_an_own_network_uses_the_recorded_layers(tiny_run, capsys):
    before = len(RunDirectory(tiny_run).load())
    assert main(["run", "--resume", str(tiny_run), "--no-progress"]) == 0
    assert "tiny, batch 2" in capsys.readouterr().out
    assert len(RunDirectory(tiny_run).load()) == before  # every case was done: none again
    assert main(["run", "--resume", str(tiny_run), "--layers", "resnet50",
                 "--no-progress"]) == 2
    assert "leave --layers" in capsys.readouterr().err


def _frame(rows):
    base = {"device": "cpu", "machine": "m", "series": "net", "n": 1, "status": "ok",
            "unsettled": False, "is_peer": False, "label": "N1 C1 8x8 K1 3x3", "flops": 1e6,
            "prepared_median_s": np.nan, "auto_pick": "a", "best_peer": "torch",
            "speedup_vs_best_peer": np.nan}
    return typed(pd.DataFrame([{**base, **r} for r in rows]))


def test_ratios_to_torch_and_regret_from_a_known_table():
    rows = []
    for index, (count, times) in enumerate([(1, {"a": 1.0, "b": 2.0, "torch": 1.5}),
                                            (4, {"a": 3.0, "b": 1.0, "torch": 2.0})]):
        for name, t in times.items():
            rows.append({"layer_index": index, "layer": f"L{index}", "count": count,
                         "case_id": f"c{index}", "algorithm": name, "median_s": t,
                         "is_peer": name == "torch"})
        rows.append({"layer_index": index, "layer": f"L{index}", "count": count,
                     "case_id": f"c{index}", "algorithm": AUTO, "median_s": times["a"] * 1.1,
                     "prepared_median_s": times["a"]})
    df = _frame(rows)
    (key,) = network_tables.networks(df)
    totals = network_tables.totals(df, key).set_index("way")
    assert totals.loc["torch", "total_ms"] == pytest.approx(1e3 * (1.5 + 4 * 2.0))
    assert totals.loc[network_tables.ORACLE, "total_ms"] == pytest.approx(1e3 * (1.0 + 4 * 1.0))
    assert totals.loc[network_tables.ORACLE, "vs_torch"] == pytest.approx(9.5 / 5.0)
    assert totals.loc[AUTO, "vs_torch"] == pytest.approx(9.5 / (1.1 * 13.0))
    layers = network_tables.per_layer(df, key)
    quality = network_tables.auto_quality(layers)
    assert quality["within_10"] == pytest.approx(1 / 5)  # the layer counted 4 times missed
    assert quality["worst_regret"] == pytest.approx(2.0)
    lost = network_tables.losses(layers)
    assert list(lost["layer"]) == ["L1"]  # auto 3.3 ms against torch's 2 ms, 4 times


def test_bench_times_every_algorithm_of_a_descriptor(capsys):
    assert main(["bench", "mb1ic4ih12oc4oh12kh3ph1n\"one\"", "--max-seconds", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("winograd", "implicit_gemm", "direct", AUTO, "auto picks", "declared MiB"):
        assert word in out


@pytest.mark.parametrize("argv,message", [
    (["bench", "ic3ih8oc4kh3 +nope"], "descriptor 1 ('ic3ih8oc4kh3 +nope'): unknown option"),
    (["bench", "mb1ic3ih8oc4kh3", "--algorithms", "nope"], "unknown nope"),
    (["run", "small_cnn", "--layers", "resnet50"], "apply to experiments of networks"),
    (["run", "--layers", "/no/such/file.txt"], "not a file, and not a shipped network"),
    (["run", "--input-size", "64"], "--input-size: only with --model"),
])
def test_bad_network_command_lines_are_one_line_and_exit_2(tmp_path, argv, message, capsys):
    assert main(argv + (["--out", str(tmp_path), "--no-progress"] if argv[0] == "run"
                        else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision not installed (the networks extra)")
def test_a_torchvision_model_runs_from_its_definition(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--model", "squeezenet1_1", "--input-size", "32", "--preset", "smoke",
                 "--out", str(out), "--no-progress", "--device", "cpu", "--algorithms", "im2col",
                 AUTO]) == 0
    (run,) = out.iterdir()
    df = RunDirectory(run).load()
    assert df["count"].sum() / df["algorithm"].nunique() == 26  # every convolution counted
    assert 32 in set(df["h"]) and set(df["series"]) == {"SqueezeNet 1.1 32x32"}
