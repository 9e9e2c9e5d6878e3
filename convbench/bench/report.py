"""Tables, plots and report.md from a run's results.csv (``python -m convbench report``)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the harness runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .experiments import Experiment  # noqa: E402

MS = 1e3


def load_results(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results.csv"
    if not path.exists():
        raise ValueError(f"{run_dir}: no results.csv; is it a convbench run directory?")
    df = pd.read_csv(path)
    df["is_peer"] = df["is_peer"].astype(str).str.lower() == "true"
    for col in ("auto_pick", "auto_top", "scipy_choice"):
        if col not in df:
            df[col] = np.nan
    for col in ("median_s", "workspace_bytes", "measured_host_bytes", "speedup_vs_best_peer"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("measured_device_bytes",):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    mem = df[["workspace_bytes", "measured_host_bytes", "measured_device_bytes"]].max(axis=1)
    # a peer that declares nothing and shows nothing allocates inside a compiled library
    # (oneDNN, cuDNN): its memory is unknown, not zero
    unknown = df["is_peer"] & (mem.fillna(0) == 0)
    df["memory_bytes"] = mem.mask(unknown)
    return df


def fastest_per_case(df: pd.DataFrame) -> pd.DataFrame:
    """One row per case: the fastest algorithm overall; our fastest with its first-call
    (compile) time and its declared and measured extra memory; the best peer; and the
    median-of-rounds speedup of our fastest over the best peer."""
    ok = df[df["status"] == "ok"]
    out = []
    for (device, series, case_id), g in ok.groupby(["device", "series", "case_id"], sort=False):
        best = g.loc[g["median_s"].idxmin()]
        ours, peers = g[~g["is_peer"]], g[g["is_peer"]]
        row = {"device": device, "series": series, "case": best["label"],
               "fastest": best["algorithm"], "time_ms": best["median_s"] * MS}
        if len(ours):
            o = ours.loc[ours["median_s"].idxmin()]
            measured = o["measured_device_bytes"] if device == "cuda" else o["measured_host_bytes"]
            row.update(ours=o["algorithm"], ours_ms=o["median_s"] * MS,
                       first_call_s=o["compile_s"],
                       declared_MiB=(o["workspace_bytes"] or 0) / 2**20,
                       measured_MiB=measured / 2**20)
            if len(peers):
                p = peers.loc[peers["median_s"].idxmin()]
                row.update(best_peer=p["algorithm"], peer_ms=p["median_s"] * MS,
                           speedup=o["speedup_vs_best_peer"])
        out.append(row)
    return pd.DataFrame(out)


def pareto_front(g: pd.DataFrame) -> pd.DataFrame:
    """Algorithms of one case that no other beats on both time and memory (those whose memory
    is unknown are left out)."""
    g = g[g["memory_bytes"].notna()].sort_values(["median_s", "memory_bytes"])
    front, best_mem = [], np.inf
    for _, r in g.iterrows():
        mem = r["memory_bytes"]
        if mem < best_mem:
            front.append(r)
            best_mem = mem
    return pd.DataFrame(front)


def crossovers(df: pd.DataFrame, x: str) -> list[str]:
    """Where the fastest of our algorithms changes along ``x``, per series."""
    lines = []
    ok = df[(df["status"] == "ok") & ~df["is_peer"]]
    for (device, series), g in ok.groupby(["device", "series"], sort=False):
        winners = g.loc[g.groupby(x)["median_s"].idxmin()].sort_values(x)
        prev = None
        for _, r in winners.iterrows():
            if prev is not None and r["algorithm"] != prev["algorithm"]:
                lines.append(f"{device}, {series}: {r['algorithm']} overtakes {prev['algorithm']} "
                             f"between {x}={prev[x]:g} and {x}={r[x]:g}")
            prev = r
    return lines


def _style(algo: str, is_peer: bool) -> dict:
    return {"linestyle": "--" if is_peer else "-", "marker": "o" if not is_peer else "x"}


def _series_axes(n: int, width: float = 6.0):
    fig, axes = plt.subplots(1, n, figsize=(width * n, 4.2), squeeze=False)
    return fig, axes[0]


def plot_time_vs_x(df: pd.DataFrame, x: str, path: Path) -> None:
    ok = df[df["status"] == "ok"]
    series = list(dict.fromkeys(ok["series"]))
    fig, axes = _series_axes(max(1, len(series)))
    for ax, s in zip(axes, series):
        g = ok[ok["series"] == s]
        for (algo, peer), a in g.groupby(["algorithm", "is_peer"], sort=False):
            a = a.sort_values(x)
            ax.plot(a[x], a["median_s"] * MS, label=algo + (" (peer)" if peer else ""),
                    **_style(algo, peer))
        ax.set_yscale("log")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel("median time per call (ms, log)")
        ax.set_title(s, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Time vs " + x.replace("_", " ") + " (solid: convbench, dashed: peers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(df: pd.DataFrame, path: Path) -> None:
    """Memory vs time for the last (largest) case of each series, with its Pareto front."""
    ok = df[df["status"] == "ok"]
    series = list(dict.fromkeys(ok["series"]))
    fig, axes = _series_axes(max(1, len(series)))
    for ax, s in zip(axes, series):
        g = ok[ok["series"] == s]
        g = g[g["case_id"] == g["case_id"].iloc[-1]].copy()
        g["mem_plot"] = g["memory_bytes"].fillna(0).clip(lower=1024)
        for _, r in g.iterrows():
            unknown = np.isnan(r["memory_bytes"])
            marker = "x" if r["is_peer"] else "o"
            if unknown:  # hollow grey: drawn at the floor, not a real figure
                ax.scatter(r["median_s"] * MS, r["mem_plot"], marker="o", facecolors="none",
                           edgecolors="grey")
            else:
                ax.scatter(r["median_s"] * MS, r["mem_plot"], marker=marker)
            label = r["algorithm"] + (" (memory not visible)" if unknown else "")
            ax.annotate(label, (r["median_s"] * MS, r["mem_plot"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = pareto_front(g).sort_values("median_s")
        ax.step(front["median_s"] * MS, front["mem_plot"], where="post", color="k", alpha=0.5,
                label="Pareto front")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("median time (ms, log)")
        ax.set_ylabel("extra memory (bytes, log; <=1 KiB drawn at 1 KiB)")
        ax.set_title(f"{s}\n{g['label'].iloc[0]}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Speed / memory trade-off (lower left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pooling(df: pd.DataFrame, path: Path) -> None:
    ok = df[df["status"] == "ok"]
    fig, (ax_t, ax_i) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = {s: f"C{i}" for i, s in enumerate(dict.fromkeys(ok["series"]))}
    markers = {a: m for a, m in zip(dict.fromkeys(ok["algorithm"]), "osx^dv")}
    for (series, algo, peer), g in ok.groupby(["series", "algorithm", "is_peer"], sort=False):
        g = g.sort_values("pool_size")
        ax_t.plot(g["pool_size"], g["median_s"] * MS, label=f"{series}: {algo}",
                  color=colors[series], marker=markers[algo], linestyle="--" if peer else "-")
    for series, g in ok.groupby("series", sort=False):
        g = g.drop_duplicates("case_id").sort_values("pool_size")
        ax_i.plot(g["pool_size"], g["info_kept"], marker="o", label=series, color=colors[series])
    ax_t.set_yscale("log")
    ax_t.set_xlabel("pool size")
    ax_t.set_ylabel("median time (ms, log)")
    ax_t.set_title("Time (colour: series; solid: convbench, dashed: peers)", fontsize=10)
    ax_t.legend(fontsize=6)
    ax_i.set_xlabel("pool size")
    ax_i.set_ylabel("fraction of image variance kept")
    ax_i.set_title("Information kept (sample photo, pooled then spread back)", fontsize=10)
    ax_i.legend(fontsize=7)
    for ax in (ax_t, ax_i):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(df: pd.DataFrame, path: Path) -> None:
    """Grouped bars: time per layer (series) for each algorithm, log scale."""
    ok = df[df["status"] == "ok"]
    layers = list(dict.fromkeys(ok["series"]))
    algos = list(dict.fromkeys(ok["algorithm"]))
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(layers) + 3), 4.5))
    width = 0.8 / max(1, len(algos))
    for i, algo in enumerate(algos):
        vals = [ok[(ok["series"] == layer) & (ok["algorithm"] == algo)]["median_s"].min() * MS
                for layer in layers]
        peer = bool(ok[ok["algorithm"] == algo]["is_peer"].iloc[0])
        ax.bar(np.arange(len(layers)) + i * width, vals, width, label=algo,
               hatch="//" if peer else None, alpha=0.9)
    ax.set_xticks(np.arange(len(layers)) + width * (len(algos) - 1) / 2)
    ax.set_xticklabels(layers, fontsize=8, rotation=10)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log)")
    ax.set_title("Time per layer by algorithm (hatched: peers)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_totals(df: pd.DataFrame) -> pd.DataFrame:
    """Per group (pipeline): the sum over its layers of the fastest algorithm of each layer,
    and of each single algorithm used for every layer."""
    ok = df[df["status"] == "ok"]
    rows = []
    groups = ok["group"].astype(object).where(ok["group"].notna() & (ok["group"] != ""), "all")
    for group, g in ok.groupby(groups, sort=False):
        best = g.groupby("series")["median_s"].min().sum()
        flops = g.drop_duplicates("series")["flops"].sum()
        row = {"pipeline": group, "layers": g["series"].nunique(), "GFLOP": flops / 1e9,
               "best_per_layer_ms": best * MS}
        for algo, a in g.groupby("algorithm"):
            if a["series"].nunique() == row["layers"]:
                row[f"{algo}_ms"] = a.groupby("series")["median_s"].min().sum() * MS
        rows.append(row)
    return pd.DataFrame(rows)


def auto_cases(df: pd.DataFrame) -> pd.DataFrame:
    """Per case: auto's pick, its time, the fastest of ours, the regret (pick / fastest - 1), the
    same for scipy.signal.choose_conv_method between SciPy's own two methods, and torch's time."""
    ok = df[df["status"] == "ok"]
    rows = []
    for (device, case_id), g in ok.groupby(["device", "case_id"], sort=False):
        ours = g[~g["is_peer"]]
        pick = g["auto_pick"].dropna().iloc[0] if g["auto_pick"].notna().any() else None
        if ours.empty or pick not in set(ours["algorithm"]):
            continue
        best = ours.loc[ours["median_s"].idxmin()]
        t_pick = float(ours[ours["algorithm"] == pick]["median_s"].iloc[0])
        row = {"device": device, "case": best["label"], "auto_pick": pick,
               "fastest": best["algorithm"], "pick_ms": t_pick * MS,
               "fastest_ms": best["median_s"] * MS, "regret": t_pick / best["median_s"] - 1}
        top = g["auto_top"].dropna()
        if len(top):  # measure=True times the model's top candidates and keeps the fastest
            timed = ours[ours["algorithm"].isin(top.iloc[0].split("+"))]
            if len(timed):
                row["measured_pick"] = timed.loc[timed["median_s"].idxmin()]["algorithm"]
                row["measured_regret"] = timed["median_s"].min() / best["median_s"] - 1
        torch_t = g[g["algorithm"].isin(["torch", "cudnn"])]["median_s"]
        if len(torch_t):
            row["torch_ms"] = float(torch_t.iloc[0]) * MS
        choice = g["scipy_choice"].dropna()
        sci = g[g["algorithm"].isin(["scipy_direct", "scipy_fft"])].set_index("algorithm")["median_s"]
        if len(choice) and len(sci) == 2 and choice.iloc[0] in sci.index:
            row["scipy_choice"] = choice.iloc[0]
            row["scipy_regret"] = float(sci[choice.iloc[0]] / sci.min() - 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _regret_figures(regret: pd.Series) -> str:
    """How often a chooser's picks were within 10% of the fastest, and its mean regret."""
    return (f"within 10% on {(regret <= 0.10).mean() * 100:.0f}%, mean regret "
            f"{regret.mean() * 100:.1f}%")


