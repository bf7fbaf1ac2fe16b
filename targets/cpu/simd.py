"""Vector values for numba kernels: 32 bytes, 8 int32 and 8 float32 lanes as LLVM vectors.

numba has no vector types, and its integers are int64, so byte-level unpacking and int8 dot
products do not vectorise from scalar code. These types and intrinsics let a kernel say what
it means once (load 32 bytes, mask nibbles, dot with 32 int8 activations, scale into a float
accumulator); each intrinsic emits portable LLVM vector IR, except the int8 dot, which uses the
target's byte multiply-add where it has one (AVX2 `vpmaddubsw`, VNNI `vpdpbusd`,
AArch64 `sdot`) and plain
widening multiplies elsewhere. The choice follows the target being compiled for
(host.codegen_features), not the machine running the compiler. A kernel's values never leave
registers: the types are LLVM first-class vectors.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.extending import intrinsic, register_model

from . import late
from .host import codegen_arch, codegen_features

_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_B32 = ir.VectorType(_I8, 32)
_I32X8 = ir.VectorType(_I32, 8)
_F32X8 = ir.VectorType(_F32, 8)


class _Vec(types.Type):
    def __init__(self, name, lltype):
        self.lltype = lltype
        super().__init__(name=name)


class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.lltype)


B32 = _Vec("b32", _B32)        # 32 bytes; signed or unsigned as the op that reads them says
I32X8 = _Vec("i32x8", _I32X8)  # int32 partial dot products
F32X8 = _Vec("f32x8", _F32X8)  # float accumulators
for _t in (B32, I32X8, F32X8):
    register_model(type(_t))(_VecModel)


def _splat(builder, value, vtype):
    undef = ir.Constant(vtype, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, vtype.count),
                                                          [0] * vtype.count))


def _bytes_const(v):
    return ir.Constant(_B32, [v & 0xFF] * 32)


def _ptr(builder, addr, vtype):
    return builder.inttoptr(addr, ir.PointerType(vtype))


def _load(builder, addr, vtype):
    ld = builder.load(_ptr(builder, addr, vtype))
    ld.align = 1
    return ld


# --- bytes ---

@intrinsic
def b32_load(typingctx, addr):
    """32 bytes from any address."""
    def codegen(context, builder, sig, args):
        return _load(builder, args[0], _B32)
    return B32(types.int64), codegen


@intrinsic
def b32_nibbles16(typingctx, addr):
    """The 32 nibbles of 16 bytes: low nibbles first, then high nibbles (q4_0's value order)."""
    def codegen(context, builder, sig, args):
        v = _load(builder, args[0], ir.VectorType(_I8, 16))
        both = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 32),
                                                        list(range(16)) * 2))
        lo = builder.and_(both, _bytes_const(15))
        hi = builder.lshr(both, _bytes_const(4))
        mask = ir.Constant(ir.VectorType(_I32, 32), list(range(16)) + list(range(48, 64)))
        return builder.shuffle_vector(lo, hi, mask)
    return B32(types.int64), codegen


