"""The experiment harness end to end: smoke preset, resume, failure isolation, bad input."""
import csv
import struct
from pathlib import Path

import numpy as np
import pytest

from convbench import registry, timing
from convbench.bench import experiments, measure, sweep
from convbench.bench.compare import compare_runs
from convbench.bench.rundir import PREPARED, RunDirectory
from convbench.cli import main
from convbench.registry import Algorithm

EXPECTED_COLUMNS = {"experiment", "case_id", "algorithm", "status", "median_s", "min_s",
                    "iqr_s", "first_call_s", "gflops", "workspace_bytes", "measured_host_bytes",
                    "speedup_vs_best_peer", "seed", "unsettled", "rel_spread", "others_cpu"}


def _run(tmp_path: Path, name: str = "run") -> RunDirectory:
    path = tmp_path / name
    path.mkdir()
    return RunDirectory(path)


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert main(["run", "--preset", "smoke", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    return {p.name.split("-", 1)[1]: p for p in out.iterdir()}


def test_smoke_run_writes_every_experiment(smoke_runs):
    assert set(smoke_runs) == set(experiments.available())


@pytest.mark.parametrize("name", sorted(experiments.available()))
def test_smoke_results_plots_and_report(smoke_runs, name):
    run = smoke_runs[name]
    rows = _rows(run)
    assert rows and EXPECTED_COLUMNS <= set(rows[0])
    assert {r["status"] for r in rows} <= {"ok", "skipped", "failed", "mismatch"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, "no algorithm was timed"
    assert all(float(r["median_s"]) > 0 and float(r["min_s"]) <= float(r["median_s"]) for r in ok)
    assert {r["algorithm"] for r in ok} & {"direct", "im2col", "fft"}, "none of ours timed"
    assert all(r["status"] != "mismatch" for r in rows), [r for r in rows if r["status"] == "mismatch"]
    plots = sorted((run / "plots").glob("*.png"))
    assert plots and all(_is_png(p) for p in plots)
    report = (run / "report.md").read_text()
    for p in plots:
        assert f"plots/{p.name}" in report
    assert (run / "environment.json").exists()


def test_pooling_rows_record_information_kept(smoke_runs):
    rows = _rows(smoke_runs["pooling"])
    kept = {(r["series"], r["pool_size"]): float(r["info_kept"]) for r in rows}
    assert all(0.0 < v <= 1.0 for v in kept.values())
    assert kept[("max, stride = size", "2")] > kept[("max, stride = size", "3")]


def _broken(x, w, spec):
    raise RuntimeError("planted failure")


def test_failing_algorithm_is_recorded_and_others_finish(tmp_path):
    exp = experiments.load("small_cnn", "smoke")
    run = _run(tmp_path)
    with registry.registered(Algorithm("broken", "conv2d", "cpu", _broken)):
        sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["broken", "direct"]))
    rows = _rows(run.path)
    broken = [r for r in rows if r["algorithm"] == "broken"]
    assert broken and all(r["status"] == "failed" and "planted" in r["error"] for r in broken)
    assert any(r["algorithm"] == "direct" and r["status"] == "ok" for r in rows)


def test_wrong_algorithm_is_a_mismatch_with_no_time(tmp_path):
    direct = registry.get("conv2d", "cpu", "direct")
    wrong = Algorithm("wrong", "conv2d", "cpu", lambda x, w, s: direct.run(x, w, s) + 1.0)
    exp = experiments.load("small_cnn", "smoke")
    run = _run(tmp_path)
    with registry.registered(wrong):
        sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["wrong"]))
    rows = [r for r in _rows(run.path) if r["op"] == "conv2d"]
    assert rows and all(r["status"] == "mismatch" and r["median_s"] == "" for r in rows)