def auto_summary(cases: pd.DataFrame) -> list[str]:
    """The figures the auto issue asks for, as report lines."""
    if cases.empty:
        return ["_(no case with auto's pick timed)_"]
    within = (cases["regret"] <= 0.10).mean()
    lines = [f"- auto (cost model, no measuring) on {len(cases)} layers: within 10% of the "
             f"fastest of ours on {within * 100:.0f}%, exact pick on "
             f"{(cases['auto_pick'] == cases['fastest']).mean() * 100:.0f}%, mean regret "
             f"{cases['regret'].mean() * 100:.1f}%, worst {cases['regret'].max() * 100:.0f}%"]
    if "measured_regret" in cases and cases["measured_regret"].notna().any():
        measured = cases["measured_regret"].dropna()
        lines.append(f"- auto with measure=True (the model's top 3 timed once, as measured in "
                     f"this run): {_regret_figures(measured)}, worst "
                     f"{measured.max() * 100:.0f}%")
    if "scipy_regret" in cases and cases["scipy_regret"].notna().any():
        sc = cases.dropna(subset=["scipy_regret"])
        lines.append(f"- scipy.signal.choose_conv_method on the {len(sc)} single-channel "
                     f"layers, choosing between SciPy's own direct and fft: "
                     f"{_regret_figures(sc['scipy_regret'])} (auto on the same layers: "
                     f"{sc['regret'].mean() * 100:.1f}%)")
    if "torch_ms" in cases and cases["torch_ms"].notna().any():
        tc = cases.dropna(subset=["torch_ms"])
        lines.append(f"- auto's pick at least as fast as torch on {(tc['pick_ms'] <= tc['torch_ms']).mean() * 100:.0f}% "
                     f"of {len(tc)} layers (median pick/torch time "
                     f"{(tc['pick_ms'] / tc['torch_ms']).median():.2f})")
        beatable = tc[tc["fastest_ms"] <= tc["torch_ms"]]
        if len(beatable):
            kept = int((beatable["pick_ms"] <= beatable["torch_ms"]).sum())
            lines.append(f"- on the {len(beatable)} layers where one of ours is at least as fast "
                         f"as torch, auto's pick is too on {kept}")
    return [line + "\n" for line in lines]