@intrinsic
def b32_bits(typingctx, addr):
    """Bit j of the little-endian uint32 at addr as byte j (0 or 1): q5's fifth bits. Each
    output byte takes the input byte holding its bit (a byte shuffle), masks its bit and
    compares: three vector instructions where a <32 x i1> bitcast goes bit by bit."""
    def codegen(context, builder, sig, args):
        src = _load(builder, args[0], ir.VectorType(_I8, 4))
        spread = builder.shuffle_vector(src, src, ir.Constant(ir.VectorType(_I32, 32),
                                                              [j // 8 for j in range(32)]))
        bit = ir.Constant(_B32, [1 << (j % 8) for j in range(32)])
        hit = builder.icmp_unsigned("!=", builder.and_(spread, bit), _bytes_const(0))
        return builder.zext(hit, _B32)
    return B32(types.int64), codegen


def _b32_binop(name):
    @intrinsic
    def op(typingctx, a, b):
        if a != B32 or b != B32:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, name)(args[0], args[1])
        return B32(B32, B32), codegen
    return op


b32_or = _b32_binop("or_")


def _b32_imm(name):
    @intrinsic
    def op(typingctx, a, k):
        """Per byte, with the same k in every lane; k is an integer that is constant once the
        caller is inlined and its loops unrolled (LLVM then folds it into the instruction)."""
        if a != B32 or not isinstance(k, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            kb = builder.trunc(args[1], _I8)
            return getattr(builder, name)(args[0], _splat(builder, kb, _B32))
        return B32(B32, k), codegen
    return op


b32_and = _b32_imm("and_")    # a & k
b32_shr = _b32_imm("lshr")    # a >> k (logical, per byte)
b32_shl = _b32_imm("shl")     # a << k (per byte)


# --- int8 dot products: 32 bytes of weights against 32 int8 activations at an address ---

def _avx2(name, ret, *argtys):
    def emit(builder, *args):
        mod = builder.module
        fn = cgutils.get_or_insert_function(mod, ir.FunctionType(ret, argtys), name)
        return builder.call(fn, args)
    return emit


_maddubs = _avx2("llvm.x86.avx2.pmadd.ub.sw", ir.VectorType(_I16, 16), _B32, _B32)
_madd = _avx2("llvm.x86.avx2.pmadd.wd", _I32X8, ir.VectorType(_I16, 16), ir.VectorType(_I16, 16))
_sign = _avx2("llvm.x86.avx2.psign.b", _B32, _B32, _B32)


def _pairs_to_i32x8(builder, prod16):
    """<32 x i16> products -> <8 x i32>: lane m sums products 4m..4m+3."""
    wide = builder.sext(prod16, ir.VectorType(_I32, 32))
    parts = []
    for q in range(4):
        idx = ir.Constant(ir.VectorType(_I32, 8), [4 * m + q for m in range(8)])
        parts.append(builder.shuffle_vector(wide, wide, idx))
    return builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))


def _sdot(builder, w, x):
    """AArch64 dotprod: per 16-byte half, `sdot` sums four signed byte products into each i32
    lane (lane m: bytes 4m..4m+3), exactly the lanes of dot_u8/dot_i8."""
    v16, v4 = ir.VectorType(_I8, 16), ir.VectorType(_I32, 4)
    zero = ir.Constant(v4, [0] * 4)
    halves = []
    for h in range(2):
        idx = ir.Constant(ir.VectorType(_I32, 16), list(range(16 * h, 16 * h + 16)))
        halves.append(late.call(builder, "ingot_a64_sdot", ir.FunctionType(v4, [v4, v16, v16]),
                                [zero, builder.shuffle_vector(w, w, idx),
                                 builder.shuffle_vector(x, x, idx)]))
    return builder.shuffle_vector(halves[0], halves[1], ir.Constant(_I32X8, list(range(8))))


def _vpdpbusd(builder, w, x):
    """x86 VNNI: `vpdpbusd` sums four unsigned x signed byte products into each i32 lane, in
    int32 (no vpmaddubsw int16 step). Called directly, not late: the process compiling it
    always runs on x86 with these features (the host, or a cross build whose numba CPU is
    the target's), so numba's own JIT can select it."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32X8, [_I32X8] * 3), "llvm.x86.avx512.vpdpbusd.256")
    return builder.call(fn, [ir.Constant(_I32X8, [0] * 8), builder.bitcast(w, _I32X8),
                             builder.bitcast(x, _I32X8)])


def _dot_kind():
    feats = codegen_features()
    if codegen_arch() == "aarch64":
        return "sdot" if "dotprod" in feats else "portable"
    if "avxvnni" in feats or {"avx512vnni", "avx512vl"} <= feats:
        return "vnni"
    return "avx2" if "avx2" in feats else "portable"


def _dot(signed_weights, broadcast=False):
    def codegen(context, builder, sig, args):
        w, xaddr = args
        if broadcast:
            x = _bcast(builder, xaddr)
        else:
            x = _load(builder, xaddr, _B32)
        kind = _dot_kind()
        if kind in ("avx2", "vnni"):
            if signed_weights:  # |w| * (x with w's sign): both want unsigned * signed bytes
                x = _sign(builder, x, w)
                w = _sign(builder, w, w)
            if kind == "vnni":
                return _vpdpbusd(builder, w, x)
            ones = ir.Constant(ir.VectorType(_I16, 16), [1] * 16)
            return _madd(builder, _maddubs(builder, w, x), ones)
        if kind == "sdot":  # unsigned weights are below 128: the same bytes read as signed
            return _sdot(builder, w, x)
        v16 = ir.VectorType(_I16, 32)
        wide_w = builder.sext(w, v16) if signed_weights else builder.zext(w, v16)
        return _pairs_to_i32x8(builder, builder.mul(wide_w, builder.sext(x, v16)))
    return codegen


@intrinsic
def dot_u8(typingctx, w, xaddr):
    """Unsigned weight bytes (each < 128) . int8 activations: lane m sums bytes 4m..4m+3.
    The byte products pair up in int16 without saturating while weights stay below 128 and
    activations within +-127."""
    if w != B32:
        return None
    return I32X8(B32, types.int64), _dot(False)


@intrinsic
def dot_u8_bcast(typingctx, w, xaddr):
    """Unsigned weight bytes (each < 128) . the four int8 activations at xaddr, repeated in
    every lane: lane m sums bytes 4m..4m+3 against them (interleaved rows, one row a lane)."""
    if w != B32:
        return None
    return I32X8(B32, types.int64), _dot(False, broadcast=True)


@intrinsic
def dot_i8_bcast(typingctx, w, xaddr):
    """Signed weight bytes . the four int8 activations at xaddr in every lane (dot_u8_bcast)."""
    if w != B32:
        return None
    return I32X8(B32, types.int64), _dot(True, broadcast=True)


def _bcast(builder, xaddr):
    """The four int8 activations at xaddr, the same in every 32-bit lane."""
    return builder.bitcast(_splat(builder, _load(builder, xaddr, _I32), _I32X8), _B32)


def _dot_sum_bcast(n):
    """sum_i dot_u8_bcast(w_i, xaddr + 4 i) for n unsigned weight vectors, in one reduction:
    on AVX2 the n byte products are added as int16 before the one `vpmaddwd` (n - 1 fewer
    widening steps), VNNI and sdot accumulate in place. The caller bounds the codes so the
    int16 sums stay exact: n * 2 * max_code * 127 < 32768."""
    def codegen(context, builder, sig, args):
        *ws, xaddr = args
        xs = [_bcast(builder, builder.add(xaddr, ir.Constant(ir.IntType(64), 4 * i)))
              for i in range(n)]
        kind = _dot_kind()
        if kind == "avx2":
            s16 = _maddubs(builder, ws[0], xs[0])
            for w, x in zip(ws[1:], xs[1:]):
                s16 = builder.add(s16, _maddubs(builder, w, x))
            return _madd(builder, s16, ir.Constant(ir.VectorType(_I16, 16), [1] * 16))
        if kind == "vnni":
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_I32X8, [_I32X8] * 3),
                "llvm.x86.avx512.vpdpbusd.256")
            acc = ir.Constant(_I32X8, [0] * 8)
            for w, x in zip(ws, xs):
                acc = builder.call(fn, [acc, builder.bitcast(w, _I32X8), builder.bitcast(x, _I32X8)])
            return acc
        dots = [(_sdot(builder, w, x) if kind == "sdot" else
                 _pairs_to_i32x8(builder, builder.mul(builder.zext(w, ir.VectorType(_I16, 32)),
                                                      builder.sext(x, ir.VectorType(_I16, 32)))))
                for w, x in zip(ws, xs)]
        acc = dots[0]
        for d in dots[1:]:
            acc = builder.add(acc, d)
        return acc
    return codegen


@intrinsic
def dot2_u8_bcast(typingctx, w0, w1, xaddr):
    """dot_u8_bcast(w_i, xaddr + 4 i) summed over two vectors of codes below 64 (q6_k)."""
    if w0 != B32 or w1 != B32:
        return None
    return I32X8(B32, B32, types.int64), _dot_sum_bcast(2)


@intrinsic
def dot4_u8_bcast(typingctx, w0, w1, w2, w3, xaddr):
    """dot_u8_bcast(w_i, xaddr + 4 i) summed over four vectors of codes below 32 (q5)."""
    if any(w != B32 for w in (w0, w1, w2, w3)):
        return None
    return I32X8(B32, B32, B32, B32, types.int64), _dot_sum_bcast(4)


@intrinsic
def dot8_u8_bcast(typingctx, w0, w1, w2, w3, w4, w5, w6, w7, xaddr):
    """dot_u8_bcast(w_i, xaddr + 4 i) summed over eight vectors of codes below 16 (q4)."""
    if any(w != B32 for w in (w0, w1, w2, w3, w4, w5, w6, w7)):
        return None
    return I32X8(*([B32] * 8), types.int64), _dot_sum_bcast(8)


@intrinsic
def dot_i8(typingctx, w, xaddr):
    """Signed weight bytes . int8 activations (activations within +-127), lanes as dot_u8."""
    if w != B32:
        return None
    return I32X8(B32, types.int64), _dot(True)


# --- float accumulators ---

@intrinsic
def f8_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_F32X8, [0.0] * 8)
    return F32X8(), codegen


@intrinsic
def f8_sum(typingctx, acc):
    """The sum of the 8 lanes in a fixed order: the two halves, then pairs, then the last two
    (x86's usual reduction), so that every ISA gives the same bits (a reassociable reduction
    is summed in each backend's own order)."""
    if acc != F32X8:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]

        def lanes(x, idx):
            return builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, len(idx)), idx))
        four = builder.fadd(lanes(v, [0, 1, 2, 3]), lanes(v, [4, 5, 6, 7]))
        two = builder.fadd(lanes(four, [0, 1]), lanes(four, [2, 3]))
        return builder.fadd(builder.extract_element(two, ir.Constant(_I32, 0)),
                            builder.extract_element(two, ir.Constant(_I32, 1)))
    return types.float32(F32X8), codegen