def test_resume_repeats_nothing_and_loses_nothing(tmp_path, monkeypatch):
    """Interrupt a sweep after its first case; resuming runs exactly the remaining cases."""
    exp = experiments.load("small_cnn", "smoke")
    run = _run(tmp_path)
    run_dir = run.path
    options = measure.SweepOptions(["cpu"], ["direct"])
    real_run_case, calls = sweep.run_case, []

    def interrupt_after_first(case, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(case.case_id)
        return real_run_case(case, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_case", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(exp, run, options)
    first = _rows(run_dir)
    assert [r["case_id"] for r in first] == calls  # the finished case is on disk
    monkeypatch.setattr(sweep, "run_case", real_run_case)
    sweep.sweep(exp, run, options)
    rows = _rows(run_dir)
    ids = [r["case_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(exp.cases())  # nothing repeated, nothing missing
    assert rows[0] == first[0]


def test_resume_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(out), "--no-progress",
                 "--algorithms", "direct", "--device", "cpu"]) == 0
    run_dir = next(out.iterdir())
    before = _rows(run_dir)
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    assert _rows(run_dir) == before  # everything was done: nothing re-run


def test_slow_algorithm_is_skipped_with_a_reason(tmp_path):
    import time

    def slow(x, w, spec):
        time.sleep(0.05)
        return registry.get("conv2d", "cpu", "direct").run(x, w, spec)

    exp = experiments.load("inception", "smoke")
    run = _run(tmp_path)
    with registry.registered(Algorithm("slow", "conv2d", "cpu", slow)):
        sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["slow"], max_case_seconds=0.1))
    rows = _rows(run.path)
    assert rows and all(r["status"] == "skipped" and "max case seconds" in r["error"] for r in rows)


def test_compile_time_is_not_judged_by_the_case_budget(tmp_path):
    """A first call far over the budget (JIT compilation) with a fast warm call is timed."""
    import time

    direct = registry.get("conv2d", "cpu", "direct")
    calls = []

    def compiles_slowly(x, w, spec):
        if not calls:
            time.sleep(0.3)  # the "compilation"
        calls.append(1)
        return direct.run(x, w, spec)

    exp = experiments.load("inception", "smoke")
    run = _run(tmp_path)
    with registry.registered(Algorithm("jit", "conv2d", "cpu", compiles_slowly)):
        sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["jit"], max_case_seconds=0.2))
    rows = _rows(run.path)
    assert rows[0]["status"] == "ok" and float(rows[0]["first_call_s"]) > 0.25


