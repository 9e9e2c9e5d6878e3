"""The run directory: its files, their columns, and the rules that keep them whole.

``results/<UTC timestamp>-<experiment>[-N]/`` holds ``results.csv`` (one row per case x
algorithm, appended case by case and fsynced), ``rounds.jsonl`` (the per-round seconds behind
every timed row, for ``compare``, and those of its prepared call, as "<algorithm> (prepared)",
timed in the same rounds), ``run.json`` (the arguments, for ``--resume``),
``environment.json`` (the machine that ran the command), ``machines.json`` (on a cluster: the
environment of every worker machine that measured rows), ``plots/`` and ``report.md``. A directory is created exclusively (two
runs started in the same second get two directories) and written under a lock (a second writer
fails at once with a clear message). A row torn by a kill or a full disk is detected when the
run is resumed: it is dropped with the rest of its case, which then runs again.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
from filelock import FileLock, Timeout

from .experiments import ALL_PARAMS

SPEC_COLUMNS = ["n", "c", "h", "w", "k", "kh", "kw", "stride_h", "stride_w", "pad_top",
                "pad_bottom", "pad_left", "pad_right", "dilation_h", "dilation_w", "pool_h",
                "pool_w"]
PARAM_COLUMNS = list(ALL_PARAMS)  # flip and dtype are parameters, so not repeated above
COLUMNS = (
    ["experiment", "series", "group", "case_id", "label", "layer", "count", "layer_index", "op",
     "device", "machine", "worker", "algorithm", "is_peer", "library", "family", "status", "error", "seed"]
    + PARAM_COLUMNS + SPEC_COLUMNS
    + ["flops", "min_bytes", "first_call_s", "warm_call_s", "median_s", "prepared_median_s",
       "min_s", "iqr_s",
       "rel_spread", "repeats", "loops", "unsettled", "drifted", "noise", "load_avg", "others_cpu", "steal",
       "cpu_mhz", "control_drift", "cache", "gpu_sm_mhz_min", "gpu_sm_mhz_default",
       "gpu_temp_c_max", "gpu_power_w_max", "throttled", "gflops", "gbps", "peak_fraction", "speedup_vs_best_peer",
       "best_peer", "workspace_bytes", "measured_host_bytes", "measured_device_bytes", "page_faults",
       "transfer_s", "error_to_bound", "info_kept", "auto_pick", "auto_top",
       "auto_measured_pick", "scipy_choice"])
AUTO = "auto"  # the row of algorithm="auto" itself (experiments with time_auto): not one of ours
PREPARED = " (prepared)"  # an algorithm's prepared call, in the timings and in rounds.jsonl
RESULTS, ROUNDS, INFO, ENVIRONMENT, MACHINES, LOCK = (
    "results.csv", "rounds.jsonl", "run.json", "environment.json", "machines.json", ".lock")
# columns of older runs, read under today's names (their "noisy" counted drift as well)
RENAMED = {"compile_s": "first_call_s", "noisy": "unsettled"}


class RunDirError(ValueError):
    """A run directory that cannot be created, written or read; the message says why."""


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class RunDirectory:
    """One experiment's run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ creating and opening

    @staticmethod
    def check_out(out: Path) -> Path:
        """The results folder, created if need be; RunDirError when it cannot hold runs."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out}: exists and is not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise RunDirError(f"--out {out}: not writable")
        return out

    @classmethod
    def create(cls, out: Path, experiment: str) -> "RunDirectory":
        """A new, uniquely named directory under ``out`` (created exclusively)."""
        out = cls.check_out(out)
        base = f"{utc_stamp()}-{experiment}"
        for attempt in range(1, 1000):
            path = out / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunDirError(f"--out {out}: cannot create {path.name} "
                                  f"({exc.strerror or exc})") from None
            return cls(path)
        raise RunDirError(f"--out {out}: no free name for {base}")

    @classmethod
    def open(cls, path: Path) -> "RunDirectory":
        """An existing run directory (for --resume, report and compare)."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: not a folder")
        return cls(path)

    @contextmanager
    def writing(self) -> Iterator["RunDirectory"]:
        """Hold the directory's lock while writing: a second writer fails at once."""
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(f"{self.path}: another convbench process is writing this run "
                              "directory; wait for it, or start a new run") from None
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot lock it ({exc})") from None
        try:
            yield self
        finally:
            lock.release()

    # ------------------------------------------------------------------ run.json, environment

    def write_info(self, info: dict) -> None:
        (self.path / INFO).write_text(json.dumps(info, indent=2))

    def info(self) -> dict:
        path = self.path / INFO
        if not path.exists():
            raise RunDirError(f"{self.path}: no {INFO}; is it a convbench run directory?")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: damaged ({exc})") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path}: damaged (not a JSON object)")
        return data

    def write_environment(self, env: dict) -> None:
        (self.path / ENVIRONMENT).write_text(json.dumps(env, indent=2))

    def environment(self) -> dict:
        try:
            data = json.loads((self.path / ENVIRONMENT).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def add_machine(self, env: dict) -> None:
        """Record the environment of a machine that measured rows of this run (a cluster's
        workers), by machine id, in machines.json (replaced whole, never torn)."""
        known = self._machines_file()
        identity = env.get("machine_id", "?")
        if known.get(identity) == env:
            return
        known[identity] = env
        tmp = self.path / (MACHINES + ".tmp")
        tmp.write_text(json.dumps(known, indent=2))
        os.replace(tmp, self.path / MACHINES)

    def _machines_file(self) -> dict[str, dict]:
        try:
            data = json.loads((self.path / MACHINES).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def machines(self) -> dict[str, dict]:
        """Environment per machine id: the workers' (machines.json), else this run's own."""
        env = self.environment()
        return self._machines_file() or ({env["machine_id"]: env} if "machine_id" in env else {})

    # ------------------------------------------------------------------ results.csv

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def repair(self) -> list[str]:
        """Drop a torn or malformed tail of results.csv together with the rest of its case's
        rows (and their rounds), so the case runs again; returns the dropped case ids."""
        path = self.results_path
        if not path.exists():
            return []
        with path.open(newline="") as f:
            text = f.read()
        if not text:
            return []
        lines = text.splitlines(keepends=True)
        if not lines[0].endswith("\n"):  # torn inside the header: nothing was written whole
            path.write_text("")
            (self.path / ROUNDS).unlink(missing_ok=True)
            return []
        header = next(csv.reader([lines[0]]))
        if header != COLUMNS:
            raise RunDirError(f"{path}: its columns are not those this convbench writes "
                              "(an older version's run?); start a new run instead of resuming")
        good, dropped = [lines[0]], []
        for line in lines[1:]:
            fields = next(csv.reader([line]), [])
            if line.endswith("\n") and len(fields) == len(COLUMNS):
                good.append(line)
            else:  # a partial row: note its case (when that much of it survived)
                idx = COLUMNS.index("case_id")
                if len(fields) > idx:
                    dropped.append(fields[idx])
        if not dropped and len(good) == len(lines):
            return []
        kept = [good[0]] + [ln for ln in good[1:]
                            if next(csv.reader([ln]))[COLUMNS.index("case_id")] not in dropped]
        tmp = path.with_suffix(".csv.repair")
        with tmp.open("w", newline="") as f:
            f.write("".join(kept))
        os.replace(tmp, path)
        self._drop_rounds(set(dropped))
        return dropped

    def done(self) -> set[tuple[str, str, str]]:
        """(device, case_id, algorithm) of every row on disk."""
        if not self.results_path.exists():
            return set()
        with self.results_path.open(newline="") as f:
            return {(r["device"], r["case_id"], r["algorithm"]) for r in csv.DictReader(f)}

    def append(self, rows: list[dict], rounds: dict[str, list[float]] | None = None) -> None:
        """Append one case's rows in a single write, flushed to disk (and its rounds)."""
        new = not self.results_path.exists() or self.results_path.stat().st_size == 0
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore",
                                lineterminator="\n")
        if new:
            writer.writeheader()
        # one row, one line: the repair above relies on it
        writer.writerows([{k: v.replace("\r", " ").replace("\n", " ") if isinstance(v, str)
                           else v for k, v in row.items()} for row in rows])
        if rounds:
            by_name = {r["algorithm"]: r for r in rows}
            row_of = {n: by_name.get(n[:-len(PREPARED)] if n.endswith(PREPARED) else n)
                      for n in rounds}
            lines = "".join(json.dumps({"device": row_of[n]["device"],
                                        "case_id": row_of[n]["case_id"], "algorithm": n,
                                        "rounds": [float(v) for v in values]}) + "\n"
                            for n, values in rounds.items() if row_of[n] is not None)
            _append_synced(self.path / ROUNDS, lines)
        _append_synced(self.results_path, buf.getvalue())

    def _drop_rounds(self, case_ids: set[str]) -> None:
        path = self.path / ROUNDS
        if not case_ids or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line
            if record.get("case_id") not in case_ids:
                kept.append(line)
        tmp = path.with_suffix(".jsonl.repair")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)

    def rounds(self) -> dict[tuple[str, str, str], list[float]]:
        """Per-round seconds of every timed row, by (device, case_id, algorithm)."""
        out = {}
        path = self.path / ROUNDS
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                out[(r["device"], r["case_id"], r["algorithm"])] = [float(v) for v in r["rounds"]]
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line
        return out

    def load(self) -> pd.DataFrame:
        """results.csv as a typed DataFrame (damaged rows skipped; older runs' columns
        renamed); an error saying why when there is nothing readable."""
        path = self.results_path
        if not path.exists():
            raise RunDirError(f"{self.path}: no {RESULTS}; is it a convbench run directory?")
        try:
            df = pd.read_csv(path, on_bad_lines="skip", engine="python")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
                OSError) as exc:
            raise RunDirError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
        df = df.rename(columns=RENAMED)
        required = {"case_id", "algorithm", "status", "median_s", "device"}
        if not required <= set(df.columns):
            raise RunDirError(f"{path}: not a convbench results file (missing columns "
                              f"{', '.join(sorted(required - set(df.columns)))})")
        return typed(df)


