"""The vector target: what the CPU kernels are compiled for, derived once from the target Numba
itself compiles for.

Numba compiles for ``NUMBA_CPU_NAME`` (else the host's CPU) with ``NUMBA_CPU_FEATURES`` (else
the host's features, the AVX ones switched off where ``NUMBA_ENABLE_AVX`` is 0 or Numba's list
of CPUs where AVX stays off says so). Rather than second-guess what that pair means (a CPU
name alone keeps the host's features; ``-avx512f`` after a name removes one), a tiny function
of one 64-byte vector multiply-add is compiled for exactly that pair by LLVM, and its assembly
says which registers LLVM used: ``zmm`` (AVX-512: 64-byte vectors, 32 registers), ``ymm``
(AVX/AVX2: 32 bytes, 16 registers), ``xmm`` (SSE: 16 bytes, 16 registers), or on AArch64 NEON
(16 bytes, 32 registers); a fused multiply-add instruction says whether there is FMA.

Every hand-vectorised kernel reads its vector width and register budget from
:func:`vector_target`, and the machine identity names it, so calibrations, tuned picks and
baselines of an AVX2 and an AVX-512 build are never mixed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class VectorTarget:
    """The vector unit the kernels are compiled for."""

    isa: str  # "avx512", "avx2", "avx", "sse", "neon" or "scalar"
    vector_bytes: int  # bytes in one vector register
    registers: int  # vector registers
    fma: bool  # fused multiply-add instructions
    cpu: str  # the CPU name LLVM compiled for
    features: str  # the feature string it was given ("" : the CPU's own)

    def lanes(self, dtype) -> int:
        """Elements of ``dtype`` in one vector."""
        return self.vector_bytes // np.dtype(dtype).itemsize

    def label(self) -> str:
        """e.g. 'avx512 (64-byte vectors, 32 registers, FMA)'."""
        return (f"{self.isa} ({self.vector_bytes}-byte vectors, {self.registers} registers"
                f"{', FMA' if self.fma else ''})")


def numba_target() -> tuple[str, str]:
    """(CPU name, feature string) that Numba's JIT compiles for, from its own settings."""
    import llvmlite.binding as ll
    from numba.core import codegen
    from numba.core import config as numba_config

    name = numba_config.CPU_NAME or ll.get_host_cpu_name()
    features = (numba_config.CPU_FEATURES if numba_config.CPU_FEATURES is not None
                else codegen.get_host_cpu_features())  # '' where llvmlite cannot tell
    return name, features


def _probe_assembly(cpu: str, features: str) -> tuple[str, str]:
    """(triple, assembly) of one 16 x float32 multiply-add compiled for ``cpu``/``features``."""
    import llvmlite.binding as ll
    from llvmlite import ir

    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    triple = ll.get_process_triple()
    module = ir.Module("vector_target_probe")
    module.triple = triple
    vec = ir.VectorType(ir.FloatType(), 16)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [vec.as_pointer()] * 2), "probe")
    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), "llvm.fmuladd.v16f32")
    builder = ir.IRBuilder(fn.append_basic_block())
    x, y = builder.load(fn.args[0]), builder.load(fn.args[1])
    builder.store(builder.call(fma, [x, y, x]), fn.args[0])
    builder.ret_void()
    parsed = ll.parse_assembly(str(module))
    machine = ll.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features,
                                                                  opt=2)
    return triple, machine.emit_assembly(parsed)


def classify(triple: str, assembly: str, cpu: str = "", features: str = "") -> VectorTarget:
    """The target that a probe's assembly shows."""
    text = assembly.lower()
    if triple.startswith(("aarch64", "arm64")):
        fma = bool(re.search(r"\bfmla\b", text))
        return VectorTarget("neon", 16, 32, fma, cpu, features)
    fma = "vfmadd" in text or "vfmla" in text
    if "zmm" in text:
        return VectorTarget("avx512", 64, 32, fma, cpu, features)
    if "ymm" in text:
        return VectorTarget("avx2" if fma else "avx", 32, 16, fma, cpu, features)
    if "xmm" in text:
        return VectorTarget("sse", 16, 16, False, cpu, features)
    return VectorTarget("scalar", 16, 16, False, cpu, features)


@lru_cache(maxsize=1)
def vector_target() -> VectorTarget:
    """The target of this process's CPU kernels (Numba's settings are read at its import and
    fixed for the process, so this is computed once)."""
    cpu, features = numba_target()
    try:
        triple, assembly = _probe_assembly(cpu, features)
    except Exception:  # an llvmlite that cannot compile the probe: the narrowest safe guess
        return VectorTarget("scalar", 16, 16, False, cpu, features)
    return classify(triple, assembly, cpu, features)
