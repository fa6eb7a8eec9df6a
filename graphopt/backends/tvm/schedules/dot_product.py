"""The target's int8 dot-product instruction, as a TVM tensor intrinsic the integer rules tensorize with.

- x86 with AVX-512 VNNI: ``vpdpbusd`` on zmm, u8 x s8, 16 x 4
  (``graphopt_dot_16x4_vnni``), and on ymm, 8 x 4 (``graphopt_dot_8x4_vnni``,
  AVX-512VL) for output channels a multiple of 8 but not of 16;
- aarch64 with dotprod: ``sdot`` on v.4s, s8 x s8, 4 x 4 (``graphopt_dot_4x4_sdot``).

Each computes ``C[i] += sum_k A[k] * B[i, k]`` for ``lanes`` int32 outputs
``i`` and 4 reduction steps ``k``: ``A`` is 4 contiguous activation bytes
(broadcast), ``B`` a ``[lanes, 4]`` block of the packed weight, ``C``
``lanes`` contiguous accumulators. x86's instruction needs unsigned
activations: int8 activations on x86 (and uint8 ones on aarch64) take the
generic integer schedule.

The intrinsics are defined here rather than taken from
``tvm.s_tir.tensor_intrin``: importing that package registers every CUDA,
ROCm and Hexagon intrinsic too (minutes on a busy 2-core machine), and its
VNNI implementation passes ``<16 x i32>`` operands where LLVM 21 and later
declare ``llvm.x86.avx512.vpdpbusd.512`` on ``<64 x i8>`` ("Call parameter
type does not match function signature"). The descriptions are TVM's.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target
from tvm.target.codegen import llvm_get_cpu_features, llvm_version_major

# vpdpbusd's byte operands: <64 x i8> (zmm) / <32 x i8> (ymm) from LLVM 21 on, <16 x i32> / <8 x i32> before.
_VNNI_BYTES = "int8x64" if llvm_version_major() >= 21 else "int32x16"
_VNNI_BYTES_256 = "int8x32" if llvm_version_major() >= 21 else "int32x8"


def _dot_desc(lanes: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


@T.prim_func(s_tir=True)
def _vnni_16x4_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a4 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype=_VNNI_BYTES)
        b4 = T.reinterpret(B.vload([0, 0], dtype="int8x64"), dtype=_VNNI_BYTES)
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            a4,
            b4,
            dtype="int32x16",
        )


@T.prim_func(s_tir=True)
def _vnni_8x4_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a4 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype=_VNNI_BYTES_256)
        b4 = T.reinterpret(B.vload([0, 0], dtype="int8x32"), dtype=_VNNI_BYTES_256)
        C[T.ramp(T.int32(0), 1, 8)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.256"),
            C.vload([0], dtype="int32x8"),
            a4,
            b4,
            dtype="int32x8",
        )


@T.prim_func(s_tir=True)
def _sdot_4x4_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (4,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        a4 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16")
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"),
            a4,
            B.vload([0, 0], dtype="int8x16"),
            dtype="int32x4",
        )


VNNI_16x4_INTRIN = "graphopt_dot_16x4_vnni"
VNNI_8x4_INTRIN = "graphopt_dot_8x4_vnni"
SDOT_4x4_INTRIN = "graphopt_dot_4x4_sdot"
TensorIntrin.register(VNNI_16x4_INTRIN, _dot_desc(16, "uint8"), _vnni_16x4_impl, override=True)
TensorIntrin.register(VNNI_8x4_INTRIN, _dot_desc(8, "uint8"), _vnni_8x4_impl, override=True)
TensorIntrin.register(SDOT_4x4_INTRIN, _dot_desc(4, "int8"), _sdot_4x4_impl, override=True)


@dataclass(frozen=True)
class DotProduct:
    """A dot-product intrinsic: its registered name, operand dtypes, output lanes and register budget."""

    intrin: str
    data_dtype: str  # activations (A)
    weight_dtype: str  # weights (B)
    lanes: int  # int32 outputs per instruction
    accumulators: int  # accumulator registers a register tile may use
    reduce: int = 4  # products summed per output


VNNI_512 = DotProduct(VNNI_16x4_INTRIN, "uint8", "int8", 16, accumulators=24)
VNNI_256 = DotProduct(VNNI_8x4_INTRIN, "uint8", "int8", 8, accumulators=24)
ARM_SDOT = DotProduct(SDOT_4x4_INTRIN, "int8", "int8", 4, accumulators=24)


def dot_product(target: Target) -> DotProduct | None:
    """The dot-product intrinsic the target has (None: no int8 dot product known for it)."""
    if target.kind.name != "llvm":
        return None
    features = set(llvm_get_cpu_features(target))
    triple = str(target.attrs.get("mtriple", "") or "")
    if "avx512vnni" in features and "avx512bw" in features:
        return VNNI_512
    if "dotprod" in features and (triple.startswith("aarch64") or "neon" in features):
        return ARM_SDOT
    return None


def dot_product_for(
    target: Target, data_dtype: str, weight_dtype: str, channels: int | None = None
) -> DotProduct | None:
    """The target's dot product when it takes these operand dtypes, else None.

    With ``channels`` (output channels) not a multiple of its lanes, the narrower form that fits them
    (x86: the ymm ``vpdpbusd`` for multiples of 8), if the target has one.
    """
    dot = dot_product(target)
    if dot is None or (dot.data_dtype, dot.weight_dtype) != (data_dtype, weight_dtype):
        return None
    if channels is not None and channels % dot.lanes and dot is VNNI_512:
        if channels % VNNI_256.lanes == 0 and "avx512vl" in set(llvm_get_cpu_features(target)):
            return VNNI_256
    return dot
