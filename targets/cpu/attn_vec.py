"""The few 8-lane float operations the attention kernel needs beyond simd.py's: broadcast,
multiply-add, half loads, and a lane sum in one fixed order.

Multiplies and adds carry only `contract` (they fuse into FMAs where the target has them, but
are never reordered), and the lane sum is an explicit tree, so a score or an output value is the
same bits whichever kernel variant (tile size, thread) computed it.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .simd import F32X8

_I16, _I32, _F32 = ir.IntType(16), ir.IntType(32), ir.FloatType()
_F32X8 = ir.VectorType(_F32, 8)
_CONTRACT = ("contract",)


@intrinsic
def f8_splat(typingctx, x):
    """x in all eight lanes."""
    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        undef = ir.Constant(_F32X8, ir.Undefined)
        one = builder.insert_element(undef, v, ir.Constant(_I32, 0))
        return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))
    return F32X8(x), codegen


@intrinsic
def f8_madd(typingctx, acc, a, b):
    """acc + a * b (one FMA where the target has it)."""
    if acc != F32X8 or a != F32X8 or b != F32X8:
        return None

    def codegen(context, builder, sig, args):
        acc, a, b = args
        return builder.fadd(acc, builder.fmul(a, b, flags=_CONTRACT), flags=_CONTRACT)
    return F32X8(F32X8, F32X8, F32X8), codegen


@intrinsic
def f8_add(typingctx, a, b):
    if a != F32X8 or b != F32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return F32X8(F32X8, F32X8), codegen


@intrinsic
def f8_hsum(typingctx, v):
    """Sum of the lanes as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)): one order everywhere."""
    if v != F32X8:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        undef = ir.Constant(_F32X8, ir.Undefined)

        def half(x, idx):
            return builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(_I32, len(idx)),
                                                                idx))
        x4 = builder.fadd(half(v, [0, 1, 2, 3]), half(v, [4, 5, 6, 7]))
        u4 = ir.Constant(ir.VectorType(_F32, 4), ir.Undefined)
        x2 = builder.fadd(builder.shuffle_vector(x4, u4, ir.Constant(ir.VectorType(_I32, 2),
                                                                     [0, 1])),
                          builder.shuffle_vector(x4, u4, ir.Constant(ir.VectorType(_I32, 2),
                                                                     [2, 3])))
        return builder.fadd(builder.extract_element(x2, ir.Constant(_I32, 0)),
                            builder.extract_element(x2, ir.Constant(_I32, 1)))
    return types.float32(F32X8), codegen


@intrinsic
def f8_load_h(typingctx, addr):
    """Eight IEEE halves from any address, widened to float32 (vcvtph2ps with F16C)."""
    def codegen(context, builder, sig, args):
        ty = ir.VectorType(_I16, 8)
        ld = builder.load(builder.inttoptr(args[0], ir.PointerType(ty)))
        ld.align = 1
        return builder.fpext(builder.bitcast(ld, ir.VectorType(ir.HalfType(), 8)), _F32X8)
    return F32X8(types.int64), codegen


@intrinsic
def addr_of(typingctx, ptr):
    """The address of a stack buffer (stack_f32), for the address-taking loads."""
    if not isinstance(ptr, types.CPointer):
        return None

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], ir.IntType(64))
    return types.int64(ptr), codegen
