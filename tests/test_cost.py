"""analysis/cost: params, MACs and bytes per node and total, the cost table, and the pipeline report."""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from graphopt.analysis.cost import GraphCost, format_cost_table, graph_cost, human_bytes, human_count, node_cost
from graphopt.ir.graph import Graph
from graphopt.ir.ops import OPAQUE, ValueRef
from graphopt.ir.types import TensorType
from graphopt.passes import Pipeline

RNG = np.random.default_rng(0)


def randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---- hand-computed costs of single ops ---------------------------------------------------


def test_conv_with_groups_stride_dilation_and_asymmetric_padding():
    g = Graph("conv")
    x = g.add_input("x", TensorType((2, 4, 11, 13)))
    w = g.add_param("w", randn(6, 2, 3, 2))  # groups=2: 4 in channels, 2 per group
    b = g.add_param("b", randn(6))
    attrs = dict(stride=[2, 1], pads=[1, 0, 2, 0], dilation=[1, 2], groups=2)
    conv = g.add_node("conv", [x, w, b], attrs=attrs, name="conv")
    g.set_outputs([conv.output])
    # H: (11 + 1 + 2 - 1*(3-1) - 1) // 2 + 1 = 6;  W: (13 - 2*(2-1) - 1) // 1 + 1 = 11
    assert g.type_of(conv.output).shape == (2, 6, 6, 11)
    c = node_cost(g, conv)
    assert c.macs == (2 * 6 * 6 * 11) * 2 * 3 * 2  # out elements * in/groups * kernel
    assert (c.params, c.weight_bytes) == (6 * 2 * 3 * 2 + 6, 4 * (6 * 2 * 3 * 2 + 6))
    assert (c.output_elements, c.output_bytes) == (792, 4 * 792)
    assert c.param_names == ("w", "b") and not c.unknown and not c.symbolic


def test_depthwise_conv1d():
    g = Graph("dw")
    x = g.add_input("x", TensorType((1, 8, 20)))
    w = g.add_param("w", randn(8, 1, 5))
    conv = g.add_node("conv", [x, w], attrs=dict(stride=[1], pads=[2, 2], dilation=[1], groups=8))
    g.set_outputs([conv.output])
    assert node_cost(g, conv).macs == 8 * 20 * 5


def test_linear_on_3d_input():
    g = Graph("linear")
    x = g.add_input("x", TensorType((2, 5, 7)))
    lin = g.add_node("linear", [x, g.add_param("w", randn(3, 7)), g.add_param("b", randn(3))])
    g.set_outputs([lin.output])
    c = node_cost(g, lin)
    assert (c.macs, c.params, c.output_elements) == (2 * 5 * 3 * 7, 3 * 7 + 3, 2 * 5 * 3)


@pytest.mark.parametrize(
    "a, b, macs",
    [
        ((4, 1, 3, 5), (2, 5, 6), 4 * 2 * 3 * 6 * 5),  # batched and broadcast: out [4, 2, 3, 6], K = 5
        ((5,), (5, 6), 6 * 5),  # vector @ matrix: out [6]
        ((3, 5), (5,), 3 * 5),  # matrix @ vector: out [3]
    ],
)
def test_matmul(a, b, macs):
    g = Graph("matmul")
    mm = g.add_node("matmul", [g.add_input("a", TensorType(a)), g.add_input("b", TensorType(b))])
    g.set_outputs([mm.output])
    c = node_cost(g, mm)
    assert c.macs == macs and c.params == 0


def test_ops_without_macs_count_only_their_output():
    g = Graph("misc")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    bn = g.add_node("batch_norm", [x] + [g.add_param(n, randn(3)) for n in ("g", "b", "m", "v")])
    pool = g.add_node(
        "max_pool", [bn.output], attrs=dict(kernel_size=[2, 2], stride=[2, 2], pads=[0] * 4, dilation=[1, 1])
    )
    sm = g.add_node("softmax", [pool.output], attrs=dict(axis=1))
    g.set_outputs([sm.output])
    costs = graph_cost(g)
    assert [c.macs for c in costs.nodes] == [0, 0, 0]
    assert [c.params for c in costs.nodes] == [12, 0, 0]
    assert [c.output_elements for c in costs.nodes] == [192, 48, 48]


def test_tied_weight_counted_once_in_totals():
    g = Graph("tied")
    ids = g.add_input("ids", TensorType((2, 6), "int64"))
    table = g.add_param("table", randn(10, 4))
    emb = g.add_node("embedding", [ids, table])
    logits = g.add_node("linear", [emb.output, table])  # the output projection reuses the embedding
    g.set_outputs([logits.output])
    cost = graph_cost(g)
    assert [(c.op, c.params, c.macs) for c in cost.nodes] == [("embedding", 40, 0), ("linear", 40, 2 * 6 * 10 * 4)]
    assert cost.params == 40 and cost.weight_bytes == 160 and cost.macs == 480


