"""The glibc thresholds that keep workspace mapped between calls (convbench/allocator.py)."""
import platform

import pytest

from convbench import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds exist in glibc only")
def test_steady_malloc_sets_the_thresholds_on_glibc():
    assert allocator.steady_malloc() is True


def test_steady_malloc_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.steady_malloc() is False
