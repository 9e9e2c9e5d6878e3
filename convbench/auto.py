"""``algorithm="auto"``: pick an algorithm for a problem and say why.

For now a rule of thumb drawn from this project's quick-preset kernel-size and feature-map runs on
a 2-core AMD EPYC (AVX-512) with OpenBLAS: a 1x1 stride-1 layer is a plain GEMM; a stride-1
kernel of 9x9 or more is cheaper in the frequency domain (fft overtook im2col and direct between
7x7 and 11x11 on both the 512x512 channel and the N4 C16 64x64 layer); below that im2col wins
once a receptive field holds at least 32 values (C*kh*kw), and direct for smaller fields.
Only algorithms whose declared workspace fits the memory limit are considered.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import registry
from .workspace import max_workspace_bytes

FFT_MIN_TAPS = 81  # kh*kw from which FFT won the kernel-size sweep (9x9 and up)
GEMM_MIN_FIELD = 32  # C*kh*kw from which im2col's GEMM beat direct's vector loops


@dataclass(frozen=True)
class Choice:
    algorithm: registry.Algorithm
    reason: str


def _preferred(spec) -> list[tuple[str, str]]:
    """Candidate names in order of preference, each with the reason it is preferred."""
    if spec.op != "conv2d":
        return [("direct", "pooling reads each input once; direct is the only CPU kernel")]
    taps = spec.kh * spec.kw
    plain = spec.stride == (1, 1) and spec.dilation == (1, 1)
    if taps == 1 and plain and not any(spec.pad):
        return [("im2col", "1x1 stride-1 kernel: the layer is one GEMM, no unfold needed"),
                ("direct", "fallback")]
    if taps >= FFT_MIN_TAPS and plain:
        return [("fft", f"{spec.kh}x{spec.kw} kernel: FFT cost grows with image size, not taps"),
                ("fft_tiled", "FFT with less workspace"),
                ("direct", "fallback")]
    field = spec.c * taps
    if field >= GEMM_MIN_FIELD:
        return [("im2col", f"receptive field of {field} values: one GEMM per image"),
                ("direct", "fallback")]
    return [("direct", f"receptive field of {field} values: too small for GEMM or FFT to pay off")]


def choose(spec, device: str) -> Choice:
    """Return the algorithm ``auto`` runs for ``spec`` on ``device``, with the reason."""
    limit = max_workspace_bytes()
    ours = {a.name: a for a in registry.algorithms(spec.op, device, peers=False)}
    skipped = []
    for name, reason in _preferred(spec):
        algo = ours.get(name)
        if algo is None or not algo.supports(spec):
            continue
        if algo.workspace_bytes(spec) > limit:
            skipped.append(name)
            continue
        if skipped:
            reason += f" ({', '.join(skipped)} skipped: workspace over the {limit}-byte limit)"
        return Choice(algo, reason)
    for algo in ours.values():  # any algorithm that can run the case at all
        if algo.supports(spec) and algo.workspace_bytes(spec) <= limit:
            return Choice(algo, "the only algorithm that supports this case within the limit")
    raise ValueError(
        f"no algorithm can run {spec.label()} on {device} within the workspace limit of "
        f"{limit} bytes; raise CONVBENCH_MAX_WORKSPACE"
    )
