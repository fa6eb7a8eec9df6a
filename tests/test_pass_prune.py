"""prune-channels / prune-heads / prune-ffn: bundled models, coupled structures, options, stats, bad input.

The pruned graph must verify, keep its input and output shapes, run in torch,
agree with onnxruntime on its own ONNX export, and cost less as the ratio grows.
Pruning is lossy, so outputs are compared between backends, not with the
unpruned model (fine-tuning's job; see test_prune_finetune_digits.py).
TVM builds of the pruned graphs are in test_pass_prune_tvm.py.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graph_support import _import
from prune_structures import STRUCTURES, build
from torch import nn

from graphopt.analysis.cost import graph_cost, human_count
from graphopt.errors import PassError, PipelineParseError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.prune_channels import PruneChannels
from graphopt.passes.prune_ffn import PruneFfn
from graphopt.passes.prune_heads import PruneHeads

FRONTENDS = ("fx", "onnx")
RATIOS = (0.1, 0.3, 0.5, 0.7)
TRANSFORMER_PASSES = ("prune-channels", "prune-heads", "prune-ffn")
MODEL_PASSES = [
    (model, p)
    for model in ("resnet18", "mobilenet_v2", "vit_small", "bert_small")
    for p in (TRANSFORMER_PASSES if model in ("vit_small", "bert_small") else ("prune-channels",))
]
STRUCTURE_PASSES = [
    (s, p)
    for s in STRUCTURES
    for p in ("prune-channels", "prune-heads", "prune-ffn")
    if p == "prune-channels"
    or (p == "prune-heads" and s.startswith("attention"))
    or (p == "prune-ffn" and (s.startswith("attention") or s in ("token_mixer", "flatten_linear")))
]
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the ONNX export of attention_fused
CONV = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)


# ---- shared checks ---------------------------------------------------------------------


def assert_close(got, ref, tol: float = 1e-4) -> None:
    """Within `tol` absolutely and relatively; absolutely against the output's scale when it is tiny."""
    ref = np.asarray(ref)
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    np.testing.assert_allclose(np.asarray(got), ref, rtol=tol, atol=tol * min(1.0, max(scale, 1e-30)))


def run_ort(graph: Graph, inputs) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # unused batch-norm counters in ONNX imports warn otherwise
    session = ort.InferenceSession(graph.to_onnx().SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(graph.inputs, inputs)))


def prune(graph: Graph, pipeline: str, ctx: PassContext | None = None):
    """Run `pipeline`; the caller's graph must come back untouched and the result must verify."""
    text = str(graph)
    result = Pipeline.parse(pipeline).run(graph, ctx)
    assert str(graph) == text
    result.graph.verify()
    return result


def check_pruned(original: Graph, pruned: Graph, inputs) -> None:
    """Verified, same interface shapes, runs in torch with those shapes, onnxruntime agrees."""
    pruned.verify()
    assert [pruned.type_of(v) for v in pruned.inputs] == [original.type_of(v) for v in original.inputs]
    shapes = [tuple(original.type_of(v).shape) for v in original.outputs]
    assert [tuple(pruned.type_of(v).shape) for v in pruned.outputs] == shapes
    outputs = pruned.run(inputs)
    assert [o.shape for o in outputs] == shapes
    assert all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f")
    for got, ref in zip(run_ort(pruned, inputs), outputs):
        assert_close(got, ref)


_PRUNED: dict = {}  # (frontend, model, pass, ratio) -> PipelineResult, shared by the matrix and the cost checks


def pruned_model(import_model, frontend: str, name: str, pass_name: str, ratio: float):
    graph, _, inputs = import_model(frontend, name)
    key = (frontend, name, pass_name, ratio)
    if key not in _PRUNED:
        _PRUNED[key] = prune(graph, f"{pass_name}{{ratio={ratio}}}")
    return graph, _PRUNED[key], inputs


_STRUCTURE_GRAPHS: dict = {}


