"""What a run of networks says, as tables: per network (and batch) the total convolution time
with every layer's repeats counted, for ``auto`` per call and prepared, the best of ours per
layer, torch and each algorithm on the layers it runs; per layer the times, auto's pick and its
regret; and the layers where ours lose to torch. Rows of a network are those with a layer
name (a series of layers from a layer file)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .rundir import AUTO
from .tables import ours, timed

MS = 1e3
NETWORK_KEYS = ["device", "machine", "series", "n"]
AUTO_PREPARED = "auto (prepared)"
ORACLE = "best of ours"
ORACLE_PREPARED = "best of ours (prepared)"
PEER = "torch"


def network_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of network layers (those with a layer index)."""
    return df[df["layer_index"].notna()]


def networks(df: pd.DataFrame) -> list[tuple]:
    """(device, machine, series, batch) of every network-and-batch in the run, in run order."""
    rows = network_rows(df)
    return list(dict.fromkeys(rows[NETWORK_KEYS].itertuples(index=False, name=None)))


def title(key: tuple) -> str:
    device, _, series, n = key
    return f"{series}, batch {int(n)}" + (f" ({device})" if device != "cpu" else "")


def _one(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    rows = network_rows(df)
    mask = np.logical_and.reduce([rows[k] == v for k, v in zip(NETWORK_KEYS, key)])
    return rows[mask]


def per_layer(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """One row per layer of one network and batch, in the network's order: its count, the
    time of torch, of auto per call and prepared, auto's ratio to torch (median of per-round
    ratios, > 1: ours faster), auto's pick, the fastest of ours and the pick's regret (its
    time over the fastest's - 1), the best of ours prepared, and whether a timing was noisy."""
    net = _one(df, key)
    out = []
    for index, g in net.groupby("layer_index", sort=True):
        ok = timed(g)
        first = g.iloc[0]
        row = {"index": int(index), "layer": first["layer"], "count": int(first["count"]),
               "case": first["label"], "GFLOP": first["flops"] / 1e9}
        mine = ours(ok)
        peer = ok[ok["algorithm"] == PEER]
        auto = ok[ok["algorithm"] == AUTO]
        if len(peer):
            row["torch_ms"] = peer["median_s"].iloc[0] * MS
        if len(auto):
            a = auto.iloc[0]
            row["auto_ms"] = a["median_s"] * MS
            row["auto_prepared_ms"] = a["prepared_median_s"] * MS
            if len(peer):
                ratio = a["speedup_vs_best_peer"] if a["best_peer"] == PEER else np.nan
                row["auto_vs_torch"] = ratio if np.isfinite(ratio) else (
                    peer["median_s"].iloc[0] / a["median_s"])
        if len(mine):
            best = mine.loc[mine["median_s"].idxmin()]
            row["fastest"] = best["algorithm"]
            row["fastest_ms"] = best["median_s"] * MS
            row["best_prepared_ms"] = mine["prepared_median_s"].fillna(
                mine["median_s"]).min() * MS
            pick = first["auto_pick"]
            row["auto_pick"] = pick
            times = mine.set_index("algorithm")["median_s"]
            if isinstance(pick, str) and pick in times.index:
                row["regret"] = times[pick] / best["median_s"] - 1
        involved = pd.concat([mine, peer, auto])
        row["unsettled"] = bool(involved["unsettled"].any()) if len(involved) else False
        out.append(row)
    return pd.DataFrame(out)


def totals(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """One row per way of running the network: auto per call and prepared, the best of ours
    per layer (per call and prepared), torch, and each algorithm; its total convolution time
    (ms, every layer x its count) over the layers it ran, how many of the network's layers
    that is, and torch's total over the same layers divided by it (> 1: faster than torch)."""
    net = timed(_one(df, key))
    layers = net["layer_index"].nunique() if len(net) else 0
    count = net.drop_duplicates("layer_index").set_index("layer_index")["count"]
    torch_t = net[net["algorithm"] == PEER].set_index("layer_index")["median_s"]
    mine = ours(net)
    ways: dict[str, pd.Series] = {}
    auto = net[net["algorithm"] == AUTO].set_index("layer_index")
    if len(auto):
        ways[AUTO] = auto["median_s"]
        ways[AUTO_PREPARED] = auto["prepared_median_s"].dropna()
    if len(mine):
        ways[ORACLE] = mine.groupby("layer_index")["median_s"].min()
        prepared = mine["prepared_median_s"].fillna(mine["median_s"])
        ways[ORACLE_PREPARED] = prepared.groupby(mine["layer_index"]).min()
    if len(torch_t):
        ways[PEER] = torch_t
    for name, g in mine.groupby("algorithm", sort=False):
        ways[name] = g.set_index("layer_index")["median_s"]
    rows = []
    for name, times in ways.items():
        total = float((times * count.reindex(times.index)).sum())
        row = {"way": name, "total_ms": total * MS, "layers": f"{len(times)}/{layers}"}
        same = torch_t.reindex(times.index)
        if len(torch_t) and same.notna().all() and total > 0:
            row["vs_torch"] = float((same * count.reindex(same.index)).sum()) / total
        rows.append(row)
    return pd.DataFrame(rows)


def auto_quality(table: pd.DataFrame) -> dict:
    """auto's picks over a network's layers, each counted with its repeats: the share within
    10% of the fastest of ours, the mean and worst regret, and the share of layers (counted)
    where auto per call is at least as fast as torch."""
    out: dict = {}
    if "regret" in table and table["regret"].notna().any():
        t = table.dropna(subset=["regret"])
        weights = t["count"]
        out["within_10"] = float(weights[t["regret"] <= 0.10].sum() / weights.sum())
        out["mean_regret"] = float((t["regret"] * weights).sum() / weights.sum())
        out["worst_regret"] = float(t["regret"].max())
    if "auto_vs_torch" in table and table["auto_vs_torch"].notna().any():
        t = table.dropna(subset=["auto_vs_torch"])
        out["layers_at_least_torch"] = int(t.loc[t["auto_vs_torch"] >= 1.0, "count"].sum())
        out["layers_counted"] = int(t["count"].sum())
        out["worst_vs_torch"] = float(t["auto_vs_torch"].min())
    return out


def losses(table: pd.DataFrame, limit: int = 8) -> pd.DataFrame:
    """The layers where auto per call is slower than torch, by the time lost (count x the
    difference), worst first."""
    if "auto_vs_torch" not in table or "torch_ms" not in table:
        return pd.DataFrame()
    lost = table[table["auto_vs_torch"] < 1.0].copy()
    if lost.empty:
        return lost
    lost["lost_ms"] = lost["count"] * (lost["auto_ms"] - lost["torch_ms"])
    return lost.sort_values("lost_ms", ascending=False).head(limit)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per network and batch: torch's total, auto per call and prepared and the best of
    ours per layer, each with its ratio to torch (> 1: faster), how many layers (counted) auto is at least as
    fast as torch on, and auto's within-10% share."""
    rows = []
    for key in networks(df):
        t = totals(df, key).set_index("way")
        quality = auto_quality(per_layer(df, key))
        row = {"network": title(key)}
        if PEER in t.index:
            row["torch ms"] = t.loc[PEER, "total_ms"]
        for way, column in ((AUTO, "auto"), (AUTO_PREPARED, "prepared"),
                            (ORACLE, "best of ours")):
            if way in t.index:
                row[f"{column} ms"] = t.loc[way, "total_ms"]
                if "vs_torch" in t and pd.notna(t.loc[way, "vs_torch"]):
                    row[f"{column} vs torch"] = f"{t.loc[way, 'vs_torch']:.2f}x"
        if "layers_counted" in quality:
            row[">= torch"] = f"{quality['layers_at_least_torch']}/{quality['layers_counted']}"
        if "within_10" in quality:
            row["auto within 10%"] = f"{quality['within_10']:.0%}"
        rows.append(row)
    return pd.DataFrame(rows)
