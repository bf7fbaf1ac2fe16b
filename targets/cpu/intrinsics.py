"""Low-level helpers for numba kernels: raw pointers from integer addresses, float16/bfloat16
widening, and atomics for the in-kernel barrier. Each emits a few LLVM instructions, the same
on x86-64 and AArch64 (half conversions are fcvt there; libc calls are glibc's on both) except
the cycle counter."""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import late
from .host import codegen_arch

_I64 = ir.IntType(64)


def _ptr_intrinsic(nb_type, ll_type):
    @intrinsic
    def as_ptr(typingctx, addr):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], ir.PointerType(ll_type))
        return types.CPointer(nb_type)(types.int64), codegen
    return as_ptr


ptr_f32 = _ptr_intrinsic(types.float32, ir.FloatType())
ptr_u16 = _ptr_intrinsic(types.uint16, ir.IntType(16))
ptr_i32 = _ptr_intrinsic(types.int32, ir.IntType(32))
# Byte views for quantized blocks (packed nibbles, int8 quants, 6-bit scales).
ptr_u8 = _ptr_intrinsic(types.uint8, ir.IntType(8))
ptr_i8 = _ptr_intrinsic(types.int8, ir.IntType(8))


@intrinsic
def half_to_f32(typingctx, bits):
    """IEEE half in a uint16 -> float32 (vcvtph2ps on x86 with F16C)."""
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def f32_to_half(typingctx, value):
    """float32 -> IEEE half bits in a uint16, rounded to nearest even (vcvtps2ph with F16C)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def bf16_to_f32(typingctx, bits):
    """bfloat16 in a uint16 -> float32: the bits are the top half of an f32."""
    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic(prefer_literal=True)
def stack_f32(typingctx, count):
    """A 64-byte aligned float32 buffer of `count` (a constant) in the calling function's stack
    frame. Unlike memory reached from an integer address, LLVM knows nothing else points into
    it, so it can reorder and vectorise stores to it around loads from other memory.
    """
    if not isinstance(count, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        buf = cgutils.alloca_once(builder, ir.FloatType(), size=count.literal_value)
        buf.align = 64  # a cache line: vector accesses never straddle two
        return buf
    return types.CPointer(types.float32)(count), codegen


@intrinsic
def opaque(typingctx, value):
    """`value` (an int64), hidden from LLVM by an empty inline asm: a loop counted by it stays a
    loop (for the loop vectoriser) instead of being unrolled flat when the count is a constant."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_I64, [_I64])
        return builder.asm(fnty, "", "=r,0", [args[0]], side_effect=False)
    return types.int64(types.int64), codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of an int64 (e8m0 power-of-two scales)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
    return types.float32(types.int64), codegen


@intrinsic
def prefetch(typingctx, addr):
    """Ask for the cache line at addr ahead of its use (a read, kept in all cache levels)."""
    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch")
        builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(types.int64), codegen


@intrinsic
def exp2_int(typingctx, nf):
    """2**nf for a float32 nf holding an integer in [-126, 127], built from the exponent bits in
    32-bit lanes (so a loop around it vectorises without 64-bit conversions)."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.float32), codegen


@intrinsic
def atomic_add(typingctx, addr, value):
    def codegen(context, builder, sig, args):
        p = builder.inttoptr(args[0], ir.PointerType(_I64))
        return builder.atomic_rmw("add", p, args[1], "seq_cst")
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def atomic_load(typingctx, addr):
    def codegen(context, builder, sig, args):
        p = builder.inttoptr(args[0], ir.PointerType(_I64))
        return builder.load_atomic(p, "seq_cst", 8)
    return types.int64(types.int64), codegen


@intrinsic
def atomic_store(typingctx, addr, value):
    def codegen(context, builder, sig, args):
        p = builder.inttoptr(args[0], ir.PointerType(_I64))
        builder.store_atomic(args[1], p, "seq_cst", 8)
        return context.get_dummy_value()
    return types.none(types.int64, types.int64), codegen


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (rdtsc on x86): for profile builds only. AArch64's cycle
    counter (PMCCNTR_EL0, what llvm.readcyclecounter reads) traps in user space unless the
    kernel allows it, so there the generic timer's virtual count (CNTVCT_EL0) stands in."""
    def codegen(context, builder, sig, args):
        if codegen_arch() == "aarch64":
            return late.call(builder, "ingot_a64_cntvct", ir.FunctionType(_I64, []), [])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(error_model="numpy", _nrt=False)
def stamp(sync, k, tid):
    """Profile builds: thread 0 records the cycle counter in slot k after the k-th barrier."""
    if tid == 0:
        ptr = sync + 64 + 8 * k
        atomic_store(ptr, cycles())


sched_yield = types.ExternalFunction("sched_yield", types.int32())
# madvise(addr, length, advice) and write(fd, buf, count): addresses travel as int64 (the same
# register as a pointer).
madvise = types.ExternalFunction("madvise", types.int32(types.int64, types.int64, types.int32))
write = types.ExternalFunction("write", types.int64(types.int32, types.int64, types.int64))
MADV_DONTNEED = 4


@njit(error_model="numpy", _nrt=False)
def unit_enter(ctl, k, nunits, tid):
    """A step reaches an offload unit: thread 0 asks the runtime's read-ahead thread for the
    next unit `k` when it is streamed (control word 0). The signal words after the control
    words are [eventfd, wanted unit, 1]: the unit goes into `wanted`, the eventfd wakes the
    thread (so the reading happens off the compute threads)."""
    if tid == 0 and atomic_load(ctl + 8 * k) == 0:
        sig = ctl + 8 * nunits
        atomic_store(sig + 8, k)
        efd = atomic_load(sig)
        if efd > 0:
            write(efd, sig + 16, 8)


@njit(error_model="numpy", _nrt=False)
def unit_leave(ctl, k, nunits, wb, off, nbytes, tid):
    """Every thread is past unit `k`: thread 0 drops its pages when it is streamed (control
    word 0, or 2: streamed without read-ahead) and stops a read-ahead of it still under way,
    so at most two streamed units (this one and the next) are resident."""
    if tid == 0 and atomic_load(ctl + 8 * k) != 1:
        sig = ctl + 8 * nunits
        if atomic_load(sig + 8) == k:
            atomic_store(sig + 8, -1)
        madvise(wb + off, nbytes, MADV_DONTNEED)


@njit(error_model="numpy", _nrt=False)
def barrier(sync, nth):
    """Sense-reversing barrier over two int64 words at `sync`: [arrived, generation].

    Threads spin on the generation word; after a while they yield so that more threads than
    cores still make progress.
    """
    if nth <= 1:
        return
    gen = atomic_load(sync + 8)
    if atomic_add(sync, 1) == nth - 1:
        atomic_store(sync, 0)
        atomic_add(sync + 8, 1)
    else:
        spins = 0
        while atomic_load(sync + 8) == gen:
            spins += 1
            if spins > 20000:
                sched_yield()


@intrinsic
def stack_addr(typingctx, nbytes):
    """The int64 address of a 64-byte aligned buffer of `nbytes` (a constant) in the calling
    function's stack frame: per-call memory for values that a loop keeps between iterations."""
    if not isinstance(nbytes, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        buf = cgutils.alloca_once(builder, ir.IntType(8), size=nbytes.literal_value)
        buf.align = 64
        return builder.ptrtoint(buf, ir.IntType(64))
    return types.int64(nbytes), codegen
