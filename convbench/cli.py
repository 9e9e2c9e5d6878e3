"""Command line: ``python -m convbench run|list|report|compare|check|calibrate|explain|baseline|gate``.

Exit codes: 0 success, 1 a comparison exceeded --fail-above, 2 bad arguments or input files,
130 interrupted (finished cases are kept; ``--resume`` continues).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from . import registry
from .devices import available_devices

DEFAULT_OUT = Path("results")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench", description="Which convolution/pooling algorithm is fastest here?")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run experiments (default: quick preset of all)")
    run.add_argument("experiments", nargs="*", help="shipped names or TOML paths (default: all)")
    run.add_argument("--preset", default="quick", choices=["smoke", "quick", "full"])
    run.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    run.add_argument("--algorithms", nargs="+", metavar="NAME",
                     help="only these algorithms (peers included by name)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--max-case-seconds", type=float, default=None,
                     help="skip an algorithm predicted to need longer on one case "
                          "(default: the preset's, 2 s for quick)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("list", help="algorithms by device, experiments, devices found")
    rep = sub.add_parser("report", help="rebuild plots and report.md of a run")
    rep.add_argument("run_dir", type=Path)
    cmp_ = sub.add_parser("compare", help="ratio table of two runs")
    cmp_.add_argument("run_a", type=Path)
    cmp_.add_argument("run_b", type=Path)
    cmp_.add_argument("--threshold", type=float, default=1.25,
                      help="mark ratios B/A above this as regressions (default 1.25)")
    cmp_.add_argument("--fail-above", type=float, metavar="RATIO",
                      help="exit 1 if any ratio B/A exceeds RATIO")
    chk = sub.add_parser("check", help="verify every algorithm; on a GPU, time CUDA vs cuDNN/cuFFT")
    chk.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    chk.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the timing CSV")
    cal = sub.add_parser("calibrate", help="fit the cost model that algorithm='auto' uses")
    cal.add_argument("--layers", type=int, default=120, help="random layers to time (default 120)")
    cal.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    cal.add_argument("--out", type=Path, default=None, help="file (default: the user cache)")
    exp = sub.add_parser("explain", help="predicted time and workspace of every candidate")
    exp.add_argument("--x", required=True, help="input shape N,C,H,W")
    exp.add_argument("--w", help="kernel shape K,C,kh,kw (convolution)")
    exp.add_argument("--pool", choices=["max", "avg"], help="pooling instead of convolution")
    exp.add_argument("--size", help="pool size (int or h,w)")
    exp.add_argument("--stride", default="1")
    exp.add_argument("--padding", default="0", help="int, h,w, t,b,l,r, valid or same")
    exp.add_argument("--dilation", default="1")
    exp.add_argument("--flip", action="store_true")
    exp.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    exp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    exp.add_argument("--measure", action="store_true", help="time the top candidates (cached)")
    base = sub.add_parser("baseline", help="measure and write the regression-gate baseline")
    base.add_argument("--subset", default="all", choices=["all", "ci"])
    base.add_argument("--out", type=Path, default=None, help="baseline file (default: committed)")
    base.add_argument("--repeats", type=int, default=9)
    gate = sub.add_parser("gate", help="fail (exit 1) when an algorithm regressed vs the baseline")
    gate.add_argument("--subset", default="all", choices=["all", "ci"])
    gate.add_argument("--baseline", type=Path, default=None)
    gate.add_argument("--threshold", type=float, default=None,
                      help="allowed slowdown, e.g. 0.25 for +25%% (default: the baseline's)")
    gate.add_argument("--repeats", type=int, default=9)
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
        raise ValueError(f"--{name} must be integers separated by commas, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def cmd_explain(args) -> int:
    from .auto import explain

    if (args.w is None) == (args.pool is None):
        raise ValueError("give either --w (convolution) or --pool with --size (pooling)")
    choice = explain(_ints(args.x, "x"), _ints(args.w, "w"), stride=_ints(args.stride, "stride"),
                     padding=_ints(args.padding, "padding"),
                     dilation=_ints(args.dilation, "dilation"), flip=args.flip, dtype=args.dtype,
                     device=args.device, pool=args.pool, size=_ints(args.size, "size"),
                     measure=args.measure)
    print(choice)
    return 0


def cmd_baseline(args) -> int:
    from .bench import environment, gate
    from .bench.suite import layers

    path = args.out or gate.BASELINE
    previous = gate.load_baseline(path) if Path(path).exists() else None
    ratios = gate.measure(layers(args.subset), repeats=args.repeats)
    if previous and args.subset != "all":  # refresh a subset, keep the other entries
        ratios = {**previous["ratios"], **ratios}
    gate.save_baseline(ratios, environment.collect(measure_gemm=False), path, previous)
    print(f"wrote {len(ratios)} ratios to {path}")
    return 0


def cmd_gate(args) -> int:
    from .bench import gate
    from .bench.suite import layers

    baseline = gate.load_baseline(args.baseline or gate.BASELINE)
    measured = gate.measure(layers(args.subset), repeats=args.repeats)
    for key, value in sorted(measured.items()):
        old = baseline["ratios"].get(key)
        print(f"{key:40s} {value:9.3g}  baseline {old if old is not None else 'new':>9}")
    failures = gate.check(measured, baseline, args.threshold)
    for line in failures:
        print("REGRESSION:", line, file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "report":
            from .bench.report import build_report

            print(build_report(args.run_dir))
            return 0
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "check":
            from .bench.check import run_check

            return run_check(_devices(args.device), args.out)
        if args.command == "calibrate":
            from . import costmodel
            from .bench.calibrate import calibrate

            doc = calibrate(args.layers, tuple(_devices(args.device)), args.out)
            print(f"calibrated in {doc['seconds']} s; saved to "
                  f"{args.out or costmodel.calibration_path()}")
            return 0
        if args.command == "explain":
            return cmd_explain(args)
        if args.command == "baseline":
            return cmd_baseline(args)
        if args.command == "gate":
            return cmd_gate(args)
        return cmd_run(args, argv)
    except ValueError as exc:  # bad experiment, TOML, algorithm, device or run directory
        print(f"convbench: error: {exc}", file=sys.stderr)
        return 2


def cmd_list() -> int:
    from .bench.experiments import available, load

    found = available_devices()
    print("devices found:", ", ".join(found))
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
        print(f"  {name:14s} {len(exp.cases()):3d} cases (quick)  {exp.description}")
    return 0


def cmd_compare(args) -> int:
    from .bench.compare import compare_runs, format_comparison

    table = compare_runs(args.run_a, args.run_b)
    print(format_comparison(table, args.threshold))
    if args.fail_above is not None and (table["ratio"] > args.fail_above).any():
        worst = table.iloc[0]
        print(f"\nFAIL: {worst['algorithm']} on {worst['label']} is {worst['ratio']:.2f}x slower "
              f"(above {args.fail_above})", file=sys.stderr)
        return 1
    return 0


def _devices(choice: str) -> list[str]:
    found = available_devices()
    if choice == "all":
        return found
    if choice not in found:
        raise ValueError(f"--device {choice}: not available here (found: {', '.join(found)}); "
                         "set NUMBA_ENABLE_CUDASIM=1 to use the CUDA simulator")
    return [choice]


def cmd_run(args, argv) -> int:
    from tqdm import tqdm

    from .bench import environment
    from .bench.experiments import available, load
    from .bench.report import build_report, fastest_per_case, load_results
    from .bench.sweep import SweepOptions, read_run_info, sweep, utc_stamp, write_run_info

    command = "python -m convbench " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.resume:
        info = read_run_info(args.resume)
        plan = [(info["experiment_file"], args.resume)]
        preset, devices = info["preset"], info["devices"]
        names, max_s = info["algorithms"], info["max_case_seconds"]
    else:
        preset, devices = args.preset, _devices(args.device)
        names, max_s = args.algorithms, args.max_case_seconds
        plan = [(e, None) for e in (args.experiments or list(available()))]
    if names:
        known = {a.name for a in registry.algorithms()}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"--algorithms: unknown {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
    experiments = [(load(e, preset), d) for e, d in plan]  # validate all before running any
    env = environment.collect()
    print(f"{env['cpu']}, {env['cores']} cores; float32 GEMM peak {env['gemm_peak_gflops']} "
          f"GFLOP/s; devices {', '.join(devices)}; preset {preset}")
    options = SweepOptions(devices, names, max_s, env["gemm_peak_gflops"])
    if "cuda" in devices:
        from .cuda import memory

        memory.install()  # the EMM plugin must see the first device allocation
    summaries = []
    for exp, run_dir in experiments:
        if run_dir is None:
            run_dir = args.out / f"{utc_stamp()}-{exp.name}"
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_info(run_dir, {
                "experiment": exp.name, "experiment_file": str(exp.path), "preset": preset,
                "devices": devices, "algorithms": names, "max_case_seconds": max_s,
                "description": exp.description, "plots": exp.plots, "x": exp.x,
                "command": command})
            (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        cases = exp.cases()
        bar = tqdm(total=len(cases) * len(devices), desc=exp.name, unit="case",
                   disable=args.no_progress)
        try:
            sweep(exp, run_dir, options, bar)
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted: finished cases are in {run_dir}/results.csv; continue with\n"
                  f"  python -m convbench run --resume {run_dir}", file=sys.stderr)
            return 130
        bar.close()
        report = build_report(run_dir, exp)
        summaries.append((exp.name, run_dir, report))
        table = fastest_per_case(load_results(run_dir))
        if not table.empty:
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"report: {report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
