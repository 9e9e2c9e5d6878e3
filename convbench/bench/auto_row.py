"""algorithm="auto" as a row of its own in a sweep: the call a user makes, ``cb.conv2d(x, w,
b, ...)`` (validation, the cached choice and the pick's kernel), and its prepared form
``cb.Conv2d(w, b, ...)(x)``, timed in the same rounds as every algorithm of ours, so a
network's total with ``auto`` counts what choosing costs on top of the kernel."""
from __future__ import annotations

from .. import registry
from ..auto import choose
from ..spec import ConvSpec
from .rundir import AUTO


def auto_algorithm(spec: ConvSpec, device: str) -> registry.Algorithm:
    """An (unregistered) Algorithm whose run is the public call with algorithm="auto"; its
    workspace, error bound and resource are those of the algorithm auto picks for ``spec``."""
    from ..layers import Conv2d
    from ..ops import conv2d

    pick = choose(spec, device, measure=False).algorithm
    options = dict(stride=spec.stride, padding=spec.pad, dilation=spec.dilation,
                   groups=spec.groups, flip=spec.flip, algorithm="auto", device=device)

    def run(x, w, _spec, b=None):
        return conv2d(x, w, b, **options)

    def prepare(w, _spec, b=None):
        return Conv2d(w, b, **options)

    return registry.Algorithm(
        name=AUTO, op="conv2d", device=device, run=run, prepare=prepare, fused_bias=True,
        workspace_bytes=pick.workspace_bytes, error_model=pick.error_model,
        bound_by=pick.bound_by, memory_visible=pick.memory_visible,
        description="algorithm='auto': cb.conv2d per call, cb.Conv2d prepared")