def test_weight_read_twice_by_one_node_counted_once():
    g = Graph("square")
    w = g.add_param("w", randn(4, 4))
    mm = g.add_node("matmul", [w, w])
    g.set_outputs([mm.output])
    assert node_cost(g, mm).params == 16


def test_int4_weight_behind_dequantize_at_its_stored_size():
    g = Graph("q")
    x = g.add_input("x", TensorType((1, 8)))
    q = g.add_param("w_q", RNG.integers(-8, 8, (8, 8)).astype(ml_dtypes.int4))
    scale = g.add_param("w_scale", np.array(0.1, np.float32))
    zero = g.add_param("w_zero", np.array(0, ml_dtypes.int4))
    deq = g.add_node("dequantize", [q, scale, zero], name="deq")
    lin = g.add_node("linear", [x, deq.output], name="fc")
    g.set_outputs([lin.output])
    cost = graph_cost(g)
    assert (cost.node("deq").params, cost.node("deq").weight_bytes) == (66, 32 + 4 + 1)  # int4 packed
    assert (cost.node("fc").params, cost.node("fc").macs) == (0, 64)
    assert cost.weight_bytes == 37


def opaque_graph() -> Graph:
    g = Graph("opaque")
    x = g.add_input("x", TensorType((1, 8, 4, 4)))
    w = g.add_param("w", randn(8, 8, 1, 1))
    conv = g.add_node("conv", [x, w], attrs=dict(stride=[1, 1], pads=[0] * 4, dilation=[1, 1]), name="conv")
    attrs = dict(framework="torch", target="aten.pixel_shuffle.default", args=(ValueRef(0), 2), kwargs={})
    shuffle = g.add_node(OPAQUE, [conv.output], attrs=attrs, output_types=[TensorType((1, 2, 8, 8))], name="shuffle")
    g.set_outputs([shuffle.output])
    return g


def test_opaque_node_is_flagged_and_the_table_says_partial():
    cost = graph_cost(opaque_graph())
    assert cost.node("shuffle").unknown and cost.node("shuffle").macs == 0
    assert cost.node("shuffle").output_elements == 128
    assert cost.unknown == ("shuffle",) and cost.macs == 8 * 16 * 8
    table = format_cost_table(cost)
    assert "opaque?" in table
    assert "partial: 1 node(s) of unknown cost (opaque or untyped) count 0 MACs: shuffle" in table


def test_untyped_node_is_flagged():
    g = Graph("untyped")
    x = g.add_input("x", TensorType((2, 7)))
    lin = g.add_node("linear", [x, g.add_param("w", randn(3, 7))], infer=False, name="fc")
    g.set_outputs([lin.output])
    cost = graph_cost(g)
    assert cost.unknown == ("fc",) and cost.macs == 0 and cost.params == 21


def test_symbolic_dims_count_as_one_and_are_noted():
    g = Graph("dyn")
    x = g.add_input("x", TensorType(("batch", 7)))
    # the ONNX frontend keeps the symbolic types ONNX shape inference gives
    lin = g.add_node("linear", [x, g.add_param("w", randn(3, 7))], output_types=[TensorType(("batch", 3))])
    g.set_outputs([lin.output])
    cost = graph_cost(g)
    assert cost.macs == 21 and cost.symbolic and not cost.unknown
    assert format_cost_table(cost).endswith("symbolic dimensions are counted as 1")


# ---- memoized, never stale ------------------------------------------------------------------


def conv_chain() -> Graph:
    """conv1 (3->8) -> batch_norm -> relu -> conv2 (8->4) -> flatten -> linear (64->10)."""
    g = Graph("chain")
    x = g.add_input("x", TensorType((1, 3, 4, 4)))
    conv_attrs = dict(stride=[1, 1], pads=[1, 1, 1, 1], dilation=[1, 1])
    c1 = g.add_node("conv", [x, g.add_param("c1.w", randn(8, 3, 3, 3)), g.add_param("c1.b", randn(8))],
                    attrs=conv_attrs, name="conv1", meta={"module": "c1"})  # fmt: skip
    stats = [g.add_param(f"bn.{n}", np.abs(randn(8)) + 0.5) for n in ("w", "b", "m", "v")]
    bn = g.add_node("batch_norm", [c1.output, *stats], name="bn", meta={"module": "bn"})
    relu = g.add_node("relu", [bn.output], name="relu")
    c2 = g.add_node("conv", [relu.output, g.add_param("c2.w", randn(4, 8, 3, 3))], attrs=conv_attrs, name="conv2")
    flat = g.add_node("flatten", [c2.output], name="flatten")
    fc = g.add_node("linear", [flat.output, g.add_param("fc.w", randn(10, 64))], name="fc", meta={"module": "fc"})
    g.set_outputs([fc.output])
    return g


