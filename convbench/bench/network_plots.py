"""Pictures of a networks run: each network's total convolution time as horizontal bars with
the ratio to torch written on them, and a per-layer map (rows: the network's layers in
order, with their repeat counts; columns: the algorithms; colour: time over the layer's
fastest) that shows which algorithm wins where."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from . import network_tables as nt  # noqa: E402
from . import savefig  # noqa: E402
from .rundir import AUTO  # noqa: E402

MS = 1e3
MAP_CAP = 10.0  # the map's colour scale ends at 10x the layer's fastest
# greys, apart from the algorithms' palette: torch black as in every plot, then auto and the
# best of ours per layer
SPECIAL = {nt.PEER: "black", AUTO: "0.3", nt.AUTO_PREPARED: "0.5", nt.ORACLE: "0.7",
           nt.ORACLE_PREPARED: "0.85"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _save(fig, path: Path) -> None:
    savefig.save(fig, path)


def plot_totals(df: pd.DataFrame, path: Path, style) -> list[Path]:
    """One panel per network and batch: a horizontal bar per way of running it (total ms,
    log), labelled with the ratio to torch over the same layers and, for an algorithm that
    does not run every layer, how many it ran."""
    keys = nt.networks(df)
    cols = 2 if len(keys) > 1 else 1
    rows = -(-max(len(keys), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(keys):]:
        ax.set_visible(False)
    if not keys:
        flat[0].set_visible(True)
        flat[0].text(0.5, 0.5, "no network layers were timed", ha="center", va="center",
                     transform=flat[0].transAxes, color="grey")
        flat[0].set_axis_off()
        _save(fig, path)
        return [path]
    for ax, key in zip(flat, keys):
        table = nt.totals(df, key)
        table = table[table["total_ms"] > 0]
        fixed = [w for w in SPECIAL if w in set(table["way"])]
        rest = table[~table["way"].isin(fixed)].sort_values("total_ms")["way"].tolist()
        order = fixed + rest
        table = table.set_index("way").loc[order]
        y = np.arange(len(order))[::-1]
        colours = [SPECIAL.get(w) or style(w)["color"] for w in order]
        ax.barh(y, table["total_ms"], color=colours, height=0.7, edgecolor="black",
                linewidth=0.4)
        ax.set_xscale("log")
        ax.set_yticks(y)
        ax.set_yticklabels(order, fontsize=8)
        for yy, (way, r) in zip(y, table.iterrows()):
            text = f" {r['total_ms']:.3g} ms"
            if pd.notna(r.get("vs_torch")) and way != nt.PEER:
                text += f"  {r['vs_torch']:.2f}x torch"
            done, total = r["layers"].split("/")
            if done != total:
                text += f"  ({r['layers']} layers)"
            ax.text(r["total_ms"], yy, text, va="center", fontsize=7)
        ax.set_xlim(table["total_ms"].min() / 1.5, table["total_ms"].max() * 12)
        ax.set_xlabel("total convolution time (ms, log; every layer x its count)")
        ax.set_title(nt.title(key), fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle("Whole-network convolution time (ratio = torch's time / this one; > 1: "
                 "faster than torch)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, path)
    return [path]


def map_columns(net: pd.DataFrame) -> list[str]:
    """The map's columns: auto, ours by name, then the peers (those that ran a layer)."""
    names = list(dict.fromkeys(net.loc[net["status"] == "ok", "algorithm"]))
    peers = set(net.loc[net["is_peer"], "algorithm"])
    mine = [n for n in names if n not in peers and n != AUTO]
    return ([AUTO] if AUTO in names else []) + mine + [n for n in names if n in peers]


def map_values(net: pd.DataFrame, columns: list[str]
               ) -> tuple[np.ndarray, list[str], list[int | None]]:
    """(time over the layer's fastest, NaN where not timed; one label per layer row; the
    column of auto's pick per row, None where it is not a column)."""
    index = sorted(net["layer_index"].dropna().unique())
    values = np.full((len(index), len(columns)), np.nan)
    labels, picks = [], []
    for i, layer_index in enumerate(index):
        g = net[net["layer_index"] == layer_index]
        ok = g[g["status"] == "ok"].set_index("algorithm")["median_s"]
        fastest = ok.drop(AUTO, errors="ignore").min() if len(ok) else np.nan
        for j, name in enumerate(columns):
            if name in ok.index and fastest > 0:
                values[i, j] = ok[name] / fastest
        first = g.iloc[0]
        pick = first["auto_pick"]
        picks.append(columns.index(pick) if isinstance(pick, str) and pick in columns else None)
        count = int(first["count"])
        labels.append(f"{first['layer']}{f' x{count}' if count > 1 else ''}  "
                      f"({first['label'].split(' ', 1)[1]})")
    return values, labels, picks


def plot_map(df: pd.DataFrame, path: Path, style) -> list[Path]:
    """One map per network and batch (files ``network_map-<network>-b<batch>.png``)."""
    keys = nt.networks(df)
    if not keys:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no network layers were timed", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        ax.set_axis_off()
        _save(fig, path)
        return [path]
    drawn = []
    for key in keys:
        net = nt._one(df, key)
        columns = map_columns(net)
        values, labels, picks = map_values(net, columns)
        fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 5.5,
                                        0.24 * len(labels) + 1.6))
        shown = np.clip(np.nan_to_num(values, nan=MAP_CAP), 1.0, MAP_CAP)
        masked = np.ma.masked_where(np.isnan(values), shown)
        cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.88")
        image = ax.imshow(masked, aspect="auto", cmap=cmap, norm=LogNorm(1.0, MAP_CAP),
                          interpolation="nearest")
        for (i, j), v in np.ndenumerate(values):
            if np.isnan(v):
                ax.text(j, i, "-", ha="center", va="center", fontsize=6, color="0.5")
            else:
                best = v <= 1.0 + 1e-9
                text = "best" if best else (f"{v:.2g}" if v < MAP_CAP else f">{MAP_CAP:g}")
                ax.text(j, i, text, ha="center", va="center",
                        fontsize=6, color="white" if v > 2.5 else "black",
                        fontweight="bold" if best else "normal")
        for i, j in enumerate(picks):
            if j is not None:
                ax.add_patch(Rectangle((j - 0.48, i - 0.45), 0.96, 0.9, fill=False,
                                       edgecolor="red", linewidth=1.2))
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_title(f"{nt.title(key)}: time over each layer's fastest (auto and torch "
                     "included; grey: not run; red box: auto's pick)", fontsize=9)
        bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        bar.set_label("time / layer's fastest (log, capped at 10x)", fontsize=8)
        fig.tight_layout()
        out = path.with_name(f"{path.stem}-{_slug(key[2])}-b{int(key[3])}"
                             f"{'' if key[0] == 'cpu' else '-' + key[0]}{path.suffix}")
        _save(fig, out)
        drawn.append(out)
    return drawn
