"""Vectorizable float32 erf for the CPU targets: GELU's erf as a rational polynomial, not a libm call.

TVM legalizes ``erf`` (and ``nn.gelu``, ``0.5 x (1 + erf(x / sqrt 2))``) to
``T.erf``, which LLVM lowers to one scalar ``erff`` call per element even
inside a vectorized loop: ViT's GELU kernels ran 16 scalar calls per vector.
On CPU targets ``schedule.legalize`` legalizes float32 ``erf`` and ``gelu``
with TVM's ``topi.fast_erf`` instead: the input clamped to [-4, 4] and a
degree-13 / degree-8 rational approximation (Eigen's coefficients) that
LLVM vectorizes. Its error is below 1e-6 absolute over the float32 range
(``tests/test_tvm_fast_erf.py`` checks it against ``math.erf``); other
dtypes keep TVM's own legalization.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, tirx, topi
from tvm.target import Target

__all__ = ["cpu_legalize_overrides"]


def _default(op: str) -> Callable:
    return tvm.ir.Op.get(op).get_attr("FLegalize")


def _is_float32(call: relax.Call) -> bool:
    ty = call.args[0].ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"


def _erf(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    if not _is_float32(call):
        return _default("relax.erf")(bb, call)
    return bb.call_te(topi.fast_erf, call.args[0], primfunc_name_hint="erf")


def _gelu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    if not _is_float32(call):
        return _default("relax.nn.gelu")(bb, call)

    def te_gelu(x):
        half = tirx.const(0.5, "float32")
        return x * (half + topi.fast_erf(x * tirx.const(0.5**0.5, "float32")) * half)

    return bb.call_te(te_gelu, call.args[0], primfunc_name_hint="gelu")


def cpu_legalize_overrides(target: Target) -> dict[str, Callable]:
    """LegalizeOps overrides for ``target``: the fast erf on LLVM (CPU) targets, none elsewhere."""
    if target.kind.name != "llvm":
        return {}
    return {"relax.erf": _erf, "relax.nn.gelu": _gelu}
