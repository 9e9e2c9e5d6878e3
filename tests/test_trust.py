"""Numbers a user can trust: noise detected and recorded, adaptive rounds, compile time never
judged, honest tables and plots, per-machine notes, the environment record, the terminal."""
import csv
import json

import pytest

from convbench import timing
from convbench.bench import experiments, measure, noise, plots, sweep, tables
from convbench.bench.rundir import COLUMNS, RunDirectory, typed
from convbench.cli import main


def test_adaptive_rounds_stop_when_settled_and_flag_what_never_settles():
    """A repeat that alternates between 1 and 3 ms never settles and is marked noisy after
    max_rounds; a steady one settles at the first rounds and gets no more."""
    seen = {"steady": 0, "jumpy": 0}

    def steady():
        pass

    def jumpy():
        pass

    def fake_repeat(fn, loops):
        seen[fn.__name__] += 1
        return 1e-3 if fn is steady or seen["jumpy"] % 2 else 3e-3

    got = timing.measure({"steady": steady, "jumpy": jumpy}, min_rounds=5, max_rounds=12,
                         rel_spread=0.05, repeat=fake_repeat, loops={"steady": 1, "jumpy": 1})
    assert len(got["jumpy"].rounds) == 12 and got["jumpy"].unsettled
    assert len(got["steady"].rounds) == 5 and not got["steady"].unsettled


def test_a_busy_machine_marks_rows_unsettled_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(noise, "during", lambda before: {"load_avg": 9.0, "cpu_mhz": None,
                                                         "others_cpu": 0.6, "steal": 0.0})
    exp = experiments.load("small_cnn", "smoke")
    run = RunDirectory.create(tmp_path, "x")
    sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["direct"]))
    df = run.load()
    ok = df[df["status"] == "ok"]
    assert len(ok) and ok["unsettled"].all()
    assert ok["noise"].str.contains("other processes used 60%").all()
    assert tables.conclusion(df).startswith("no conclusion")


def test_results_columns_are_honest():
    assert COLUMNS.count("flip") == 1 and "first_call_s" in COLUMNS and "compile_s" not in COLUMNS
    for col in ("unsettled", "drifted", "rel_spread", "others_cpu", "steal", "control_drift",
                "machine"):
        assert col in COLUMNS


