"""The report's plots. Every plot of a run gives an algorithm the same colour (a peer is drawn
dashed in the colour of the family of methods it runs, a library peer in black); legends sit
outside the data; unsettled points (and bars) are hollow, the one way noise is drawn, and
skipped or failed ones are marked along the
bottom edge rather than missing; an empty panel says so."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the harness runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from . import network_plots, savefig, tables  # noqa: E402

MS = 1e3
PALETTE = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
LIBRARY_COLOURS = ["black", "0.45", "0.7"]
NOT_TIMED = ("skipped", "failed", "mismatch")


class Style:
    """Colour, line and marker of every algorithm of a run, fixed for all its plots."""

    def __init__(self, df: pd.DataFrame):
        ours = list(dict.fromkeys(df.loc[~df["is_peer"], "family"]))
        others = [f for f in dict.fromkeys(df.loc[df["is_peer"], "family"]) if f not in ours]
        self.colours = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(ours)}
        self.colours.update({f: LIBRARY_COLOURS[i % len(LIBRARY_COLOURS)]
                             for i, f in enumerate(others)})
        first = df.drop_duplicates("algorithm").set_index("algorithm")
        self.family = first["family"].to_dict()
        self.peer = first["is_peer"].to_dict()

    def __call__(self, algorithm: str) -> dict:
        peer = bool(self.peer.get(algorithm, False))
        return {"color": self.colours.get(self.family.get(algorithm, algorithm), "grey"),
                "linestyle": "--" if peer else "-", "marker": "D" if peer else "o"}

    def label(self, algorithm: str) -> str:
        return algorithm + (" (peer)" if self.peer.get(algorithm) else "")


def _marker(style: Style, row) -> dict:
    """Scatter style of one result: filled, or hollow when unsettled."""
    st = style(row["algorithm"])
    if not row["unsettled"]:
        return {"color": st["color"], "marker": st["marker"]}
    return {"facecolors": "none", "edgecolors": st["color"], "marker": st["marker"]}


def _bytes_label(value: float, _pos=None) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def _log_ms_axis(axis) -> None:
    """A log axis of milliseconds labelled in plain numbers, decades only."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label_short_range(axis, values) -> None:
    """On a log axis spanning less than a decade there is no decade tick to label: label the
    minor ticks instead."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() < 10:
        axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))
        axis.set_tick_params(which="minor", labelsize=6)


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_outside(fig, axes) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def _grid(n: int, width: float = 5.0, height: float = 3.8, cols: int = 3):
    cols = max(1, min(cols, n))
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:max(n, 1)]


def _save(fig, path: Path) -> None:
    savefig.save(fig, path)


def plot_time_vs_x(df: pd.DataFrame, x: str, path: Path, style: Style) -> None:
    """Median time per call against ``x`` per series, with the IQR as a band."""
    series = list(dict.fromkeys(df["series"]))
    fig, axes = _grid(len(series), cols=2)
    for ax, s in zip(axes, series):
        g = df[(df["series"] == s) & df[x].notna()]
        ok = g[g["status"] == "ok"]
        if ok.empty:
            _no_data(ax)
            ax.set_title(s, fontsize=10)
            continue
        for algo, a in ok.groupby("algorithm", sort=False):
            a = a.sort_values(x)
            st = style(algo)
            ax.plot(a[x], a["median_s"] * MS, color=st["color"], linestyle=st["linestyle"])
            lo = (a["median_s"] - a["iqr_s"].fillna(0) / 2).clip(lower=1e-12) * MS
            hi = (a["median_s"] + a["iqr_s"].fillna(0) / 2) * MS
            ax.fill_between(a[x], lo, hi, color=st["color"], alpha=0.15, linewidth=0)
            for i, (_, r) in enumerate(a.iterrows()):  # the legend names the points drawn
                ax.scatter(r[x], r["median_s"] * MS, s=22, label=style.label(algo) if i == 0
                           else None, **_marker(style, r))
        missing = g[g["status"].isin(NOT_TIMED)]
        for algo, m in missing.groupby("algorithm", sort=False):
            ax.scatter(m[x], np.full(len(m), 0.02), transform=ax.get_xaxis_transform(),
                       marker="|", s=60, color=style(algo)["color"], clip_on=False)
        _log_ms_axis(ax.yaxis)
        if x in ("channels", "in_channels", "out_channels", "batch"):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel("median time per call (ms, log)")
        ax.set_title(s, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle(f"Time vs {x.replace('_', ' ')} (band: IQR; hollow: unsettled; ticks on the "
                 "axis: not timed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)


def plot_pareto(df: pd.DataFrame, path: Path, style: Style) -> None:
    """Memory vs time of every case, with its Pareto front; algorithms whose memory is not
    visible are drawn in a strip above the panel, not in the 'better' corner."""
    ok = df[df["status"] == "ok"]
    cases = list(dict.fromkeys(ok["case_id"]))
    fig, axes = _grid(len(cases), width=4.6, height=3.6, cols=3)
    labels = []  # (panel, its labels in data coordinates), spread apart once laid out
    if not cases:
        _no_data(axes[0])
        _save(fig, path)
        return
    for ax, case_id in zip(axes, cases):
        g = ok[ok["case_id"] == case_id]
        known, unknown = g[g["memory_bytes"].notna()], g[g["memory_bytes"].isna()]
        floor = 1024.0
        texts = []
        for _, r in known.iterrows():
            mem = max(r["memory_bytes"], floor)
            ax.scatter(r["median_s"] * MS, mem, **_marker(style, r))
            texts.append(ax.text(r["median_s"] * MS, mem, r["algorithm"], fontsize=7))
        front = tables.pareto_front(g).sort_values("median_s")
        if len(front) > 1:  # a front of one point is the point itself: nothing to draw
            ax.step(front["median_s"] * MS, front["memory_bytes"].clip(lower=floor),
                    where="post", color="k", alpha=0.4, label="Pareto front")
        for _, r in unknown.iterrows():
            ax.scatter(r["median_s"] * MS, 1.04, transform=ax.get_xaxis_transform(),
                       clip_on=False, **_marker(style, r))
            texts.append(ax.text(r["median_s"] * MS, 1.08, f"{r['algorithm']} (memory not "
                                 "visible)", transform=ax.get_xaxis_transform(), fontsize=6,
                                 color="grey"))
        _log_ms_axis(ax.xaxis)
        _label_short_range(ax.xaxis, g["median_s"] * MS)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=4))
        ax.yaxis.set_major_formatter(FuncFormatter(_bytes_label))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("median time (ms, log)")
        ax.set_ylabel("extra memory (log)")
        ax.set_title(g["label"].iloc[0], fontsize=8, pad=22)
        ax.grid(True, which="both", alpha=0.3)
        labels.append((ax, [t for t in texts if t.get_transform() == ax.transData]))
    _legend_outside(fig, axes)
    fig.suptitle("Speed / memory trade-off per case (lower left is better; hollow: unsettled)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _spread_labels(fig, labels)
    _save(fig, path)


def _spread_labels(fig, labels: list) -> None:
    """Move each panel's colliding labels apart (adjustText), in the figure's final layout.
    adjustText draws the whole figure before every panel's call; the figure is drawn once
    here instead, since moving one panel's labels changes no other panel (with 13 panels the
    redraws took 9 of 12 seconds)."""
    import adjustText

    fig.draw_without_rendering()
    redraw = getattr(adjustText, "force_draw", None)  # where absent, each call draws: slower
    if redraw is not None:
        adjustText.force_draw = lambda ax: None
    try:
        for ax, texts in labels:
            if texts:
                adjustText.adjust_text(texts, ax=ax)
    finally:
        if redraw is not None:
            adjustText.force_draw = redraw


def plot_pooling(df: pd.DataFrame, path: Path, style: Style) -> None:
    """Time against pool size per series, and the information each pooled map keeps."""
    ok = df[df["status"] == "ok"]
    fig, (ax_t, ax_i) = plt.subplots(1, 2, figsize=(12, 4.2))
    if ok.empty:
        _no_data(ax_t)
        _no_data(ax_i)
        _save(fig, path)
        return
    lines = ["-", "--", ":", "-."]
    # one colour per algorithm here (peers of the same method share a colour elsewhere, and
    # every pooling algorithm runs the same method)
    names = list(dict.fromkeys(ok.sort_values("is_peer")["algorithm"]))
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    for i, (series, g) in enumerate(ok.groupby("series", sort=False)):
        for algo, a in g.groupby("algorithm", sort=False):
            a = a.sort_values("pool_size")
            st = style(algo)
            ax_t.plot(a["pool_size"], a["median_s"] * MS, label=f"{series}: {style.label(algo)}",
                      color=colour[algo], marker=st["marker"], linestyle=lines[i % len(lines)])
        info = g.drop_duplicates("case_id").sort_values("pool_size")
        ax_i.plot(info["pool_size"], info["info_kept"], marker="o", label=series,
                  linestyle=lines[i % len(lines)], color="k")
    _log_ms_axis(ax_t.yaxis)
    ax_t.set_xlabel("pool size")
    ax_t.set_ylabel("median time (ms, log)")
    ax_t.set_title("Time (colour: algorithm; line style: series)", fontsize=10)
    ax_t.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax_i.set_xlabel("pool size")
    ax_i.set_ylabel("fraction of image variance kept")
    ax_i.set_title("Information kept (sample photo, pooled then spread back)", fontsize=10)
    ax_i.legend(fontsize=7, frameon=False)
    for ax in (ax_t, ax_i):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def bar_groups(df: pd.DataFrame) -> dict[str, str]:
    """One bar group per case (never merged by series), with its label."""
    first = df.drop_duplicates("case_id")
    return {r["case_id"]: (r["label"] if r["series"] in r["label"] else
                           f"{r['series']}\n{r['label']}") for _, r in first.iterrows()}


def plot_layers(df: pd.DataFrame, path: Path, style: Style) -> None:
    """One small panel per case: a horizontal bar per algorithm (median time, log), fastest
    at the top, each of ours labelled with the fastest peer's time over its own (> 1: ours
    faster); algorithms that could not run the case are listed under the panel."""
    labels = bar_groups(tables.algorithms_only(df))
    cases = list(labels)
    cols = 3 if len(cases) > 2 else max(1, len(cases))
    heights = [max(1, len(df[(df["case_id"] == c) & (df["status"] == "ok")])) for c in cases]
    rows = -(-max(len(cases), 1) // cols)
    tallest = max(heights, default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, (0.22 * tallest + 1.3) * rows),
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(cases):]:
        ax.set_visible(False)
    if not cases:
        flat[0].set_visible(True)
        _no_data(flat[0])
        _save(fig, path)
        return
    ok_all = tables.algorithms_only(df)
    for ax, case_id in zip(flat, cases):
        g = ok_all[ok_all["case_id"] == case_id]
        ok = g[g["status"] == "ok"].sort_values("median_s")
        if ok.empty:
            _no_data(ax, "nothing timed")
            ax.set_title(labels[case_id], fontsize=8)
            continue
        peers = ok[ok["is_peer"]]
        best_peer = peers["median_s"].min() if len(peers) else np.nan
        y = np.arange(len(ok))[::-1]
        for yy, (_, r) in zip(y, ok.iterrows()):
            st = style(r["algorithm"])
            hollow = bool(r["unsettled"])
            ax.barh(yy, r["median_s"] * MS, height=0.7, hatch="//" if r["is_peer"] else None,
                    facecolor="none" if hollow else st["color"],
                    edgecolor=st["color"] if hollow else "white")
            text = f" {r['median_s'] * MS:.3g} ms"
            if not r["is_peer"] and np.isfinite(best_peer):
                text += f"  {best_peer / r['median_s']:.2f}x"
            ax.text(r["median_s"] * MS, yy, text, va="center", fontsize=6.5)
        ax.set_yticks(y)
        ax.set_yticklabels(ok["algorithm"], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(ok["median_s"].min() * MS / 1.5, ok["median_s"].max() * MS * 15)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("median time (ms, log)", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(labels[case_id].replace("\n", ": "), fontsize=8)
        missing = g[g["status"].isin(NOT_TIMED)]["algorithm"].tolist()
        if missing:
            ax.text(0.0, -0.32, "not run: " + ", ".join(missing), transform=ax.transAxes,
                    fontsize=6, color="grey", va="top")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle("Time per case (hatched: peers; hollow: unsettled; the ratio is the fastest peer's "
                 "time over ours, > 1: ours faster)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, path)


def plot_auto(df: pd.DataFrame, path: Path, style: Style) -> None:
    """Regret of each chooser over the layers, and auto's pick against torch per layer."""
    cases = tables.auto_cases(df)
    settled = cases[~cases["unsettled"]] if not cases.empty else cases
    with_torch = "torch_ms" in settled and settled["torch_ms"].notna().any()
    if with_torch:
        fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(12, 4.2))
    else:  # no torch timings: the regret alone, no empty panel
        fig, ax_r = plt.subplots(1, 1, figsize=(6.5, 4.2))
        ax_t = None
    if settled.empty:
        _no_data(ax_r, "no settled layer")
    else:
        ax_r.plot(np.sort(settled["regret"].values) * 100, marker="o", label="auto (cost model)")
        if "measured_regret" in settled and settled["measured_regret"].notna().any():
            ax_r.plot(np.sort(settled["measured_regret"].dropna().values) * 100, marker="s",
                      label="auto, measure=True")
        if "scipy_regret" in settled and settled["scipy_regret"].notna().any():
            ax_r.plot(np.sort(settled["scipy_regret"].dropna().values) * 100, marker="x",
                      linestyle="--", label="scipy choose_conv_method")
        ax_r.axhline(10, color="grey", linestyle=":", label="10%")
        ax_r.legend(fontsize=8, frameon=False)
        if with_torch:
            tc = settled.dropna(subset=["torch_ms"])
            for pick, g in tc.groupby("auto_pick"):
                ax_t.scatter(g["torch_ms"], g["pick_ms"], color=style(pick)["color"],
                             label=f"pick: {pick}")
            lim = [min(tc["torch_ms"].min(), tc["pick_ms"].min()),
                   max(tc["torch_ms"].max(), tc["pick_ms"].max())]
            ax_t.plot(lim, lim, color="grey", linestyle=":")
            _log_ms_axis(ax_t.xaxis)
            _log_ms_axis(ax_t.yaxis)
            ax_t.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_r.set_xlabel("layers, sorted by regret")
    ax_r.set_ylabel("time of the pick over the fastest - 1 (%)")
    ax_r.set_title("How much slower than the best the chooser's pick is", fontsize=10)
    if ax_t is not None:
        ax_t.set_xlabel("torch (ms, log)")
        ax_t.set_ylabel("auto's pick (ms, log)")
        ax_t.set_title("auto's pick vs torch, per layer (below the line: ours faster)",
                       fontsize=10)
    for ax in (ax_r, ax_t):
        if ax is not None:
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_pipelines(df: pd.DataFrame, path: Path, style: Style, keys: list[str]) -> None:
    """The speedup a pipeline's FLOP ratio promises over the first one against the speedup
    measured (ours and torch's), along the first key, one panel per value of the second."""
    table = tables.pipeline_comparison(df, keys)
    panels = list(dict.fromkeys(table[keys[1]])) if len(keys) > 1 and not table.empty else [None]
    fig, axes = _grid(len(panels), width=4.8, height=3.8, cols=3)
    if table.empty or "promised speedup" not in table:
        _no_data(axes[0], "no pipelines to compare")
        _save(fig, path)
        return
    x = keys[0]
    for ax, value in zip(axes, panels):
        g = table if value is None else table[table[keys[1]] == value]
        g = g.sort_values(x)
        ax.plot(g[x], g["promised speedup"], color="grey", linestyle=":", marker="s",
                label="promised (FLOP ratio)")
        for column, colour, line, label in (("measured (ours)", PALETTE[0], "-", "measured: ours"),
                                            ("measured (torch)", "black", "--",
                                             "measured: torch")):
            drawn = g.dropna(subset=[column])
            if drawn.empty:  # no torch in this run: no line, no legend entry
                continue
            ax.plot(drawn[x], drawn[column], color=colour, linestyle=line, label=label)
            settled = ~drawn["unsettled"].astype(bool)
            ax.scatter(drawn.loc[settled, x], drawn.loc[settled, column], color=colour, s=22)
            ax.scatter(drawn.loc[~settled, x], drawn.loc[~settled, column], facecolors="none",
                       edgecolors=colour, s=22)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x" if v in (
            2, 3, 5, 20, 30, 50) else ""))
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel("speedup over the full layer (log)")
        ax.set_title(f"{keys[1].replace('_', ' ')} = {value}" if value is not None else "",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle("Promised vs measured speedup of the cheaper pipeline (hollow: unsettled)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    _save(fig, path)


PLOTTERS = {"auto_regret": plot_auto, "pareto": plot_pareto,
            "pooling_tradeoff": plot_pooling, "layers_bar": plot_layers}
MULTI_PLOTTERS = {"network_totals": network_plots.plot_totals,
                  "network_map": network_plots.plot_map}  # each returns the files it drew


def draw(df: pd.DataFrame, plots: list[str], x: str | None, plot_dir: Path,
         pipeline_keys: list[str] | None = None) -> list[Path]:
    """Draw the experiment's plots into ``plot_dir``; returns the files drawn."""
    plot_dir.mkdir(exist_ok=True)
    style = Style(df)
    drawn = []
    ok = df[df["status"] == "ok"]
    savefig.NOTE["text"] = savefig.note_for(int(ok["unsettled"].sum()) if len(ok) else 0, len(ok))
    for name in plots:
        path = plot_dir / f"{name}.png"
        if name == "time_vs_x":
            if not x or x not in df:
                continue
            plot_time_vs_x(df, x, path, style)
        elif name == "pipelines":
            plot_pipelines(df, path, style, pipeline_keys or [])
        elif name in MULTI_PLOTTERS:
            drawn += MULTI_PLOTTERS[name](df, path, style)
            continue
        else:
            PLOTTERS[name](df, path, style)
        drawn.append(path)
    return drawn
