"""Experiment files (``experiments/*.toml``): loading, validation and expansion into cases.

An experiment is data: a name, a description, plots to draw, and one or more ``[[series]]``,
each an op with ``fixed`` parameters and ``sweep`` axes whose cartesian product gives the cases.
``[presets.NAME]`` tables override ``repeats``, ``target_seconds`` and any series' ``fixed`` or
``sweep`` values, so one file scales from a smoke test to a full run.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..spec import ConvSpec, PoolSpec, conv_spec, pool_spec

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
PRESETS = ("smoke", "quick", "full")
OPS = ("conv2d", "max_pool2d", "avg_pool2d")
CONV_PARAMS = {"batch": 1, "channels": 0, "in_channels": 1, "out_channels": 1, "image_size": 32,
               "kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1, "flip": False,
               "dtype": "float32"}
POOL_PARAMS = {"batch": 1, "in_channels": 1, "image_size": 32, "pool_size": 2,
               "pool_stride": 0, "padding": 0, "dtype": "float32"}  # pool_stride 0: = pool_size
PLOTS = ("time_vs_x", "pareto", "pooling_tradeoff", "layers_bar", "auto_regret")
TOP_KEYS = {"name", "description", "plots", "x", "repeats", "target_seconds", "max_case_seconds",
            "series", "presets", "algorithms"}
SERIES_KEYS = {"label", "op", "group", "fixed", "sweep", "random"}


class ExperimentError(ValueError):
    """A bad experiment file or name; the message names the file and the key."""


@dataclass(frozen=True)
class Case:
    """One problem of one series, with a stable id used by --resume."""

    experiment: str
    series: str
    group: str
    params: dict
    spec: ConvSpec | PoolSpec

    @property
    def case_id(self) -> str:
        return f"{self.series}|{self.spec.label()}|{self.spec.dtype}"


@dataclass
class Experiment:
    name: str
    description: str
    path: Path
    plots: list[str]
    x: str | None
    repeats: int
    target_seconds: float
    max_case_seconds: float = 10.0
    series: list[dict] = field(default_factory=list)
    algorithms: list[str] | None = None  # None: every registered algorithm

    def cases(self) -> list[Case]:
        out = []
        for s in self.series:
            if s.get("random"):  # a seeded random set of layers (suite.random_layers)
                from .suite import random_layers

                r = s["random"]
                for spec in random_layers(r["count"], r["seed"], r.get("max_flops", 2e9)):
                    params = {"batch": spec.n, "in_channels": spec.c, "out_channels": spec.k,
                              "image_size": spec.h, "kernel_size": spec.kh,
                              "stride": spec.stride[0], "padding": spec.pad[0]}
                    out.append(Case(self.name, s["label"], s.get("group", ""), params, spec))
                continue
            axes = list(s["sweep"].items())
            values = itertools.product(*[v for _, v in axes]) if axes else [()]
            for combo in values:
                params = dict(s["fixed"], **dict(zip([k for k, _ in axes], combo)))
                spec = build_spec(s["op"], params, f"{self.path.name} series {s['label']!r}")
                if spec is not None:
                    out.append(Case(self.name, s["label"], s.get("group", ""), params, spec))
        return out


def build_spec(op: str, params: dict, where: str) -> ConvSpec | PoolSpec | None:
    """The validated spec of one case; None when the combination is impossible (for example a
    kernel larger than the image), which a sweep simply leaves out."""
    p = params
    try:
        if op == "conv2d":
            ks = p["kernel_size"]
            c_in = p["channels"] or p["in_channels"]  # "channels" sets both, for C = K sweeps
            c_out = p["channels"] or p["out_channels"]
            return conv_spec((p["batch"], c_in, p["image_size"], p["image_size"]),
                             (c_out, c_in, ks, ks), stride=p["stride"],
                             padding=p["padding"], dilation=p["dilation"], flip=p["flip"],
                             dtype=p["dtype"])
        size = p["pool_size"]
        return pool_spec(op.split("_")[0], (p["batch"], p["in_channels"], p["image_size"],
                                            p["image_size"]), size,
                         stride=p["pool_stride"] or size, padding=p["padding"], dtype=p["dtype"])
    except ValueError as exc:
        if "smaller than 1x1" in str(exc):
            return None
        raise ExperimentError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ExperimentError(f"{where}: {exc}") from None


def available() -> dict[str, Path]:
    """Shipped experiments by name."""
    return {p.stem: p for p in sorted(EXPERIMENTS_DIR.glob("*.toml"))}


def _fail(path: Path, key: str, message: str):
    raise ExperimentError(f"{path}: key {key!r}: {message}")


def load(name_or_path: str, preset: str = "quick") -> Experiment:
    """Load an experiment by shipped name or file path, with ``preset`` applied."""
    if preset not in PRESETS:
        raise ExperimentError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    path = Path(name_or_path)
    if path.suffix != ".toml":
        shipped = available()
        if name_or_path not in shipped:
            raise ExperimentError(
                f"unknown experiment {name_or_path!r}; shipped: {', '.join(shipped)}")
        path = shipped[name_or_path]
    if not path.exists():
        raise ExperimentError(f"experiment file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path}: not valid TOML: {exc}") from None
    return _parse(path, data, preset)


def _parse(path: Path, data: dict, preset: str) -> Experiment:
    unknown = set(data) - TOP_KEYS
    if unknown:
        _fail(path, sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key in ("name", "description", "series"):
        if key not in data:
            _fail(path, key, "missing")
    override = data.get("presets", {}).get(preset, {})
    plots = data.get("plots", [])
    for plot in plots:
        if plot not in PLOTS:
            _fail(path, "plots", f"unknown plot {plot!r}; allowed: {', '.join(PLOTS)}")
    repeats = override.get("repeats", data.get("repeats", 5))
    if not isinstance(repeats, int) or repeats < 5:
        _fail(path, "repeats", f"must be an integer >= 5, got {repeats!r}")
    target = override.get("target_seconds", data.get("target_seconds", 0.05))
    if not isinstance(target, (int, float)) or target <= 0:
        _fail(path, "target_seconds", f"must be a positive number, got {target!r}")
    max_case = override.get("max_case_seconds", data.get("max_case_seconds", 10.0))
    if not isinstance(max_case, (int, float)) or max_case <= 0:
        _fail(path, "max_case_seconds", f"must be a positive number, got {max_case!r}")
    series = []
    if not isinstance(data["series"], list) or not data["series"]:
        _fail(path, "series", "must be a non-empty array of tables ([[series]])")
    for i, raw in enumerate(data["series"]):
        where = f"series[{i}]"
        unknown = set(raw) - SERIES_KEYS
        if unknown:
            _fail(path, f"{where}.{sorted(unknown)[0]}",
                  f"unknown key; allowed: {', '.join(sorted(SERIES_KEYS))}")
        op = raw.get("op")
        if op not in OPS:
            _fail(path, f"{where}.op", f"must be one of {', '.join(OPS)}, got {op!r}")
        defaults = CONV_PARAMS if op == "conv2d" else POOL_PARAMS
        fixed = dict(defaults)
        for table in ("fixed", "sweep"):
            for key, value in raw.get(table, {}).items():
                if key not in defaults:
                    _fail(path, f"{where}.{table}.{key}",
                          f"unknown parameter for {op}; allowed: {', '.join(defaults)}")
                if table == "sweep" and (not isinstance(value, list) or not value):
                    _fail(path, f"{where}.sweep.{key}", "must be a non-empty list")
        fixed.update(raw.get("fixed", {}))
        fixed.update({k: v for k, v in override.get("fixed", {}).items() if k in defaults})
        sweep = dict(raw.get("sweep", {}))
        sweep.update({k: v for k, v in override.get("sweep", {}).items() if k in sweep})
        label = raw.get("label", f"series {i}")
        random = raw.get("random")
        if random is not None:
            random = dict(random, **override.get("random", {}))
            if op != "conv2d" or not isinstance(random.get("count"), int) or not isinstance(
                    random.get("seed"), int):
                _fail(path, f"{where}.random", "needs op = 'conv2d' and integer count and seed")
        series.append({"label": label, "op": op, "group": raw.get("group", ""),
                       "fixed": fixed, "sweep": sweep, "random": random})
    algorithms = data.get("algorithms")
    if algorithms is not None and (not isinstance(algorithms, list) or not all(
            isinstance(a, str) for a in algorithms)):
        _fail(path, "algorithms", "must be a list of algorithm names")
    experiment = Experiment(data["name"], data["description"], path, plots, data.get("x"),
                            repeats, float(target), float(max_case), series, algorithms)
    experiment.cases()  # validate every case now: a bad value names the file and series
    return experiment