def structure(frontend: str, name: str) -> tuple[Graph, list[np.ndarray]]:
    if (frontend, name) not in _STRUCTURE_GRAPHS:
        model, x = build(name)
        _STRUCTURE_GRAPHS[frontend, name] = (_import(frontend, model, (x,)), [x.numpy()])
    graph, inputs = _STRUCTURE_GRAPHS[frontend, name]
    return graph.copy(), inputs


def assert_cost_falls(costs, strictly: bool) -> None:
    """costs[0] is the unpruned graph, then one per ratio in increasing order."""
    for attr in ("params", "macs"):
        values = [getattr(c, attr) for c in costs]
        assert values == sorted(values, reverse=True), f"{attr} does not fall with the ratio: {values}"
        assert values[-1] < values[0], f"{attr} never fell: {values}"
        if strictly:
            assert len(set(values)) == len(values), f"{attr} stalls between ratios: {values}"


# ---- every bundled model, both frontends ----------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("name,pass_name", MODEL_PASSES)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_bundled_model_prunes_to_a_graph_that_runs_in_torch_and_onnxruntime(
    import_model, frontend, name, pass_name, ratio
):
    graph, result, inputs = pruned_model(import_model, frontend, name, pass_name, ratio)
    check_pruned(graph, result.graph, inputs)


@pytest.mark.parametrize("name,pass_name", MODEL_PASSES)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_bundled_model_cost_falls_with_the_ratio(import_model, frontend, name, pass_name):
    graph, _, _ = import_model(frontend, name)
    costs = [graph_cost(graph)]
    costs += [graph_cost(pruned_model(import_model, frontend, name, pass_name, r)[1].graph) for r in RATIOS]
    # 4 heads per block: 0.5 and 0.7 both keep 2, 0.1 keeps all
    assert_cost_falls(costs, strictly=pass_name != "prune-heads")


# ---- every coupled structure, both frontends ------------------------------------------


@pytest.mark.parametrize("name,pass_name", STRUCTURE_PASSES)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_structure_prunes_at_every_ratio(frontend, name, pass_name):
    graph, inputs = structure(frontend, name)
    costs = [graph_cost(graph)]
    for ratio in RATIOS:
        result = prune(graph, f"{pass_name}{{ratio={ratio}}}")
        check_pruned(graph, result.graph, inputs)
        costs.append(result.cost_after)
    assert_cost_falls(costs, strictly=False)


# ---- golden IR -------------------------------------------------------------------------


def conv_bn_net(c1: int = 4, c2: int = 6, seed: int = 0, tweak=None) -> Graph:
    """conv1 -> bn -> relu -> conv2 (1x1, stride 2) -> flatten -> fc; `tweak(arrays)` edits weights first."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv1.weight": rng.standard_normal((c1, 3, 3, 3)),
        "conv1.bias": rng.standard_normal(c1),
        "bn.weight": rng.uniform(0.5, 1.5, c1),
        "bn.bias": rng.standard_normal(c1),
        "bn.running_mean": rng.standard_normal(c1) * 0.1,
        "bn.running_var": rng.uniform(0.5, 1.5, c1),
        "conv2.weight": rng.standard_normal((c2, c1, 1, 1)),
        "fc.weight": rng.standard_normal((3, c2 * 4)),
        "fc.bias": rng.standard_normal(3),
    }
    if tweak is not None:
        tweak(arrays)
    g = Graph("conv_bn_net")
    p = {k: g.add_param(k, v.astype(np.float32), trainable=not k.startswith("bn.running")) for k, v in arrays.items()}
    x = g.add_input("x", TensorType((1, 3, 4, 4)))
    c = g.add_node("conv", [x, p["conv1.weight"], p["conv1.bias"]], attrs=CONV, name="conv1").output
    bn_inputs = [c] + [p[f"bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    b = g.add_node("batch_norm", bn_inputs, attrs={"eps": 1e-5}, name="bn").output
    r = g.add_node("relu", [b], name="relu").output
    attrs = dict(CONV, stride=(2, 2), pads=(0, 0, 0, 0))
    c2_ = g.add_node("conv", [r, p["conv2.weight"]], attrs=attrs, name="conv2").output
    f = g.add_node("flatten", [c2_], name="flatten").output
    y = g.add_node("linear", [f, p["fc.weight"], p["fc.bias"]], name="fc").output
    g.set_outputs([y])
    return g


def test_golden_prune_channels_halves_both_conv_groups():
    g = conv_bn_net()
    assert (
        str(g).split("\n  %")[0]
        == """\
