"""PyTorch peers (oneDNN on the CPU), and the tensor calls the GPU peer shares: registered by
``cpu.py`` only when torch is installed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Algorithm, register
from ..spec import ConvSpec, PoolSpec


def conv_tensors(tx: torch.Tensor, tw: torch.Tensor, spec: ConvSpec,
                 tb: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d on tensors of any device (groups, bias); asymmetric padding goes through
    F.pad first."""
    if spec.flip:
        tw = torch.flip(tw, dims=(2, 3))
    pt, pb, pl, pr = spec.pad
    if pt == pb and pl == pr:
        padding = (pt, pl)
    else:
        tx, padding = F.pad(tx, (pl, pr, pt, pb)), 0
    with torch.no_grad():
        return F.conv2d(tx, tw, tb, stride=spec.stride, padding=padding,
                        dilation=spec.dilation, groups=spec.groups)


def pool_tensor(tx: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    """F.max_pool2d / F.avg_pool2d on a tensor of any device."""
    with torch.no_grad():
        if spec.kind == "max":
            return F.max_pool2d(tx, spec.size, spec.stride, spec.pad)
        return F.avg_pool2d(tx, spec.size, spec.stride, spec.pad,
                            count_include_pad=spec.count_include_pad)


def torch_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                 b: np.ndarray | None = None) -> np.ndarray:
    tb = None if b is None else torch.from_numpy(b)
    return conv_tensors(torch.from_numpy(x), torch.from_numpy(w), spec, tb).numpy()


def _torch_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    return pool_tensor(torch.from_numpy(x), spec).numpy()


# oneDNN may pick Winograd or other transforms internally: the FFT-sized error bound applies
register(Algorithm(name="torch", op="conv2d", device="cpu", run=torch_conv2d, is_peer=True, compiles=False,
                   library="torch", description=f"torch {torch.__version__} F.conv2d (oneDNN)",
                   error_model="fft", bound_by="blas", memory_visible=False, fused_bias=True))
for _op in ("max_pool2d", "avg_pool2d"):
    register(Algorithm(name="torch", op=_op, device="cpu", run=_torch_pool, is_peer=True, compiles=False,
                       library="torch", description=f"torch {torch.__version__} F.{_op}",
                       bound_by="memory", memory_visible=False))
