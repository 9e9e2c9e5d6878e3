"""``python -m convbench warmup``: every CPU algorithm of ours that compiles is warmed, in both
dtypes, on cases it supports; the command refuses a bad job count in one line."""
import pytest

from convbench import registry, warmup
from convbench.cli import main


def test_every_compiled_algorithm_is_a_unit_in_both_dtypes():
    ours = {a.name for a in registry.algorithms(device="cpu") if not a.is_peer and a.compiles}
    units = warmup.units()
    assert ours and {(n, d) for n in ours for d in warmup.DTYPES} <= set(units)
    assert len(units) == len(set(units))
    # one dtype's units first: the two dtypes of one algorithm are far apart in the queue
    assert [d for _, d in units] == sorted(d for _, d in units)


@pytest.mark.parametrize("name", sorted({a.name for a in registry.algorithms(device="cpu")
                                         if not a.is_peer and a.compiles}))
def test_each_algorithm_runs_warmup_cases_it_supports(name):
    unit, dtype, ran, seconds = warmup.warm_unit(name, "float32")
    assert (unit, dtype) == (name, "float32") and seconds >= 0
    assert ran >= 2, f"{name} supports {ran} of the warm-up cases: its kernels stay cold"


def test_a_bad_job_count_is_one_line_and_exit_2(capsys):
    assert main(["warmup", "--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and len(err.strip().splitlines()) == 1
