"""PyTorch peers (oneDNN on the CPU): registered by peers.py only when torch is installed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .registry import Algorithm, register
from .spec import ConvSpec, PoolSpec


def torch_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """torch.nn.functional.conv2d; asymmetric padding goes through F.pad first."""
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    if spec.flip:
        tw = torch.flip(tw, dims=(2, 3))
    pt, pb, pl, pr = spec.pad
    if pt == pb and pl == pr:
        padding = (pt, pl)
    else:
        tx, padding = F.pad(tx, (pl, pr, pt, pb)), 0
    with torch.no_grad():
        y = F.conv2d(tx, tw, stride=spec.stride, padding=padding, dilation=spec.dilation)
    return y.numpy()


def _torch_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    tx = torch.from_numpy(x)
    with torch.no_grad():
        if spec.kind == "max":
            y = F.max_pool2d(tx, spec.size, spec.stride, spec.pad)
        else:
            y = F.avg_pool2d(tx, spec.size, spec.stride, spec.pad,
                             count_include_pad=spec.count_include_pad)
    return y.numpy()


register(Algorithm(name="torch", op="conv2d", device="cpu", run=torch_conv2d, is_peer=True,
                   description=f"torch {torch.__version__} F.conv2d (oneDNN)", error_model="fft"))
for _op in ("max_pool2d", "avg_pool2d"):
    register(Algorithm(name="torch", op=_op, device="cpu", run=_torch_pool, is_peer=True,
                       description=f"torch {torch.__version__} F.{_op}"))
