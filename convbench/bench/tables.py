"""The tables a report and the terminal show, computed from a run's results (no plotting, no
text): fastest per case, Pareto fronts, crossovers, pipeline totals, how ``auto`` chose, and the
one-line conclusion. Unsettled rows are shown but never decide a conclusion; drifted ones do
(their interleaved ratios hold), and the conclusion says so."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..peers import SCIPY_METHODS
from .rundir import AUTO

MS = 1e3
CASE_KEYS = ["device", "machine", "series", "case_id"]


def timed(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def algorithms_only(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of algorithms (ours and peers), without the row of ``auto`` itself (an
    experiment with time_auto), which is a choice between ours, not one of them."""
    return df[df["algorithm"] != AUTO]


def ours(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of our algorithms (peers and auto's own row left out)."""
    return df[~df["is_peer"] & (df["algorithm"] != AUTO)]


def trusted(df: pd.DataFrame) -> pd.DataFrame:
    """Timed rows that settled on a quiet machine: the only ones conclusions come from."""
    return df[(df["status"] == "ok") & ~df["unsettled"]]


def unsettled_count(df: pd.DataFrame) -> tuple[int, int]:
    """(unsettled timed rows, timed rows)."""
    ok = timed(df)
    return int(ok["unsettled"].sum()), len(ok)


FAULTS_NOTED = 1000  # page faults per warm call (4 MB of fresh 4 KiB pages) a report lists


def page_faulted(df: pd.DataFrame) -> pd.DataFrame:
    """Timed rows whose warm call took at least FAULTS_NOTED page faults (runs from before
    the count have none): label, algorithm, faults per call and the median time."""
    ok = timed(df)
    hit = ok[ok["page_faults"] >= FAULTS_NOTED]
    return pd.DataFrame({"series": hit["series"], "label": hit["label"],
                         "algorithm": hit["algorithm"],
                         "page_faults": hit["page_faults"].astype(int),
                         "median_ms": (hit["median_s"] * MS).round(3)})


def fastest_per_case(df: pd.DataFrame) -> pd.DataFrame:
    """One row per case: the fastest algorithm overall; our fastest with its first-call time
    and its declared and measured extra memory; the best peer; the median-of-rounds speedup of
    our fastest over the best peer; and whether any of these timings was unsettled."""
    out = []
    for (device, machine, series, case_id), g in algorithms_only(timed(df)).groupby(
            CASE_KEYS, sort=False):
        best = g.loc[g["median_s"].idxmin()]
        ours, peers = g[~g["is_peer"]], g[g["is_peer"]]
        row = {"device": device, "machine": machine, "series": series, "case": best["label"],
               "fastest": best["algorithm"], "time_ms": best["median_s"] * MS}
        involved = [best]
        if len(ours):
            o = ours.loc[ours["median_s"].idxmin()]
            measured = o["measured_device_bytes"] if device == "cuda" else o["measured_host_bytes"]
            row.update(ours=o["algorithm"], ours_ms=o["median_s"] * MS,
                       prepared_ms=ours["prepared_median_s"].fillna(ours["median_s"]).min() * MS,
                       first_call_s=o["first_call_s"],
                       declared_MiB=(o["workspace_bytes"] or 0) / 2**20,
                       measured_MiB=measured / 2**20)
            involved.append(o)
            if len(peers):
                p = peers.loc[peers["median_s"].idxmin()]
                row.update(best_peer=p["algorithm"], peer_ms=p["median_s"] * MS,
                           speedup=o["speedup_vs_best_peer"])
                involved.append(p)
        row["unsettled"] = any(bool(r["unsettled"]) for r in involved)
        out.append(row)
    table = pd.DataFrame(out)
    if not table.empty and table["machine"].nunique() <= 1:
        table = table.drop(columns="machine")
    return table


def pareto_front(g: pd.DataFrame) -> pd.DataFrame:
    """Algorithms of one case that no other beats on both time and memory (those whose memory
    is unknown are left out)."""
    g = g[g["memory_bytes"].notna()].sort_values(["median_s", "memory_bytes"])
    front, best_mem = [], np.inf
    for _, r in g.iterrows():
        if r["memory_bytes"] < best_mem:
            front.append(r)
            best_mem = r["memory_bytes"]
    return pd.DataFrame(front)


def crossovers(df: pd.DataFrame, x: str) -> list[str]:
    """Where the fastest of our algorithms changes along ``x``, per series (settled rows only)."""
    lines = []
    for (device, machine, series), g in ours(trusted(df)).groupby(["device", "machine", "series"], sort=False):
        winners = g.loc[g.groupby(x)["median_s"].idxmin()].sort_values(x)
        prev = None
        where = f"{device}{', ' + machine.split('|')[0] if machine else ''}, {series}"
        for _, r in winners.iterrows():
            if prev is not None and r["algorithm"] != prev["algorithm"]:
                lines.append(f"{where}: {r['algorithm']} overtakes {prev['algorithm']} "
                             f"between {x}={prev[x]:g} and {x}={r[x]:g}")
            prev = r
    return lines


def pipeline_totals(df: pd.DataFrame) -> pd.DataFrame:
    """Per pipeline (a non-empty ``group`` of series run one after another): the sum over its
    layers of the fastest algorithm of each layer, and of each algorithm timed on every layer.
    Series without a group are not a pipeline and get no total."""
    ok = timed(df)
    ok = ok[ok["group"] != ""]
    rows = []
    for (device, machine, group), g in ok.groupby(["device", "machine", "group"], sort=False):
        per_case = g.groupby("case_id")
        row = {"device": device, "pipeline": group, "layers": g["case_id"].nunique(),
               "GFLOP": g.drop_duplicates("case_id")["flops"].sum() / 1e9,
               "best_per_layer_ms": per_case["median_s"].min().sum() * MS,
               "unsettled": bool(g["unsettled"].any())}
        for algo, a in g.groupby("algorithm", sort=False):
            if a["case_id"].nunique() == row["layers"]:
                row[f"{algo}_ms"] = a["median_s"].sum() * MS
        rows.append(row)
    return pd.DataFrame(rows)


def auto_cases(df: pd.DataFrame) -> pd.DataFrame:
    """Per case: auto's pick, its time, the fastest of ours, the regret (pick / fastest - 1),
    the same for auto's measure=True pick (timed independently of this run's timings) and for
    scipy.signal.choose_conv_method between SciPy's own two methods, and torch's time."""
    ok = timed(df)
    rows = []
    for (device, case_id), g in ok.groupby(["device", "case_id"], sort=False):
        mine = ours(g)
        picks = g["auto_pick"].dropna()
        pick = picks.iloc[0] if len(picks) else None
        if mine.empty or pick not in set(mine["algorithm"]):
            continue
        best = mine.loc[mine["median_s"].idxmin()]
        time_of = mine.set_index("algorithm")["median_s"]
        row = {"device": device, "case": best["label"], "auto_pick": pick,
               "fastest": best["algorithm"], "pick_ms": time_of[pick] * MS,
               "fastest_ms": best["median_s"] * MS, "regret": time_of[pick] / best["median_s"] - 1,
               "unsettled": bool(mine["unsettled"].any())}
        measured = g["auto_measured_pick"].dropna()
        if len(measured) and measured.iloc[0] in time_of.index:
            row["measured_pick"] = measured.iloc[0]
            row["measured_regret"] = time_of[measured.iloc[0]] / best["median_s"] - 1
        torch_t = g[g["library"] == "torch"]["median_s"]
        if len(torch_t):
            row["torch_ms"] = float(torch_t.min()) * MS
        choice = g["scipy_choice"].dropna()
        sci = g[g["algorithm"].isin(SCIPY_METHODS.values())].set_index("algorithm")["median_s"]
        if len(choice) and len(sci) == len(SCIPY_METHODS) and choice.iloc[0] in sci.index:
            row["scipy_choice"] = choice.iloc[0]
            row["scipy_regret"] = float(sci[choice.iloc[0]] / sci.min() - 1)
        rows.append(row)
    return pd.DataFrame(rows)


def regret_figures(regret: pd.Series) -> str:
    """How often a chooser's picks were within 10% of the fastest, and its mean regret."""
    return (f"within 10% on {(regret <= 0.10).mean() * 100:.0f}%, mean regret "
            f"{regret.mean() * 100:.1f}%")


def auto_line(cases: pd.DataFrame, info: dict) -> str:
    """auto's quality in one line for the terminal: its within-10% share, mean and worst
    regret over the settled layers, and whether the calibration was made on this machine."""
    settled = cases[~cases["unsettled"]] if not cases.empty else cases
    if settled.empty:
        return "no settled layer to judge its picks on"
    r = settled["regret"]
    where = ("calibrated on this machine" if not info.get("calibration_note") else
             "with the shipped calibration, made elsewhere (python -m convbench calibrate fits "
             "it here)")
    return (f"within 10% of our fastest on {(r <= 0.10).mean() * 100:.0f}% of {len(settled)} "
            f"layers, mean regret {r.mean() * 100:.0f}%, worst {r.max() * 100:.0f}%, {where}")


def auto_summary(cases: pd.DataFrame) -> list[str]:
    """The chooser's figures as lines, from settled cases only (unsettled ones are counted)."""
    if cases.empty:
        return ["no case with auto's pick timed"]
    settled = cases[~cases["unsettled"]]
    lines = []
    if len(settled) < len(cases):
        lines.append(f"{len(cases) - len(settled)} of {len(cases)} layers had unsettled timings "
                     "and are left out of the figures below")
    if settled.empty:
        return lines
    c = settled
    lines.append(f"auto (cost model, no measuring) on {len(c)} layers: within 10% of the "
                 f"fastest of ours on {(c['regret'] <= 0.10).mean() * 100:.0f}%, exact pick on "
                 f"{(c['auto_pick'] == c['fastest']).mean() * 100:.0f}%, mean regret "
                 f"{c['regret'].mean() * 100:.1f}%, worst {c['regret'].max() * 100:.0f}%")
    if "measured_regret" in c and c["measured_regret"].notna().any():
        m = c["measured_regret"].dropna()
        lines.append(f"auto with measure=True (its own timing, independent of this run's): "
                     f"{regret_figures(m)}, worst {m.max() * 100:.0f}%")
    if "scipy_regret" in c and c["scipy_regret"].notna().any():
        sc = c.dropna(subset=["scipy_regret"])
        lines.append(f"scipy.signal.choose_conv_method on the {len(sc)} single-channel layers, "
                     f"choosing between SciPy's own direct and fft: "
                     f"{regret_figures(sc['scipy_regret'])} (auto on the same layers: "
                     f"{sc['regret'].mean() * 100:.1f}%)")
    if "torch_ms" in c and c["torch_ms"].notna().any():
        tc = c.dropna(subset=["torch_ms"])
        lines.append(f"auto's pick at least as fast as torch on "
                     f"{(tc['pick_ms'] <= tc['torch_ms']).mean() * 100:.0f}% of {len(tc)} layers "
                     f"(median pick/torch time {(tc['pick_ms'] / tc['torch_ms']).median():.2f})")
        beatable = tc[tc["fastest_ms"] <= tc["torch_ms"]]
        if len(beatable):
            kept = int((beatable["pick_ms"] <= beatable["torch_ms"]).sum())
            lines.append(f"on the {len(beatable)} layers where one of ours is at least as "
                         f"fast as torch, auto's pick is too on {kept}")
    return lines


def conclusion(df: pd.DataFrame) -> str:
    """One line: who is fastest on how many settled cases, and where ours win."""
    table = fastest_per_case(df)
    if table.empty:
        return "nothing was timed"
    noisy = int(table["unsettled"].sum())
    settled = table[~table["unsettled"]]
    if settled.empty:
        return f"no conclusion: all {len(table)} cases had unsettled timings"
    peer_names = set(df.loc[df["is_peer"], "algorithm"])
    wins = settled["fastest"].value_counts()
    parts = [f"{name} fastest on {count} of {len(settled)} cases" for name, count in
             wins.items()]
    ours_won = settled[~settled["fastest"].isin(peer_names)]
    line = "; ".join(parts)
    if 0 < len(ours_won) < len(settled):
        where = sorted(set(ours_won["series"]))
        line += f"; ours win on: {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}"
    if noisy:
        line += f" ({noisy} unsettled case{'s' if noisy > 1 else ''} left out)"
    drifted = int(timed(df)["drifted"].sum()) if "drifted" in df else 0
    if drifted:
        line += f"; {drifted} result{'s' if drifted > 1 else ''} drifted (ranked by ratios)"
    return line


def pipeline_comparison(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Pipelines (series groups) side by side at each sweep point named by ``keys``: each
    pipeline's GFLOP, the sum over its layers of our fastest and of torch's time, and its
    memory; then, against the first pipeline, the speedup its FLOP ratio promises and the ones
    measured (ours and torch's). A point with an unsettled or missing layer is marked."""
    ok = timed(df)
    ok = ok[ok["group"] != ""]
    if ok.empty or not keys:
        return pd.DataFrame()
    pipelines = list(dict.fromkeys(ok["group"]))
    rows = []
    for point, g in ok.groupby(keys, sort=True):
        point = point if isinstance(point, tuple) else (point,)
        row = dict(zip(keys, point))
        totals = {}
        for pipe in pipelines:
            p = g[g["group"] == pipe]
            layers = p["case_id"].nunique()
            best_ours = ours(p).groupby("case_id")["median_s"].min()
            torch_t = p[p["library"] == "torch"].groupby("case_id")["median_s"].min()
            mem = ours(p).groupby("case_id")["memory_bytes"].min()
            totals[pipe] = (p.drop_duplicates("case_id")["flops"].sum(),
                            best_ours.sum() if len(best_ours) == layers else np.nan,
                            torch_t.sum() if len(torch_t) == layers else np.nan)
            row[f"{pipe} GFLOP"] = totals[pipe][0] / 1e9
            row[f"{pipe} ours ms"] = totals[pipe][1] * MS
            row[f"{pipe} torch ms"] = totals[pipe][2] * MS
            row[f"{pipe} MiB"] = mem.max() / 2**20 if len(mem) else np.nan
        if len(pipelines) >= 2:
            (f0, t0, r0), (f1, t1, r1) = totals[pipelines[1]], totals[pipelines[0]]
            row["promised speedup"] = f0 / f1 if f1 else np.nan
            row["measured (ours)"] = t0 / t1 if t1 else np.nan
            row["measured (torch)"] = r0 / r1 if r1 else np.nan
        row["unsettled"] = bool(g["unsettled"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def promise_lines(comparison: pd.DataFrame, keys: list[str]) -> list[str]:
    """Where the FLOP ratio's promise holds (measured >= half of it) and where memory traffic
    eats it, for our best and for torch, from settled points only."""
    if comparison.empty or "promised speedup" not in comparison:
        return []
    settled = comparison[~comparison["unsettled"]]
    if settled.empty:
        return [f"no conclusion: every one of the {len(comparison)} points had an unsettled timing"]
    lines = []
    for who in ("ours", "torch"):
        col = f"measured ({who})"
        data = settled.dropna(subset=[col])
        if data.empty:
            continue
        share = data[col] / data["promised speedup"]
        held = data[share >= 0.5]
        eaten = data[share < 0.5]
        fmt = lambda d: ", ".join("/".join(str(r[k]) for k in keys) for _, r in  # noqa: E731
                                  d.iterrows()) or "none"
        lines.append(f"{who}: the promise (at least half of the FLOP ratio realised) holds at "
                     f"{'/'.join(keys)} = {fmt(held)}; memory traffic eats it at {fmt(eaten)} "
                     f"(median realised share {share.median():.0%})")
    return lines


def machine_label(identity: str) -> str:
    """The hardware part of a machine id, for headings and columns."""
    return ", ".join(identity.split("|")[:4]) or "?"


def machine_ranking(df: pd.DataFrame) -> pd.DataFrame:
    """With several machines in one run (a cluster's workers): one row per case, one column per
    machine listing the algorithms from fastest to slowest with their median ms (* unsettled),
    and whether the machines agree on the fastest. Empty for a one-machine run."""
    ok = algorithms_only(timed(df))
    machines = [m for m in dict.fromkeys(ok["machine"]) if m]
    if len(machines) < 2:
        return pd.DataFrame()
    rows = []
    for (device, _, _), g in ok.groupby(["device", "series", "case_id"], sort=False):
        row = {"device": device, "case": g["label"].iloc[0]}
        winners = set()
        for m in machines:
            on = g[g["machine"] == m].sort_values("median_s")
            row[machine_label(m)] = " < ".join(
                f"{r.algorithm} {r.median_s * MS:.3g}{'*' if r.unsettled else ''}"
                for r in on.itertuples()) or "-"
            if not on.empty:
                winners.add(on["algorithm"].iloc[0])
        row["same fastest"] = len(winners) == 1
        rows.append(row)
    return pd.DataFrame(rows)