def _append_synced(path: Path, text: str) -> None:
    with path.open("a", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


NUMERIC = ("count", "layer_index", "median_s", "prepared_median_s", "min_s", "iqr_s", "rel_spread", "first_call_s", "warm_call_s",
           "workspace_bytes", "measured_host_bytes", "measured_device_bytes", "page_faults",
           "speedup_vs_best_peer", "flops", "gflops", "gbps", "info_kept", "others_cpu",
           "steal", "load_avg", "control_drift", "cpu_mhz", "gpu_sm_mhz_min",
           "gpu_sm_mhz_default", "gpu_temp_c_max", "gpu_power_w_max")


def _flag(series: pd.Series) -> pd.Series:
    return series.astype(str).str.lower().isin(("true", "1", "1.0"))


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Columns of a results table as numbers and flags; unseen optional columns added empty;
    ``memory_bytes`` is what the algorithm was seen or declared to use (unknown: NaN)."""
    df = df.copy()
    for col in COLUMNS:
        if col not in df:
            df[col] = pd.NA
    df["is_peer"] = _flag(df["is_peer"])
    df["unsettled"] = _flag(df["unsettled"])
    df["drifted"] = _flag(df["drifted"])
    df["throttled"] = _flag(df["throttled"])
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("group", "layer", "machine", "worker", "library", "family", "error"):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    mem = df[["workspace_bytes", "measured_host_bytes", "measured_device_bytes"]].max(axis=1)
    # a peer that declares nothing and shows nothing allocates inside a compiled library
    # (oneDNN, cuDNN): its memory is unknown, not zero
    unknown = df["is_peer"] & (mem.fillna(0) == 0)
    df["memory_bytes"] = mem.mask(unknown)
    df["family"] = df["family"].where(df["family"] != "", df["algorithm"])
    return df
