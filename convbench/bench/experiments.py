"""Experiment files (``convbench/experiments/*.toml``): schema, loading and expansion into cases.

An experiment is data: a name, a description, plots to draw, and one or more ``[[series]]``,
each an op with ``fixed`` parameters and ``sweep`` axes whose cartesian product gives the cases
(or a seeded ``random`` set of layers). ``[presets.NAME]`` tables override ``repeats``,
``target_seconds``, ``max_case_seconds``, ``noise`` and any series' ``fixed`` or ``sweep``
values, so one file scales from a smoke test to a full run. Files are validated against the
schema below (types, unknown keys, names as safe slugs) before anything runs.
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..spec import ConvSpec, PoolSpec, conv_spec, pool_spec

PRESETS = ("smoke", "quick", "full")
OPS = ("conv2d", "max_pool2d", "avg_pool2d")
PLOTS = ("time_vs_x", "pareto", "pooling_tradeoff", "layers_bar", "auto_regret", "pipelines",
         "network_totals", "network_map")
LAYER_SERIES_KEYS = ("batch", "dtype")  # what applies to a series of layers from a file
SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Number = Union[StrictInt, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvParams(_Strict):
    batch: StrictInt = Field(1, ge=0)
    channels: StrictInt = Field(0, ge=0)  # sets in_channels and out_channels together
    in_channels: StrictInt = Field(1, ge=1)
    out_channels: StrictInt = Field(1, ge=1)
    image_size: StrictInt = Field(32, ge=1)
    kernel_size: StrictInt = Field(3, ge=1)
    stride: StrictInt = Field(1, ge=1)
    padding: StrictInt = Field(0, ge=0)
    dilation: StrictInt = Field(1, ge=1)
    flip: StrictBool = False
    groups: StrictInt = Field(1, ge=0)  # 0: as many as input channels (depthwise)
    bias: StrictBool = False
    dtype: Literal["float32", "float64"] = "float32"


class PoolParams(_Strict):
    batch: StrictInt = Field(1, ge=0)
    in_channels: StrictInt = Field(1, ge=1)
    image_size: StrictInt = Field(32, ge=1)
    pool_size: StrictInt = Field(2, ge=1)
    pool_stride: StrictInt = Field(0, ge=0)  # 0: the pool size
    padding: StrictInt = Field(0, ge=0)
    dtype: Literal["float32", "float64"] = "float32"


PARAMS = {"conv2d": ConvParams, "max_pool2d": PoolParams, "avg_pool2d": PoolParams}
CONV_PARAMS = tuple(ConvParams.model_fields)
POOL_PARAMS = tuple(PoolParams.model_fields)
ALL_PARAMS = tuple(dict.fromkeys(CONV_PARAMS + POOL_PARAMS))
Scalar = Union[StrictBool, StrictInt, float, str]


class RandomLayers(_Strict):
    count: StrictInt = Field(ge=1)
    seed: StrictInt
    max_flops: Number = Field(2e9, gt=0)


class RandomOverride(_Strict):
    count: Optional[StrictInt] = Field(None, ge=1)
    seed: Optional[StrictInt] = None
    max_flops: Optional[Number] = Field(None, gt=0)


class SeriesFile(_Strict):
    label: Optional[str] = None
    op: Literal["conv2d", "max_pool2d", "avg_pool2d"]
    group: str = ""
    fixed: dict[str, Scalar] = {}
    sweep: dict[str, list[Scalar]] = {}
    random: Optional[RandomLayers] = None
    # a network's layers: a shipped network's name or a layer file (relative to this file)
    layers: Optional[str] = None


class PresetFile(_Strict):
    repeats: Optional[StrictInt] = Field(None, ge=3)
    target_seconds: Optional[Number] = Field(None, gt=0)
    max_case_seconds: Optional[Number] = Field(None, gt=0)
    noise: Optional[Number] = Field(None, gt=0)
    exclude: Optional[list[str]] = None
    fixed: dict[str, Scalar] = {}
    sweep: dict[str, list[Scalar]] = {}
    random: RandomOverride = RandomOverride()
    # series of layers from a file: only the N layers of fewest FLOPs of each (smoke runs)
    layers_per_network: Optional[StrictInt] = Field(None, ge=1)


class ExperimentFile(_Strict):
    name: str = Field(pattern=SLUG)
    description: str
    plots: list[Literal["time_vs_x", "pareto", "pooling_tradeoff", "layers_bar",
                        "auto_regret", "pipelines", "network_totals", "network_map"]] = []
    # parameters that name one sweep point across pipelines (series groups) compared
    pipeline_keys: list[str] = []
    x: Optional[str] = None
    repeats: StrictInt = Field(5, ge=3)
    target_seconds: Number = Field(0.05, gt=0)
    max_case_seconds: Number = Field(10.0, gt=0)
    noise: Number = Field(0.05, gt=0)  # relative spread (IQR / median) a result must settle to
    algorithms: Optional[list[str]] = None  # only these (default: every registered one)
    exclude: list[str] = []  # every registered one but these
    # Dask worker resources each case needs on a cluster, besides bench = 1 (e.g. gpu = 1)
    resources: dict[str, Annotated[Number, Field(gt=0)]] = {}
    # GPU timing with the L2 as the previous call left it, or overwritten before every call
    cache: Literal["warm", "cold"] = "warm"
    # also time algorithm="auto" per call (cb.conv2d) and prepared (cb.Conv2d), as row "auto"
    time_auto: StrictBool = False
    series: list[SeriesFile] = Field(min_length=1)
    presets: dict[Literal["smoke", "quick", "full"], PresetFile] = {}


class ExperimentError(ValueError):
    """A bad experiment file or name; the message names the file and the key."""


@dataclass(frozen=True)
class Case:
    """One problem of one series, with a stable id used by --resume. A layer of a network
    also has its name, how often the network runs it and its place in the network."""

    experiment: str
    series: str
    group: str
    params: dict
    spec: ConvSpec | PoolSpec
    layer: str = ""
    count: int = 1
    index: int = -1

    @property
    def case_id(self) -> str:
        named = f"{self.index}:{self.layer}|" if self.index >= 0 else ""
        return f"{self.series}|{named}{self.spec.label()}|{self.spec.dtype}"


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
    noise: float = 0.05
    series: list[dict] = field(default_factory=list)
    algorithms: list[str] | None = None  # None: every registered algorithm
    preset: str = "quick"
    exclude: list[str] = field(default_factory=list)
    pipeline_keys: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)  # on a cluster, besides bench=1
    cache: str = "warm"  # "cold": the GPU's L2 overwritten before every timed call
    time_auto: bool = False  # auto per call and prepared timed as the row "auto"
    layers_per_network: int | None = None  # layer series: only the N cheapest layers

    def selects(self, name: str) -> bool:
        """Whether the experiment times the algorithm ``name``."""
        return (self.algorithms is None or name in self.algorithms) and name not in self.exclude

    def cases(self) -> list[Case]:
        out = []
        for s in self.series:
            if s.get("layers") is not None:
                out += self._layer_cases(s)
                continue
            if s["random"]:  # a seeded random set of layers (suite.random_layers)
                from .suite import random_layers

                r = s["random"]
                for spec in random_layers(r["count"], r["seed"], r["max_flops"]):
                    params = {"batch": spec.n, "in_channels": spec.c, "out_channels": spec.k,
                              "image_size": spec.h, "kernel_size": spec.kh,
                              "stride": spec.stride[0], "padding": spec.pad[0],
                              "groups": spec.groups, "bias": spec.bias}
                    out.append(Case(self.name, s["label"], s["group"], params, spec))
                continue
            axes = list(s["sweep"].items())
            for combo in itertools.product(*[v for _, v in axes]):
                params = dict(s["fixed"], **dict(zip([k for k, _ in axes], combo)))
                spec = build_spec(s["op"], params, f"{self.path.name} series {s['label']!r}")
                if spec is not None:
                    out.append(Case(self.name, s["label"], s["group"], params, spec))
        return out


    def _layer_cases(self, s: dict) -> list[Case]:
        """A network's layers, at each batch size of the series (the file's own mb when it
        names none), batch by batch in the network's order."""
        layers = list(enumerate(s["layers"]))
        if self.layers_per_network:
            cheapest = sorted(layers, key=lambda il: il[1].spec.flops)[:self.layers_per_network]
            layers = sorted(cheapest, key=lambda il: il[0])
        batches = s["sweep"].get("batch") or ([s["fixed"]["batch"]] if "batch" in s["fixed"]
                                               else [None])
        dtype = s["fixed"].get("dtype")
        out = []
        for batch in batches:
            for index, layer in layers:
                spec = layer.spec if batch is None else layer.at_batch(batch).spec
                if dtype is not None and dtype != spec.dtype:
                    spec = dataclasses.replace(spec, dtype=dtype)
                params = {"batch": spec.n, "in_channels": spec.c, "out_channels": spec.k,
                          "image_size": spec.h, "kernel_size": spec.kh,
                          "stride": spec.stride[0], "padding": spec.pad[0],
                          "dilation": spec.dilation[0], "flip": spec.flip,
                          "groups": spec.groups, "bias": spec.bias, "dtype": spec.dtype}
                out.append(Case(self.name, s["label"], s["group"], params, spec, layer.name,
                                layer.count, index))
        return out

    def with_layers(self, label: str, layers: list, batches: list[int] | None = None
                    ) -> "Experiment":
        """This experiment on one network of the caller's (``--layers``, ``--model``)
        instead of its own series; ``batches`` (None: the first series') sets the batch
        sizes."""
        first = next((s for s in self.series if s.get("layers") is not None), None)
        sweep = {"batch": list(batches)} if batches else (
            dict(first["sweep"]) if first else {})
        series = {"label": label, "op": "conv2d", "group": "", "fixed": {}, "sweep": sweep,
                  "random": None, "layers": list(layers), "source": label}
        return dataclasses.replace(self, series=[series], layers_per_network=None)

    def with_batches(self, batches: list[int]) -> "Experiment":
        """This experiment with every series of layers at these batch sizes (``--batch``)."""
        series = [dict(s, sweep={**s["sweep"], "batch": list(batches)})
                  if s.get("layers") is not None else s for s in self.series]
        return dataclasses.replace(self, series=series)

    @property
    def has_layers(self) -> bool:
        """Whether a series takes its layers from a layer file (a network)."""
        return any(s.get("layers") is not None for s in self.series)


