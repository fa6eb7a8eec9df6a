"""Dependency groups (graphopt.analysis.dependency) on every coupled structure, traced and from ONNX.

The strongest check is exactness: make some units of every group dead (all of
their weights zero, in every tensor the group slices), prune exactly those, and
the outputs must not move. A wrong coupling slices the wrong columns and shows.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from prune_structures import STRUCTURES, build
from torch import nn

import graphopt
from graphopt.analysis.dependency import dependency_groups, format_groups
from graphopt.frontends.onnx import load_onnx
from graphopt.passes import PassContext, Pipeline


def imported(frontend: str, model: nn.Module, x: torch.Tensor):
    if frontend == "fx":
        return graphopt.trace(model, (x,))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, do_constant_folding=False)
    return load_onnx(onnx.load_from_string(buf.getvalue()))


def by_source(groups, node_prefix_param: str):
    """The group that slices parameter `node_prefix_param` along its output axis."""
    for g in groups:
        for m in g.params():
            if m.value == node_prefix_param and m.axis == 0:
                return g
    raise AssertionError(f"no group slices {node_prefix_param}:\n{format_groups(groups)}")


# (structure, parameter whose rows start a group, kind, units)
EXPECTED = [
    ("residual", "stem.weight", "channels", 16),
    ("residual", "a.0.weight", "channels", 24),
    ("concat_split", "p.weight", "channels", 8),
    ("concat_split", "q.weight", "channels", 12),
    ("concat_split", "mix.weight", "channels", 16),
    ("grouped_depthwise", "g.weight", "channels", 4),  # whole groups of the groups=4 conv
    ("grouped_depthwise", "pw.weight", "channels", 16),
    ("flatten_linear", "c.weight", "channels", 12),
    ("flatten_linear", "fc1.weight", "ffn", 32),
    ("permute_linear", "c.weight", "channels", 16),
    ("channel_shuffle", "g1.weight", "channels", 4),  # uniform channels inside the shuffled groups
    ("squeeze_excite", "c.weight", "channels", 24),
    ("squeeze_excite", "se1.weight", "channels", 8),
    ("token_mixer", "mix", "channels", 20),  # a matmul with a parameter over the token axis
    ("token_mixer", "tok1.weight", "ffn", 32),
    ("attention_fused", "qkv.weight", "heads", 4),
    ("attention_split", "q.weight", "heads", 4),
    ("attention_fused", "ffn1.weight", "ffn", 64),
]


@pytest.mark.parametrize("structure,param,kind,units", EXPECTED)
def test_each_structure_yields_its_group(structure, param, kind, units):
    model, x = build(structure)
    g = by_source(dependency_groups(graphopt.trace(model, (x,))), param)
    assert (g.kind, g.units, g.prunable) == (kind, units, True), g.describe()


def test_residual_sums_join_their_convs_and_norms():
    model, x = build("residual")
    group = by_source(dependency_groups(graphopt.trace(model, (x,))), "stem.weight")
    params = {(m.value, m.axis) for m in group.params()}
    assert {("a.2.weight", 0), ("b.2.weight", 0), ("a.0.weight", 1), ("fc.weight", 1)} <= params
    assert ("a.1.weight", 0) not in params  # the inner batch norm belongs to the inner group


def test_attention_units_are_whole_heads_of_the_fused_projection():
    model, x = build("attention_fused")
    heads = by_source(dependency_groups(graphopt.trace(model, (x,))), "qkv.weight")
    qkv = next(m for m in heads.params() if m.value == "qkv.weight")
    proj = next(m for m in heads.params() if m.value == "proj.weight")
    dim, dh = 32, 8
    for h in range(4):  # rows of q, k and v of head h; the projection's columns reading it
        want = [s * dim + h * dh + d for s in range(3) for d in range(dh)]
        assert qkv.positions[h].tolist() == want
        assert proj.axis == 1 and proj.positions[h].tolist() == list(range(h * dh, (h + 1) * dh))


def test_flatten_turns_a_channel_into_a_block_of_features():
    model, x = build("flatten_linear")
    group = by_source(dependency_groups(graphopt.trace(model, (x,))), "c.weight")
    fc1 = next(m for m in group.params() if m.value == "fc1.weight")
    assert fc1.axis == 1 and fc1.positions[3].tolist() == list(range(3 * 64, 4 * 64))


def test_depthwise_and_grouped_convs_shrink_their_group_count():
    model, x = build("grouped_depthwise")
    g = graphopt.trace(model, (x,))
    out = Pipeline.parse("prune-channels{ratio=0.5}").run(g).graph
    grouped = next(n for n in out.nodes if n.op == "conv" and n.inputs[1] == "g.weight")
    depthwise = next(n for n in out.nodes if n.op == "conv" and n.inputs[1] == "dw.weight")
    assert grouped.attrs["groups"] == 2 and out.params["g.weight"].data.shape == (16, 8, 3, 3)
    assert depthwise.attrs["groups"] == 16 and out.params["dw.weight"].data.shape == (16, 1, 3, 3)


def kill_units(graph, group, units):
    """Zero every weight the group slices at `units`: those units contribute nothing anywhere."""
    for m in group.params():
        data = np.array(graph.params[m.value].data)
        index = [slice(None)] * data.ndim
        index[m.axis] = np.concatenate([m.positions[u] for u in units])
        data[tuple(index)] = 0
        graph.set_param(m.value, data)


def touches_norm_statistics(graph, group) -> bool:
    """Layer norms average over the pruned axis: dead channels still count there, so pruning is not exact."""
    values = {m.value for m in group.members}
    return any(n.op == "layer_norm" and n.inputs[0] in values for n in graph.nodes)


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_pruning_dead_units_leaves_outputs_unchanged(structure, frontend):
    model, x = build(structure)
    graph = imported(frontend, model, x)
    groups = [g for g in dependency_groups(graph) if g.prunable]
    exact = [g for g in groups if not touches_norm_statistics(graph, g)]
    assert exact, format_groups(dependency_groups(graph))
    keep = sorted(g.sources[0] for g in groups if g not in exact)  # left whole: not exact
    for group in exact:  # the lower half of every group's units die; l1 ranks them last
        kill_units(graph, group, range(group.units - group.units // 2, group.units))
    before = graph.run([x.numpy()])[0]
    ignore = f" ignore=[{','.join(keep)}]" if keep else ""
    pipeline = f"prune-channels{{ratio=0.5{ignore}}},prune-heads{{ratio=0.5}}"
    pruned = Pipeline.parse(pipeline).run(graph).graph
    pruned.verify()
    for group in exact:
        for m in group.params():
            assert pruned.params[m.value].data.shape[m.axis] < graph.params[m.value].data.shape[m.axis], m.value
    np.testing.assert_allclose(pruned.run([x.numpy()])[0], before, atol=1e-5, rtol=1e-4)


class ToOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.c(x))


class ThroughOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(torch.cumsum(self.c(x), dim=1).flatten(1))


class SoftmaxOverChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.softmax(self.c(x), dim=1).mean(dim=(2, 3)))


class AmbiguousReshape(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(3, 6, 1), nn.Linear(24, 4)

    def forward(self, x):  # [N, 6, 4, 4] -> [N, 4, 24]: a channel straddles rows
        return self.fc(self.c(x).reshape(x.shape[0], 4, 24)).mean(dim=1)


@pytest.mark.parametrize(
    "model,shape,reason",
    [
        (ToOutput, (1, 3, 8, 8), "reaches graph output"),
        (ThroughOpaque, (1, 3, 8, 8), "opaque node"),
        (SoftmaxOverChannels, (1, 3, 4, 4), "softmax normalizes over"),
        (AmbiguousReshape, (1, 3, 4, 4), "ambiguous factorisation"),
    ],
)
def test_unsafe_groups_are_reported_with_the_reason_and_never_pruned(model, shape, reason):
    torch.manual_seed(0)
    m = model().eval()
    graph = graphopt.trace(m, (torch.randn(*shape),))
    group = by_source(dependency_groups(graph), "c.weight")
    assert not group.prunable and reason in group.reason, group.describe()
    result = Pipeline.parse("prune-channels{ratio=0.5}").run(graph)
    assert graph.params["c.weight"].data.shape == result.graph.params["c.weight"].data.shape
    assert not result.changed


def test_groups_are_memoized_until_the_graph_changes():
    model, x = build("residual")
    graph = graphopt.trace(model, (x,))
    first = dependency_groups(graph)
    assert dependency_groups(graph) is first
    graph.set_param("fc.bias", np.zeros(10, np.float32))
    assert dependency_groups(graph) is not first


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_small", "bert_small"])
def test_bundled_models_have_prunable_groups_of_every_kind_they_contain(name, import_model):
    graph, _, _ = import_model("fx", name)
    groups = dependency_groups(graph)
    kinds = {g.kind for g in groups if g.prunable}
    assert "channels" in kinds
    if name in ("vit_small", "bert_small"):
        assert {"heads", "ffn"} <= kinds
    skipped = [g for g in groups if not g.prunable]
    assert all("reaches graph output" in g.reason for g in skipped), format_groups(groups)


class SplitOffOneChannel(nn.Module):
    """A split whose second part is one channel: the unit owning it may not be removed (no empty tensor)."""

    def __init__(self):
        super().__init__()
        self.c, self.side, self.fc = nn.Conv2d(3, 5, 1), nn.Conv2d(1, 1, 3, padding=1), nn.Linear(5, 3)

    def forward(self, x):
        a, b = torch.split(torch.relu(self.c(x)), [4, 1], dim=1)
        return self.fc(torch.cat([a * 0.5, self.side(b)], dim=1).mean(dim=(2, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_a_unit_that_owns_a_whole_tensor_stays(seed):
    graph = graphopt.trace(SplitOffOneChannel().eval(), (torch.randn(1, 3, 4, 4),))
    out = Pipeline.parse("prune-channels{ratio=0.75 importance=random}").run(graph, PassContext(seed=seed)).graph
    out.verify()
    assert out.params["side.weight"].data.shape[1] == 1 and out.run([np.ones((1, 3, 4, 4), np.float32)])[0].shape == (
        1,
        3,
    )
