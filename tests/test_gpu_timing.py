"""GPU timing as the anchors do it, checked without a GPU: the cold-L2 mode chosen per
experiment and recorded per row, and the NVML sampler's throttle rule (on fake readings)."""
import pytest

from convbench import timing
from convbench.bench import experiments, gpu_monitor, measure, noise, sweep
from convbench.bench.rundir import RunDirectory
from convbench.cli import main


def test_repeat_for_picks_the_mode_and_cpu_is_always_warm():
    assert timing.repeat_for("cuda", "warm") is timing.cuda_repeat
    assert timing.repeat_for("cuda", "cold") is timing.cuda_repeat_cold
    assert timing.repeat_for("cpu", "cold") is timing.host_repeat
    assert timing.effective_cache("cpu", "cold") == "warm"
    assert timing.effective_cache("cuda", "cold") == "cold"
    with pytest.raises(ValueError, match="cache must be one of"):
        timing.repeat_for("cuda", "lukewarm")


def _experiment(tmp_path, cache_line: str):
    path = tmp_path / "cold.toml"
    path.write_text(f'name = "cold"\ndescription = "x"\n{cache_line}\n[[series]]\n'
                    'op = "conv2d"\nfixed = { batch = 1, in_channels = 2, out_channels = 2, '
                    'image_size = 8, kernel_size = 3 }\n')
    return path


def test_experiment_cache_key_is_validated_and_recorded_per_row(tmp_path, capsys):
    assert main(["run", str(_experiment(tmp_path, 'cache = "tepid"')), "--no-progress"]) == 2
    assert "cache" in capsys.readouterr().err
    exp = experiments.load(str(_experiment(tmp_path, 'cache = "cold"')))
    assert exp.cache == "cold"
    assert experiments.load("small_cnn", "smoke").cache == "warm"
    run = RunDirectory.create(tmp_path / "runs", "x")
    sweep.sweep(exp, run, measure.SweepOptions(["cpu"], ["direct"]))
    df = run.load()
    assert list(df["cache"]) == ["warm"]  # a CPU row is timed warm and says so


def test_sampler_flags_a_clock_under_three_quarters_of_the_default():
    clocks = iter([1980, 1400, 1975, 1980, 1980, 1980])
    read = lambda: (next(clocks, 1980), 61.0, 455_000 / 1000)  # noqa: E731
    with gpu_monitor.Sampler(read, default_mhz=1980, every_s=0.001) as s:
        pass
    got = s.summary()
    assert got["gpu_sm_mhz_min"] == 1400 and got["throttled"]  # 1400 < 0.75 * 1980 = 1485
    assert got["gpu_temp_c_max"] == 61.0 and got["gpu_power_w_max"] == 455.0
    steady = gpu_monitor.Sampler(lambda: (1600.0, 50.0, 300.0), default_mhz=1980)
    with steady:
        pass
    assert steady.summary()["throttled"] is False  # 1600 >= 1485
    assert "GPU SM clock fell to 1400 MHz" in noise.contention(got)
    assert noise.contention(steady.summary()) == ""


def test_sampler_without_nvml_reports_nothing():
    with gpu_monitor.sampler_for("cpu") as s:
        pass
    assert s.summary() == {}
    failing = gpu_monitor.Sampler(lambda: 1 / 0, default_mhz=1980)
    with failing:  # a refused reading is skipped, never raised
        pass
    assert failing.summary() == {}
