"""The cache of measured choices (``measure=True``): which algorithm won on a shape, kept
across processes in ``tuned.json`` beside the calibration.

Any number of processes may read and write it at once: a writer takes a file lock, reads what
is there, merges its entry, prunes the oldest beyond ``MAX_ENTRIES``, writes a uniquely named
temporary file and renames it over the old one (readers always see a whole file). A damaged
file is ignored with one warning naming it; a cache that cannot be written (read-only, not a
folder) is simply not written, and the computation goes on.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

from filelock import FileLock, Timeout

from .costmodel import cache_dir, model_id

MAX_ENTRIES = 2000  # a bounded file: the oldest choices are dropped first
LOCK_TIMEOUT_S = 10.0

_generation = 0  # bumped by every write from this process
_memo: tuple[tuple, dict] | None = None  # (file stamp, entries) of the last read
_warned: set[str] = set()


def path() -> Path:
    return cache_dir() / "tuned.json"


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=4)


def _entry_ok(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("algorithm"), str)
            and isinstance(entry.get("times"), dict)
            and all(isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v)
                    and v > 0 for k, v in entry["times"].items()))


def _read(file: Path) -> dict:
    """Valid entries of this machine's cache ({} when absent, damaged, or made elsewhere)."""
    try:
        text = file.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        _warn_once(f"read {file}", f"cannot read the tuning cache {file} ({exc}); measured "
                   "choices are not reused")
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        _warn_once(f"damaged {file}", f"ignoring damaged tuning cache {file} (not a "
                   "{'machine', 'entries'} document); `python -m convbench cache clear` "
                   "removes it")
        return {}
    if data.get("machine") != model_id():
        return {}  # another machine, package or model version: start afresh
    return {k: v for k, v in data["entries"].items() if _entry_ok(v)}


def _stamp(file: Path) -> tuple:
    try:
        st = file.stat()
        return (_generation, st.st_mtime_ns, st.st_size)
    except OSError:
        return (_generation, None, None)


def entries() -> dict:
    """This machine's cached choices (re-read only when the file changed)."""
    global _memo
    file = path()
    stamp = (str(file),) + _stamp(file)
    if _memo is None or _memo[0] != stamp:
        _memo = (stamp, _read(file))
    return _memo[1]


def lookup(key: str) -> dict | None:
    return entries().get(key)


def store(key: str, entry: dict) -> bool:
    """Merge one choice into the file under the lock; False when the cache cannot be written
    (the choice still applies to this call)."""
    global _generation
    file = path()
    entry = dict(entry, at=time.time())
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(file) + ".lock", timeout=LOCK_TIMEOUT_S):
            current = _read(file)
            current[key] = entry
            if len(current) > MAX_ENTRIES:
                newest = sorted(current.items(), key=lambda kv: kv[1].get("at", 0.0))
                current = dict(newest[-MAX_ENTRIES:])
            _write(file, {"machine": model_id(), "entries": current})
    except (OSError, Timeout) as exc:
        _warn_once(f"write {file}", f"the tuning cache {file} cannot be written ({exc}); "
                   "measured choices are not kept")
        return False
    _generation += 1
    return True


def _write(file: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tuned-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)  # atomic: a concurrent reader sees the old or the new file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def clear() -> int:
    """Remove the cache file; returns how many entries it held."""
    global _generation
    file = path()
    count = len(_read(file))
    with contextlib.suppress(OSError):
        file.unlink()
    _generation += 1
    return count