# --- four pieces at a time: half sums reduced into lanes, scaled by one vector ---
# (multiplies and adds carry only `contract`: they fuse into FMAs but are never reordered, so
# a token's result is the same bits in every kernel that runs these steps in this order)

_CONTRACT = ("contract",)


def _hsum_pairs(builder, a, b, lo, hi):
    """Per 128-bit half: lanes `lo` of (a, b) plus lanes `hi` of (a, b)."""
    ty = ir.VectorType(_I32, 8)
    return builder.add(builder.shuffle_vector(a, b, ir.Constant(ty, lo)),
                       builder.shuffle_vector(a, b, ir.Constant(ty, hi)))


@intrinsic
def i8_quad(typingctx, d0, d1, d2, d3):
    """Four pieces' dot lanes -> [lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3]: lo_k sums piece k's
    lanes 0..3 (its first 16 codes), hi_k lanes 4..7. Exact (int32)."""
    if not all(d == I32X8 for d in (d0, d1, d2, d3)):
        return None

    def codegen(context, builder, sig, args):
        a, b, c, d = args
        # [a0+a2, a1+a3, b0+b2, b1+b3 | a4+a6, a5+a7, b4+b6, b5+b7], then the same for c, d
        lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        ab = _hsum_pairs(builder, a, b, lo, hi)
        cd = _hsum_pairs(builder, c, d, lo, hi)
        return _hsum_pairs(builder, ab, cd, [0, 2, 8, 10, 4, 6, 12, 14],
                           [1, 3, 9, 11, 5, 7, 13, 15])
    return I32X8(I32X8, I32X8, I32X8, I32X8), codegen