def test_graph_cost_is_memoized_and_follows_edits():
    g = conv_chain()
    before = graph_cost(g)
    assert graph_cost(g) is before
    assert before.macs == 16 * 8 * 27 + 16 * 4 * 72 + 10 * 64
    # prune conv1's output channels to 5: its weight and bias, the batch norm, conv2's input channels
    keep = [0, 2, 3, 5, 7]
    for name, axis in [("c1.w", 0), ("c1.b", 0), ("bn.w", 0), ("bn.b", 0), ("bn.m", 0), ("bn.v", 0), ("c2.w", 1)]:
        g.slice_param(name, axis, keep)
    g.infer_types(from_values=["c1.w"])
    g.verify()
    after = graph_cost(g)
    assert after is not before and after.macs == 16 * 5 * 27 + 16 * 4 * 45 + 10 * 64
    assert after.node("conv1").params == 5 * 27 + 5 and after.node("bn").params == 20
    assert before.params - after.params == 3 * 27 + 3 + 3 * 4 + 4 * 3 * 9


# ---- the table ------------------------------------------------------------------------------


def rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}


def test_table_before_after_with_a_removed_node():
    g = conv_chain()
    before = graph_cost(g)
    pruned = g.copy()
    pruned.slice_param("c2.w", 0, [0, 1])  # conv2 keeps 2 of its 4 output channels ...
    pruned.slice_param("fc.w", 1, list(range(32)))  # ... so fc reads 32 features
    pruned.infer_types(from_values=["c2.w", "fc.w"])
    relu = pruned.node("relu")
    pruned.set_inputs(relu, ["conv1"])  # and the batch norm is gone
    pruned.remove_node(pruned.node("bn"))
    pruned.cleanup()
    pruned.verify()
    after = graph_cost(pruned)
    table = format_cost_table(before, after)
    r = rows(table)
    assert r["node"] == ["node", "module", "op", "params", "MACs", "params", "after", "MACs", "after", "kept"]
    assert r["conv1"][1:] == ["c1", "conv", "224", "3.46K", "224", "3.46K", "100.0%"]
    assert r["bn"][1:] == ["bn", "batch_norm", "32", "0", "removed"]
    assert r["conv2"][1:] == ["conv", "288", "4.61K", "144", "2.30K", "50.0%"]  # no module: blank
    assert r["fc"][1:] == ["fc", "linear", "640", "640", "320", "320", "50.0%"]
    assert "relu" not in r and "flatten" not in r  # no params, no MACs: not a layer row
    assert r["total"][1:] == ["1.18K", "8.70K", "688", "6.08K", "69.9%"]
    summary = "params 1.18K -> 688 (0.58x), MACs 8.70K -> 6.08K (0.70x), weights 4.74KB -> 2.75KB (0.58x)"
    assert r["params"] == summary.split()
    assert (before.params, after.params, before.macs, after.macs) == (1184, 688, 8704, 6080)


def test_table_top_keeps_the_largest_layers_in_graph_order():
    cost = graph_cost(conv_chain())
    table = format_cost_table(cost, top=2)
    names = [line.split()[0] for line in table.splitlines()]
    assert names[1:3] == ["conv1", "conv2"] and "fc" not in names
    assert "... 2 smaller rows not shown" in table
    assert rows(table)["total"][1:] == ["1.18K", "8.70K"]  # totals cover every layer
    with pytest.raises(ValueError, match="top must be >= 0"):
        format_cost_table(cost, top=-1)


def test_table_shows_added_nodes():
    g = conv_chain()
    before = graph_cost(g)
    g.insert_on_edge("relu", "linear", extra_inputs=[g.add_param("extra.w", randn(4, 4))], name="extra")
    g.verify()
    r = rows(format_cost_table(before, graph_cost(g)))
    assert r["extra"][1:] == ["linear", "added", "16", "512"]


@pytest.mark.parametrize(
    "n, text", [(0, "0"), (999, "999"), (1000, "1.00K"), (11_689_512, "11.69M"), (1_814_073_344, "1.81G")]
)
def test_human_units(n, text):
    assert human_count(n) == text and human_bytes(n) == text + "B"


# ---- bundled models, against known figures and an independent count in torch ---------------------


class TorchMacCounter(TorchFunctionMode):
    """MACs of conv / linear / matmul calls of an eager forward, from the tensors torch sees."""

    def __init__(self):
        super().__init__()
        self.by_op = {"conv": 0, "linear": 0, "matmul": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.conv1d, F.conv2d, F.conv3d):
            weight = args[1]
            self.by_op["conv"] += out.numel() * weight.shape[1] * math.prod(weight.shape[2:])
        elif func is F.linear:
            self.by_op["linear"] += out.numel() * args[1].shape[1]
        elif func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm):
            self.by_op["matmul"] += out.numel() * args[0].shape[-1]
        return out