@pytest.fixture(scope="module")
def layers_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("layers")
    assert main(["run", "layers", "--preset", "smoke", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    return next(out.iterdir())


def test_memory_a_library_hides_is_empty_not_zero(layers_run):
    with (layers_run / "results.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    torch_rows = [r for r in rows if r["algorithm"] == "torch"]
    ours = [r for r in rows if r["algorithm"] == "direct"]
    if torch_rows:
        assert all(r["measured_host_bytes"] == "" for r in torch_rows)
    assert all(r["measured_host_bytes"] != "" for r in ours)


def test_page_faults_are_counted_for_every_algorithm_peers_included(layers_run):
    with (layers_run / "results.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    assert rows and all(int(float(r["page_faults"])) >= 0 for r in rows)  # torch's as well


def test_a_call_on_fresh_pages_counts_them_and_a_warm_one_does_not():
    import mmap

    import numpy as np

    from convbench.bench import memory

    if memory.resource is None:
        pytest.skip("this platform does not count page faults")
    warm = np.ones(1 << 20, np.uint8)
    assert memory.page_faults(lambda: warm.fill(2)) < 16

    def fresh():  # 48 MiB mapped afresh and written (as glibc maps a block above 32 MiB;
        # a malloc'd one may come back from what the process freed before)
        block = mmap.mmap(-1, 48 << 20)
        pages = np.frombuffer(block, np.uint8)
        pages[::4096] = 1
        del pages
        block.close()

    # 24 faults even where every page is a 2 MiB huge page, 12288 on 4 KiB ones
    assert memory.page_faults(fresh) >= 20


def test_environment_record(layers_run):
    env = json.loads((layers_run / "environment.json").read_text())
    for key in ("machine_id", "cpu_flags", "numba_threading_layer", "blas", "git", "cores"):
        assert key in env, key
    assert env["numba_threading_layer"] in ("tbb", "omp", "workqueue")
    assert {"commit", "dirty"} <= set(env["git"])
    assert any(b.get("user_api") == "blas" for b in env["blas"])


def test_one_bar_group_per_case_and_totals_only_for_pipelines(layers_run):
    df = RunDirectory(layers_run).load()
    assert len(plots.bar_groups(df)) == df["case_id"].nunique() == len(
        experiments.load("layers", "smoke").cases())
    assert tables.pipeline_totals(df).empty  # the layers are not a pipeline
    grouped = df.copy()
    grouped.loc[grouped.index[: len(grouped) // 2], "group"] = "net"
    totals = tables.pipeline_totals(typed(grouped))
    assert list(totals["pipeline"]) == ["net"]


def test_report_states_conclusion_and_noise(layers_run):
    report = (layers_run / "report.md").read_text()
    assert report.splitlines()[4].startswith("**Answer:**") and "Unsettled results:" in report
    assert "## Software" in report and "| numpy " in report and "{" not in report.split("## Software")[1]
    assert "Drifted:" in report
    assert "Machine:" in report and "BLAS" in report


def test_terminal_output_fits_100_columns_and_concludes(tmp_path, capsys):
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert all(len(line) <= 100 for line in captured.out.splitlines() if "|" not in line
               and not line.startswith(("note:", "report:")))
    assert "small_cnn:" in captured.out
    assert "\r" not in captured.err  # not a terminal: no carriage-return progress bar
    assert "[1/1] small_cnn" in captured.err


def test_every_plot_draws_with_noisy_skipped_and_empty_data(tmp_path, layers_run, monkeypatch):
    """Every plot is written, and every legend entry names something drawn, with hollow
    (unsettled) and filled results side by side; empty data draws too."""
    from convbench.bench import savefig

    real_save, checked = savefig.save, []

    def save_checking_legends(fig, path):
        shown = _visible_labels(fig)
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            for text in legend.get_texts():
                assert text.get_text() in shown, (path.name, text.get_text())
        checked.append(path.stem)
        real_save(fig, path)

    monkeypatch.setattr(savefig, "save", save_checking_legends)
    df = RunDirectory(layers_run).load()
    df.loc[df.index[::2], "unsettled"] = True
    drawn = plots.draw(df, list(experiments.PLOTS), "kernel_size", tmp_path,
                       ["kernel_size", "batch"])
    assert {p.stem for p in drawn} == set(experiments.PLOTS) == set(checked)
    assert all(p.exists() for p in drawn)
    import adjustText  # the Pareto plot lends it a no-op redraw for its panels: given back

    assert adjustText.force_draw.__module__ == "adjustText"
    empty = df[df["status"] == "nothing"]
    assert len(plots.draw(empty, ["pareto", "layers_bar", "auto_regret"], None,
                          tmp_path / "empty")) == 3


def test_case_weights_grow_with_the_work():
    exp = experiments.load("kernel_size", "quick")
    options = measure.SweepOptions(["cpu"])
    weights = [sweep.case_weight(c, exp, options, 6) for c in exp.cases()]
    small, large = exp.cases()[0], max(exp.cases(), key=lambda c: c.spec.flops)
    assert sweep.case_weight(large, exp, options, 6) > sweep.case_weight(small, exp, options, 6)
    assert all(w > 0 for w in weights)


def test_a_drifting_control_flags_drift_not_unsettled_and_still_ranks(tmp_path, monkeypatch):
    """The machine got slower (the control at 1.6x its running median) on a quiet machine:
    rows are drifted, not unsettled, and the conclusion still ranks them by their ratios."""
    monkeypatch.setattr(noise, "during", lambda before: {"load_avg": 0.1, "cpu_mhz": None,
                                                         "others_cpu": 0.0, "steal": 0.0})
    measured = timing.measure

    def settled(*args, **kwargs):  # a CI runner's spread on microsecond layers is not the point
        timings = measured(*args, **kwargs)
        for t in timings.values():
            t.unsettled = False
        return timings

    monkeypatch.setattr(timing, "measure", settled)

    class Drifting:
        def drift(self):
            return 1.6

    exp = experiments.load("small_cnn", "smoke")
    run = RunDirectory.create(tmp_path, "x")
    options = measure.SweepOptions(["cpu"], ["direct", "im2col"], control=Drifting())
    sweep.sweep(exp, run, options)
    df = run.load()
    ok = df[df["status"] == "ok"]
    assert len(ok) and ok["drifted"].all()
    assert ok["noise"].str.contains("drifted: control GEMM at 1.60x").all()
    assert not tables.conclusion(df).startswith("no conclusion")
    assert "drifted (ranked by ratios)" in tables.conclusion(df)


def test_the_drift_reference_is_a_running_median_not_one_first_reading(monkeypatch):
    """One slow first reading (a GEMM at 200 of 272 GFLOP/s) does not make every later
    reading look 'faster': the reference is the median of several, then of a window."""
    readings = iter([1.36, 1.0, 1.0, 1.02, 0.99] + [1.0] * 40)
    monkeypatch.setattr(noise.Control, "seconds", lambda self: next(readings))
    control = noise.Control()
    assert control.reference == pytest.approx(1.0)
    assert all(0.9 < control.drift() < 1.1 for _ in range(20))


def test_most_results_unsettled_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(noise, "during", lambda before: {"load_avg": 3.0, "cpu_mhz": None,
                                                         "others_cpu": 0.55, "steal": 0.0})
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(tmp_path),
                 "--device", "cpu", "--no-progress", "--algorithms", "direct"]) == 0
    out = capsys.readouterr().out
    said = " ".join(out[out.index("most results never"):].split("report:")[0].split())
    assert "other processes used 55%" in said and "rerun on a quiet machine" in said


def test_a_quiet_machine_with_short_repeats_is_told_to_give_more_time(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(noise, "during", lambda before: {"load_avg": 0.2, "cpu_mhz": None,
                                                         "others_cpu": 0.01, "steal": 0.0})
    real = timing.measure

    def never_settles(*args, **kwargs):
        got = real(*args, **kwargs)
        for t in got.values():
            t.unsettled = True
        return got

    monkeypatch.setattr(timing, "measure", never_settles)
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(tmp_path),
                 "--device", "cpu", "--no-progress", "--algorithms", "direct"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "most results never settled" in out and "repeats are too short" in out


def test_compare_does_not_judge_an_unsettled_side(layers_run, tmp_path, capsys):
    import shutil

    other = tmp_path / "b"
    shutil.copytree(layers_run, other)
    df = RunDirectory(other).load()
    rows = list(csv.DictReader((other / "results.csv").open()))
    for row in rows:  # B: everything twice as slow, and every row unsettled
        if row["status"] == "ok":
            row["median_s"] = str(2 * float(row["median_s"]))
            row["unsettled"] = "True"
    with (other / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert len(df) == len(rows)
    assert main(["compare", str(layers_run), str(other), "--fail-above", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" not in out and "unsettled in B" in out
    assert "unsettled in run B: not judged" in out


def _visible_labels(fig) -> set[str]:
    """Labels of artists that draw something: a line with a marker or two points, a
    collection with points, bars with area."""
    import matplotlib

    shown = set()
    for ax in fig.axes:
        for art in ax.get_children():
            label = art.get_label() if hasattr(art, "get_label") else ""
            if not isinstance(label, str) or not label or label.startswith("_"):
                continue
            if isinstance(art, matplotlib.lines.Line2D):
                marker = art.get_marker() not in (None, "None", "", " ")
                if len(art.get_xdata()) > (0 if marker else 1):
                    shown.add(label)
            elif isinstance(art, matplotlib.collections.Collection):
                if len(art.get_offsets()):
                    shown.add(label)
        for container in ax.containers:
            if any(p.get_width() and p.get_height() for p in container.patches):
                shown.add(container.get_label())
    return shown


def test_every_legend_entry_is_something_drawn_when_all_settled(tmp_path, layers_run,
                                                                 monkeypatch):
    """(With noise: the plot-drawing test above.)"""
    from convbench.bench import savefig

    figures = []
    monkeypatch.setattr(savefig, "save", lambda fig, path: figures.append((path.name, fig)))
    df = RunDirectory(layers_run).load()
    df["unsettled"] = False
    plots.draw(df, list(experiments.PLOTS), "kernel_size", tmp_path, ["kernel_size", "batch"])
    assert figures
    for name, fig in figures:
        shown = _visible_labels(fig)
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            for text in legend.get_texts():
                assert text.get_text() in shown, (name, text.get_text())


def test_a_mostly_unsettled_run_says_so_on_every_figure(tmp_path, layers_run, monkeypatch):
    from convbench.bench import savefig

    notes = []
    monkeypatch.setattr(savefig.plt, "close", lambda fig: notes.append(
        [t.get_text() for t in fig.texts]))
    df = RunDirectory(layers_run).load()
    df["unsettled"] = True
    plots.draw(df, ["layers_bar", "auto_regret"], None, tmp_path)  # both through savefig.save
    assert len(notes) == 2 and all(any("never settled" in t for t in texts) for texts in notes)


def _in_terminal(argv: list[str], columns: int) -> str:
    """What a run prints in a pseudo-terminal ``columns`` wide (progress bar and all)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, "-m", "convbench", *argv], stdin=slave,
                               stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=600)
    os.close(master)
    assert process.returncode == 0
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [80, 120])
def test_tables_fit_the_terminal_keep_the_speedup_and_never_share_the_bars_line(tmp_path,
                                                                                columns):
    # two of ours and one peer: a table with every column, in half the time of all of them
    text = _in_terminal(["run", "small_cnn", "separable", "--preset", "smoke", "--out",
                         str(tmp_path), "--device", "cpu", "--algorithms", "direct", "im2col",
                         "scipy_direct"], columns)
    lines = text.split("\n")
    headers = [i for i, line in enumerate(lines) if line.split("\r")[-1].startswith("case ")]
    assert len(headers) == 2, text  # one table per experiment
    for i in headers:
        assert "speedup" in lines[i].split("\r")[-1]
        table = lines[i:i + 3]
        assert all(len(line.split("\r")[-1]) <= columns for line in table)
    for line in lines:  # the bar's line never carries anything else
        for segment in line.split("\r"):
            if "%|" in segment:
                assert "case " not in segment and "report:" not in segment, segment
    visible = [line.split("\r")[-1] for line in lines]
    assert all(len(v) <= columns for v in visible if not v.startswith(("note:", "report:")))
