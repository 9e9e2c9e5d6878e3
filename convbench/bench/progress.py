"""Progress across all experiments of a run: one bar weighted by each case's expected cost
(cases run small to large, so counting cases would promise too early an end), labelled with
the experiment's place in the run. Where the output is not a terminal there is no bar, only a
line when each experiment starts and ends."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .. import registry
from .experiments import Experiment
from .measure import SweepOptions
from .sweep import case_weight


def _algorithms(exp: Experiment, options: SweepOptions) -> int:
    chosen = (lambda name: name in options.algorithms) if options.algorithms else exp.selects
    ops = {c.spec.op for c in exp.cases()}
    counts = [len([a for a in registry.algorithms(op, d) if chosen(a.name)])
              for op in ops for d in options.devices]
    return max(counts, default=1)


class Bar:
    def __init__(self, experiments: list[Experiment], options: SweepOptions,
                 enabled: bool = True):
        self.count = len(experiments)
        self.options = options
        self.algos = {id(e): _algorithms(e, options) for e in experiments}
        total = sum(case_weight(c, e, options, self.algos[id(e)]) * len(options.devices)
                    for e in experiments for c in e.cases())
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="s", disable=not self.tty, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
                                   " {postfix}")
        self.enabled = enabled
        self.started = time.perf_counter()
        self.algorithms = 6

    def start(self, index: int, exp: Experiment) -> None:
        self.algorithms = self.algos[id(exp)]
        self.bar.set_description_str(f"[{index + 1}/{self.count}] {exp.name}")
        self.started = time.perf_counter()
        if self.enabled and not self.tty:
            print(f"[{index + 1}/{self.count}] {exp.name}: {len(exp.cases())} cases",
                  file=sys.stderr, flush=True)

    def finish(self, exp: Experiment) -> None:
        if self.enabled and not self.tty:
            print(f"    {exp.name} done in {time.perf_counter() - self.started:.0f} s",
                  file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        if self.tty:
            self.bar.set_postfix_str(text[:50], refresh=False)

    def advance(self, weight: float) -> None:
        self.bar.update(weight)

    def close(self) -> None:
        self.bar.close()
