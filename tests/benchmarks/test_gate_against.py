"""gate --against: two versions of a checkout timed side by side in one run. A copy of the
package in a temporary git repository is the old version; a 2x slowdown planted in one
algorithm on one layer of the working tree is caught, and nothing else is flagged; the same
tree against its own HEAD passes. Only im2col is timed: each gate compiles the kernels of both
versions from scratch, and im2col compiles in under a second where the others take 5-14 s."""
import shutil
import subprocess
from pathlib import Path

import pytest

from convbench.bench import against
from convbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ('mb2ic16ih28oc32oh28kh3ph1n"small 3x3"\nmb2ic32ih14oc32oh14kh1ph0n"small 1x1"\n'
          'mb2ic24ih20oc16oh20kh5ph2n"small 5x5"\n')
PLANTED = '''
_unplanted = im2col_conv2d


def im2col_conv2d(x, w, spec):  # planted by the test: 2x the time on 24 channels, busy
    import time

    start = time.perf_counter()
    out = _unplanted(x, w, spec)
    if x.shape[1] != 24:
        return out
    until = time.perf_counter() + (time.perf_counter() - start)
    while time.perf_counter() < until:
        pass
    return out


register(Algorithm(
    name="im2col",'''
WRONG = '''
_unplanted = im2col_conv2d


def im2col_conv2d(x, w, spec):  # planted by the test: 1% off
    return _unplanted(x, w, spec) * 1.01


register(Algorithm(
    name="im2col",'''
REGISTRATION = '\nregister(Algorithm(\n    name="im2col",'


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository holding a copy of the package (committed) and a layer file."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "convbench", repo / "convbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "experiments", repo / "experiments")
    (repo / "layers.txt").write_text(LAYERS)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old")
    return repo


def _plant(repo: Path, replacement: str) -> str:
    """Replace im2col's registration with `replacement`; returns the original text. Fails
    loudly if the registration moved, so the planted change can never silently be a no-op."""
    module = repo / "convbench" / "cpu" / "im2col.py"
    original = module.read_text()
    assert REGISTRATION in original, "im2col's registration moved: update the planted code"
    module.write_text(original.replace(REGISTRATION, replacement, 1))
    return original


def _gate(repo: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str]:
    monkeypatch.chdir(repo)
    code = main(["gate", "--against", "HEAD", "--layers", "layers.txt", "--algorithms",
                 "im2col", "--repeats", "9", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_same_tree_against_its_head_passes(repo, monkeypatch, capsys):
    code, text = _gate(repo, monkeypatch, capsys)
    assert code == 0, text
    # a tiny BLAS layer's ratios can spread too wide to judge on a busy machine: one of three
    assert "REGRESSION" not in text and text.count(" ok") + text.count("improved") >= 2


def test_a_planted_slowdown_is_caught_and_nothing_else(repo, monkeypatch, capsys):
    """Caught in one of two gates: on a busy 2-core CI host one process pair's luck once
    widened the 2x layer's interval to 0.57-2.28 (the gate then rightly judges nothing); no
    gate may flag anything else."""
    original = _plant(repo, PLANTED)
    try:
        for _ in range(2):
            code, text = _gate(repo, monkeypatch, capsys)
            flagged = [line for line in text.splitlines() if line.startswith("REGRESSION")]
            assert all("small 5x5" in line and "im2col" in line for line in flagged), text
            if code == 1:
                break
    finally:
        (repo / "convbench" / "cpu" / "im2col.py").write_text(original)
    assert code == 1, text
    assert len(flagged) == 1, text


def test_a_wrong_result_is_a_mismatch_before_any_timing(repo, monkeypatch, capsys):
    original = _plant(repo, WRONG)
    try:
        code, text = _gate(repo, monkeypatch, capsys)
    finally:
        (repo / "convbench" / "cpu" / "im2col.py").write_text(original)
    assert code == 1 and "MISMATCH" in text


def test_bad_refs_and_places_are_one_line_errors(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["gate", "--against", "no-such-ref", "--layers", "layers.txt"]) == 2
    assert "not a commit, branch or tag" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["gate", "--against", "HEAD"]) == 2
    assert "is not inside one" in capsys.readouterr().err


def test_rounds_judge_by_their_interval():
    steady = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99]
    assert against.judge("a|x", steady, [1.5 * t for t in steady], 0.15).verdict == "regression"
    assert against.judge("a|x", steady, steady, 0.15).verdict == "ok"
    assert against.judge("a|x", steady, [0.5 * t for t in steady], 0.15).verdict == "improved"
    wild = [1.0, 2.0, 0.5, 1.5, 3.0, 0.7, 1.0, 2.2, 0.6]
    assert against.judge("a|x", steady, wild, 0.15).verdict == "unsettled"


def test_drift_that_slows_both_versions_alike_is_still_judged():
    drift = [1.0, 1.6, 0.7, 1.3, 2.0, 0.8, 1.1, 1.7, 0.6]  # the machine's speed, per round
    old = [d * t for d, t in zip(drift, [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99])]
    verdict = against.judge("a|x", old, [1.5 * t for t in old], 0.15)
    assert verdict.verdict == "regression" and verdict.new_spread > against.UNSETTLED
    assert against.judge("a|x", old, list(old), 0.15).verdict == "ok"


def test_the_old_version_leaves_nothing_behind(repo):
    commit = against.resolve(repo, "HEAD")
    with against.worktree(repo, commit) as tree:
        assert (tree / "convbench" / "__init__.py").is_file()
    assert not tree.parent.exists()
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                            text=True, check=True).stdout
    assert str(tree) not in listed
