"""Writing a figure to its file, the same for every plot of a run: a run whose results mostly
never settled says so in red on every figure, so it never looks like a normal one."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the harness runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402

NOTE = {"text": ""}  # set by plots.draw for the run being drawn


def note_for(unsettled: int, timed: int) -> str:
    """The note of a run with ``unsettled`` of ``timed`` results unsettled ('' when few)."""
    if timed and unsettled > timed / 2:
        return (f"{unsettled} of {timed} results never settled: rankings here are not "
                "reliable (see the report)")
    return ""


def save(fig, path: Path) -> None:
    if NOTE["text"]:
        fig.text(0.5, 1.01, NOTE["text"], ha="center", va="bottom", color="red",
                 fontsize=11, fontweight="bold", transform=fig.transFigure)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