def plot_auto(df: pd.DataFrame, path: Path) -> None:
    cases = auto_cases(df)
    fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(12, 4.2))
    if not cases.empty:
        ax_r.plot(np.sort(cases["regret"].values) * 100, marker="o", label="auto (cost model)")
        if "measured_regret" in cases:
            ax_r.plot(np.sort(cases["measured_regret"].dropna().values) * 100, marker="s",
                      label="auto, measure=True (top 3 timed)")
        if "scipy_regret" in cases:
            sc = np.sort(cases["scipy_regret"].dropna().values) * 100
            ax_r.plot(sc, marker="x", linestyle="--", label="scipy choose_conv_method")
        ax_r.axhline(10, color="grey", linestyle=":", label="10%")
        if "torch_ms" in cases:
            tc = cases.dropna(subset=["torch_ms"])
            ax_t.scatter(tc["torch_ms"], tc["pick_ms"], marker="o")
            lim = [min(tc["torch_ms"].min(), tc["pick_ms"].min()),
                   max(tc["torch_ms"].max(), tc["pick_ms"].max())]
            ax_t.plot(lim, lim, color="grey", linestyle=":")
            ax_t.set_xscale("log")
            ax_t.set_yscale("log")
    ax_r.set_xlabel("layers, sorted by regret")
    ax_r.set_ylabel("time of the pick over the fastest - 1 (%)")
    ax_r.set_title("How much slower than the best the chooser's pick is", fontsize=10)
    ax_r.legend(fontsize=8)
    ax_t.set_xlabel("torch (ms, log)")
    ax_t.set_ylabel("auto's pick (ms, log)")
    ax_t.set_title("auto's pick vs torch, per layer (below the line: ours faster)", fontsize=10)
    for ax in (ax_r, ax_t):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTTERS = {"auto_regret": plot_auto, "time_vs_x": plot_time_vs_x, "pareto": plot_pareto,
            "pooling_tradeoff": plot_pooling, "layers_bar": plot_layers}


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float) and not np.isnan(v) else
                 ("" if isinstance(v, float) else str(v)) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_report(run_dir: Path, experiment: Experiment | None = None) -> Path:
    """Draw the plots and write report.md for one run directory; returns the report path."""
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    env = json.loads((run_dir / "environment.json").read_text()) if (
        run_dir / "environment.json").exists() else {}
    plots = experiment.plots if experiment else info.get("plots", ["time_vs_x"])
    x = experiment.x if experiment else info.get("x")
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    drawn = []
    for name in plots:
        path = plot_dir / f"{name}.png"
        if name == "time_vs_x":
            if not x:
                continue
            plot_time_vs_x(df, x, path)
        else:
            PLOTTERS[name](df, path)
        drawn.append(path)
    title = info.get("experiment", run_dir.name)
    md = [f"# {title}\n", info.get("description", "") + "\n",
          f"Run `{run_dir.name}`, preset `{info.get('preset', '?')}`, command "
          f"`{info.get('command', '?')}`.\n",
          f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, Numba threads "
          f"{env.get('numba_threads', '?')}, float32 GEMM peak {env.get('gemm_peak_gflops', '?')} "
          f"GFLOP/s; versions {env.get('versions', {})}.\n",
          "Times are medians over interleaved rounds; speedup is the median over rounds of "
          "best-peer time / our time, measured side by side in this run.\n"]
    md.append("## Plots\n")
    md += [f"![{p.stem}](plots/{p.name})\n" for p in drawn]
    md.append("## Fastest per case\n")
    md.append(_md_table(fastest_per_case(df)))
    if x and x in df.columns:
        md.append(f"## Crossovers along {x}\n")
        md += [f"- {line}\n" for line in crossovers(df, x)] or ["_(no change of winner)_\n"]
    if "auto_regret" in plots:
        md.append("## How well algorithm='auto' chooses\n")
        cases = auto_cases(df)
        md += auto_summary(cases)
        md.append("\n" + _md_table(cases))
    if "layers_bar" in plots:
        md.append("## Totals per pipeline\n")
        md.append(_md_table(layer_totals(df)))
    md.append("## Speed / memory Pareto front per case\n")
    ok = df[df["status"] == "ok"]
    for (device, case_id), g in ok.groupby(["device", "case_id"], sort=False):
        front = pareto_front(g)
        items = ", ".join(f"{r['algorithm']} ({r['median_s'] * MS:.3g} ms, "
                          f"{r['memory_bytes'] / 2**20:.3g} MiB)" for _, r in front.iterrows())
        md.append(f"- {device} {case_id}: {items}\n")
    bad = df[df["status"] != "ok"][["series", "label", "algorithm", "status", "error"]]
    md.append("## Not timed (skipped, failed, mismatch)\n")
    md.append(_md_table(bad))
    report = run_dir / "report.md"
    report.write_text("\n".join(md))
    return report
