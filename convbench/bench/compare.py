"""Compare two runs (or two machines of one run) case by case: the ratio of median times,
with a verdict from the per-round samples each run keeps, a geometric-mean summary, and what
could not be compared. A pair unsettled in either run gets no verdict, and the summary says
which run was."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import stats
from .rundir import RunDirectory

KEYS = ["experiment", "device", "case_id", "algorithm"]


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per (case, algorithm) timed in both
    only_a: list[str] = field(default_factory=list)  # algorithms timed in A only
    only_b: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def geomean(self) -> float | None:
        if self.table.empty:
            return None
        return float(np.exp(np.log(self.table["ratio"]).mean()))


def _side(run: RunDirectory, machine: str | None) -> tuple[pd.DataFrame, dict]:
    df = run.load()
    df = df[df["status"] == "ok"]
    if machine is not None:
        df = df[df["machine"].astype(str).str.contains(machine, regex=False)]
    return df, run.rounds()


def compare_runs(run_a: Path, run_b: Path | None = None, machines: tuple[str, str] | None = None,
                 same_within: float = 0.05) -> Comparison:
    """B against A: ratio of medians (> 1: B slower) per (case, algorithm) timed in both, and a
    verdict from the rounds. With ``machines``, A and B are two machines of one run."""
    ra = RunDirectory.open(run_a)
    rb = RunDirectory.open(run_b) if run_b is not None else ra
    a, rounds_a = _side(ra, machines[0] if machines else None)
    b, rounds_b = _side(rb, machines[1] if machines else None)
    warnings = []
    if run_b is not None:
        exp_a, exp_b = set(a["experiment"]), set(b["experiment"])
        if exp_a and exp_b and exp_a != exp_b:
            warnings.append(f"the runs are of different experiments ({', '.join(exp_a)} vs "
                            f"{', '.join(exp_b)})")
        env_a, env_b = ra.environment(), rb.environment()
        if env_a.get("cpu") != env_b.get("cpu") or env_a.get("cores") != env_b.get("cores"):
            warnings.append(f"the runs come from different machines ({env_a.get('cpu', '?')}, "
                            f"{env_a.get('cores', '?')} cores vs {env_b.get('cpu', '?')}, "
                            f"{env_b.get('cores', '?')} cores): ratios mix machine and code")
    merged = a[KEYS + ["label", "median_s", "unsettled"]].merge(
        b[KEYS + ["median_s", "unsettled"]], on=KEYS, suffixes=("_a", "_b"))
    merged["ratio"] = merged["median_s_b"] / merged["median_s_a"]
    lows, highs, verdicts = [], [], []
    for _, r in merged.iterrows():
        key = (r["device"], r["case_id"], r["algorithm"])
        sa, sb = rounds_a.get(key), rounds_b.get(key)
        if r["unsettled_a"] or r["unsettled_b"]:  # an unsettled side judges nothing
            lows.append(np.nan)
            highs.append(np.nan)
            side = "A" if r["unsettled_a"] and not r["unsettled_b"] else (
                "B" if r["unsettled_b"] and not r["unsettled_a"] else "A and B")
            verdicts.append(f"unsettled in {side}")
        elif sa and sb and len(sa) >= 3 and len(sb) >= 3:
            _, lo, hi = stats.median_ratio_interval(sb, sa)
            lows.append(lo)
            highs.append(hi)
            verdicts.append(stats.verdict(lo, hi, same_within))
        else:
            lows.append(np.nan)
            highs.append(np.nan)
            verdicts.append("uncertain (no rounds kept)")
    merged["ci_low"], merged["ci_high"], merged["verdict"] = lows, highs, verdicts
    algos_a, algos_b = set(a["algorithm"]), set(b["algorithm"])
    return Comparison(merged.sort_values("ratio", ascending=False), sorted(algos_a - algos_b),
                      sorted(algos_b - algos_a), warnings)


def format_comparison(cmp: Comparison, threshold: float) -> str:
    """A table with headers; ratios above ``threshold`` that the rounds confirm are marked."""
    lines = [f"warning: {w}" for w in cmp.warnings]
    if cmp.table.empty:
        lines.append("no (case, algorithm) pair was timed in both runs")
    else:
        rows = []
        for _, r in cmp.table.iterrows():
            mark = "REGRESSION" if r["ratio"] > threshold and r["verdict"] == "slower" else ""
            ci = f"{r['ci_low']:.2f}-{r['ci_high']:.2f}" if np.isfinite(r["ci_low"]) else ""
            rows.append([r["label"][:40], r["algorithm"][:14], r["median_s_a"] * 1e3,
                         r["median_s_b"] * 1e3, f"{r['ratio']:.2f}", ci, r["verdict"], mark])
        lines.append(tabulate(rows, headers=["case", "algorithm", "A ms", "B ms", "B/A",
                                             "95% CI", "verdict", ""], floatfmt=".3g"))
        counts = cmp.table["verdict"].value_counts()
        lines.append(f"\ngeometric mean B/A over {len(cmp.table)} pairs: {cmp.geomean:.3f}; "
                     + ", ".join(f"{n} {v}" for v, n in counts.items()))
        for side in ("a", "b"):
            loud = int(cmp.table[f"unsettled_{side}"].sum())
            if loud:
                lines.append(f"{loud} of {len(cmp.table)} pairs were unsettled in run "
                             f"{side.upper()}: not judged (rerun it on a quiet machine)")
    if cmp.only_a:
        lines.append(f"timed only in A: {', '.join(cmp.only_a)}")
    if cmp.only_b:
        lines.append(f"timed only in B: {', '.join(cmp.only_b)}")
    return "\n".join(lines)
