"""Deliberately broken passes are caught by the pipeline's checks, with a message naming the pass.

Each pass below is registered for the test only and comes in a correct and a
broken variant (an option), so the test shows the checks pass the correct
rewrite and catch the broken one: an off-by-one channel slice, a wrong scale,
a dropped edge (numerically, and structurally as a read of a value nobody defines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from fuzz_checks import run_pipeline
from torch import nn

import graphopt
from graphopt.errors import NumericalMismatchError, PassError
from graphopt.passes import Pass, PassResult, register_pass
from graphopt.passes.registry import unregister_pass


class DeadChannelModel(nn.Module):
    """conv1 -> relu -> (conv2 * 0.5 + skip) -> mean -> fc; channel 2 of both convs is dead (all zero)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1), nn.Linear(6, 4)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight[2].zero_()
                conv.bias[2] = 0.0

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        return self.fc((h + self.conv2(h) * 0.5).mean(dim=(2, 3)))


def _only(graph, op: str):
    (node,) = [n for n in graph.nodes if n.op == op]
    return node


@register_pass
@dataclass(frozen=True)
class RemoveDeadChannel(Pass):
    """Remove the dead channel 2 from both convs, conv2's input and fc's input (exact)."""

    name: ClassVar[str] = "test-remove-dead-channel"
    off_by_one: bool = False

    def run(self, graph, ctx):
        conv1 = [n for n in graph.nodes if n.op == "conv"][0]
        out_channels = graph.param(conv1.inputs[1]).data.shape[0]
        keep = [c for c in range(out_channels) if c != 2]
        graph.slice_param(conv1.inputs[1], 0, keep)
        graph.slice_param(conv1.inputs[2], 0, keep)
        reader_keep = [c for c in range(out_channels) if c != (3 if self.off_by_one else 2)]
        conv2 = [n for n in graph.nodes if n.op == "conv"][1]
        graph.slice_param(conv2.inputs[1], 1, reader_keep)
        graph.slice_param(conv2.inputs[1], 0, keep)
        graph.slice_param(conv2.inputs[2], 0, keep)
        fc = _only(graph, "linear")
        graph.slice_param(fc.inputs[1], 1, keep)
        graph.infer_types()
        return PassResult(graph, True, {"removed": 1})


@register_pass
@dataclass(frozen=True)
class FoldScale(Pass):
    """mul(conv(x), c) => conv(x) with weight and bias scaled by c (exact)."""

    name: ClassVar[str] = "test-fold-scale"
    forget_bias: bool = False

    def run(self, graph, ctx):
        mul = _only(graph, "mul")
        conv = graph.producer(mul.inputs[0])
        factor = float(np.asarray(graph.param(mul.inputs[1]).data))
        graph.set_param(conv.inputs[1], graph.param(conv.inputs[1]).data * factor)
        if not self.forget_bias:
            graph.set_param(conv.inputs[2], graph.param(conv.inputs[2]).data * factor)
        graph.replace_all_uses(mul.output, conv.output)
        graph.remove_node(mul)
        return PassResult(graph, True, {"folded": 1})


@register_pass
@dataclass(frozen=True)
class DropSkip(Pass):
    """Broken on purpose: the residual add's skip edge is dropped (numerically, or to an undefined value)."""

    name: ClassVar[str] = "test-drop-skip"
    dangling: bool = False

    def run(self, graph, ctx):
        add = _only(graph, "add")
        if self.dangling:
            graph.set_inputs(add, ["no_such_value", add.inputs[1]])
        else:
            graph.replace_all_uses(add.output, add.inputs[1])
            graph.remove_node(add)
        return PassResult(graph, True, {})


@pytest.fixture(scope="module", autouse=True)
def _unregister():
    yield
    for p in (RemoveDeadChannel, FoldScale, DropSkip):
        unregister_pass(p.name)


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    return graphopt.trace(DeadChannelModel().eval(), (x,)), x.numpy()


@pytest.mark.parametrize(
    "correct, broken",
    [
        ("test-remove-dead-channel", "test-remove-dead-channel{off_by_one=true}"),
        ("test-fold-scale", "test-fold-scale{forget_bias=true}"),
    ],
)
def test_verifier_passes_the_correct_rewrite_and_names_the_broken_one(traced, correct, broken):
    graph, x = traced
    run_pipeline(graph, x, f"fold-constants,{correct}")
    with pytest.raises(NumericalMismatchError, match=rf"pass '{broken}' changed the model's outputs") as e:
        run_pipeline(graph, x, f"fold-constants,{broken}")
    assert "passes before it: fold-constants" in str(e.value)


def test_dropped_edge_is_caught_numerically(traced):
    graph, x = traced
    with pytest.raises(NumericalMismatchError, match=r"pass 'test-drop-skip' changed the model's outputs .* max abs"):
        run_pipeline(graph, x, "test-drop-skip")


def test_edge_to_an_undefined_value_is_refused_naming_the_pass(traced):
    graph, x = traced
    with pytest.raises(PassError, match=r"test-drop-skip\{dangling=true\}.*no_such_value"):
        run_pipeline(graph, x, "test-drop-skip{dangling=true}")
