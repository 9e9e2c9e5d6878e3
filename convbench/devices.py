"""Which devices exist here, and the one error message for a missing GPU."""
from __future__ import annotations

import os
from functools import lru_cache

DEVICES = ("cpu", "cuda")  # every device convbench has kernels for


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is switched on (NUMBA_ENABLE_CUDASIM set to anything
    but empty or 0, as Numba reads it)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when a CUDA GPU (or the simulator) can run numba.cuda kernels."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit means no usable GPU, not a crash
        return False


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if cuda_available() else [])


def check_device(device: str) -> str:
    """Return ``device`` if usable here; otherwise raise ValueError saying what to do."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise ValueError(
            "device='cuda' was requested but no CUDA GPU was found; set NUMBA_ENABLE_CUDASIM=1 "
            "to run the CUDA kernels in Numba's simulator (slow, for checking only), or use "
            "device='cpu'"
        )
    return device
