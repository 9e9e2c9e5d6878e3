"""``algorithm="auto"``: pick an algorithm for a problem and say why.

For now a rule of thumb drawn from this project's benchmarks on a 2-core x86 laptop CPU
(see README "Performance"): a 1x1 stride-1 layer is a plain GEMM; a stride-1 kernel with
49 or more taps is cheaper in the frequency domain; everything else runs direct.
Only algorithms whose declared workspace fits the memory limit are considered.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import registry
from .workspace import max_workspace_bytes

FFT_MIN_TAPS = 49  # kh*kw from which FFT beat direct on the kernel-size sweep (7x7 and up)


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
    return [("direct", f"{spec.kh}x{spec.kw} kernel: too few taps for FFT or GEMM to pay off")]


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
