"""Command line: ``python -m convbench run|bench|list|report|compare|check|calibrate|explain|
baseline|gate|cache``.

Exit codes: 0 success, 1 a regression (``gate``) or a comparison over ``--fail-above``, 2 a
user error (bad arguments, experiment files, run directories; always one line starting
``convbench: error:``, before any work starts), 130 interrupted (finished cases are kept;
``--resume`` continues).
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

from . import registry
from ._version import __version__
from .devices import available_devices

DEFAULT_OUT = Path("results")


class UserError(ValueError):
    """A mistake in what the user asked for; reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise UserError(message)


def _finite(what: str, minimum: float, inclusive: bool):
    """An argparse type: a finite number above ``minimum`` (or at it, when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_seconds = _finite("a number of seconds > 0", 0.0, False)
_fraction = _finite("a number >= 0 (0.25 allows +25%)", 0.0, True)
_ratio = _finite("a ratio > 0", 0.0, False)


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convbench",
                     description="Which convolution/pooling algorithm is fastest here?")
    parser.add_argument("--version", action="version", version=f"convbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run experiments (default: quick preset of all)")
    run.add_argument("experiments", nargs="*", help="shipped names or TOML paths (default: all)")
    run.add_argument("--preset", default=None, choices=["smoke", "quick", "full"],
                     help="(default quick)")
    run.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    run.add_argument("--algorithms", nargs="+", metavar="NAME",
                     help="only these algorithms (peers included by name)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--max-case-seconds", type=_positive_seconds, default=None,
                     help="skip an algorithm whose timing would take longer on one case "
                          "(compilation not counted; default: the preset's)")
    run.add_argument("--repeats", type=_at_least(3), default=None,
                     help="timed rounds at least (default: the preset's)")
    run.add_argument("--min-time", type=_positive_seconds, default=None,
                     help="seconds each timed repeat lasts at least (default: the preset's)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    own = run.add_mutually_exclusive_group()
    own.add_argument("--layers", metavar="FILE",
                     help="networks: run this layer file (or shipped network) instead")
    own.add_argument("--model", metavar="NAME",
                     help="networks: run the convolutions of this torchvision model "
                          "(needs torchvision)")
    run.add_argument("--input-size", type=_at_least(1), default=224, metavar="S",
                     help="with --model: the input is S x S (default 224)")
    run.add_argument("--batch", type=_at_least(1), nargs="+", metavar="N",
                     help="networks: these batch sizes (default: the preset's)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the cases on this Dask cluster (e.g. tcp://host:8786)")
    where.add_argument("--local-workers", type=_at_least(1), metavar="N",
                       help="run the cases on a local Dask cluster of N worker processes")
    run.add_argument("--resources", nargs="+", metavar="NAME=AMOUNT",
                     help="worker resources every case needs on the cluster, besides bench=1 "
                          "(e.g. gpu=1)")
    one = sub.add_parser("bench", help="time every algorithm on layers given as benchdnn "
                                       "descriptors, in seconds")
    one.add_argument("descriptors", nargs="+", metavar="DESCRIPTOR",
                     help='e.g. mb1ic64ih56oc64oh56kh3ph1 (quote it: n"name" holds quotes)')
    one.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    one.add_argument("--algorithms", nargs="+", metavar="NAME",
                     help="only these (peers by name; default: ours, auto and torch)")
    one.add_argument("--max-seconds", type=_positive_seconds, default=2.0,
                     help="skip an algorithm whose timing would take longer (default 2)")
    sub.add_parser("list", help="algorithms by device, experiments, devices found")
    rep = sub.add_parser("report", help="rebuild plots and report.md of a run")
    rep.add_argument("run_dir", type=Path)
    cmp_ = sub.add_parser("compare", help="compare two runs (or two machines of one run)")
    cmp_.add_argument("run_a", type=Path)
    cmp_.add_argument("run_b", type=Path, nargs="?")
    cmp_.add_argument("--machines", nargs=2, metavar=("A", "B"),
                      help="compare two machines of one run (parts of their ids)")
    cmp_.add_argument("--threshold", type=_ratio, default=1.25,
                      help="mark confirmed ratios B/A above this as regressions (default 1.25)")
    cmp_.add_argument("--fail-above", type=_ratio, metavar="RATIO",
                      help="exit 1 if a ratio B/A confirmed slower exceeds RATIO, or if "
                           "nothing could be compared")
    chk = sub.add_parser("check", help="verify every algorithm; on a GPU, time CUDA vs cuDNN/cuFFT")
    chk.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    chk.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the timing CSV")
    chk.add_argument("--cache", default="warm", choices=["warm", "cold", "both"],
                     help="GPU timing with the L2 warm, overwritten (2x its size) before every "
                          "call, or both (default warm)")
    cal = sub.add_parser("calibrate", help="fit the cost model that algorithm='auto' uses")
    cal.add_argument("--layers", type=_at_least(8), default=120,
                     help="random layers to time (default 120, at least 8)")
    cal.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    cal.add_argument("--out", type=Path, default=None, help="file (default: the user cache)")
    cal.add_argument("--ship", metavar="NOTE",
                     help="also make it the shipped default for these devices (maintainers; "
                          "NOTE says which machine)")
    exp = sub.add_parser("explain", help="predicted time and workspace of every candidate")
    exp.add_argument("--x", required=True, help="input shape N,C,H,W")
    exp.add_argument("--w", help="kernel shape K,C/groups,kh,kw (convolution)")
    exp.add_argument("--groups", type=_at_least(1), default=1, help="channel groups (default 1)")
    exp.add_argument("--bias", action="store_true", help="a bias is added")
    exp.add_argument("--pool", choices=["max", "avg"], help="pooling instead of convolution")
    exp.add_argument("--size", help="pool size (int or h,w)")
    exp.add_argument("--stride", default=None, help="int or h,w (default 1; pooling: the size)")
    exp.add_argument("--padding", default="0",
                     help="int, h,w, top,bottom,left,right, valid or same")
    exp.add_argument("--dilation", default="1")
    exp.add_argument("--flip", action="store_true")
    exp.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    exp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    exp.add_argument("--measure", action="store_true", help="time the top candidates (cached)")
    base = sub.add_parser("baseline", help="measure and write this machine's gate baseline")
    base.add_argument("--subset", default="all", choices=["all", "ci"])
    base.add_argument("--out", type=Path, default=None,
                      help="baseline file (default: this machine's in tests/benchmarks/baselines)")
    base.add_argument("--repeats", type=_at_least(3), default=9)
    gate = sub.add_parser("gate", help="fail (exit 1) when an algorithm regressed vs this "
                                       "machine's baseline")
    gate.add_argument("--subset", default="all", choices=["all", "ci"])
    gate.add_argument("--baseline", type=Path, default=None)
    gate.add_argument("--threshold", type=_fraction, default=None,
                      help="allowed slowdown, e.g. 0.25 for +25%% (default: the baseline's)")
    gate.add_argument("--repeats", type=_at_least(3), default=9)
    gate.add_argument("--against", nargs="?", const="", metavar="REF",
                      help="time this working tree against the commit, branch or tag REF side "
                           "by side (default REF: the merge base with main, or HEAD~1 on main)")
    gate.add_argument("--layers", metavar="FILE",
                      help="with --against: these layers (a layer file or shipped network) "
                           "instead of the suite")
    gate.add_argument("--algorithms", nargs="+", metavar="NAME",
                      help="with --against: only these algorithms of ours")
    cache = sub.add_parser("cache", help="show or clear the tuning cache of measure=True")
    cache.add_argument("action", choices=["show", "clear"])
    warmup = sub.add_parser("warmup", help="compile every CPU kernel of ours now, in parallel "
                                           "processes, into Numba's on-disk cache")
    warmup.add_argument("--jobs", type=_at_least(1), default=None,
                        help="worker processes (default: one per core)")
    return parser


def _ints(text: str | None, name: str):
    """'8,64,56,56' -> (8, 64, 56, 56); '3' -> 3; 'same' stays a string (padding)."""
    if text is None:
        return None
    if text in ("same", "valid"):
        return text
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--{name} must be integers separated by commas, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def main(argv: list[str] | None = None) -> int:
    from . import settings
    from .process import configure_for_benchmarks

    try:
        settings.check_all()  # a bad CONVBENCH_* value is one line, before any work
        configure_for_benchmarks()
        args = _parser().parse_args(argv)
        return _dispatch(args, argv)
    except KeyboardInterrupt:
        print("\nconvbench: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        # bad arguments, experiment files, settings, run directories, files that cannot be
        # read or written: one line, no traceback
        text = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"convbench: error: {text}", file=sys.stderr)
        return 2


def _dispatch(args, argv) -> int:
    commands = {"list": cmd_list, "report": cmd_report, "compare": cmd_compare,
                "check": cmd_check, "calibrate": cmd_calibrate, "explain": cmd_explain,
                "baseline": cmd_baseline, "gate": cmd_gate, "cache": cmd_cache,
                "bench": cmd_bench, "warmup": cmd_warmup}
    if args.command == "run":
        return cmd_run(args, argv)
    return commands[args.command](args)


def cmd_bench(args) -> int:
    from .bench.oneoff import bench, parse
    from .bench.rundir import AUTO

    parse(args.descriptors)  # every descriptor checked before anything runs
    if args.algorithms:
        known = {a.name for a in registry.algorithms("conv2d", args.device)} | {AUTO}
        unknown = [n for n in args.algorithms if n not in known]
        if unknown:
            raise UserError(f"--algorithms: unknown {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(known))}")
    _devices(args.device)
    bench(args.descriptors, args.device, args.algorithms, args.max_seconds)
    return 0


def cmd_report(args) -> int:
    from .bench.report import build_report

    print(build_report(args.run_dir))
    return 0


def cmd_check(args) -> int:
    from .bench.check import run_check

    return run_check(_devices(args.device), args.out, cache=args.cache)


def cmd_calibrate(args) -> int:
    from . import costmodel
    from .bench import costfit
    from .bench.calibrate import calibrate

    devices = tuple(_devices(args.device))
    doc = calibrate(args.layers, devices, args.out)
    print(f"calibrated {len(doc['constants'])} algorithms in {doc['seconds']} s; saved to "
          f"{args.out or costmodel.calibration_path()}")
    if args.ship:
        shipped = costfit.ship(doc, devices, args.ship)
        print(f"shipped as the default for {', '.join(devices)}: {shipped}")
    return 0


def cmd_explain(args) -> int:
    from .auto import explain

    if (args.w is None) == (args.pool is None):
        raise UserError("give either --w (convolution) or --pool with --size (pooling)")
    if args.pool is not None and args.size is None:
        raise UserError("--pool needs --size (the window, an int or h,w)")
    choice = explain(_ints(args.x, "x"), _ints(args.w, "w"), stride=_ints(args.stride, "stride"),
                     padding=_ints(args.padding, "padding"),
                     dilation=_ints(args.dilation, "dilation"), flip=args.flip, dtype=args.dtype,
                     device=args.device, pool=args.pool, size=_ints(args.size, "size"),
                     measure=args.measure, groups=args.groups, bias=args.bias)
    print(choice)
    return 0


def cmd_baseline(args) -> int:
    from .bench import environment, gate
    from .bench.suite import layers

    previous = gate.load_baseline(args.out)
    samples = gate.measure(layers(args.subset), repeats=args.repeats)
    ratios = {k: v["ratios"] for k, v in samples.items()}
    if previous and args.subset != "all":  # refresh a subset, keep the other entries
        ratios = {**previous["samples"], **ratios}
    path = gate.save_baseline(ratios, environment.collect(measure_gemm=False), args.out,
                              previous)
    print(f"wrote {len(ratios)} per-round ratio sets to {path}")
    return 0


def cmd_gate_against(args) -> int:
    from . import networks
    from .bench import against
    from .bench.suite import layers

    if args.baseline is not None:
        raise UserError("--against times both versions here; leave --baseline out")
    threshold = against.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    root = against.repository()
    ref = args.against or against.default_ref(root)
    commit = against.resolve(root, ref)
    if args.layers:
        chosen = [(layer.name or layer.spec.label(), layer.spec)
                  for layer in networks.load(args.layers)]
    else:
        chosen = [(layer.name, layer.spec) for layer in layers(args.subset)]
    if args.algorithms:
        known = {a.name for a in registry.algorithms(device="cpu", peers=False)}
        unknown = [n for n in args.algorithms if n not in known]
        if unknown:
            raise UserError(f"--algorithms: unknown {', '.join(unknown)}; ours: "
                            f"{', '.join(sorted(known))}")
    print(f"gate: this working tree ({root}) against {ref} ({commit[:10]}), "
          f"{len(chosen)} layers, {args.repeats} interleaved rounds")
    with against.worktree(root, commit) as old_root:
        verdicts = against.compare(old_root, root, chosen, args.algorithms, args.repeats,
                                   threshold)
    print(against.format_verdicts(verdicts, threshold))
    failed = [v for v in verdicts if v.verdict in ("regression", "mismatch")]
    unsettled = [v for v in verdicts if v.verdict == "unsettled"]
    if unsettled:
        print(f"{len(unsettled)} of {len(verdicts)} pairs never settled (not judged): the "
              "machine was busy; rerun on a quiet one")
    for v in failed:
        what = (f"{v.ratio:.2f}x the old time (95% CI {v.low:.2f}-{v.high:.2f}, allowed "
                f"+{threshold * 100:.0f}%)" if v.verdict == "regression" else v.note)
        print(f"{v.verdict.upper()}: {v.key.replace('|', ' ')}: {what}", file=sys.stderr)
    return 1 if failed else 0


def cmd_gate(args) -> int:
    from . import machine
    from .bench import gate
    from .bench.suite import layers

    if args.against is not None:
        return cmd_gate_against(args)
    if args.layers or args.algorithms:
        raise UserError("--layers and --algorithms go with --against")

    baseline = gate.load_baseline(args.baseline)
    if baseline is None:
        raise UserError(f"no stored baseline for this machine ({gate.baseline_path()}); compare "
                        "with a commit instead: python -m convbench gate --against [REF] (or "
                        "write one here: python -m convbench baseline)")
    standing = gate.standing(baseline)
    if standing == "foreign":
        raise UserError(f"the baseline was recorded on {baseline.get('machine', '?')}, this is "
                        f"{machine.machine_id()}: not comparable; use python -m convbench gate "
                        "--against [REF]")
    results = gate.check(gate.measure(layers(args.subset), repeats=args.repeats), baseline,
                         args.threshold)
    print(gate.format_results(results))
    failed = [r for r in results if r.verdict == "regression"]
    if standing == "advisory":
        print(f"advisory: the baseline was recorded on another host of this kind, which can "
              f"differ by 1.5x; {len(failed)} apparent regression(s) not counted; for a verdict "
              "run python -m convbench gate --against [REF]")
        return 0
    for r in failed:
        print(f"REGRESSION: {r.algorithm} on {r.layer}: {r.ratio:.2f}x the baseline "
              f"(95% CI {r.low:.2f}-{r.high:.2f}, allowed +{r.allowed * 100:.0f}%)",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_cache(args) -> int:
    from . import tuning

    if args.action == "clear":
        print(f"removed {tuning.clear()} cached choices from {tuning.path()}")
        return 0
    entries = tuning.entries()
    print(f"{tuning.path()}: {len(entries)} cached choices for this machine")
    for key, entry in sorted(entries.items()):
        times = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in entry["times"].items())
        print(f"  {key}: {entry['algorithm']} ({times})")
    return 0


def cmd_warmup(args) -> int:
    from .warmup import warm

    warm(args.jobs)
    return 0


def cmd_list(args=None) -> int:
    from importlib.util import find_spec

    from .bench import terminal
    from .bench.experiments import available, load

    found = available_devices()
    print("devices found:", ", ".join(found))
    if find_spec("torch") is None:
        print("torch is not installed: the torch peers are missing (pip install -e \".[peers]\")")
    for device in registry.DEVICES:
        algos = registry.algorithms(device=device)
        if not algos:
            continue
        state = "available" if device in found else "not available here"
        print(f"\n{device} ({state}):")
        for a in algos:
            kind = "peer" if a.is_peer else "ours"
            print(f"  {a.op:11s} {a.name:14s} {kind:4s}  {a.description}")
    print("\nexperiments:")
    for name in available():
        exp = load(name)
        lead = f"  {name:14s} {len(exp.cases()):3d} cases (quick)  "
        print(lead + terminal.shorten(exp.description, max(30, terminal.width() - len(lead))))
    return 0


def cmd_compare(args) -> int:
    from .bench.compare import compare_runs, format_comparison

    if args.machines and args.run_b:
        raise UserError("give two runs, or one run with --machines A B, not both")
    if not args.machines and not args.run_b:
        raise UserError("give two runs to compare (or one run with --machines A B)")
    cmp = compare_runs(args.run_a, args.run_b, tuple(args.machines) if args.machines else None)
    if args.fail_above is not None and any("different experiments" in w for w in cmp.warnings):
        raise UserError(f"{args.run_a} and {args.run_b} are runs of different experiments; "
                        "--fail-above compares runs of the same experiment")
    print(format_comparison(cmp, args.threshold))
    if args.fail_above is not None:
        if cmp.table.empty:
            print("\nFAIL: nothing could be compared", file=sys.stderr)
            return 1
        worse = cmp.table[(cmp.table["ratio"] > args.fail_above)
                          & (cmp.table["verdict"] == "slower")]
        if len(worse):
            worst = worse.iloc[0]
            print(f"\nFAIL: {worst['algorithm']} on {worst['label']} is {worst['ratio']:.2f}x "
                  f"slower (above {args.fail_above})", file=sys.stderr)
            return 1
    return 0


def _devices(choice: str) -> list[str]:
    found = available_devices()
    if choice == "all":
        return found
    if choice not in found:
        raise UserError(f"--device {choice}: not available here (found: {', '.join(found)}); "
                        "set NUMBA_ENABLE_CUDASIM=1 to use the CUDA simulator")
    return [choice]


def _resume_plan(args):
    """(preset, devices, algorithms, max seconds, [(experiment file, run dir)]) of --resume,
    refusing arguments that contradict the run being resumed."""
    from .bench.rundir import RunDirectory

    run = RunDirectory.open(args.resume)
    info = run.info()
    if args.experiments and [Path(e).stem for e in args.experiments] != [info.get("experiment")]:
        raise UserError(f"--resume {args.resume} is a run of {info.get('experiment')!r}; "
                        "leave the experiment out (or start a new run)")
    if args.preset and args.preset != info.get("preset"):
        raise UserError(f"--resume {args.resume} was run with --preset {info.get('preset')}; "
                        "resume it with the same preset (or start a new run)")
    for key in ("experiment_file", "preset", "devices"):
        if key not in info:
            raise UserError(f"--resume {args.resume}: run.json has no {key!r}")
    if args.layers or args.model or args.batch:
        raise UserError("--resume continues a run as it was started: leave --layers, --model "
                        "and --batch out")
    return (info["preset"], info["devices"], info.get("algorithms"),
            info.get("max_case_seconds"), info.get("repeats"), info.get("min_time"),
            [(info["experiment_file"], run.path)])


def _own_network(args):
    """(label, layers) of --layers or --model, else None; a bad file or model is a user error."""
    from . import networks

    if args.layers:
        layers = networks.load(args.layers)
        return networks.title(Path(args.layers).stem), layers
    if args.model:
        layers = networks.from_torchvision(args.model, args.input_size)
        return f"{networks.title(args.model)} {args.input_size}x{args.input_size}", layers
    if args.input_size != 224:
        raise UserError("--input-size: only with --model")
    return None


def _with_network(experiments, own, batches, resumed_info=None):
    """The experiments with the caller's network and batch sizes applied (or, resuming, the
    ones the run recorded)."""
    from .layerfile import read_layers

    if resumed_info is not None:
        if resumed_info.get("layers_file"):
            own = (resumed_info["network_label"], read_layers(resumed_info["layers_file"]))
        batches = resumed_info.get("batches")
    if own is None and not batches:
        return experiments
    out = []
    for exp, run_dir in experiments:
        if not exp.has_layers:
            raise UserError(f"--layers, --model and --batch apply to experiments of networks "
                            f"(networks); {exp.name} has none")
        exp = exp.with_layers(own[0], own[1], batches) if own else exp.with_batches(batches)
        out.append((exp, run_dir))
    return out


def cmd_run(args, argv) -> int:
    from .bench import environment, progress
    from .bench.experiments import available, load
    from .bench.measure import SweepOptions
    from .bench.rundir import AUTO, RunDirectory
    from .bench import noise
    from . import auto, machine

    command = "python -m convbench " + shlex.join(argv if argv is not None else sys.argv[1:])
    own = None
    if args.resume:
        preset, devices, names, max_s, repeats, min_time, plan = _resume_plan(args)
    else:
        preset, devices = args.preset or "quick", _devices(args.device)
        names, max_s, repeats, min_time = (args.algorithms, args.max_case_seconds, args.repeats,
                                           args.min_time)
        own = _own_network(args)
        default = ["networks"] if own or args.batch else list(available())
        plan = [(e, None) for e in (args.experiments or default)]
        if not plan:
            raise UserError("no experiments to run: none are shipped with this installation "
                            "and none were named")
        RunDirectory.check_out(args.out)  # before any work
    if names:
        known = {a.name for a in registry.algorithms()} | {AUTO}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"--algorithms: unknown {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    experiments = [(load(e, preset), d) for e, d in plan]  # validate all before running any
    resumed = RunDirectory.open(args.resume).info() if args.resume else None
    experiments = _with_network(experiments, None if args.resume else own,
                                None if args.resume else args.batch, resumed)
    custom = {} if args.resume or own is None else {"network_label": own[0],
                                                    "layers": own[1]}
    if names:
        ops = {c.spec.op for exp, _ in experiments for c in exp.cases()}
        if not any(a.name in names for op in ops for d in devices
                   for a in registry.algorithms(op, d)):
            raise UserError(f"--algorithms {' '.join(names)}: none of them runs any case of "
                            "the selected experiments")
    for _, run_dir in experiments:
        if run_dir is not None:
            RunDirectory.open(run_dir).repair()  # a torn tail is dropped before anything runs
    if args.resources:
        if not (args.scheduler or args.local_workers):
            raise UserError("--resources: only with --scheduler or --local-workers")
        from .bench.cluster import parse_resources

        parse_resources(args.resources)  # a malformed one is an error before any work
    env = environment.collect()
    note = "; ".join(n for n in (auto.model().note(d) for d in devices) if n)
    print(f"{env['cpu']}, {env['cores']} cores; float32 GEMM peak {env['gemm_peak_gflops']} "
          f"GFLOP/s; devices {', '.join(devices)}; preset {preset}")
    if note:
        print(f"note: {note}")
    options = SweepOptions(devices, names, max_s, env["gemm_peak_gflops"], repeats, min_time,
                           machine.machine_id(), noise.Control())
    if "cuda" in devices:
        from .cuda import memory

        memory.install()  # the EMM plugin must see the first device allocation
    bar = progress.Bar([exp for exp, _ in experiments], options,
                       enabled=not args.no_progress)
    with _runner(args, [exp for exp, _ in experiments]) as sweep_one:
        return _run_experiments(args, experiments, options, bar, sweep_one, {
            "preset": preset, "devices": devices, "algorithms": names,
            "max_case_seconds": max_s, "repeats": repeats, "min_time": min_time,
            "command": command, "scheduler": args.scheduler,
            "local_workers": args.local_workers, "calibration_note": note,
            "batches": None if args.resume else args.batch}, env, custom)


@contextmanager
def _runner(args, experiments):
    """What sweeps one experiment: here, or on a Dask cluster whose workers were checked
    before any case runs (each case holding bench=1 and the resources asked for)."""
    from .bench.sweep import sweep

    if not (args.scheduler or args.local_workers):
        yield sweep
        return
    from .bench import cluster

    extra = cluster.parse_resources(args.resources)
    needed = {exp.name: {**cluster.BENCH, **exp.resources, **extra} for exp in experiments}
    with cluster.connect(args.scheduler, args.local_workers) as client:
        for wanted in {tuple(sorted(n.items())) for n in needed.values()}:
            cluster.check_workers(client, dict(wanted))
        yield lambda exp, run, options, bar: cluster.sweep_on_cluster(
            client, exp, run, options, needed[exp.name], bar)


def _run_experiments(args, experiments, options, bar, sweep_one, info: dict, env: dict,
                     custom: dict | None = None) -> int:
    """Sweep each experiment into its run directory, then report it. A network of the
    caller's (``custom``) is written into the run directory as layers.txt, so that the run
    says what it measured and ``--resume`` finds it."""
    from .bench.rundir import RunDirectory
    from .layerfile import write_layers

    for i, (exp, run_dir) in enumerate(experiments):
        options.measured_auto = "auto_regret" in exp.plots
        run = RunDirectory.open(run_dir) if run_dir else RunDirectory.create(args.out, exp.name)
        if run_dir is None:
            extra = {}
            if custom:
                layers_file = write_layers(run.path / "layers.txt", custom["layers"],
                                           f"{custom['network_label']}, as run by: "
                                           f"{info['command']}")
                extra = {"layers_file": str(layers_file.resolve()),
                         "network_label": custom["network_label"]}
            run.write_info({"experiment": exp.name, "experiment_file": str(exp.path),
                            "description": exp.description, "plots": exp.plots, "x": exp.x,
                            "pipeline_keys": exp.pipeline_keys, **info, **extra})
            run.write_environment(env)
        bar.start(i, exp)
        try:
            with run.writing():
                sweep_one(exp, run, options, bar)
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted: finished cases are in {run.results_path}; continue with\n"
                  f"  python -m convbench run --resume {run.path}", file=sys.stderr)
            return 130
        bar.finish(exp)
        if i == len(experiments) - 1:
            bar.close()  # the last one: the bar goes before its report, not after
        with bar.writing():
            _say_results(exp, run)
    bar.close()
    return 0


def _say_results(exp, run) -> None:
    """An experiment's table, conclusion and noise, within the terminal's width."""
    from .bench import tables, terminal
    from .bench.report import build_report, mostly_unsettled, terminal_table

    width = terminal.width()
    if not run.results_path.exists():
        print(f"{exp.name}: nothing left to run in {run.path}\n")
        return
    report = build_report(run.path, exp)
    df = run.load()
    lines = [terminal_table(df, width), f"{exp.name}: {tables.conclusion(df)}"]
    if "auto_regret" in exp.plots:
        lines.append(f"auto's picks: {tables.auto_line(tables.auto_cases(df), run.info())}")
    noisy, timed = tables.unsettled_count(df)
    if timed and noisy > timed / 2:
        lines.append(f"most results never settled ({noisy} of {timed}): "
                     f"{mostly_unsettled(df)}")
    elif noisy:
        lines.append(f"{noisy} of {timed} results never settled (see the report)")
    print(lines[0])
    for line in lines[1:]:
        print(textwrap.fill(line, width=width, subsequent_indent="  "))
    print(f"report: {report}\n")


if __name__ == "__main__":
    sys.exit(main())
