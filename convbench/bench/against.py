"""``python -m convbench gate --against REF``: the code of another commit and this working tree,
timed side by side in one run on one machine (asv's answer to CI machines that change).

REF is checked out into a temporary git worktree. Worker processes start, importing convbench
from one tree or the other; a first one per version checks every algorithm of ours on every
layer against the float64 reference before anything is timed. Then rounds go across all (layer, algorithm)
pairs, each pair timed in both versions one after the other, the order alternating
(old new, new old, ...), so drift of the machine hits both alike; per pair the per-round
ratios new/old give a median and a two-level bootstrap 95% interval (process pairs, then
rounds). The rounds are shared out among several processes per version, and the float64
checks run in processes of their own, because a process's history and luck (where its pages
landed) moved one version against the other by up to 1.5x on identical code. A pair regresses
only when that whole interval lies above 1 + the allowed slowdown; one whose per-round ratios
never settled (IQR over median above ``UNSETTLED``) is reported as unsettled, never as a
regression. The ratios, not each side's times, decide: a machine that drifts slows both
versions of a round alike, so their ratio holds where the times alone spread (a tiny BLAS
layer's times spread 30-40% on a quiet 2-core host while its ratio stayed within 5%).

The worker is a short script that uses only the oldest stable API (``registry.algorithms``,
``Algorithm.bound``, ``reference``, ``tolerance``), so any commit since those existed can be the
other side.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..spec import ConvSpec, PoolSpec

DEFAULT_THRESHOLD = 0.15  # allowed slowdown: +15%
UNSETTLED = 0.25  # per-round ratios whose IQR / median exceeds this judge nothing
SETTLED = 0.10  # pairs whose ratios spread wider than this get more rounds, up to MORE_ROUNDS x
MORE_ROUNDS = 3
# between one version's repeat and the other's: the idle worker's threads (TBB's spin a
# while after a parallel region) go to sleep before the other starts
SWITCH_PAUSE = 0.002
# worker processes per version, the rounds shared out among them: a process's own luck (where
# its arrays and pages landed) moved one version's times by up to 1.5x against the other's,
# steadily within a process, so one process per side measures two processes, not two versions
PROCESSES = 4
TARGET_SECONDS = 0.02  # each timed repeat lasts about this long

WORKER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import convbench
try:
    convbench.configure_for_benchmarks()
except Exception:
    pass
from convbench import registry
from convbench.reference import random_inputs, reference
from convbench.spec import conv_spec, pool_spec
from convbench.tolerance import check_close, error_bound

def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

fns = {}
say({"ready": convbench.__file__})
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "prepare":
        found = {}
        for layer in request["layers"]:
            if layer["kind"] == "conv":
                spec = conv_spec(**layer["args"])
            else:
                spec = pool_spec(**layer["args"])
            x, w, b = random_inputs(spec, layer["seed"])
            expected = reference(spec, x, w, b) if request["check"] else None
            for algo in registry.algorithms(spec.op, "cpu", peers=False):
                wanted = request.get("algorithms")
                if (wanted and algo.name not in wanted) or not algo.supports(spec):
                    continue
                key = layer["name"] + "|" + algo.name
                try:
                    fn = algo.bound(spec, x, w, b)
                    start = time.perf_counter()
                    out = fn()
                    first = time.perf_counter() - start
                    ok, ratio = (check_close(out, expected, error_bound(
                        spec, x, w, algo.error_model, b)) if expected is not None else (True, 0))
                except Exception as exc:
                    found[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                fns[key] = fn
                found[key] = {"ok": bool(ok), "error": "" if ok else f"error/bound {ratio:.3g}",
                              "first_s": first}
        say(found)
    elif request["op"] == "time":
        fn, loops = fns[request["key"]], request["loops"]
        fn()
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        say((time.perf_counter() - start) / loops)
    else:
        break
'''


class AgainstError(ValueError):
    """A gate --against that cannot run as asked (no git checkout, an unknown REF)."""


@dataclass
class Verdict:
    key: str
    ratio: float  # median over rounds of new / old
    low: float
    high: float
    old_spread: float  # IQR / median of each side's times (what the machine did)
    new_spread: float
    verdict: str  # regression, ok, improved, unsettled, mismatch, new, removed
    note: str = ""
    ratio_spread: float = float("nan")  # IQR / median of the per-round ratios (what is judged)


def _git(root: Path, *args: str) -> str:
    run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise AgainstError(f"git {' '.join(args)}: {run.stderr.strip() or 'failed'}")
    return run.stdout.strip()


def repository(start: Path | None = None) -> Path:
    """The git checkout whose working tree is the new side (the current directory's)."""
    start = Path(start or Path.cwd())
    try:
        root = Path(_git(start, "rev-parse", "--show-toplevel"))
    except (AgainstError, OSError):
        raise AgainstError(f"gate --against compares two versions of a git checkout; {start} "
                           "is not inside one") from None
    if not (root / "convbench" / "__init__.py").exists():
        raise AgainstError(f"{root} is a git checkout but not of convbench (no convbench/)")
    return root


def default_ref(root: Path) -> str:
    """The merge base with main when HEAD is elsewhere, else HEAD~1."""
    head = _git(root, "rev-parse", "HEAD")
    for main in ("main", "origin/main"):
        try:
            base = _git(root, "merge-base", "HEAD", main)
        except AgainstError:
            continue
        if base != head:
            return base
    return "HEAD~1"


def resolve(root: Path, ref: str) -> str:
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except AgainstError:
        raise AgainstError(f"--against {ref}: not a commit, branch or tag of {root}") from None


@contextmanager
def worktree(root: Path, commit: str) -> Iterator[Path]:
    """``commit`` checked out into a temporary worktree, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="convbench-against-"))
    path = folder / "tree"
    _git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)],
                       capture_output=True)
        subprocess.run(["git", "-C", str(root), "worktree", "prune"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


class Worker:
    """One version's process: it answers 'prepare' and 'time' requests over its pipes."""

    def __init__(self, root: Path, label: str):
        self.label = label
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.errors = tempfile.TemporaryFile(mode="w+")  # a pipe left unread could fill
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(root)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, text=True, env=env)
        self.module = self._read()["ready"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self.errors.seek(0)
            err = self.errors.read()[-2000:].strip().splitlines()
            raise AgainstError(f"the {self.label} version's worker stopped: "
                               f"{err[-1] if err else 'no message'}")
        return json.loads(line)

    def ask(self, request: dict):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait(timeout=30)


def describe(name: str, spec: ConvSpec | PoolSpec, seed: int) -> dict:
    """A layer as the worker builds it (constructor arguments every version takes)."""
    if isinstance(spec, ConvSpec):
        args = {"x_shape": list(spec.x_shape), "w_shape": list(spec.w_shape),
                "stride": list(spec.stride), "padding": list(spec.pad),
                "dilation": list(spec.dilation), "flip": spec.flip, "dtype": spec.dtype,
                "groups": spec.groups, "bias": spec.bias}
        return {"name": name, "kind": "conv", "args": args, "seed": seed}
    args = {"kind": spec.kind, "x_shape": list(spec.x_shape), "size": list(spec.size),
            "stride": list(spec.stride), "padding": list(spec.pad),
            "count_include_pad": spec.count_include_pad, "dtype": spec.dtype}
    return {"name": name, "kind": "pool", "args": args, "seed": seed}


def spread(values: list[float], groups: list[int] | None = None) -> float:
    """IQR over median of the rounds, each taken relative to its own process's median (a
    process's offset is the interval's business, not noise of the rounds)."""
    values = np.asarray(values, dtype=float)
    if groups is not None:
        groups = np.asarray(groups)
        values = values / np.array([np.median(values[groups == g]) for g in groups])
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else float("inf")


def interval(ratios: np.ndarray, groups: np.ndarray | None = None,
             resamples: int = 2000) -> tuple[float, float, float]:
    """Median of the per-round ratios and its 95% interval by a two-level bootstrap: the
    process pairs resampled, then the rounds within each, so that a process's own luck, which
    every round in it shares, widens the interval as it should (rounds alone would not)."""
    ratios = np.asarray(ratios, dtype=float)
    median = float(np.median(ratios))
    groups = np.zeros(len(ratios), int) if groups is None else np.asarray(groups)
    if len(ratios) < 3 or np.ptp(ratios) == 0:
        return median, float(ratios.min()), float(ratios.max())
    members = [ratios[groups == g] for g in np.unique(groups)]
    rng = np.random.default_rng(0)
    medians = np.empty(resamples)
    for i in range(resamples):
        picked = rng.integers(len(members), size=len(members))
        sample = np.concatenate([rng.choice(members[g], size=len(members[g])) for g in picked])
        medians[i] = np.median(sample)
    low, high = np.percentile(medians, [2.5, 97.5])
    return median, float(low), float(high)


def judge(key: str, old: list[float], new: list[float], threshold: float,
          groups: list[int] | None = None) -> Verdict:
    """The verdict of one pair from its interleaved rounds (``groups``: each round's pair of
    processes)."""
    ratios = np.asarray(new) / np.asarray(old)
    ratio, low, high = interval(ratios, None if groups is None else np.asarray(groups))
    s_old, s_new = spread(old, groups), spread(new, groups)
    s_ratio = ratio_spread(old, new, groups)
    if s_ratio > UNSETTLED:
        verdict = "unsettled"
    elif low > 1 + threshold:
        verdict = "regression"
    elif high < 1 / (1 + threshold):
        verdict = "improved"
    else:
        verdict = "ok"
    return Verdict(key, ratio, low, high, s_old, s_new, verdict, ratio_spread=s_ratio)


def ratio_spread(old: list[float], new: list[float], groups: list[int] | None = None) -> float:
    """IQR over median of the per-round ratios new/old (each relative to its process pair's
    median, as :func:`spread`)."""
    return spread(list(np.asarray(new, dtype=float) / np.asarray(old, dtype=float)), groups)


def compare(old_root: Path, new_root: Path, layers: list[tuple[str, object]],
            algorithms: list[str] | None = None, rounds: int = 9,
            threshold: float = DEFAULT_THRESHOLD, processes: int = PROCESSES,
            say=print) -> list[Verdict]:
    """Check and time every (layer, algorithm) in both versions, interleaved, round r in the
    r mod ``processes``-th process of each; the verdicts."""
    request = {"op": "prepare", "algorithms": algorithms,
               "layers": [describe(name, spec, i) for i, (name, spec) in enumerate(layers)]}
    checked = {}
    for label, root in (("old", old_root), ("new", new_root)):
        # checking compiles (filling Numba's cache) and computes float64 references: in a
        # process of its own, so that the timing processes' memory has the same history in
        # both versions (a heap left otherwise by one version's reference moved a memory-bound
        # kernel by 1.4x)
        checker = Worker(root, label)
        try:
            checked[label] = checker.ask({**request, "check": True})
            say(f"{label}: {checker.module}")
        finally:
            checker.close()
    olds, news = [], []
    try:
        for _ in range(processes):
            olds.append(Worker(old_root, "old"))
            news.append(Worker(new_root, "new"))
            for worker in (olds[-1], news[-1]):
                worker.ask({**request, "check": False})
        verdicts, keys = [], []
        for key in sorted(set(checked["old"]) | set(checked["new"])):
            a, b = checked["old"].get(key), checked["new"].get(key)
            if a is None or b is None:
                verdicts.append(Verdict(key, np.nan, np.nan, np.nan, np.nan, np.nan,
                                        "new" if a is None else "removed"))
            elif not b["ok"]:
                verdicts.append(Verdict(key, np.nan, np.nan, np.nan, np.nan, np.nan,
                                        "mismatch", b["error"]))
            elif not a["ok"]:
                verdicts.append(Verdict(key, np.nan, np.nan, np.nan, np.nan, np.nan, "new",
                                        f"the old version failed its check: {a['error']}"))
            else:
                keys.append(key)
        loops = {}
        for key in keys:
            warm = olds[0].ask({"op": "time", "key": key, "loops": 1})
            loops[key] = max(1, int(TARGET_SECONDS / max(warm, 1e-7)))
        times = {key: {"old": [], "new": [], "pair": []} for key in keys}
        start = time.perf_counter()
        active = list(keys)
        for r in range(MORE_ROUNDS * rounds):
            # after the first rounds, only pairs not yet settled get more
            if r >= rounds:
                active = [k for k in active if ratio_spread(
                    times[k]["old"], times[k]["new"], times[k]["pair"]) > SETTLED]
                if not active:
                    break
            old, new = olds[r % processes], news[r % processes]
            order = (("old", old), ("new", new)) if r // processes % 2 == 0 else (
                ("new", new), ("old", old))
            for key in active:
                times[key]["pair"].append(r % processes)
                for label, worker in order:
                    times[key][label].append(worker.ask({"op": "time", "key": key,
                                                         "loops": loops[key]}))
                    time.sleep(SWITCH_PAUSE)
            say(f"round {r + 1} ({len(active)} pairs, {time.perf_counter() - start:.0f} s)")
        verdicts += [judge(key, times[key]["old"], times[key]["new"], threshold,
                           times[key]["pair"]) for key in keys]
        return sorted(verdicts, key=lambda v: v.key)
    finally:
        for worker in olds + news:
            worker.close()


def format_verdicts(verdicts: list[Verdict], threshold: float) -> str:
    from tabulate import tabulate

    rows = []
    for v in verdicts:
        layer, _, algorithm = v.key.partition("|")
        timed = np.isfinite(v.ratio)
        rows.append([layer, algorithm, f"{v.ratio:.3f}" if timed else "",
                     f"{v.low:.2f}-{v.high:.2f}" if timed else "",
                     f"{v.ratio_spread:.0%}" if timed else "",
                     f"{max(v.old_spread, v.new_spread):.0%}" if timed else "",
                     v.verdict.upper() if v.verdict in ("regression", "mismatch") else v.verdict,
                     v.note])
    return (tabulate(rows, headers=["layer", "algorithm", "new/old", "95% CI", "ratio spread",
                                    "time spread", "verdict", "note"])
            + f"\n(regression: the whole interval above {1 + threshold:.2f}; unsettled: per-round "
              f"ratios spread over {UNSETTLED:.0%}, judged nothing; time spread: the times' own, "
              "which machine drift widens without moving the ratios)")