@intrinsic
def f8_set(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """Eight scalars as lanes 0..7."""
    def codegen(context, builder, sig, args):
        v = ir.Constant(_F32X8, ir.Undefined)
        for lane, (x, ty) in enumerate(zip(args, sig.args)):
            v = builder.insert_element(v, context.cast(builder, x, ty, types.float32),
                                       ir.Constant(_I32, lane))
        return v
    return F32X8(a0, a1, a2, a3, a4, a5, a6, a7), codegen


@intrinsic
def f8_halves4x2(typingctx, a0, a1, a2, a3):
    """The IEEE halves at four addresses, twice: [h0, h1, h2, h3, h0, h1, h2, h3] as floats.
    One vector conversion (vcvtph2ps) for a quad's four block scales, where four scalar
    conversions and lane inserts cost about three times the instructions."""
    def codegen(context, builder, sig, args):
        i16x4 = ir.VectorType(_I16, 4)
        v = ir.Constant(i16x4, ir.Undefined)
        for lane, addr in enumerate(args):
            ld = builder.load(_ptr(builder, addr, _I16))
            ld.align = 1
            v = builder.insert_element(v, ld, ir.Constant(_I32, lane))
        f = builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), 4)),
                          ir.VectorType(_F32, 4))
        return builder.shuffle_vector(f, f, ir.Constant(ir.VectorType(_I32, 8),
                                                        [0, 1, 2, 3, 0, 1, 2, 3]))
    return F32X8(types.int64, types.int64, types.int64, types.int64), codegen


