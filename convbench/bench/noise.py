"""Is the machine quiet? What the harness records per case to show contention, and the rules
that turn it into two flags of different consequence.

Per case: the load average; the share of the machine's CPU time that other processes used
while the case was timed (/proc/stat's busy time minus this process's own CPU time, over wall
time x cores); the hypervisor's steal time; the CPU clock where the kernel reports it; and the
drift of a fixed control GEMM re-timed beside the case, against the running median of its
readings. A result is ``unsettled`` when its rounds never settled under the experiment's
relative spread, or when the machine was busy while it was timed: no ranking comes from it
(pyperf's ``check`` rules are the model: warn rather than conclude). It is ``drifted`` when
the control moved: the machine got faster or slower, so its absolute times are suspect, but
ratios from interleaved rounds, which the drift hit alike, still hold.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import machine, timing

OTHERS_BUSY = 0.25  # others used over a quarter of the machine: results are suspect
STEAL_BUSY = 0.05  # the hypervisor took over 5% of the time
DRIFT_LIMIT = 1.25  # the control ran 25% slower (or faster) than its running median
REFERENCE_READINGS = 5  # control readings at the start of a run
WINDOW = 25  # readings in the running median
SETTLE_S = 0.02  # pause before a reading: a parallel kernel's threads spin a while after it
CONTROL_SIZE = 256  # the drift control: a float32 GEMM of this size


def _proc_stat() -> tuple[int, int, int] | None:
    """(busy jiffies, steal jiffies, total jiffies) of all CPUs, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, sum(values[:8])


def _cpu_mhz() -> float | None:
    """Mean current clock of the CPUs (sysfs, else /proc/cpuinfo), where reported."""
    freqs = []
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            freqs.append(int(path.read_text()) / 1000.0)
        except (OSError, ValueError):
            pass
    if not freqs:
        try:
            freqs = [float(line.split(":")[1]) for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
        except (OSError, ValueError, IndexError):
            pass
    return round(float(np.mean(freqs)), 1) if freqs else None


@dataclass
class Snapshot:
    wall: float
    own_cpu: float
    stat: tuple[int, int, int] | None

    @classmethod
    def now(cls) -> "Snapshot":
        t = os.times()
        return cls(time.perf_counter(), t.user + t.system, _proc_stat())


def during(before: Snapshot, after: Snapshot | None = None) -> dict:
    """What the machine did between two snapshots: others' CPU share, steal share, load
    average, clock."""
    after = after or Snapshot.now()
    out: dict = {"load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                 "cpu_mhz": _cpu_mhz(), "others_cpu": None, "steal": None}
    if before.stat and after.stat:
        busy = after.stat[0] - before.stat[0]
        steal = after.stat[1] - before.stat[1]
        total = after.stat[2] - before.stat[2]
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        own = (after.own_cpu - before.own_cpu) * hz
        if total > 0:
            out["others_cpu"] = round(max(0.0, busy - own) / total, 3)
            out["steal"] = round(steal / total, 3)
    return out


class Control:
    """A fixed float32 GEMM timed at the start of a run and again beside every case."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((CONTROL_SIZE, CONTROL_SIZE), dtype=np.float32)
        self.b = rng.standard_normal((CONTROL_SIZE, CONTROL_SIZE), dtype=np.float32)
        self.c = np.empty_like(self.a)
        # several readings to start with, then every reading joins the window: one slow
        # first reading (seen: a GEMM at 200 instead of 272 GFLOP/s) no longer sets the scale
        self.history = [self.seconds() for _ in range(REFERENCE_READINGS)]

    def _call(self) -> None:
        np.dot(self.a, self.b, out=self.c)

    def seconds(self) -> float:
        """Median per-call seconds of a few short repeats (a few milliseconds in all)."""
        loops, _ = timing.loops_for(self._call, 0.002)
        return float(np.median([timing.host_repeat(self._call, loops) for _ in range(3)]))

    @property
    def reference(self) -> float:
        """The running median of the recent readings."""
        return float(np.median(self.history[-WINDOW:]))

    def drift(self) -> float:
        """Control time now over the running median of its recent readings (1.0: the machine
        is as it has been)."""
        time.sleep(SETTLE_S)  # the case's own threads go idle first, or the reading is theirs
        now = self.seconds()
        ratio = now / self.reference
        self.history.append(now)
        return round(ratio, 3)


def drift_reason(signals: dict) -> str:
    """Why a case's absolute times are suspect though its interleaved ratios hold: the
    control GEMM ran slower or faster than its running median ('' when it did not)."""
    drift = signals.get("control_drift")
    if drift is not None and not 1 / DRIFT_LIMIT <= drift <= DRIFT_LIMIT:
        return f"drifted: control GEMM at {drift:.2f}x its running median"
    return ""


def contention(signals: dict) -> str:
    """Why the machine was busy during a case ('' when it looked quiet): other processes,
    steal, load or a throttled GPU. Such rounds cannot rank the algorithms."""
    reasons = []
    others = signals.get("others_cpu")
    if others is not None and others > OTHERS_BUSY:
        reasons.append(f"other processes used {others:.0%} of the CPUs")
    steal = signals.get("steal")
    if steal is not None and steal > STEAL_BUSY:
        reasons.append(f"steal time {steal:.0%}")
    if signals.get("throttled"):
        reasons.append(f"GPU SM clock fell to {signals['gpu_sm_mhz_min']:.0f} MHz, under 75% "
                       f"of its default {signals['gpu_sm_mhz_default']:.0f} MHz")
    load = signals.get("load_avg")
    if load is not None and load > 2 * machine.usable_cores():
        reasons.append(f"load average {load:.1f} on {machine.usable_cores()} cores")
    return "; ".join(reasons)
