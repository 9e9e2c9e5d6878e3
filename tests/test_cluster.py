"""Sweeps on a Dask cluster: a local cluster of two worker processes runs the smoke preset like
a local run; a case whose worker dies is retried once, then recorded as failed; workers that
cannot run the cases are refused before any case runs."""
import os
import sys
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from convbench.bench import cluster, experiments
from convbench.bench.measure import SweepOptions
from convbench.bench.rundir import RunDirectory
from convbench.cli import main

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def _run(tmp_path, *extra) -> Path:
    out = tmp_path / "out"
    assert main(["run", "small_cnn", "--preset", "smoke", "--device", "cpu", "--no-progress",
                 "--out", str(out), *extra]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="module")
def local_cluster():
    with cluster.connect(None, 2) as client:
        yield client


def test_a_local_cluster_runs_every_case_once_with_the_rows_of_a_local_run(tmp_path):
    here = pd.read_csv(_run(tmp_path / "here") / "results.csv")
    run = _run(tmp_path / "cluster", "--local-workers", "2")
    there = pd.read_csv(run / "results.csv")
    assert list(there.columns) == list(here.columns)
    keys = ["case_id", "algorithm"]
    assert not there.duplicated(keys).any()
    assert sorted(map(tuple, there[keys].values)) == sorted(map(tuple, here[keys].values))
    assert (there["status"] == "ok").sum() == (here["status"] == "ok").sum()
    assert there["worker"].str.contains("tcp://").all()
    assert here["worker"].isna().all()
    machines = RunDirectory(run).machines()
    assert set(there["machine"]) <= set(machines)  # every measuring machine's environment
    assert all("gemm_peak_gflops" in env for env in machines.values())


def _sweep(client, tmp_path, task):
    exp = experiments.load("small_cnn", "smoke")
    exp.series = exp.series[:1]  # one case
    run = RunDirectory.create(tmp_path, exp.name)
    options = SweepOptions(["cpu"], ["direct", "im2col"])
    with run.writing():
        cluster.sweep_on_cluster(client, exp, run, options, dict(cluster.BENCH), task=task)
    return run.load()


def _dies_the_first_time(marker):
    def task(*args):
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)  # the worker process dies mid-case
        return cluster.run_remote(*args)
    return task


def _always_dies(*args):
    os._exit(1)


def test_a_case_whose_worker_died_is_retried_on_another(local_cluster, tmp_path):
    df = _sweep(local_cluster, tmp_path, _dies_the_first_time(str(tmp_path / "died")))
    assert (tmp_path / "died").exists()
    assert sorted(df["algorithm"]) == ["direct", "im2col"]
    assert (df["status"] == "ok").all()


def test_a_case_whose_workers_die_twice_is_recorded_as_failed(local_cluster, tmp_path):
    df = _sweep(local_cluster, tmp_path, _always_dies)
    assert sorted(df["algorithm"]) == ["direct", "im2col"]
    assert (df["status"] == "failed").all()
    assert df["error"].str.contains("KilledWorker").all()


def test_workers_without_the_resources_asked_for_are_refused(local_cluster):
    with pytest.raises(cluster.ClusterError, match='--resources "bench=1 gpu=1"'):
        cluster.check_workers(local_cluster, {**cluster.BENCH, "gpu": 1})


def test_workers_with_other_versions_are_refused(local_cluster, monkeypatch):
    monkeypatch.setattr(cluster, "versions", lambda: {"convbench": "0.0.0-other"})
    with pytest.raises(cluster.ClusterError, match="convbench 0.0.0-other"):
        cluster.check_workers(local_cluster, dict(cluster.BENCH))


@pytest.mark.parametrize("argv,message", [
    (["--resources", "gpu=1"], "only with --scheduler or --local-workers"),
    (["--local-workers", "1", "--resources", "gpu"], "NAME=AMOUNT"),
    (["--local-workers", "0"], "integer >= 1"),
    (["--local-workers", "1", "--scheduler", "tcp://x:1"], "not allowed with"),
])
def test_bad_cluster_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["run", "small_cnn", "--preset", "smoke", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    code = main(["run", "small_cnn", "--preset", "smoke", "--out", str(tmp_path),
                 "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2
    assert "cannot connect" in capsys.readouterr().err


def test_a_run_of_two_machines_is_reported_and_compared_side_by_side(tmp_path, capsys):
    run = _run(tmp_path)
    df = pd.read_csv(run / "results.csv")
    other = df.copy()
    other["machine"] = "Other CPU|x86_64|64 cores|64 threads|convbench 0.1.0"
    other["median_s"] = other["median_s"] * 2
    pd.concat([df, other]).to_csv(run / "results.csv", index=False)
    rounds = (run / "rounds.jsonl").read_text()
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "## Machines side by side" in report
    assert "agree on the fastest algorithm in 4 of 4 cases" in report  # twice as slow: same order
    assert "Other CPU, x86_64, 64 cores, 64 threads" in report
    assert len(list((run / "plots").glob("*/*.png"))) >= 2  # each machine's own plots
    assert rounds  # the rounds behind the ratios are kept for compare
    capsys.readouterr()
    here = df["machine"].iloc[0].split("|")[0]
    assert main(["compare", str(run), "--machines", here, "Other CPU"]) == 0
    out = capsys.readouterr().out
    assert "geometric mean B/A" in out and ": 2.000" in out  # B took twice as long


def test_resume_on_a_cluster_runs_only_the_missing_cases(tmp_path):
    run = _run(tmp_path, "--local-workers", "2")
    full = pd.read_csv(run / "results.csv")
    first = full["case_id"].iloc[0]
    full[full["case_id"] != first].to_csv(run / "results.csv", index=False)
    assert main(["run", "--resume", str(run), "--local-workers", "2", "--no-progress"]) == 0
    again = pd.read_csv(run / "results.csv")
    assert not again.duplicated(["case_id", "algorithm"]).any()
    assert sorted(again["case_id"]) == sorted(full["case_id"])


def test_a_network_runs_on_the_cluster_with_its_layers_and_auto(tmp_path):
    layers = tmp_path / "tiny.txt"
    layers.write_text('mb1ic8ih12oc8oh12kh3ph1n"conv_a"*3\ng8mb1ic8ih12oc8oh6kh3sh2ph1n"dw_b"\n')
    out = tmp_path / "out"
    assert main(["run", "--layers", str(layers), "--preset", "smoke", "--device", "cpu",
                 "--no-progress", "--out", str(out), "--local-workers", "2"]) == 0
    (run,) = out.iterdir()
    df = pd.read_csv(run / "results.csv")
    assert set(df["layer"]) == {"conv_a", "dw_b"} and df["worker"].str.contains("tcp://").all()
    assert (df.loc[df["algorithm"] == "auto", "status"] == "ok").sum() == 2
    assert "### tiny, batch 1" in (run / "report.md").read_text()
