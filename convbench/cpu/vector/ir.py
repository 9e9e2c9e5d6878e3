"""What the hand-vectorised kernels share: the vector target they are compiled for, the
binding of an intrinsic's arguments by name, and the LLVM IR plumbing of a Numba intrinsic that
reads and writes flat arrays.

Numba's own loops are vectorised by LLVM when LLVM can prove the accesses independent; the few
kernels whose values must stay in registers across a whole reduction, or whose many loads and
stores defeat that proof, are emitted as vector IR directly. Their width is the one of the
target Numba compiles for (``convbench.target``: 64-byte vectors on AVX-512, 32 on AVX2, 16
on SSE and NEON), so a cached kernel never holds vectors its machine lacks.

Each intrinsic is written with :func:`vector_intrinsic`: its typing function names its
parameters, and its code generator reads them by those names (:class:`Arguments`), so adding
a parameter cannot silently shift the others.
"""
from __future__ import annotations

import functools
import inspect

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.numpy_support import as_dtype

from ...target import vector_target

I64 = ir.IntType(64)
TARGET = vector_target()


class Arguments:
    """An intrinsic's arguments inside its code generator, by the parameter names of its
    typing function: integers as i64, element pointers into flat arrays, scalars cast to an
    array's element type; ``context`` and ``builder`` are Numba's."""

    def __init__(self, context, builder, signature, args, names: tuple[str, ...]):
        self.context, self.builder = context, builder
        self._args = {name: (ty, value) for name, ty, value in zip(names, signature.args, args)}

    def type(self, name: str):
        return self._args[name][0]

    def int(self, name: str):
        """An integer argument as i64."""
        ty, value = self._args[name]
        return self.context.cast(self.builder, value, ty, types.int64)

    def ints(self, *names: str) -> list:
        return [self.int(name) for name in names]

    def data(self, array: str):
        """The data pointer of an array argument."""
        ty, value = self._args[array]
        return self.context.make_array(ty)(self.context, self.builder, value).data

    def at(self, array: str, offset: str | None = None):
        """Pointer to element ``offset`` (an integer argument's name; None: the first) of a
        flat array argument."""
        index = self.int(offset) if offset is not None else const(0)
        return self.builder.gep(self.data(array), [index])

    def scalar(self, name: str, like: str):
        """A scalar argument cast to the element type of the array argument ``like``."""
        ty, value = self._args[name]
        return self.context.cast(self.builder, value, ty, self.type(like).dtype)

    def element(self, array: str):
        """The LLVM element type of an array argument."""
        return self.context.get_data_type(self.type(array).dtype)

    def vector(self, array: str) -> ir.VectorType:
        """One target vector of the array argument's element type."""
        return ir.VectorType(self.element(array), lanes(self.type(array)))


def vector_intrinsic(typer):
    """``numba.extending.intrinsic`` with arguments bound by name: ``typer(typingctx, ...)``
    returns None (these types are not taken) or ``(signature, emit)``, and ``emit(args)``
    writes the IR with ``args`` an :class:`Arguments` of the typer's own parameter names; what
    it returns (nothing for a void intrinsic) is the result."""
    names = tuple(inspect.signature(typer).parameters)[1:]

    @functools.wraps(typer)  # Numba reads the parameters through __wrapped__
    def typing(typingctx, *tys):
        found = typer(typingctx, *tys)
        if found is None:
            return None
        signature, emit = found

        def codegen(context, builder, sig, args):
            value = emit(Arguments(context, builder, sig, args, names))
            return context.get_dummy_value() if value is None else value

        return signature, codegen

    return intrinsic(typing)


def is_float_array(ty) -> bool:
    """A flat float32/float64 array: what the intrinsics take."""
    return isinstance(ty, types.Array) and ty.dtype in (types.float32, types.float64)


def bits(ty) -> int:
    return 32 if ty.dtype == types.float32 else 64


def lanes(ty) -> int:
    """Elements of the array's type in one target vector."""
    return TARGET.lanes(as_dtype(ty.dtype))


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
