"""Verdicts from per-round samples: a bootstrap interval for the ratio of two medians, so a
comparison says "slower" only when the rounds show it, not when one median happens to."""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000
SEED = 0  # fixed: the same samples always give the same verdict


def median_ratio_interval(new: list[float], old: list[float], level: float = 0.95
                          ) -> tuple[float, float, float]:
    """(median(new) / median(old), lower, upper): the ratio and its bootstrap interval."""
    a, b = np.asarray(new, float), np.asarray(old, float)
    rng = np.random.default_rng(SEED)
    ra = np.median(rng.choice(a, (RESAMPLES, len(a))), axis=1)
    rb = np.median(rng.choice(b, (RESAMPLES, len(b))), axis=1)
    ratios = ra / rb
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def verdict(lower: float, upper: float, same_within: float = 0.05) -> str:
    """'slower', 'faster', 'same' or 'uncertain' for a ratio new/old with interval
    [lower, upper]: slower or faster when the whole interval is beyond ``same_within`` of 1,
    same when it lies within it."""
    if lower > 1 + same_within:
        return "slower"
    if upper < 1 / (1 + same_within):
        return "faster"
    if lower >= 1 / (1 + same_within) and upper <= 1 + same_within:
        return "same"
    return "uncertain"