@intrinsic
def f8_i8_even_odd(typingctx, addr):
    """The 8 int8 at addr as floats, even bytes first: [b0, b2, b4, b6, b1, b3, b5, b7]
    (q6_k's sub-block scales in the lane order of a quad's half sums)."""
    def codegen(context, builder, sig, args):
        v = _load(builder, args[0], ir.VectorType(_I8, 8))
        v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8),
                                                     [0, 2, 4, 6, 1, 3, 5, 7]))
        return builder.sitofp(v, _F32X8)
    return F32X8(types.int64), codegen


@intrinsic
def f8_k4_scales(typingctx, addr, h):
    """q4_k/q5_k: the 6-bit scales and minima of sub-blocks 4h..4h+3 from the 12 bytes at addr
    (h 0 or 1), as floats [sc0..sc3, mn0..mn3]. Bytes 0..3 hold scales 0..3 and bytes 4..7
    minima 0..3 in their low 6 bits; bytes 8..11 the low 4 bits of scales (low nibbles) and
    minima (high nibbles) 4..7, whose top 2 bits are the top bits of bytes 0..7. Reads 16
    bytes (a block's scales are always followed by its codes)."""
    def codegen(context, builder, sig, args):
        addr, h = args
        v8, i32x8 = ir.VectorType(_I8, 8), ir.VectorType(_I32, 8)
        b = _load(builder, addr, ir.VectorType(_I8, 16))

        def pick(idx):
            return builder.shuffle_vector(b, b, ir.Constant(i32x8, idx))

        def const(vals):
            return ir.Constant(v8, vals)
        first = builder.and_(pick(list(range(8))), const([63] * 8))
        low = builder.and_(builder.lshr(pick([8, 9, 10, 11] * 2), const([0] * 4 + [4] * 4)),
                           const([15] * 8))
        top = builder.shl(builder.lshr(pick(list(range(8))), const([6] * 8)), const([4] * 8))
        second = builder.or_(low, top)
        v = builder.select(builder.icmp_signed("==", h, ir.Constant(h.type, 0)), first, second)
        return builder.uitofp(builder.zext(v, i32x8), _F32X8)
    return F32X8(types.int64, types.int64), codegen


def _f8_four_twice(first):
    """Lanes first..first + 3 of a float vector, twice."""
    @intrinsic
    def op(typingctx, a):
        if a != F32X8:
            return None

        def codegen(context, builder, sig, args):
            idx = list(range(first, first + 4)) * 2
            return builder.shuffle_vector(args[0], args[0],
                                          ir.Constant(ir.VectorType(_I32, 8), idx))
        return F32X8(F32X8), codegen
    return op


f8_lo4x2 = _f8_four_twice(0)
f8_hi4x2 = _f8_four_twice(4)


@intrinsic
def f8_splat(typingctx, x):
    """One scalar in all eight lanes."""
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32),
                      _F32X8)
    return F32X8(x), codegen


@intrinsic
def f8_neg(typingctx, a):
    if a != F32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])
    return F32X8(F32X8), codegen


@intrinsic
def f8_load(typingctx, addr):
    """Eight floats from any address."""
    def codegen(context, builder, sig, args):
        return _load(builder, args[0], _F32X8)
    return F32X8(types.int64), codegen


@intrinsic
def f8_load4x2(typingctx, addr):
    """Four floats, twice: [f0, f1, f2, f3, f0, f1, f2, f3]."""
    def codegen(context, builder, sig, args):
        v = _load(builder, args[0], ir.VectorType(_F32, 4))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8),
                                                        [0, 1, 2, 3, 0, 1, 2, 3]))
    return F32X8(types.int64), codegen


@intrinsic
def f8_mul(typingctx, a, b):
    if a != F32X8 or b != F32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=_CONTRACT)
    return F32X8(F32X8, F32X8), codegen


@intrinsic
def f8_add(typingctx, a, b):
    if a != F32X8 or b != F32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=_CONTRACT)
    return F32X8(F32X8, F32X8), codegen


