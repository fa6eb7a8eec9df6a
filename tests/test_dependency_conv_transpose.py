"""Dependency groups through transposed convs, bilinear upsampling and pixel shuffle (an encoder-decoder).

A transposed conv's weight is [in, out/groups, *k]: its input channels are weight rows, its
output channels weight columns (times the group count). Exactness as in tests/test_dependency.py:
kill the lower half of every group's units (all their weights zero), prune exactly those, and
the outputs must not move; a wrong coupling slices the wrong rows or columns and shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_dependency import imported as import_with
from test_dependency import kill_units
from torch import nn

import graphopt
from graphopt.analysis.dependency import dependency_groups, format_groups
from graphopt.passes import Pipeline


class EncoderDecoder(nn.Module):
    """Two encoder convs; a decoder of a plain and a grouped transposed conv, a bilinear upsampling
    and a pixel shuffle, concatenated with the encoder's skip; a 1x1 head."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up_grouped = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, groups=4)
        self.bn = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(16, 4, 1)
        self.shuffle_in = nn.Conv2d(16, 8, 1)
        self.dec = nn.Conv2d(8 + 8 + 4 + 2 + 8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        for bn in (self.bn,):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        skip = F.relu(self.enc1(x))
        h = F.relu(self.enc2(skip))
        up, grouped = F.relu(self.bn(self.up(h))), F.relu(self.up_grouped(h))
        side = F.interpolate(F.relu(self.side(h)), scale_factor=2, mode="bilinear")
        shuffled = F.pixel_shuffle(F.relu(self.shuffle_in(h)), 2)
        return self.head(F.relu(self.dec(torch.cat([up, grouped, side, shuffled, skip], dim=1))))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def model() -> nn.Module:
    torch.manual_seed(0)
    return EncoderDecoder().eval()


def imported(frontend: str, m: nn.Module):
    return import_with(frontend, m, X)


def group_slicing(groups, param: str, axis: int):
    for g in groups:
        if any(m.value == param and m.axis == axis for m in g.params()):
            return g
    raise AssertionError(f"no group slices {param} on axis {axis}:\n{format_groups(groups)}")


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_transposed_conv_couples_weight_rows_with_inputs_and_columns_with_outputs(frontend):
    graph = imported(frontend, model())
    assert {"conv_transpose", "resize", "pixel_shuffle"} <= {n.op for n in graph.nodes}
    groups = dependency_groups(graph)
    # enc2's channels are the rows of both transposed convs; the grouped one prunes whole groups
    # (4 input channels, their weight rows and 2 output channels each), so its outputs join the group
    enc2 = group_slicing(groups, "enc2.weight", 0)
    assert enc2.prunable and enc2.units == 4, enc2.describe()
    sliced = {(m.value, m.axis) for m in enc2.params()}
    assert {("up.weight", 0), ("up_grouped.weight", 0), ("up_grouped.bias", 0), ("side.weight", 1)} <= sliced
    assert ("up_grouped.weight", 1) not in sliced
    dec_in = next(m for m in enc2.params() if m.value == "dec.weight")
    assert [p.tolist() for p in dec_in.positions] == [[8, 9], [10, 11], [12, 13], [14, 15]]
    # the plain transposed conv's output channels: weight columns, bias, batch norm, the decoder's input
    up = group_slicing(groups, "up.weight", 1)
    assert up.prunable and up.units == 8, up.describe()
    assert {("up.bias", 0), ("bn.weight", 0), ("bn.running_var", 0)} <= {(m.value, m.axis) for m in up.params()}
    dec_in = next(m for m in up.params() if m.value == "dec.weight")
    assert dec_in.axis == 1 and [p.tolist() for p in dec_in.positions] == [[c] for c in range(8)]
    # bilinear upsampling passes channels through; pixel shuffle turns 4 input channels into one
    side = group_slicing(groups, "side.weight", 0)
    assert side.prunable and side.units == 4
    shuffle = group_slicing(groups, "shuffle_in.weight", 0)
    assert shuffle.prunable and shuffle.units == 2
    assert next(m for m in shuffle.params() if m.value == "shuffle_in.weight").positions[1].tolist() == [4, 5, 6, 7]
    assert next(m for m in shuffle.params() if m.value == "dec.weight").positions[1].tolist() == [21]


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_pruning_dead_units_leaves_outputs_unchanged(frontend):
    graph = imported(frontend, model())
    groups = [g for g in dependency_groups(graph) if g.prunable]
    for group in groups:  # the upper half of every group's units die; l1 ranks them last
        kill_units(graph, group, range(group.units - group.units // 2, group.units))
    before = graph.run([X.numpy()])[0]
    pruned = Pipeline.parse("prune-channels{ratio=0.5}").run(graph).graph
    pruned.verify()
    for group in groups:
        for m in group.params():
            assert pruned.params[m.value].data.shape[m.axis] < graph.params[m.value].data.shape[m.axis], m.value
    grouped = next(n for n in pruned.nodes if n.op == "conv_transpose" and n.inputs[1] == "up_grouped.weight")
    assert grouped.attrs["groups"] == 2 and pruned.params["up_grouped.weight"].data.shape == (8, 2, 3, 3)
    np.testing.assert_allclose(pruned.run([X.numpy()])[0], before, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # and the pruned graph still builds and runs on TVM
        compiled = graphopt.optimize(pruned, example_inputs=(X,), target="x86")
    np.testing.assert_allclose(np.asarray(compiled(X.numpy())), before, atol=1e-4, rtol=1e-4)
