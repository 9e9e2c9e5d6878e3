"""What the hand-vectorised kernels (``microkernel``, ``winograd_tiles``) share: the host's
vector width and the LLVM IR plumbing of a Numba intrinsic that reads and writes flat arrays.

Numba's own loops are vectorised by LLVM when LLVM can prove the accesses independent; the few
kernels whose values must stay in registers across a whole reduction, or whose many loads and
stores defeat that proof, are emitted as vector IR directly. Widths follow Numba's target
(AVX-512: 64-byte vectors, else 32); LLVM splits wider vectors on a narrower machine, so the
code stays correct anywhere.
"""
from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba.core import cgutils, types
from numba.core import config as numba_config

I64 = ir.IntType(64)


def _target_has_avx512() -> bool:
    """Whether the code Numba emits may use AVX-512: its target is the host unless
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name another (a portable cache, a CI image); a named
    CPU without a feature list is taken as lacking it (32-byte vectors run correctly
    anywhere). Numba keys its cache on the same two settings, so a cached kernel never has
    another width."""
    if numba_config.CPU_FEATURES is not None:
        return "+avx512f" in numba_config.CPU_FEATURES.split(",")
    if numba_config.CPU_NAME is not None:
        return False
    return bool(llvm_binding.get_host_cpu_features().get("avx512f", False))


VECTOR_BYTES = 64 if _target_has_avx512() else 32


def is_float_array(ty) -> bool:
    """A flat float32/float64 array: what the intrinsics take."""
    return isinstance(ty, types.Array) and ty.dtype in (types.float32, types.float64)


def bits(ty) -> int:
    return 32 if ty.dtype == types.float32 else 64


def lanes(ty) -> int:
    """Elements of the array's type in one host vector."""
    return VECTOR_BYTES * 8 // bits(ty)


def int64(context, builder, value, ty):
    """An integer argument as i64."""
    return context.cast(builder, value, ty, types.int64)


def data_at(context, builder, ty, value, offset):
    """Pointer to element ``offset`` of the flat array ``value``."""
    return builder.gep(context.make_array(ty)(context, builder, value).data, [offset])


def const(value: int):
    return ir.Constant(I64, value)


def muladd(builder, vtype, elem_bits: int):
    """llvm.fmuladd for this scalar or vector type (fused where the machine has FMA)."""
    if isinstance(vtype, ir.VectorType):
        name = f"llvm.fmuladd.v{vtype.count}f{elem_bits}"
    else:
        name = f"llvm.fmuladd.f{elem_bits}"
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vtype, [vtype, vtype, vtype]), name)


def load(builder, vtype, pointer, elem_bits: int):
    """Load a scalar or an unaligned vector at ``pointer`` (an element pointer)."""
    if isinstance(vtype, ir.VectorType):
        pointer = builder.bitcast(pointer, vtype.as_pointer())
    return builder.load(pointer, align=elem_bits // 8)


def store(builder, value, pointer, elem_bits: int):
    if isinstance(value.type, ir.VectorType):
        pointer = builder.bitcast(pointer, value.type.as_pointer())
    builder.store(value, pointer, align=elem_bits // 8)


def splat(builder, scalar, vtype):
    """A vector of ``scalar`` in every lane."""
    undef = ir.Constant(vtype, ir.Undefined)
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vtype.count), None)
    return builder.shuffle_vector(
        builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0)), undef, mask)


def transpose(builder, vectors: list) -> list:
    """The n vectors of n lanes transposed in registers (lane j of vector i becomes lane i of
    vector j): log2(n) butterfly stages, each swapping the off-diagonal step x step blocks of
    every pair of vectors ``step`` apart (n shuffles per stage)."""
    vectors = list(vectors)
    count = len(vectors)
    mask_type = ir.VectorType(ir.IntType(32), count)
    step = count // 2
    while step:
        for i in range(count):
            if i & step:
                continue
            low, high = vectors[i], vectors[i + step]
            vectors[i] = builder.shuffle_vector(low, high, ir.Constant(
                mask_type, [j if not j & step else count + j - step for j in range(count)]))
            vectors[i + step] = builder.shuffle_vector(low, high, ir.Constant(
                mask_type, [j + step if not j & step else count + j for j in range(count)]))
        step //= 2
    return vectors
