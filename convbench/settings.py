"""Every ``CONVBENCH_*`` environment variable, read in one place with one set of rules.

Booleans accept 1/0, true/false, yes/no, on/off (any case); an empty or unset variable means
its default. Anything else raises :class:`SettingError` naming the variable and what it
accepts, so a typo is reported where it is made rather than silently meaning "on".
Values are read when they are needed (not at import), so a bad value fails the call that uses
it and never leaves a module half-imported.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A ``CONVBENCH_*`` variable holds a value outside what it accepts."""


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str


VARIABLES = {v.name: v for v in (
    Variable("CONVBENCH_AUTOTUNE", "boolean: algorithm='auto' measures its top candidates "
             "(as measure=True) unless the call says otherwise; default off"),
    Variable("CONVBENCH_MAX_WORKSPACE", "bytes (or with a K/M/G suffix) of workspace an "
             "algorithm may use; default half of the memory available at the call"),
    Variable("CONVBENCH_FFT_WORKERS", "integer >= 1: threads of each scipy.fft call in the "
             "FFT algorithms (sizes that are not powers of two); default: Numba's threads"),
    Variable("CONVBENCH_CACHE_DIR", "folder for the calibration and the tuning cache; default "
             "$XDG_CACHE_HOME/convbench or ~/.cache/convbench"),
    Variable("CONVBENCH_STEADY_MALLOC", "boolean: configure_for_benchmarks() fixes glibc's "
             "malloc thresholds; default on"),
)}


# os.environ's own dict (bytes on POSIX, which os.environ[...] = and putenv through it keep
# current): os.environ.get raises and catches a KeyError inside for an unset variable, 2 us
# where algorithm="auto" asks on every call of a 7 us layer
_ENVIRON_BYTES = getattr(os.environ, "_data", None) if os.name == "posix" else None
_ENCODED = {name: os.fsencode(name) for name in VARIABLES}


def _environ(name: str) -> str | None:
    """os.environ.get(name) for one of VARIABLES."""
    if _ENVIRON_BYTES is None:
        return os.environ.get(name)
    value = _ENVIRON_BYTES.get(_ENCODED[name])
    return None if value is None else os.fsdecode(value)


def _raw(name: str) -> str | None:
    if name not in VARIABLES:  # a misspelt name in our own code
        raise KeyError(f"{name} is not a convbench setting")
    value = _environ(name)
    return None if value is None or value.strip() == "" else value.strip()


def flag(name: str, default: bool) -> bool:
    """A boolean variable."""
    raw = _raw(name)
    if raw is None:
        return default
    word = raw.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    allowed = "/".join(f"{t}/{f}" for t, f in zip(TRUE_WORDS, FALSE_WORDS))
    raise SettingError(f"{name} must be one of {allowed}, got {raw!r}")


def positive_int(name: str, default: int) -> int:
    """An integer variable that must be at least 1."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer >= 1, got {raw!r}") from None
    if value < 1:
        raise SettingError(f"{name} must be an integer >= 1, got {raw!r}")
    return value


_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_count(name: str) -> int | None:
    """A size in bytes, plain or with a K/M/G/T suffix (an optional trailing B); None when
    unset."""
    raw = _raw(name)
    if raw is None:
        return None
    text = raw.upper().removesuffix("B")
    scale = _SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = float(number) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SettingError(f"{name} must be a byte count >= 0 such as 1000000, 512M or 2G, "
                           f"got {raw!r}")
    return int(value)


def path(name: str) -> str | None:
    """A path variable (None when unset)."""
    return _raw(name)


_CHECKS = {"CONVBENCH_AUTOTUNE": lambda n: flag(n, False),
           "CONVBENCH_MAX_WORKSPACE": byte_count,
           "CONVBENCH_FFT_WORKERS": lambda n: positive_int(n, 1),
           "CONVBENCH_CACHE_DIR": path,
           "CONVBENCH_STEADY_MALLOC": lambda n: flag(n, True)}


def check_all() -> None:
    """Read every variable once, so that a bad value is reported before any work (the command
    line does this first; a library call reads each one where it needs it)."""
    for name in VARIABLES:
        _CHECKS[name](name)
