"""Faults users meet, and what convbench does about them: NaN and Inf, huge values, a tuning
cache shared by processes or damaged, an unwritable cache, big-endian and odd inputs, torn
results, concurrent runs, cases too large for memory, packaging."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import convbench as cb
from convbench import auto, tuning
from convbench.bench import experiments, measure, sweep
from convbench.bench.rundir import COLUMNS, RunDirectory, RunDirError
from convbench.cli import main
from convbench.spec import conv_spec

try:  # torch is an optional peer: only the comparisons with it need it
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (the peers extra)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVBENCH_AUTOTUNE", raising=False)
    auto.reload_model()
    tuning._memo = None
    tuning._warned.clear()
    yield
    auto.reload_model()
    tuning._memo = None


# --------------------------------------------------------------------------- NaN, Inf, range

def _fft_layer(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 1, 256, 256)).astype(np.float32)
    w = rng.standard_normal((1, 1, 31, 31)).astype(np.float32)
    return x, w


def test_auto_picks_a_transform_algorithm_on_this_layer():
    """The layer of the NaN tests is one where auto would otherwise pick an FFT algorithm."""
    x, w = _fft_layer()
    assert cb.explain(x.shape, w.shape).algorithm.transform_growth is not None


@needs_torch
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_nonfinite_input_value_gives_torchs_pattern(bad):
    x, w = _fft_layer()
    x[0, 0, 100, 120] = bad
    ours = cb.conv2d(x, w)
    theirs = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
    assert np.isnan(ours).sum() == (31 * 31 if bad != bad else 0)


@needs_torch
def test_inf_in_the_kernel_does_not_turn_the_channel_nan():
    x, w = _fft_layer()
    w[0, 0, 3, 4] = np.inf
    ours = cb.conv2d(x, w)
    theirs = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert not np.isnan(ours).any()


def test_large_values_do_not_overflow_where_direct_summation_would_not():
    x, w = _fft_layer()
    x *= np.float32(1e33)
    ours = cb.conv2d(x, w)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, cb.conv2d(x, w, algorithm="direct"), rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_magnitude_scan_finds_the_largest_value_and_any_nonfinite_one(dtype):
    """One pass over the values' bits: the largest |value| of either sign, found in any
    parallel chunk, and NaN for a NaN or an Inf wherever it lies."""
    from convbench.magnitude import CHUNK, largest_magnitude
    rng = np.random.default_rng(3)
    a = rng.standard_normal(3 * CHUNK + 17).astype(dtype)
    assert largest_magnitude(a) == np.abs(a).max()
    a[2 * CHUNK + 5] = -7e30  # the largest, negative, in the third chunk
    assert largest_magnitude(a) == abs(a[2 * CHUNK + 5])
    assert largest_magnitude(a[::3]) == np.abs(a[::3]).max()  # strided: read as it stands
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[-1] = bad  # in the short last chunk
        assert np.isnan(largest_magnitude(b))
    tiny = np.array([-0.0, np.finfo(dtype).smallest_subnormal], dtype)
    assert largest_magnitude(tiny) == tiny[1]
    assert largest_magnitude(np.zeros(0, dtype)) == 0.0


@pytest.mark.parametrize("prepared", [False, True])
def test_finite_inputs_are_not_scanned_and_an_inf_kernel_is_still_steered_around(prepared,
                                                                                   monkeypatch):
    """auto looks at a transform algorithm's result, not its inputs: finite inputs cost no
    scan of x or w, and a kernel holding an Inf (which an FFT turns into NaN everywhere) is
    redone the way direct summation gives it, +-Inf and no NaN, per call and prepared."""
    x, w = _fft_layer()
    scans = []
    monkeypatch.setattr(auto, "_magnitude", lambda a: scans.append(a.shape) or 0.0)
    run = cb.Conv2d(w) if prepared else (lambda x: cb.conv2d(x, w))
    assert np.isfinite(run(x)).all() and scans == []
    monkeypatch.undo()
    w[0, 0, 3, 4] = np.inf
    run = cb.Conv2d(w) if prepared else (lambda x: cb.conv2d(x, w))
    for _ in range(2):
        y = run(x)
        assert np.isinf(y).all() and not np.isnan(y).any()


def test_naming_fft_keeps_its_documented_behaviour():
    x, w = _fft_layer()
    x[0, 0, 100, 120] = np.nan
    assert np.isnan(cb.conv2d(x, w, algorithm="fft")).sum() > 225  # spreads, as documented


# --------------------------------------------------------------------------- the tuning cache

WORKER = textwrap.dedent("""
    import sys, numpy as np, convbench as cb
    from convbench import auto, timing
    from convbench.timing import Timing
    # the decision is under test, not the timing: each candidate takes a fixed time
    cost = {"direct": 3.0, "im2col": 1.0, "fft": 2.0, "fft_tiled": 2.5}
    timing.measure = lambda fns, **kw: {n: Timing(rounds=[cost.get(n, 5.0)] * 5) for n in fns}
    worker = int(sys.argv[1])
    for i in range(12):
        x = np.ones((1, 2, 8 + worker, 8 + i), np.float32)
        w = np.ones((2, 2, 3, 3), np.float32)
        cb.conv2d(x, w, measure=True)
    print("done")
