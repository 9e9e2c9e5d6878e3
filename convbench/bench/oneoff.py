"""``python -m convbench bench DESCRIPTOR ...``: one layer (or a few) measured in seconds, as
benchdnn's performance mode does: every algorithm that runs it, checked against the float64
reference and then timed side by side (auto per call and prepared, and torch where
installed, in the same rounds), with declared and measured memory. Nothing is written: the
table is the answer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tabulate import tabulate

from .. import machine
from ..layerfile import NetworkLayer, format_layer, parse_descriptor
from .experiments import Experiment
from .measure import SweepOptions, run_case
from .rundir import AUTO

# SciPy's and NumPy's channel loops take minutes on a real layer
SLOW_PEERS = ["scipy_direct", "scipy_fft", "scipy_oa", "numpy_im2col"]
MS = 1e3


def parse(texts: list[str]) -> list[NetworkLayer]:
    """The layers of the descriptors; ValueError naming the one that is wrong."""
    layers = []
    for i, text in enumerate(texts, start=1):
        try:
            layers.append(parse_descriptor(text))
        except ValueError as exc:
            raise ValueError(f"descriptor {i} ({text!r}): {exc}") from None
    return layers


def experiment(layers: list[NetworkLayer], algorithms: list[str] | None = None,
               seconds: float = 2.0) -> Experiment:
    """A one-off experiment over ``layers``: short rounds, a loose noise target, auto timed."""
    series = {"label": "bench", "op": "conv2d", "group": "", "fixed": {}, "sweep": {},
              "random": None, "layers": list(layers), "source": "command line"}
    return Experiment("bench", "one-off layers from the command line", Path("bench"), [], None,
                      repeats=5, target_seconds=0.01, max_case_seconds=seconds, noise=0.10,
                      series=[series], algorithms=algorithms,
                      exclude=[] if algorithms else SLOW_PEERS, time_auto=True)


def _mib(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value / 2**20:.3g}"


def table(rows: list[dict]) -> str:
    """Every algorithm's row of one layer, fastest first, those not timed last with why."""
    timed = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["median_s"])
    lines = []
    for r in timed + [r for r in rows if r["status"] != "ok"]:
        ok = r["status"] == "ok"
        prepared = r.get("prepared_median_s")
        lines.append([
            r["algorithm"] + (" (peer)" if r["is_peer"] else ""),
            f"{r['median_s'] * MS:.4g}" if ok else "",
            f"{r['rel_spread']:.0%}" if ok else "",
            f"{r['gflops']:.3g}" if ok else "",
            f"{prepared * MS:.4g}" if ok and prepared is not None and np.isfinite(prepared)
            else "",
            _mib(r.get("workspace_bytes")),
            _mib(r.get("measured_host_bytes", r.get("measured_device_bytes"))),
            "unsettled" if ok and r.get("unsettled") else ("" if ok else f"{r['status']}: "
                                                   f"{r['error'][:60]}")])
    return tabulate(lines, headers=["algorithm", "ms", "spread", "GFLOP/s", "prepared ms",
                                    "declared MiB", "measured MiB", "note"])


def verdict(rows: list[dict]) -> str:
    """auto's pick, its time against the fastest of ours, and torch."""
    ok = {r["algorithm"]: r for r in rows if r["status"] == "ok"}
    ours = {n: r for n, r in ok.items() if not r["is_peer"] and n != AUTO}
    parts = []
    pick = rows[0].get("auto_pick") if rows else None
    if ours:
        best = min(ours, key=lambda n: ours[n]["median_s"])
        parts.append(f"fastest of ours: {best} {ours[best]['median_s'] * MS:.4g} ms")
        if pick in ours:
            regret = ours[pick]["median_s"] / ours[best]["median_s"] - 1
            parts.append(f"auto picks {pick} ({regret:+.0%} over the fastest)")
    if "torch" in ok and ours:
        best = min(ours, key=lambda n: ours[n]["median_s"])
        parts.append(f"torch {ok['torch']['median_s'] * MS:.4g} ms: fastest of ours "
                     f"{ok['torch']['median_s'] / ours[best]['median_s']:.2f}x torch")
        if AUTO in ok:
            parts.append(f"auto per call {ok['torch']['median_s'] / ok[AUTO]['median_s']:.2f}x "
                         "torch")
    return "; ".join(parts) or "nothing was timed"


def bench(texts: list[str], device: str = "cpu", algorithms: list[str] | None = None,
          seconds: float = 2.0, say=print) -> list[list[dict]]:
    """Measure every descriptor's layer and print its table; returns the rows per layer."""
    layers = parse(texts)
    exp = experiment(layers, algorithms, seconds)
    options = SweepOptions([device], algorithms, machine=machine.machine_id())
    out = []
    for case, layer in zip(exp.cases(), layers):
        rows, _ = run_case(case, device, exp, options, set())
        spec = case.spec
        say(f"{format_layer(layer)}\n  {spec.label()}, {spec.flops / 1e9:.3g} GFLOP, "
            f"{device}")
        say(table(rows))
        say(verdict(rows) + "\n")
        out.append(rows)
    return out