def test_compare_flags_regressions(smoke_runs, tmp_path, capsys):
    """A copy of a run with direct twice as slow in every round: compare confirms it from the
    rounds, marks it, and --fail-above fails; the run against itself is all 'same'."""
    import json
    import shutil

    run, slower = tmp_path / "run", tmp_path / "slower"
    shutil.copytree(smoke_runs["small_cnn"], run)
    shutil.copytree(run, slower)
    rows = _rows(run)
    for r in rows:  # as if timed on a quiet machine (unsettled sides are not judged)
        r["unsettled"] = "False"
    for folder, factor in ((run, 1), (slower, 2)):
        for r in rows:
            if r["algorithm"] == "direct" and r["median_s"]:
                r["median_s"] = str(float(r["median_s"]) * factor)
        with (folder / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    records = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    for rec in records:  # direct's rounds as a quiet machine gives them: within 2% of the median
        # (the smoke preset's few short rounds can hold one wild round, and a bootstrap interval
        # of such rounds rightly stays "uncertain" even at twice the time)
        if rec["algorithm"] == "direct":
            middle = float(np.median(rec["rounds"]))
            rec["rounds"] = [middle * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for rec in records:
        if rec["algorithm"] == "direct":
            rec["rounds"] = [2 * v for v in rec["rounds"]]
    (slower / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cmp = compare_runs(run, slower)
    direct = cmp.table[cmp.table["algorithm"] == "direct"]
    assert np.allclose(direct["ratio"], 2.0) and set(direct["verdict"]) == {"slower"}
    assert main(["compare", str(run), str(slower), "--fail-above", "1.5"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "geometric mean" in out
    same = compare_runs(run, run)  # a run against itself never claims a difference: every
    # interval holds 1 ("same" where the rounds are tight, "uncertain" where the smoke preset's
    # short repeats were noisy)
    assert set(same.table["verdict"]) <= {"same", "uncertain"}
    assert ((same.table["ci_low"] <= 1) & (same.table["ci_high"] >= 1)).all()
    assert (same.table["ratio"] == 1).all()
    assert main(["compare", str(run), str(run), "--fail-above", "1.5"]) == 0


def test_prepared_calls_keep_their_rounds(smoke_runs):
    """A prepared call is timed in the same rounds as the per-call ones, and its rounds are kept
    beside them, so its ratio to a peer can be taken round by round."""
    run = smoke_runs["small_cnn"]
    rounds = RunDirectory.open(run).rounds()
    prepared = [r for r in _rows(run) if r["prepared_median_s"]]
    assert prepared  # implicit_gemm, fft and winograd prepare their weights
    for row in prepared:
        key = (row["device"], row["case_id"], row["algorithm"] + PREPARED)
        assert len(rounds[key]) >= 1
        assert np.median(rounds[key]) == pytest.approx(float(row["prepared_median_s"]))


def test_compare_fails_when_nothing_could_be_compared(smoke_runs, capsys):
    assert main(["compare", str(smoke_runs["small_cnn"]), str(smoke_runs["pooling"])]) == 0
    assert "different experiments" in capsys.readouterr().out
    assert main(["compare", str(smoke_runs["small_cnn"]), str(smoke_runs["pooling"]),
                 "--fail-above", "1.5"]) == 2


def test_round_robin_interleaves_and_ratios_use_rounds():
    order = []
    fns = {n: (lambda n=n: order.append(n)) for n in "abc"}
    rounds = timing.round_robin(fns, {n: 2 for n in fns}, 3)
    # each block is one untimed warm-up call plus 2 timed ones; blocks rotate every round
    assert "".join(order) == "".join(3 * n for n in "abcbcacab")
    assert all(len(v) == 3 for v in rounds.values())
    assert timing.median_round_ratio([1.0, 2.0, 4.0], [2.0, 4.0, 8.0]) == 2.0


@pytest.mark.parametrize("argv,message", [
    (["run", "no_such_experiment"], "unknown experiment"),
    (["run", "small_cnn", "--algorithms", "no_such_algorithm"], "unknown no_such_algorithm"),
    (["run", "small_cnn", "--device", "cuda"], "not available"),
])
def test_bad_command_lines_exit_2(argv, message, capsys, monkeypatch):
    from convbench import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr("convbench.cli.available_devices", lambda: ["cpu"])
    assert main(argv + ["--no-progress", "--out", "/nonexistent/never"]) == 2
    assert message in capsys.readouterr().err


def test_bad_toml_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\n[[series]]\nop = "conv2d"\n'
                   'fixed = { kernal_size = 3 }\n')
    assert main(["run", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "kernal_size" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed")
    assert main(["run", str(broken), "--no-progress"]) == 2
    assert "broken.toml" in capsys.readouterr().err


def test_list_shows_algorithms_and_experiments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("direct", "fft", "im2col", "fft_tiled", "kernel_size", "small_cnn", "peer"):
        assert word in out


def test_verdicts_from_rounds():
    """Tight identical rounds are 'same'; rounds twice as long 'slower'; wide ones 'uncertain'."""
    from convbench.bench import stats

    tight = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    _, lo, hi = stats.median_ratio_interval(tight, tight)
    assert stats.verdict(lo, hi) == "same"
    ratio, lo, hi = stats.median_ratio_interval([2 * v for v in tight], tight)
    assert ratio == 2.0 and stats.verdict(lo, hi) == "slower"
    _, lo, hi = stats.median_ratio_interval(tight, [2 * v for v in tight])
    assert stats.verdict(lo, hi) == "faster"
    wide = [1.0, 1.6, 0.7, 1.3, 0.8, 1.5, 0.9]
    _, lo, hi = stats.median_ratio_interval(wide, wide)
    assert lo <= 1 <= hi and stats.verdict(lo, hi) == "uncertain"