def torch_macs(model: nn.Module, inputs) -> dict[str, int]:
    counter = TorchMacCounter()
    with torch.no_grad(), counter:
        model(*[torch.from_numpy(np.asarray(a)) for a in inputs])
    return counter.by_op


def macs_by_op(cost: GraphCost) -> dict[str, int]:
    out = {"conv": 0, "linear": 0, "matmul": 0}
    for c in cost.nodes:
        if c.op in out:
            out[c.op] += c.macs
    return out


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_small", "bert_small"])
def test_bundled_models_match_an_independent_count(import_model, name):
    graph, model, inputs = import_model("fx", name)
    cost = graph_cost(graph)
    assert not cost.unknown and not cost.symbolic
    expected = torch_macs(model, inputs)
    assert macs_by_op(cost) == expected and sum(expected.values()) > 0
    assert cost.macs == sum(expected.values())
    assert cost.trainable_params == sum(p.numel() for p in model.parameters())
    # every stored constant: parameters, buffers (batch-norm statistics, position ids), folded scalars
    buffers = sum(b.numel() for b in model.buffers())
    scalars = sum(p.data.size for k, p in graph.params.items() if k.endswith("_scalar"))
    assert cost.params == cost.trainable_params + buffers + scalars


@pytest.mark.parametrize("name, macs, params", [("resnet18", 1.82e9, 11.69e6), ("mobilenet_v2", 300e6, 3.5e6)])
def test_bundled_models_match_published_figures(import_model, name, macs, params):
    cost = graph_cost(import_model("fx", name)[0])
    assert cost.macs == pytest.approx(macs, rel=0.01)
    assert cost.trainable_params == pytest.approx(params, rel=0.01)


def test_both_frontends_give_the_same_cost(import_model):
    fx = graph_cost(import_model("fx", "mobilenet_v2")[0])
    onnx = graph_cost(import_model("onnx", "mobilenet_v2")[0])

    def layers(cost):
        return sorted((c.op, c.params, c.macs) for c in cost.nodes if c.op in ("conv", "linear", "batch_norm"))

    assert onnx.macs == fx.macs and layers(onnx) == layers(fx)


# ---- the pipeline report and the CLI ----------------------------------------------------------


def test_report_appends_the_cost_table_when_the_cost_changed():
    g = conv_chain()
    result = Pipeline.parse("fold-bn").run(g)
    assert result.cost_before.nodes == graph_cost(g).nodes  # measured on the entry copy
    assert result.cost_after is graph_cost(result.graph) and result.cost_changed
    report = result.report()
    lines = report.splitlines()
    assert lines[0].split() == ["pass", "time", "changed", "stats"] and lines[1].startswith("fold-bn ")
    assert lines[2] == "" and lines[3].split()[:2] == ["node", "module"]  # the pass rows, then the table
    r = rows(report)
    assert r["bn"][-1] == "removed" and r["conv1"][-1] == "100.0%"
    assert "params 1.18K -> 1.15K (0.97x), MACs 8.70K -> 8.70K (1.00x)" in report


def test_report_without_cost_change_has_no_table():
    g = conv_chain()
    g.insert_on_edge("relu", "identity", name="noop")
    result = Pipeline.parse("eliminate-identity").run(g)
    assert result.changed and not result.cost_changed
    assert result.cost_before.same_totals(result.cost_after)
    assert len(result.report().splitlines()) == 2  # header and one pass row, nothing else


def test_cli_opt_prints_the_cost_table(tmp_path, capsys):
    from graphopt.cli import main

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(1, 3, 10, 10),), str(path), dynamo=False, do_constant_folding=False)
    assert main(["-q", "opt", "-p", "fold-bn", str(path)]) == 0
    out = capsys.readouterr().out
    bn_rows = [line.split() for line in out.splitlines() if "batch_norm" in line and "removed" in line]
    assert len(bn_rows) == 1 and bn_rows[0][1:] == ["batch_norm", "32", "0", "removed"]
    # params: conv1 8*27 + 8, batch norm 4*8, conv2 4*72 + 4; MACs: 800 * 27 + 256 * 72
    assert "params 548 -> 516 (0.94x), MACs 40.03K -> 40.03K (1.00x)" in out


def test_transposed_conv_counts_each_input_element_times_its_outputs():
    import graphopt

    m = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2).eval()
    g = graphopt.trace(m, (torch.randn(1, 4, 5, 5),))
    assert graph_cost(g).macs == 4 * 5 * 5 * (6 // 2) * 9
