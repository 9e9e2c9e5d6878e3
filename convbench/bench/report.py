"""report.md of a run directory (``python -m convbench report``): the plots, the one-line
conclusion, the tables, and what was not timed, unsettled or drifted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import network_tables, plots, tables, terminal
from .experiments import Experiment
from .. import machine
from ..machine import machine_slug
from .rundir import RunDirectory

MS = 1e3


def mostly_unsettled(df: pd.DataFrame) -> str:
    """What to do when most of a run never settled, with the load that was seen."""
    ok = tables.timed(df)
    others = ok["others_cpu"].median() if "others_cpu" in ok else np.nan
    load = ok["load_avg"].max() if "load_avg" in ok else np.nan
    seen = []
    if pd.notna(others):
        seen.append(f"other processes used {others:.0%} of the CPUs (median)")
    if pd.notna(load):
        seen.append(f"load average up to {load:.1f}")
    busy = (pd.notna(others) and others > 0.1) or (
        pd.notna(load) and load > machine.usable_cores())
    advice = ("rerun on a quiet machine (close other programs)" if busy else
              "the machine looked quiet, so the repeats are too short to settle: give each "
              "case more time (--min-time 0.02 --repeats 9) or use a longer preset")
    return f"{'; '.join(seen) or 'the rounds kept moving'}; {advice}"


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"
    cells = df.astype(object).where(df.notna(), "")
    return tabulate(cells, headers="keys", tablefmt="github", showindex=False,
                    floatfmt=".3g") + "\n"


def _machine_line(env: dict) -> str:
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                     f"{b.get('num_threads')} threads)" for b in env.get("blas", [])
                     if b.get("user_api") == "blas")
    git = env.get("git") or {}
    commit = (git.get("commit") or "?")[:10] + (" (uncommitted changes)" if git.get("dirty")
                                                else "")
    return (f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, Numba threads "
            f"{env.get('numba_threads', '?')} ({env.get('numba_threading_layer', '?')}), "
            f"BLAS {blas or '?'}, float32 GEMM peak {env.get('gemm_peak_gflops', '?')} GFLOP/s; "
            f"convbench commit {commit}.\n")


def _versions_table(env: dict) -> str:
    """The software the run measured, one row per package (not installed: -)."""
    versions = env.get("versions") or {}
    if not versions:
        return ""
    rows = pd.DataFrame([{"package": k, "version": v or "-"} for k, v in versions.items()])
    return md_table(rows)


def build_report(run_dir: Path, experiment: Experiment | None = None) -> Path:
    """Draw the plots and write report.md for one run directory; returns the report path."""
    run = RunDirectory.open(run_dir)
    df = run.load()
    info = run.info() if (run.path / "run.json").exists() else {}
    env = run.environment()
    plot_names = experiment.plots if experiment else info.get("plots", ["time_vs_x"])
    x = experiment.x if experiment else info.get("x")
    keys = experiment.pipeline_keys if experiment else info.get("pipeline_keys", [])
    drawn = plots.draw(df, plot_names, x, run.path / "plots", keys)
    noisy, timed = tables.unsettled_count(df)
    md = [f"# {info.get('experiment', run.path.name)}\n", info.get("description", "") + "\n",
          f"**Answer:** {tables.conclusion(df)}.\n"]
    md += network_section(df)
    md += [f"Run `{run.path.name}`, preset `{info.get('preset', '?')}`, command "
           f"`{info.get('command', '?')}`.\n", _machine_line(env)]
    if info.get("calibration_note"):
        md.append(f"Note: {info['calibration_note']}.\n")
    md.append("Times are medians over interleaved rounds, repeated until their spread "
              "(IQR / median) settled under the experiment's noise target or the case's time "
              "ran out; speedup is the median over rounds of best-peer time / our time, "
              "measured side by side in this run. Times are per call, every weight-dependent "
              "transform included (kernel spectra, Winograd's kernel transform); `prepared_ms` "
              "is the fastest of ours with its weights prepared once (`cb.Conv2d`), timed in "
              "the same rounds.\n")

    drifted = int(tables.timed(df)["drifted"].sum())
    md.append(f"Unsettled results: {noisy} of {timed} timed rows (their rounds never settled, "
              "or the machine was busy while they were timed); no conclusion above is drawn "
              f"from them. Drifted: {drifted} (the control GEMM moved meanwhile: their absolute "
              "times are suspect, but the ratios of interleaved rounds still rank them).\n")
    if timed and noisy > timed / 2:
        md.append(f"**Most results never settled**: {mostly_unsettled(df)}\n")
    md.append("## Plots\n")
    md += [f"![{p.stem}](plots/{p.name})\n" for p in drawn]
    md += _machines_section(run, df, plot_names, x, keys)
    md.append("## Fastest per case\n")
    md.append(md_table(tables.fastest_per_case(df)))
    if x and x in df.columns:
        md.append(f"## Crossovers along {x}\n")
        md += [f"- {line}\n" for line in tables.crossovers(df, x)] or ["_(no change of winner)_\n"]
    if "auto_regret" in plot_names:
        md.append("## How well algorithm='auto' chooses\n")
        cases = tables.auto_cases(df)
        md += [f"- {line}\n" for line in tables.auto_summary(cases)]
        md.append("\n" + md_table(cases))
    totals = tables.pipeline_totals(df)
    if not totals.empty:
        md.append("## Totals per pipeline\n")
        md.append(md_table(totals))
    comparison = tables.pipeline_comparison(df, keys)
    if not comparison.empty:
        md.append("## Pipelines compared: promised and measured speedup\n")
        md += [f"- {line}\n" for line in tables.promise_lines(comparison, keys)]
        md.append("\n" + md_table(comparison))
    md.append("## Speed / memory Pareto front per case\n")
    for (device, _), g in tables.timed(df).groupby(["device", "case_id"], sort=False):
        front = tables.pareto_front(g)
        items = ", ".join(f"{r['algorithm']} ({r['median_s'] * MS:.3g} ms, "
                          f"{r['memory_bytes'] / 2**20:.3g} MiB)" for _, r in front.iterrows())
        first = g.iloc[0]
        where = first["series"] if first["series"] in first["label"] else (
            f"{first['series']}, {first['label']}")
        layer = f" ({first['layer']})" if isinstance(first.get("layer"), str) and first[
            "layer"] else ""
        md.append(f"- {where}{layer}{'' if device == 'cpu' else f' ({device})'}: {items}\n")
    loud = df[(df["status"] == "ok") & (df["unsettled"] | df["drifted"])][["label", "algorithm",
                                                                           "rel_spread",
                                                      "noise"]]
    md.append("## Unsettled and drifted results\n")
    md.append(md_table(loud))
    faulted = tables.page_faulted(df)
    if not faulted.empty:
        md.append(f"## Calls that page-faulted\n\nAt least {tables.FAULTS_NOTED} page faults "
                  "per warm call: the time includes the kernel mapping and zeroing fresh pages "
                  "(a block above glibc's 32 MiB mmap ceiling is mapped afresh on every call), "
                  "and moves with what ran before it.\n")
        md.append(md_table(faulted))
    skipped = df[df["status"] == "skipped"][["series", "label", "algorithm", "error"]]
    failed = df[df["status"].isin(["failed", "mismatch"])][["series", "label", "algorithm",
                                                             "status", "error"]]
    md.append("## Failed or wrong\n")
    md.append(md_table(failed))
    md.append("## Not timed, as expected (unsupported, over the workspace limit or the case's "
              "time)\n")
    md.append(md_table(skipped.rename(columns={"error": "why"})))
    md.append("## Software\n")
    md.append(_versions_table(env) or "_(not recorded)_\n")
    report = run.path / "report.md"
    report.write_text("\n".join(md))
    return report


def network_section(df: pd.DataFrame) -> list[str]:
    """Per network and batch: the totals table, auto's quality, where ours lose to torch, and
    the per-layer table (empty for a run without network layers)."""
    keys = network_tables.networks(df)
    if not keys:
        return []
    md = ["## Networks\n",
          "Total convolution time of each network, every layer counted as often as the network "
          "runs it; `vs_torch` is torch's total over the same layers divided by this one "
          "(> 1: faster than torch). `auto` is `cb.conv2d(x, w, ...)` as a user calls it, "
          "choice included; `auto (prepared)` is `cb.Conv2d(w, ...)(x)`; `best of ours` "
          "takes the fastest of our algorithms on each layer.\n",
          md_table(network_tables.summary(df))]
    for key in keys:
        layers = network_tables.per_layer(df, key)
        quality = network_tables.auto_quality(layers)
        md.append(f"### {network_tables.title(key)}\n")
        md.append(md_table(network_tables.totals(df, key)))
        if "within_10" in quality:
            md.append(f"auto's pick was within 10% of the fastest of ours on "
                      f"{quality['within_10']:.0%} of the layers (counted with their repeats); "
                      f"mean regret {quality['mean_regret']:.0%}, worst "
                      f"{quality['worst_regret']:.0%}.\n")
        lost = network_tables.losses(layers)
        if "layers_counted" in quality:
            md.append(f"auto per call was at least as fast as torch on "
                      f"{quality['layers_at_least_torch']} of {quality['layers_counted']} "
                      f"layers (worst {quality['worst_vs_torch']:.2f}x)"
                      + ("; where ours lose most:\n" if len(lost) else ".\n"))
        if len(lost):
            md.append(md_table(lost[["layer", "count", "case", "torch_ms", "auto_ms",
                                     "auto_vs_torch", "auto_pick", "fastest", "lost_ms"]]))
        md.append("<details><summary>every layer</summary>\n\n" + md_table(layers)
                  + "\n</details>\n")
    return md


def _machines_section(run: RunDirectory, df: pd.DataFrame, plot_names: list[str],
                      x: str | None, keys: list[str]) -> list[str]:
    """With several measuring machines (a cluster run): each machine's environment, the
    algorithms' ranking per case side by side, and each machine's own plots."""
    ranking = tables.machine_ranking(df)
    if ranking.empty:
        return []
    agree = int(ranking["same fastest"].sum())
    md = ["## Machines side by side\n",
          f"The machines agree on the fastest algorithm in {agree} of {len(ranking)} cases "
          "(median ms per algorithm, fastest first; * unsettled).\n"]
    envs = run.machines()
    for identity in dict.fromkeys(m for m in df["machine"] if m):
        md.append(f"- **{tables.machine_label(identity)}**: "
                  + _machine_line(envs.get(identity, {})))
    md.append("\n" + md_table(ranking))
    for identity in dict.fromkeys(m for m in df["machine"] if m):
        folder = run.path / "plots" / machine_slug(identity)
        drawn = plots.draw(df[df["machine"] == identity], plot_names, x, folder, keys)
        md.append(f"### Plots: {tables.machine_label(identity)}\n")
        md += [f"![{p.stem}](plots/{folder.name}/{p.name})\n" for p in drawn]
    return md


def terminal_table(df: pd.DataFrame, width: int | None = None) -> str:
    """The fastest-per-case table for the terminal (for a run of networks: one line per network
    and batch), its columns chosen to fit ``width`` (default: the terminal's): the answer
    first, the rest is in results.csv and the report."""
    width = width or terminal.width()
    if network_tables.networks(df):
        view = network_tables.summary(df)
        view = view[[c for c in view if not c.endswith(" ms") or c == "torch ms"]]
        view.columns = [c.replace(" vs torch", "") for c in view.columns]
        caption = terminal.shorten("auto, prepared, best of ours: torch's conv time / ours (> 1: "
                                   "ours faster); >= torch: layers, counted, where auto is",
                                   width)
        return terminal.fit(view, "network", terminal.NETWORK_PRIORITY, width, 4) + "\n" + caption
    table = tables.fastest_per_case(df)
    if table.empty:
        return "(nothing timed)"
    view = terminal.fastest_view(table)
    required = len([c for c in ("fastest", "ours", "speedup", "noise") if c in view])
    return terminal.fit(view, "case", terminal.FASTEST_PRIORITY, width, required)
