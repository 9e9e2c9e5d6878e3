"""Progress across all experiments of a run: one bar weighted by each case's expected cost
(cases run small to large, so counting cases would promise too early an end), labelled with
the experiment's place in the run, on a line of its own that tables never write onto, with an
estimate of the time left from what has been measured. Where the output is not a terminal there
is no bar, only a line when each experiment starts and ends."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

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
        self.total = sum(case_weight(c, e, options, self.algos[id(e)]) * len(options.devices)
                         for e in experiments for c in e.cases())
        self.tty = enabled and sys.stderr.isatty()
        # the bar's own line, erased when done (leave=False): nothing is printed onto it, the
        # tables go through writing(); the time left is this module's estimate, not tqdm's
        self.bar = tqdm(total=self.total, unit="s", disable=not self.tty, dynamic_ncols=True,
                        leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                                "[{elapsed}{postfix}]")
        self.enabled = enabled
        self.started = time.perf_counter()
        self.run_started = self.started
        self.done = 0.0
        self.compiling = 0.0  # seconds of first calls (compilation), which do not recur
        self.text = ""
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

    def left(self) -> str:
        """About how long the rest takes, from the seconds each unit of expected work has
        taken so far with compilation (which happens once per kernel) left out."""
        if self.done <= 0:
            return ""
        spent = max(0.0, time.perf_counter() - self.run_started - self.compiling)
        seconds = spent / self.done * max(0.0, self.total - self.done)
        minutes, rest = divmod(int(seconds), 60)
        return f"about {minutes}:{rest:02d} left"

    def _postfix(self) -> None:
        parts = [p for p in (self.left(), self.text) if p]
        self.bar.set_postfix_str(", ".join(parts), refresh=False)

    def status(self, text: str) -> None:
        if self.tty:
            self.text = text[:40]
            self._postfix()

    def advance(self, weight: float, compile_s: float = 0.0) -> None:
        self.done += weight
        self.compiling += compile_s
        if self.tty:
            self._postfix()
        self.bar.update(weight)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Print tables and reports here: the bar steps off its line meanwhile."""
        if self.tty:
            with tqdm.external_write_mode(file=sys.stderr):
                sys.stdout.flush()
                yield
                sys.stdout.flush()
        else:
            yield

    def close(self) -> None:
        self.bar.close()
