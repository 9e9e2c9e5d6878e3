"""What a run prints to the terminal: tables that keep the answer at any width, by choosing
columns (the answer first, the rest in the CSV and the report) rather than cutting lines."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from tabulate import tabulate

ELLIPSIS = "…"
MIN_LABEL = 16  # a case label is shortened no further than this


def width() -> int:
    """The terminal's width (100 where there is no terminal)."""
    return shutil.get_terminal_size(fallback=(100, 24)).columns


def shorten(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut at a word where one is near, marked with …."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,") + ELLIPSIS


def _render(view: pd.DataFrame) -> str:
    return tabulate(view.astype(object).where(view.notna(), ""), headers="keys",
                    showindex=False, floatfmt=".3g")


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit(table: pd.DataFrame, label: str, priority: list[str], limit: int,
        required: int = 1) -> str:
    """The table within ``limit`` columns: the label column and the first ``required`` columns
    of ``priority`` always (the labels shortened, down to MIN_LABEL, to make them fit), then
    the others in order while they fit (one that does not is left out; a later, narrower one
    may still come in)."""
    columns = [c for c in priority if c in table]
    view = table[[label] + columns].copy()
    view[label] = view[label].astype(str)
    chosen = columns[:required]
    overflow = _widest(_render(view[[label] + chosen])) - limit
    if overflow > 0:
        longest = int(view[label].str.len().max())
        keep = max(MIN_LABEL, longest - overflow)
        view[label] = view[label].map(lambda s: shorten(s, keep))
    for column in columns[required:]:
        if _widest(_render(view[[label] + chosen + [column]])) <= limit:
            chosen.append(column)
    return _render(view[[label] + chosen])


def fastest_view(table: pd.DataFrame) -> pd.DataFrame:
    """The fastest-per-case table as the terminal shows it: ``fastest`` only where it can
    differ from ``ours`` (a peer was timed), the noise as one word."""
    view = table.copy()
    if "best_peer" not in view or view["best_peer"].isna().all() or (
            view["fastest"] == view.get("ours")).all():
        view = view.drop(columns=["fastest"])
    if "unsettled" in view:
        view["noise"] = np.where(view["unsettled"], "unsettled", "")
    return view


FASTEST_PRIORITY = ["fastest", "ours", "speedup", "noise", "ours_ms", "best_peer", "peer_ms",
                    "prepared_ms", "time_ms"]
NETWORK_PRIORITY = ["auto", "prepared", "best of ours", ">= torch", "auto within 10%",
                    "torch ms"]