@intrinsic
def i8_add(typingctx, a, b):
    """Lane-wise int32 sum (exact while the lanes stay in range)."""
    if a != I32X8 or b != I32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return I32X8(I32X8, I32X8), codegen


@intrinsic
def f8_madd_i(typingctx, acc, ints, scale):
    """acc + float(ints) * scale."""
    if acc != F32X8 or ints != I32X8 or scale != F32X8:
        return None

    def codegen(context, builder, sig, args):
        acc, ints, scale = args
        prod = builder.fmul(builder.sitofp(ints, _F32X8), scale, flags=_CONTRACT)
        return builder.fadd(acc, prod, flags=_CONTRACT)
    return F32X8(F32X8, I32X8, F32X8), codegen


@intrinsic
def f8_msub(typingctx, acc, a, b):
    """acc - a * b."""
    if acc != F32X8 or a != F32X8 or b != F32X8:
        return None

    def codegen(context, builder, sig, args):
        acc, a, b = args
        return builder.fsub(acc, builder.fmul(a, b, flags=_CONTRACT), flags=_CONTRACT)
    return F32X8(F32X8, F32X8, F32X8), codegen


@intrinsic
def b32_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_B32, [0] * 32)
    return B32(), codegen


def _store(nbtype, lltype, what):
    @intrinsic
    def store(typingctx, addr, v):
        if v != nbtype:
            return None

        def codegen(context, builder, sig, args):
            st = builder.store(args[1], _ptr(builder, args[0], lltype))
            st.align = 1
            return context.get_dummy_value()
        return types.none(types.int64, nbtype), codegen
    store.__doc__ = f"Store {what} at any address."
    return store


f8_store = _store(F32X8, _F32X8, "eight floats")


@intrinsic
def f8_halves4x2_at(typingctx, addr):
    """Four IEEE halves side by side at addr, twice, as floats (a repacked quad's scales)."""
    def codegen(context, builder, sig, args):
        f = builder.fpext(_load(builder, args[0], ir.VectorType(ir.HalfType(), 4)),
                          ir.VectorType(_F32, 4))
        return builder.shuffle_vector(f, f, ir.Constant(ir.VectorType(_I32, 8),
                                                        [0, 1, 2, 3, 0, 1, 2, 3]))
    return F32X8(types.int64), codegen


b32_store = _store(B32, _B32, "32 bytes")


def _i8_bytes8(signed):
    @intrinsic
    def load(typingctx, addr):
        def codegen(context, builder, sig, args):
            b = _load(builder, args[0], ir.VectorType(_I8, 8))
            return (builder.sext if signed else builder.zext)(b, _I32X8)
        return I32X8(types.int64), codegen
    return load


i8_load_u8 = _i8_bytes8(False)  # eight bytes at addr, zero-extended to int32 lanes
i8_load_s8 = _i8_bytes8(True)   # eight int8 at addr, sign-extended


@intrinsic
def i8_mul(typingctx, a, b):
    """Lane-wise int32 product (exact while the lanes stay in range)."""
    if a != I32X8 or b != I32X8:
        return None

    def codegen(context, builder, sig, args):
        return builder.mul(args[0], args[1])
    return I32X8(I32X8, I32X8), codegen


@intrinsic
def f8_halves8(typingctx, addr):
    """Eight IEEE halves at addr as floats (an interleaved block's eight row scales)."""
    def codegen(context, builder, sig, args):
        return builder.fpext(_load(builder, args[0], ir.VectorType(ir.HalfType(), 8)), _F32X8)
    return F32X8(types.int64), codegen


@intrinsic
def b32_fifths(typingctx, addr):
    """A repacked quad's 16 bytes of fifth bits (quant/repack.py) as 32 bytes whose bit k of
    byte j is block k's fifth bit of value j: the 16 bytes twice, the second copy shifted right
    by 4 (as 32-bit lanes: one variable shift; the bits it moves across bytes land above bit 3,
    which the caller masks off)."""
    def codegen(context, builder, sig, args):
        v = _load(builder, args[0], ir.VectorType(_I8, 16))
        both = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 32),
                                                        list(range(16)) * 2))
        lanes = builder.lshr(builder.bitcast(both, _I32X8),
                             ir.Constant(_I32X8, [0, 0, 0, 0, 4, 4, 4, 4]))
        return builder.bitcast(lanes, _B32)
    return B32(types.int64), codegen