""")


def test_concurrent_processes_lose_no_choice_and_never_fail(tmp_path):
    env = dict(os.environ, CONVBENCH_CACHE_DIR=str(tmp_path / "shared"))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(k)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "done" in out, err[-2000:]
    data = json.loads((tmp_path / "shared" / "tuned.json").read_text())
    assert len(data["entries"]) == 48
    assert not list((tmp_path / "shared").glob("*.tmp"))


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tuning, "MAX_ENTRIES", 5)
    for i in range(9):
        assert tuning.store(f"key{i}", {"algorithm": "direct", "times": {"direct": 1.0}})
    kept = tuning.entries()
    assert len(kept) == 5 and "key8" in kept and "key0" not in kept


@pytest.mark.parametrize("content", ["[]", '"a string"', '{"machine": 1, "entries": []}',
                                     "{not json", ""])
def test_a_damaged_tuning_cache_is_ignored_with_one_warning(content):
    path = tuning.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    x, w = np.ones((1, 2, 9, 9), np.float32), np.ones((2, 2, 3, 3), np.float32)
    with pytest.warns(UserWarning, match="tuned.json"):
        y = cb.conv2d(x, w, measure=True)
    assert y.shape == (1, 2, 7, 7)
    assert len(json.loads(path.read_text())["entries"]) == 1  # rewritten whole


def test_entries_of_the_wrong_shape_are_skipped():
    from convbench.costmodel import model_id

    path = tuning.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": model_id(), "entries": {
        "a": {"algorithm": 3}, "b": "x", "c": {"algorithm": "direct", "times": {"direct": -1}},
        "d": {"algorithm": "direct", "times": {"direct": 0.001}}}}))
    assert list(tuning.entries()) == ["d"]


@pytest.mark.parametrize("kind", ["read-only", "not a folder"])
def test_an_unusable_cache_folder_never_fails_the_computation(tmp_path, monkeypatch, kind):
    if kind == "read-only":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)

        def refuse(*args, **kwargs):  # as a read-only folder answers (root is not refused)
            raise PermissionError(13, "Permission denied", str(folder))

        monkeypatch.setattr(tuning.tempfile, "mkstemp", refuse)
    else:
        folder = tmp_path / "file"
        folder.write_text("not a folder")
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(folder))
    x, w = np.ones((1, 2, 9, 9), np.float32), np.ones((2, 2, 3, 3), np.float32)
    with pytest.warns(UserWarning, match="cannot be written"):
        assert cb.conv2d(x, w, measure=True).shape == (1, 2, 7, 7)
    assert cb.conv2d(x, w).shape == (1, 2, 7, 7)


def test_cache_command_shows_and_clears(capsys):
    tuning.store("cpu|conv2d|N1 C2 9x9 K2 3x3|float32", {"algorithm": "direct",
                                                         "times": {"direct": 0.001}})
    assert main(["cache", "show"]) == 0
    assert "1 cached choices" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert not tuning.path().exists()


# --------------------------------------------------------------------------- inputs

def test_big_endian_arrays_are_accepted():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 8, 8)).astype(">f4")
    w = rng.standard_normal((3, 2, 3, 3)).astype(">f4")
    expected = cb.conv2d(x.astype("<f4"), w.astype("<f4"), algorithm="direct")
    np.testing.assert_allclose(cb.conv2d(x, w, algorithm="direct"), expected, rtol=1e-6)
    assert cb.max_pool2d(x, 2).dtype == np.float32


@pytest.mark.parametrize("dtype", ["float16", "int8", "complex64", "bool"])
def test_conv_spec_and_explain_refuse_unsupported_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype"):
        conv_spec((1, 1, 8, 8), (1, 1, 3, 3), dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        cb.explain((1, 1, 8, 8), (1, 1, 3, 3), dtype=dtype)


@pytest.mark.parametrize("shape", [(1, 1, 8.7, 8), (1, 1, 8.0, 8), (1, "2", 8, 8)])
def test_shapes_must_be_integers(shape):
    with pytest.raises(TypeError, match="integers"):
        conv_spec(shape, (1, 1, 3, 3))


def test_explain_pooling_with_stride_one_means_stride_one():
    choice = cb.explain((1, 2, 8, 8), pool="max", size=2, stride=1)
    assert choice.algorithm.op == "max_pool2d"
    from convbench.spec import pool_spec

    assert pool_spec("max", (1, 2, 8, 8), 2, stride=1).out_size == (7, 7)


def test_numpy_im2col_declares_what_it_allocates():
    import tracemalloc

    from convbench import registry

    peer = registry.get("conv2d", "cpu", "numpy_im2col")
    for spec in (conv_spec((2, 8, 28, 28), (16, 8, 3, 3), padding=1),
                 conv_spec((1, 4, 20, 20), (4, 4, 3, 3), dilation=2, flip=True)):
        x = np.ones(spec.x_shape, np.float32)
        w = np.ones(spec.w_shape, np.float32)
        peer.run(x, w, spec)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out = peer.run(x, w, spec)
        peak = tracemalloc.get_traced_memory()[1] - base - out.nbytes
        tracemalloc.stop()
        declared = peer.workspace_bytes(spec)
        assert abs(peak - declared) <= 0.10 * declared + 4096, (spec.label(), declared, peak)


@needs_torch
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col", "fft", "fft_tiled"])
def test_an_empty_batch_gives_an_empty_output(algorithm):
    x, w = np.ones((0, 3, 10, 10), np.float32), np.ones((4, 3, 3, 3), np.float32)
    y = cb.conv2d(x, w, padding=1, algorithm=algorithm)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    assert y.shape == expected.shape == (0, 4, 10, 10) and y.dtype == np.float32
    assert cb.max_pool2d(x, 2).shape == (0, 3, 5, 5)


# --------------------------------------------------------------------------- the harness

def _rows(path: Path) -> list[dict]:
    with (path / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_torn_row_is_dropped_with_its_case_and_the_case_runs_again(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(out), "--no-progress",
                 "--algorithms", "direct", "im2col", "--device", "cpu"]) == 0
    run = next(out.iterdir())
    whole = _rows(run)
    text = (run / "results.csv").read_text()
    cut = text.rstrip("\n").rfind("\n") + 40  # keep 40 characters of the last row
    (run / "results.csv").write_text(text[:cut])
    torn_case = whole[-1]["case_id"]
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    rows = _rows(run)
    keys = [(r["case_id"], r["algorithm"]) for r in rows]
    assert sorted(keys) == sorted((r["case_id"], r["algorithm"]) for r in whole)
    assert len(keys) == len(set(keys))
    assert all(len(r) == len(COLUMNS) and r["status"] for r in rows)
    assert any(r["case_id"] == torn_case for r in rows)


def test_two_runs_in_the_same_second_get_two_directories(tmp_path):
    a = RunDirectory.create(tmp_path, "x")
    b = RunDirectory.create(tmp_path, "x")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_a_second_writer_of_one_run_directory_fails_clearly(tmp_path):
    run = RunDirectory.create(tmp_path, "x")
    with run.writing():
        with pytest.raises(RunDirError, match="another convbench process"):
            with RunDirectory.open(run.path).writing():
                pass


def test_a_case_too_large_for_memory_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    exp = experiments.load("small_cnn", "smoke")
    big = exp.cases()[0]
    monkeypatch.setattr(measure, "available_memory",
                        lambda: measure.case_bytes(big.spec) // 2)  # the first case won't fit
    run = RunDirectory.create(tmp_path, "x")
    sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["direct"]))
    rows = _rows(run.path)
    first = [r for r in rows if r["case_id"] == big.case_id]
    assert first and all(r["status"] == "failed" and "MemoryError" in r["error"] for r in first)
    assert any(r["status"] == "ok" for r in rows)


def test_a_huge_padded_case_is_refused_before_allocating(tmp_path):
    bad = tmp_path / "huge.toml"
    bad.write_text('name = "huge"\ndescription = "x"\n[[series]]\nlabel = "h"\nop = "conv2d"\n'
                   'fixed = { batch = 4, in_channels = 64, out_channels = 64, image_size = 32,'
                   ' kernel_size = 3, padding = 100000 }\n')
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out), "--no-progress",
                 "--algorithms", "direct", "--device", "cpu"]) == 0
    (row,) = _rows(next(out.iterdir()))
    assert row["status"] == "failed" and "MemoryError" in row["error"] and "GiB" in row["error"]


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("argv,words", [
    (["explain", "--x", "1,3,8,8", "--w", "2,3,3,3", "--padding", "1,2,3"], "padding"),
    (["explain", "--x", "1,3,8,8", "--pool", "max"], "--size"),
    (["calibrate", "--layers", "0"], "--layers"),
    (["calibrate", "--layers", "3"], "--layers"),
    (["run", "small_cnn", "--max-case-seconds", "-1"], "max-case-seconds"),
    (["run", "small_cnn", "--max-case-seconds", "0"], "max-case-seconds"),
    (["run", "small_cnn", "--max-case-seconds", "nan"], "max-case-seconds"),
    (["run", "small_cnn", "--repeats", "1"], "--repeats"),
    (["run", "small_cnn", "--min-time", "0"], "--min-time"),
    (["gate", "--threshold", "-5"], "threshold"),
    (["run", "small_cnn", "--preset", "huge"], "preset"),
    (["nonsense"], "invalid choice"),
])
def test_user_errors_are_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convbench: error:") and len(err.splitlines()) == 1
    assert words in err


def test_out_naming_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    from convbench.bench import environment

    monkeypatch.setattr(environment, "gemm_peak_gflops",
                        lambda *a: pytest.fail("the GEMM probe ran"))
    target = tmp_path / "a_file"
    target.write_text("x")
    assert main(["run", "small_cnn", "--out", str(target), "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("toml,key", [
    ('name = "x"\ndescription = "d"\nseries = [1, 2]\n', "series"),
    ('name = "x"\ndescription = "d"\npresets = 3\n[[series]]\nop = "conv2d"\n', "presets"),
    ('name = "../../x"\ndescription = "d"\n[[series]]\nop = "conv2d"\n', "name"),
    ('name = "x"\ndescription = "d"\n[[series]]\nop = "conv2d"\n[presets.quick]\nbogus = 1\n',
     "bogus"),
    ('name = "x"\ndescription = "d"\n[[series]]\nop = "conv2d"\nfixed = { kernel_size = "3" }\n',
     "kernel_size"),
])
def test_structurally_wrong_experiment_files_are_refused(tmp_path, capsys, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    assert main(["run", str(path), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and key in err and len(err.strip().splitlines()) == 1


def test_report_and_compare_of_a_damaged_results_file_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_bytes(b"\x00\xff garbage \x00")
    assert main(["report", str(run)]) == 2
    assert main(["compare", str(run), str(run)]) == 2
    assert capsys.readouterr().err.count("convbench: error:") == 2


def test_resume_with_another_experiment_or_preset_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "small_cnn", "--preset", "smoke", "--out", str(out), "--no-progress",
                 "--algorithms", "direct", "--device", "cpu"]) == 0
    run = next(out.iterdir())
    assert main(["run", "pooling", "--resume", str(run), "--no-progress"]) == 2
    assert main(["run", "--resume", str(run), "--preset", "full", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "small_cnn" in err and "preset" in err


def test_a_run_with_nothing_to_do_is_an_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(experiments, "available", lambda: {})
    assert main(["run", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no experiments" in capsys.readouterr().err


def test_experiments_ship_inside_the_package(tmp_path):
    """The wheel (a non-editable install) carries the experiment files."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {f"convbench/experiments/{p}.toml" for p in experiments.available()}
    assert shipped and shipped <= set(names)
    from convbench import networks

    layer_files = {f"convbench/experiments/networks/{n}.txt" for n in networks.available()}
    assert len(layer_files) >= 5 and layer_files <= set(names)
    modules = {str(p.relative_to(root)) for p in (root / "convbench").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))  # every subpackage installed
