"""Which parameters the weight-compression passes touch, and their layout.

prune-magnitude, share-weights, quantize-lut, binarize and quantize-pow2 act on
the weights of products: a conv's or linear's weight (input 1) and a matmul's
parameter operand. `include` adds other float parameters: `bias` (conv/linear
input 2), `norm` (batch/layer norm scale and shift) and `embedding` (embedding
tables). A parameter read by several nodes is one target, named after its
first reader. `ignore` names nodes or parameters to leave alone.

Every product weight has an output axis (its output channels: per-channel
scales run along it) and a reduction axis (the one summed over: N:M groups run
along it). `matrix_view` lays a weight out as [outputs, reduction] with the
input channels innermost: for conv [O, I, kh, kw] the columns are (kh, kw, I),
the order an NHWC implicit GEMM reduces in, so N consecutive columns are N
input channels at one kernel position (what sparse tensor cores group).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from graphopt.errors import PassError
from graphopt.ir.graph import Graph
from graphopt.ir.types import dtype_from_numpy, is_float

__all__ = ["WeightTarget", "weight_targets", "check_options", "matrix_view", "from_matrix_view", "KINDS"]

KINDS = ("bias", "norm", "embedding")  # what `include` may add to the product weights
PRODUCTS = ("conv", "linear")
NORMS = ("batch_norm", "layer_norm")


@dataclass(frozen=True)
class WeightTarget:
    param: str
    node: str  # its first reader, named in stats and errors
    op: str
    kind: str  # "weight", "bias", "norm" or "embedding"
    out_axis: int | None  # output channels (None: no channel axis)
    in_axis: int | None  # the reduction axis (None: not a product weight)

    def where(self) -> str:
        return f"parameter '{self.param}' ({self.op} '{self.node}')"


def check_options(pass_name: str, include: Iterable[str]) -> None:
    """ValueError for an unknown `include` kind (raised while parsing the pass's options)."""
    for kind in include:
        if kind not in KINDS:
            raise ValueError(f"{pass_name}: include '{kind}' is not one of {', '.join(KINDS)}")


def weight_targets(
    graph: Graph, pass_name: str, include: Iterable[str] = (), ignore: Iterable[str] = ()
) -> list[WeightTarget]:
    """The float parameters to compress, in graph order; unknown `ignore` names are an error."""
    include, ignore = set(include), set(ignore)
    unknown = sorted(n for n in ignore if not graph.has_node(n) and not graph.is_param(n))
    if unknown:
        raise PassError(f"{pass_name}: ignore names no node or parameter of graph '{graph.name}': {', '.join(unknown)}")
    found: dict[str, WeightTarget] = {}
    for node in graph.nodes:
        if node.name in ignore:
            continue
        for index, kind, out_axis, in_axis in _roles(graph, node):
            name = node.inputs[index]
            if kind != "weight" and kind not in include:
                continue
            if name in found or name in ignore or not graph.is_param(name):
                continue
            if not is_float(dtype_from_numpy(graph.param(name).data.dtype)) or graph.param(name).data.size == 0:
                continue
            found[name] = WeightTarget(name, node.name, node.op, kind, out_axis, in_axis)
    return list(found.values())


def _roles(graph: Graph, node) -> list[tuple[int, str, int | None, int | None]]:
    """(input index, kind, output axis, reduction axis) of the parameters `node` may hold."""
    n = len(node.inputs)
    if node.op in PRODUCTS:
        return [(1, "weight", 0, 1)] + ([(2, "bias", None, None)] if n > 2 else [])
    if node.op == "matmul":
        roles = []
        for index in (0, 1):
            if graph.is_param(node.inputs[index]):
                rank = graph.param(node.inputs[index]).data.ndim
                if rank == 1:
                    roles.append((index, "weight", None, 0))
                elif index == 1:  # B [..., K, N]: N outputs, K reduced
                    roles.append((index, "weight", rank - 1, rank - 2))
                else:  # A [..., M, K]: M outputs, K reduced
                    roles.append((index, "weight", rank - 2, rank - 1))
        return roles
    if node.op in NORMS:
        return [(i, "norm", None, None) for i in (1, 2) if i < n]
    if node.op == "embedding":
        return [(1, "embedding", 0, None)]
    return []


def matrix_view(w: np.ndarray, target: WeightTarget) -> np.ndarray:
    """`w` as [outputs, reduction] with the reduction axis innermost (a copy); [1, size] without axes."""
    if target.out_axis is None or target.in_axis is None:
        return w.reshape(1, -1).copy()
    moved = np.moveaxis(w, [target.out_axis, target.in_axis], [0, -1])
    return np.ascontiguousarray(moved).reshape(w.shape[target.out_axis], -1)


def from_matrix_view(m: np.ndarray, shape: tuple[int, ...], target: WeightTarget) -> np.ndarray:
    """The inverse of `matrix_view` for a weight of `shape`."""
    if target.out_axis is None or target.in_axis is None:
        return m.reshape(shape)
    rest = [s for i, s in enumerate(shape) if i not in (target.out_axis, target.in_axis)]
    moved = m.reshape([shape[target.out_axis], *rest, shape[target.in_axis]])
    return np.moveaxis(moved, [0, -1], [target.out_axis, target.in_axis])