graph conv_bn_net(%x: f32[1,3,4,4]) -> (%fc)
  @conv1.weight: f32[4,3,3,3]
  @conv1.bias: f32[4]
  @bn.weight: f32[4]
  @bn.bias: f32[4]
  @bn.running_mean: f32[4]  (frozen)
  @bn.running_var: f32[4]  (frozen)
  @conv2.weight: f32[6,4,1,1]
  @fc.weight: f32[3,24]
  @fc.bias: f32[3]"""
    )
    out = prune(g, "prune-channels{ratio=0.5}")
    assert (
        str(out.graph)
        == """\
graph conv_bn_net(%x: f32[1,3,4,4]) -> (%fc)
  @conv1.weight: f32[2,3,3,3]
  @conv1.bias: f32[2]
  @bn.weight: f32[2]
  @bn.bias: f32[2]
  @bn.running_mean: f32[2]  (frozen)
  @bn.running_var: f32[2]  (frozen)
  @conv2.weight: f32[3,2,1,1]
  @fc.weight: f32[3,12]
  @fc.bias: f32[3]
  %conv1: f32[1,2,4,4] = conv(%x, @conv1.weight, @conv1.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %bn: f32[1,2,4,4] = batch_norm(%conv1, @bn.weight, @bn.bias, @bn.running_mean, @bn.running_var) {eps=1e-05}
  %relu: f32[1,2,4,4] = relu(%bn)
  %conv2: f32[1,3,2,2] = conv(%relu, @conv2.weight) {dilation=[1,1], groups=1, pads=[0,0,0,0], stride=[2,2]}
  %flatten: f32[1,12] = flatten(%conv2) {end_dim=-1, start_dim=1}
  %fc: f32[1,3] = linear(%flatten, @fc.weight, @fc.bias)
  return %fc"""
    )
    assert out.records[0].stats["channels"] == "5/10"


# ---- options ---------------------------------------------------------------------------


def kept(before: np.ndarray, after: np.ndarray, axis: int = 0) -> list[int]:
    """Indices (along `axis`) of the slices of `before` that survive, in order, in `after`."""
    b, a = np.moveaxis(before, axis, 0), np.moveaxis(after, axis, 0)
    out = []
    for row in a:
        hits = [i for i in range(len(b)) if np.array_equal(b[i], row)]
        assert len(hits) == 1, "a pruned slice must be a copy of exactly one original slice"
        out.append(hits[0])
    assert out == sorted(out), "pruning keeps the original order"
    return out


def kept_conv1(graph: Graph, pipeline: str, ctx: PassContext | None = None) -> list[int]:
    out = prune(graph, pipeline, ctx).graph
    return kept(graph.params["conv1.weight"].data, out.params["conv1.weight"].data)


DOOMED = [1, 4, 6]  # the channels of conv1 each test makes least important by its criterion


def test_l1_removes_the_channels_whose_rows_were_scaled_down():
    def tweak(a):
        a["conv1.weight"] *= 10.0
        a["conv1.weight"][DOOMED] *= 1e-4

    g = conv_bn_net(c1=8, tweak=tweak)
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=l1}") == [0, 2, 3, 5, 7]
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=l2}") == [0, 2, 3, 5, 7]


def test_bn_scale_removes_the_channels_with_the_smallest_gamma():
    def tweak(a):
        a["conv1.weight"][DOOMED] *= 10.0  # largest rows: l1 would keep them
        a["bn.weight"][DOOMED] = [0.01, -0.02, 0.03]

    g = conv_bn_net(c1=8, tweak=tweak)
    result = prune(g, "prune-channels{ratio=0.375 importance=bn-scale}")
    assert kept(g.params["conv1.weight"].data, result.graph.params["conv1.weight"].data) == [0, 2, 3, 5, 7]
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=l1}") != [0, 2, 3, 5, 7]
    # conv2's group has no norm: it falls back to l1, and the stats say so
    assert result.records[0].stats["importance"] == "bn-scale,l1"


def dead_channels(a):
    """DOOMED channels of conv1 get the largest rows, but conv2 never reads them: their gradients are zero."""
    a["conv1.weight"][DOOMED] *= 10.0
    a["conv2.weight"][:, DOOMED] = 0.0


def test_taylor_removes_channels_that_do_not_reach_the_loss_with_seeded_inputs():
    g = conv_bn_net(c1=8, tweak=dead_channels)
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=taylor}") == [0, 2, 3, 5, 7]
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=l1}") != [0, 2, 3, 5, 7]


def test_taylor_uses_the_calibration_data():
    g = conv_bn_net(c1=8, tweak=dead_channels)
    rng = np.random.default_rng(5)
    data = [[rng.standard_normal((1, 3, 4, 4)).astype(np.float32)] for _ in range(4)]
    ctx = PassContext(calibration=data)
    assert kept_conv1(g, "prune-channels{ratio=0.375 importance=taylor}", ctx) == [0, 2, 3, 5, 7]
    # all-zero images: conv1's output is its bias everywhere, so the scores change with the data
    zeros = PassContext(calibration=[[np.zeros((1, 3, 4, 4), np.float32)]] * 2)
    out_data = prune(g, "prune-channels{ratio=0.5 importance=taylor}", ctx).graph
    out_zeros = prune(g, "prune-channels{ratio=0.5 importance=taylor}", zeros).graph
    assert str(out_data) == str(out_zeros)  # same shapes ...
    assert not np.array_equal(out_data.params["conv1.weight"].data, out_zeros.params["conv1.weight"].data)


def test_taylor_with_an_empty_calibration_set_is_a_clear_error():
    g = conv_bn_net()
    with pytest.raises(PassError, match="calibration set is empty"):
        Pipeline.parse("prune-channels{importance=taylor}").run(g, PassContext(calibration=[]))


def test_random_is_reproducible_by_seed_and_differs_by_seed():
    g = conv_bn_net(c1=16, c2=16)
    w1, w2 = g.params["conv1.weight"].data, g.params["conv2.weight"].data

    def chosen(seed):
        out = prune(g, "prune-channels{ratio=0.5 importance=random}", PassContext(seed=seed)).graph
        first = kept(w1, out.params["conv1.weight"].data)
        return first, kept(w2[:, first], out.params["conv2.weight"].data)

    first = chosen(0)
    assert chosen(0) == first
    assert chosen(1) != first
    assert [len(k) for k in first] == [8, 8]


def test_global_scope_ranks_across_groups_and_removes_the_same_total():
    def tweak(a):
        a["conv1.weight"] *= 10.0
        a["conv1.weight"][[0, 1, 2, 3]] *= 1e-4  # half of conv1 is near zero; conv2's channels are alike

    g = conv_bn_net(c1=8, c2=8, tweak=tweak)

    def widths(scope):
        out = prune(g, f"prune-channels{{ratio=0.25 scope={scope}}}").graph
        return out.params["conv1.weight"].data.shape[0], out.params["conv2.weight"].data.shape[0]

    layer, glob = widths("layer"), widths("global")
    assert layer == (6, 6)  # 25 % of each group
    assert glob[0] < glob[1]  # the global ranking takes more from conv1, whose channels matter less
    assert abs(sum(glob) - sum(layer)) <= 1  # the same total within rounding


def test_round_to_keeps_widths_multiples_of_8():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 40, 3, padding=1), nn.BatchNorm2d(40)
            self.c2, self.b2 = nn.Conv2d(40, 24, 3, padding=1), nn.BatchNorm2d(24)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            x = self.b2(self.c2(self.b1(self.c1(x)).relu())).relu()
            return self.fc(x.mean(dim=(2, 3)))

    model = Wide().eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    g = _import("fx", model, (x,))
    for ratio in (0.3, 0.5):
        plain = prune(g, f"prune-channels{{ratio={ratio}}}").graph
        rounded = prune(g, f"prune-channels{{ratio={ratio} round-to=8}}").graph
        check_pruned(g, rounded, [x.numpy()])
        convs = [n for n, p in rounded.params.items() if p.data.ndim == 4]
        widths = [rounded.params[n].data.shape[0] for n in convs]
        assert all(w % 8 == 0 for w in widths), widths
        assert rounded.params["fc.weight"].data.shape[1] % 8 == 0
        assert widths != [plain.params[n].data.shape[0] for n in convs]  # rounding changed something
        assert all(w < g.params[n].data.shape[0] for n, w in zip(convs, widths))


def test_ignore_keeps_the_named_nodes_channels():
    g = conv_bn_net(c1=8, c2=8)
    out = prune(g, "prune-channels{ratio=0.5 ignore=conv1}")
    assert out.graph.params["conv1.weight"].data.shape == (8, 3, 3, 3)
    assert out.graph.params["conv2.weight"].data.shape == (4, 8, 1, 1)
    # a parameter name keeps every group that slices it: bn.weight belongs to conv1's group only
    by_param = prune(g, "prune-channels{ratio=0.5 ignore=[bn.weight]}").graph
    assert by_param.params["conv1.weight"].data.shape == (8, 3, 3, 3)
    assert by_param.params["conv2.weight"].data.shape == (4, 8, 1, 1)
    plain = prune(g, "prune-channels{ratio=0.5}").graph
    assert plain.params["conv1.weight"].data.shape == (4, 3, 3, 3)


def test_pipeline_text_parses_kebab_keys_and_round_trips():
    text = (
        "prune-channels{ratio=0.3 importance=bn-scale scope=global round-to=8 ignore=[conv1,fc]},"
        "prune-heads{ratio=0.25}"
    )
    p = Pipeline.parse(text)
    assert p.passes == (
        PruneChannels(ratio=0.3, importance="bn-scale", scope="global", round_to=8, ignore=("conv1", "fc")),
        PruneHeads(ratio=0.25),
    )
    assert Pipeline.parse(str(p)) == p
    for cls in (PruneChannels, PruneHeads, PruneFfn):
        q = Pipeline([cls(ratio=0.7, importance="taylor", samples=3)])
        assert Pipeline.parse(str(q)) == q


def test_ratio_zero_changes_nothing():
    g = conv_bn_net()
    out = prune(g, "prune-channels{ratio=0.0}")
    assert not out.changed and str(out.graph) == str(g)


# ---- stats, report, log ----------------------------------------------------------------


def test_stats_count_groups_and_show_cost_before_and_after(import_model):
    graph, result, _ = pruned_model(import_model, "fx", "resnet18", "prune-channels", 0.5)
    stats = result.records[0].stats
    before, after = graph_cost(graph), graph_cost(result.graph)
    assert stats["params"] == f"{before.params}->{after.params}"
    assert stats["macs"] == f"{before.macs}->{after.macs}"
    assert stats["groups"] > 0 and stats["skipped"] >= 1  # the classifier's group reaches the output
    kept_, total = map(int, stats["channels"].split("/"))
    assert kept_ == total // 2


def test_report_shows_the_cost_table_after_pruning():
    g = conv_bn_net()
    result = prune(g, "prune-channels{ratio=0.5}")
    report = result.report()
    rows = {line.split()[0]: line.split() for line in report.splitlines() if line.strip()}
    assert rows["prune-channels"][3] == "yes"
    for node in ("conv1", "bn", "conv2", "fc"):
        assert node in rows, report
    before, after = result.cost_before, result.cost_after
    assert after.macs < before.macs
    counts = [human_count(n) for n in (before.params, before.macs, after.params, after.macs)]
    assert rows["total"][1:5] == counts, report
    assert f"MACs {counts[1]} -> {counts[3]}" in report


def test_log_names_the_skipped_groups_and_why():
    lines: list[str] = []
    g = conv_bn_net()
    prune(g, "prune-channels{ratio=0.5 ignore=conv2}", PassContext(log=lines.append))
    skipped = [line for line in lines if "left whole" in line]
    assert any("fc" in line and "reaches graph output" in line for line in skipped), lines
    assert any("conv2" in line and "ignored (conv2)" in line for line in skipped), lines
    assert any(line.startswith("[1/1] prune-channels") and "skipped=2" in line for line in lines), lines


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PruneChannels, PruneHeads, PruneFfn])
@pytest.mark.parametrize("option,value", [("ratio", -0.1), ("ratio", 1.0), ("round_to", 0), ("samples", 0)])
def test_out_of_range_options_fail_at_construction_and_parse(cls, option, value):
    with pytest.raises(ValueError, match=option):
        cls(**{option: value})
    with pytest.raises(PipelineParseError, match=f"{cls.name}.*{option}"):
        Pipeline.parse(f"{cls.name}{{{option.replace('_', '-')}={value}}}")


def test_unknown_importance_is_a_parse_error_naming_the_option():
    with pytest.raises(PipelineParseError, match="importance.*l1"):
        Pipeline.parse("prune-channels{importance=l3}")
    with pytest.raises(ValueError, match="unknown importance 'l3'"):
        PruneChannels(importance="l3")


def test_ignore_naming_a_missing_node_is_an_error_naming_it():
    g = conv_bn_net()
    text = str(g)
    with pytest.raises(PassError, match="ignore names 'conv9'") as err:
        Pipeline.parse("prune-channels{ignore=[conv1,conv9]}").run(g)
    assert "crashed" not in str(err.value)
    assert str(g) == text


def test_nothing_prunable_says_why_and_changes_nothing():
    g = Graph("single_linear")
    x = g.add_input("x", TensorType((2, 5)))
    w = g.add_param("fc.weight", np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    g.set_outputs([g.add_node("linear", [x, w], name="fc").output])
    for p in ("prune-channels", "prune-heads", "prune-ffn"):
        result = prune(g, f"{p}{{ratio=0.5}}")
        assert not result.changed and str(result.graph) == str(g)
        assert "no prunable group" in result.records[0].stats["reason"]
    stats = prune(g, "prune-channels{ratio=0.5}").records[0].stats
    assert "reaches graph output 'fc'" in stats["reason"] and stats["skipped"] == 1


def test_no_group_of_the_pass_kind_changes_nothing():
    graph, inputs = structure("fx", "residual")
    result = prune(graph, "prune-heads{ratio=0.5}")
    assert not result.changed
    assert result.records[0].stats["reason"] == "no prunable group (the graph has no heads group)"


def test_keep_counts_round_down_to_the_step():
    from graphopt.passes.prune_apply import keep_count

    assert [keep_count(16, 0.3, 8), keep_count(24, 0.5, 8), keep_count(40, 0.5, 8)] == [8, 8, 16]
    assert keep_count(64, 0.5) == 32 and keep_count(4, 0.9) == 1 and keep_count(8, 0.9, 8) == 8


def test_round_to_counts_channels_when_a_unit_is_a_whole_conv_group():
    graph, _ = structure("fx", "grouped_depthwise")  # the groups=4 conv: a unit is a group of 8 channels
    out = prune(graph, "prune-channels{ratio=0.5 round-to=8}").graph
    assert out.params["g.weight"].data.shape[0] == 16  # two of four groups: 16 channels, a multiple of 8
