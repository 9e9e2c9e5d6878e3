"""Every CUDA kernel compiles for sm_90 (PTX through libnvvm, then ptxas) without a GPU: the
simulator accepts what a real GPU rejects, so this is what keeps such a kernel from landing.
Needs the ``cuda-compile`` extra (nvidia-cuda-nvrtc-cu12, nvidia-cuda-nvcc-cu12), which CI
installs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "compile_cuda.py"


def _toolkit_present() -> bool:
    try:
        import nvidia.cuda_nvcc  # noqa: F401
        import nvidia.cuda_nvrtc  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _toolkit_present(),
                    reason="needs the cuda-compile extra: pip install -e '.[cuda-compile]'")
def test_every_kernel_compiles_for_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(TOOL.parents[1]), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, str(TOOL), "--ptxas"], env=env,
                            capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, "\n".join(line for line in lines if line.startswith("FAIL"))[
        -3000:] + result.stderr[-2000:]
    assert lines and all(line.startswith("ok") for line in lines)
    assert not any(" 0 bytes spill stores" not in line for line in lines), "a kernel spills"
