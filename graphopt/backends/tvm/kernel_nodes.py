"""Which graph nodes each fused TIR kernel computes, for progress lines that name the model's nodes.

``legalize`` fuses Relax operators into kernels named after their op kinds
(``fused_conv2d1_add1_relu1``), which say nothing about where they sit in the
model. The Relax bindings that ``lower.py`` emits carry the graph's value
names; they survive inside the fused Relax functions until ``FuseTIR`` turns
those into PrimFuncs. So the module is captured right before ``FuseTIR`` and
its kernel calls are paired, in order, with the calls of the legalized
module.
"""

from __future__ import annotations

import re

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.instrument import pass_instrument

from .schedule import legalize
from .targets import TargetSpec

__all__ = ["describe_nodes", "legalize_with_nodes"]


# names the Relax passes make up (not the graph's): lv, lv12, gv, gv3
_GENERATED = re.compile(r"^[lg]v\d*$")


@pass_instrument
class _BeforeFuseTIR:
    def __init__(self) -> None:
        self.mod: IRModule | None = None

    def run_before_pass(self, mod, info) -> None:
        if info.name == "FuseTIR":
            self.mod = mod


def legalize_with_nodes(mod: IRModule, target: TargetSpec) -> tuple[IRModule, dict[str, tuple[str, ...]]]:
    """``legalize(mod, target)`` and, per kernel name, the Relax bindings (graph values) it computes.

    Kernels that are structurally the same share one entry listing all their
    calls' nodes (one tuning task covers them all). The map is empty where
    the pairing fails; names are a courtesy, never needed for the build.
    """
    capture = _BeforeFuseTIR()
    outer = tvm.transform.PassContext.current()  # keep its settings and instruments, add the capture
    with tvm.transform.PassContext(
        opt_level=outer.opt_level,
        required_pass=list(outer.required_pass),
        disabled_pass=list(outer.disabled_pass),
        instruments=[*outer.instruments, capture],
        config=dict(outer.config),
    ):
        legal = legalize(mod, target)
    try:
        return legal, _kernel_nodes(capture.mod, legal) if capture.mod is not None else {}
    except Exception:  # noqa: BLE001 - a Relax form this pairing does not know: no names
        return legal, {}


def describe_nodes(nodes: tuple[str, ...], limit: int = 3) -> str:
    """``a, b, c (+4 more)``."""
    shown = ", ".join(nodes[:limit])
    return shown + (f" (+{len(nodes) - limit} more)" if len(nodes) > limit else "")


def _bindings(func: relax.Function):
    for block in func.body.blocks:
        yield from block.bindings


def _kernel_calls_before(mod: IRModule) -> list[tuple[str, ...]]:
    """The nodes of each kernel call in "main" before FuseTIR: a fused function's bindings, or the call's own."""
    calls = []
    for binding in _bindings(mod["main"]):
        value = binding.value
        if not isinstance(value, relax.Call):
            continue
        if isinstance(value.op, tvm.ir.GlobalVar) and isinstance(mod[value.op], relax.Function):
            inner = [b.var.name for b in _bindings(mod[value.op]) if isinstance(b.value, relax.Call)]
            calls.append(tuple(n for n in inner if not _GENERATED.match(n)))
        elif isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
            calls.append(() if _GENERATED.match(binding.var.name) else (binding.var.name,))
    return calls


def _kernel_calls_after(mod: IRModule) -> list[str]:
    names = []
    for binding in _bindings(mod["main"]):
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
            names.append(value.args[0].name_hint)
    return names


def _kernel_nodes(before: IRModule, after: IRModule) -> dict[str, tuple[str, ...]]:
    nodes_of, kernels = _kernel_calls_before(before), _kernel_calls_after(after)
    if len(nodes_of) != len(kernels):
        return {}
    by_kernel: dict[str, list[str]] = {}
    for kernel, nodes in zip(kernels, nodes_of):
        by_kernel.setdefault(kernel, []).extend(n for n in nodes if n not in by_kernel.get(kernel, ()))
    # one task per structure: kernels equal up to their name share their nodes
    shape: dict[str, int] = {}
    for gv, func in after.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            shape[gv.name_hint] = tvm_ffi.structural_hash(func.without_attr("global_symbol"))
    merged: dict[int, list[str]] = {}
    for kernel, nodes in by_kernel.items():
        merged.setdefault(shape.get(kernel, hash(kernel)), []).extend(nodes)
    return {kernel: tuple(merged[shape.get(kernel, hash(kernel))]) for kernel in by_kernel}
