"""Compare two runs case by case: the ratio of median times, regressions highlighted."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .report import load_results

KEYS = ["experiment", "device", "case_id", "algorithm"]


def compare_runs(run_a: Path, run_b: Path) -> pd.DataFrame:
    """One row per (case, algorithm) timed in both runs: B's median over A's (> 1: slower)."""
    a, b = load_results(run_a), load_results(run_b)
    a, b = a[a["status"] == "ok"], b[b["status"] == "ok"]
    merged = a[KEYS + ["label", "median_s"]].merge(b[KEYS + ["median_s"]], on=KEYS,
                                                    suffixes=("_a", "_b"))
    merged["ratio"] = merged["median_s_b"] / merged["median_s_a"]
    return merged.sort_values("ratio", ascending=False)


def format_comparison(df: pd.DataFrame, threshold: float) -> str:
    """A plain-text table; rows whose ratio exceeds ``threshold`` are marked REGRESSION."""
    if df.empty:
        return "no (case, algorithm) pair was timed in both runs"
    lines = [f"{'case':44s} {'algorithm':14s} {'A ms':>9s} {'B ms':>9s} {'B/A':>6s}"]
    for _, r in df.iterrows():
        mark = "  REGRESSION" if r["ratio"] > threshold else ""
        lines.append(f"{r['label'][:44]:44s} {r['algorithm'][:14]:14s} "
                     f"{r['median_s_a'] * 1e3:9.3f} {r['median_s_b'] * 1e3:9.3f} "
                     f"{r['ratio']:6.2f}{mark}")
    return "\n".join(lines)