def build_spec(op: str, params: dict, where: str) -> ConvSpec | PoolSpec | None:
    """The validated spec of one case; None when the combination is impossible (for example a
    kernel larger than the image), which a sweep simply leaves out."""
    p = params
    try:
        if op == "conv2d":
            ks = p["kernel_size"]
            c_in = p["channels"] or p["in_channels"]  # "channels" sets both, for C = K sweeps
            c_out = p["channels"] or p["out_channels"]
            groups = p["groups"] or c_in  # 0: depthwise
            return conv_spec((p["batch"], c_in, p["image_size"], p["image_size"]),
                             (c_out, c_in // groups, ks, ks),
                             stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                             flip=p["flip"], dtype=p["dtype"], groups=groups, bias=p["bias"])
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


def experiments_dir() -> Path:
    """The experiments shipped inside the package (installed as package data)."""
    return Path(str(resources.files("convbench.experiments")))


def available() -> dict[str, Path]:
    """Shipped experiments by name."""
    return {p.stem: p for p in sorted(experiments_dir().glob("*.toml"))}


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _schema_error(path: Path, exc: ValidationError) -> ExperimentError:
    first = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    value = f", got {first['input']!r}" if "input" in first and first["type"] not in (
        "missing", "extra_forbidden") else ""
    return ExperimentError(f"{path}: key {_where(first['loc'])!r}: {first['msg']}{value}{more}")


def load(name_or_path: str, preset: str = "quick") -> Experiment:
    """Load an experiment by shipped name or file path, with ``preset`` applied."""
    if preset not in PRESETS:
        raise ExperimentError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    path = Path(name_or_path)
    if path.suffix != ".toml":
        shipped = available()
        if name_or_path not in shipped:
            raise ExperimentError(
                f"unknown experiment {name_or_path!r}; shipped: {', '.join(shipped) or 'none'}")
        path = shipped[name_or_path]
    if not path.is_file():
        raise ExperimentError(f"experiment file {path} does not exist or is not a file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read: {exc}") from None
    try:
        parsed = ExperimentFile.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None
    return _build(path, parsed, preset)


def _params(path: Path, where: str, op: str, values: dict) -> dict:
    """Validate one series' (or preset's) parameters against its op's schema."""
    try:
        return PARAMS[op].model_validate(values).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ExperimentError(f"{path}: key '{where}.{_where(first['loc'])}': {first['msg']}; "
                              f"parameters of {op}: {', '.join(PARAMS[op].model_fields)}"
                              ) from None


def _layer_series(path: Path, where: str, raw: SeriesFile, override: PresetFile,
                  index: int) -> dict:
    """A series of a network's layers: the file read now (an error names it and the line),
    only batch and dtype taken from the series and the preset."""
    from .. import networks

    if raw.op != "conv2d" or raw.random is not None:
        raise ExperimentError(f"{path}: key '{where}.layers': only for op = 'conv2d', "
                              "without random")
    for table, given in (("fixed", raw.fixed), ("sweep", raw.sweep)):
        extra = [k for k in given if k not in LAYER_SERIES_KEYS]
        if extra:
            raise ExperimentError(
                f"{path}: key '{where}.{table}.{extra[0]}': a series of layers takes its "
                f"problems from the file; only {' and '.join(LAYER_SERIES_KEYS)} apply")
    fixed = {**raw.fixed, **{k: v for k, v in override.fixed.items() if k in LAYER_SERIES_KEYS}}
    sweep = dict(raw.sweep)
    sweep.update({k: v for k, v in override.sweep.items() if k in sweep})
    for key, values in sweep.items():
        if not values:
            raise ExperimentError(f"{path}: key '{where}.sweep.{key}': must be a non-empty list")
        for value in values:
            _params(path, f"{where}.sweep", "conv2d", {**fixed, key: value})
    _params(path, f"{where}.fixed", "conv2d", fixed)
    try:
        layers = networks.load(raw.layers, relative_to=path.parent)
    except ValueError as exc:
        raise ExperimentError(f"{path}: key '{where}.layers': {exc}") from None
    return {"label": raw.label or networks.title(raw.layers), "op": "conv2d",
            "group": raw.group, "fixed": fixed, "sweep": sweep, "random": None,
            "layers": layers, "source": raw.layers}


def _build(path: Path, data: ExperimentFile, preset: str) -> Experiment:
    override = data.presets.get(preset, PresetFile())
    for table in ("fixed", "sweep"):
        for key in getattr(override, table):
            if key not in ALL_PARAMS:
                raise ExperimentError(f"{path}: key 'presets.{preset}.{table}.{key}': unknown "
                                      f"parameter; known: {', '.join(ALL_PARAMS)}")
    series = []
    for i, raw in enumerate(data.series):
        where = f"series.{i}"
        if raw.layers is not None:
            series.append(_layer_series(path, where, raw, override, i))
            continue
        names = PARAMS[raw.op].model_fields
        for key, values in raw.sweep.items():
            if not values:
                raise ExperimentError(f"{path}: key '{where}.sweep.{key}': must be a "
                                      "non-empty list")
        fixed = dict(raw.fixed)
        fixed.update({k: v for k, v in override.fixed.items() if k in names})
        sweep = dict(raw.sweep)
        sweep.update({k: v for k, v in override.sweep.items() if k in sweep})
        for key, values in sweep.items():  # every swept value must be valid for the op
            for value in values:
                _params(path, f"{where}.sweep", raw.op, {**fixed, key: value})
        fixed = _params(path, f"{where}.fixed", raw.op, fixed)
        random = None
        if raw.random is not None:
            if raw.op != "conv2d":
                raise ExperimentError(f"{path}: key '{where}.random': only for op = 'conv2d'")
            random = raw.random.model_dump()
            random.update({k: v for k, v in override.random.model_dump().items()
                           if v is not None})
        series.append({"label": raw.label or f"series {i}", "op": raw.op, "group": raw.group,
                       "fixed": fixed, "sweep": sweep, "random": random})
    pick = lambda key: getattr(override, key) if getattr(override, key) is not None else (  # noqa: E731
        getattr(data, key))
    experiment = Experiment(data.name, data.description, path, list(data.plots), data.x,
                            pick("repeats"), float(pick("target_seconds")),
                            float(pick("max_case_seconds")), float(pick("noise")), series,
                            data.algorithms, preset, list(pick("exclude")),
                            list(data.pipeline_keys),
                            {k: float(v) for k, v in data.resources.items()}, data.cache,
                            data.time_auto, override.layers_per_network)
    for key in experiment.pipeline_keys:
        if key not in ALL_PARAMS:
            raise ExperimentError(f"{path}: key 'pipeline_keys': {key!r} is not a parameter")
    if experiment.x is not None and experiment.x not in ALL_PARAMS:
        raise ExperimentError(f"{path}: key 'x': must be a parameter name ({', '.join(ALL_PARAMS)})"
                              f", got {experiment.x!r}")
    experiment.cases()  # validate every case now: a bad value names the file and series
    return experiment
