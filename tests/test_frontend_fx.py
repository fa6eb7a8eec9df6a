"""torch.export frontend: round trips torch → Graph → torch, golden IR, model safety, errors."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphopt.errors import FrontendError
from graphopt.frontends.fx import import_exported, trace

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")


def _leaves(out):
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def roundtrip(model: nn.Module, inputs: tuple, **kw):
    """Trace, verify, emit, and check the emitted module reproduces `model` on `inputs`."""
    graph = trace(model, inputs, **kw)
    graph.verify()
    assert graph.metadata["source"] == "fx"
    module = graph.to_torch()
    with torch.no_grad():
        want, got = _leaves(model(*inputs)), _leaves(module(*inputs))
    assert len(want) == len(got)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    return graph


# --- models --------------------------------------------------------------------------


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.same = nn.Conv2d(8, 6, 4, padding="same", dilation=1)  # asymmetric pads
        self.valid = nn.Conv2d(6, 6, (1, 3), padding="valid")
        self.conv1d = nn.Conv1d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 + 6, 5)
        for bn in (self.bn, self.bn2):  # non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu6(self.bn2(self.depthwise(self.grouped(x))))
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
        x = self.valid(self.same(x))
        a = F.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False)
        a = F.adaptive_avg_pool2d(a, 1).flatten(1)
        s = self.conv1d(x.mean(dim=2))
        s = F.adaptive_max_pool1d(s, 1).squeeze(-1)
        return self.fc(torch.cat([s, a], dim=1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)
        self.drop = nn.Dropout(0.3)
        self.bn = nn.BatchNorm1d(32, affine=False)

    def forward(self, x):
        h = self.drop(F.gelu(self.l1(x)))
        h = F.silu(self.bn(h)) + torch.sigmoid(h) * torch.tanh(h) - F.hardswish(h)
        h = F.hardsigmoid(self.l2(h)) * 2.0 + F.hardtanh(h, -0.5, 0.5)
        h = torch.add(h, h.clamp(min=0.1), alpha=0.5) / 3 + (1 - h) ** 2
        return self.l3(h)


class Attention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.head_dim**-0.5
        attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class TransformerBlock(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class EmbeddingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(50, 16)
        self.pos = nn.Embedding(8, 16)
        self.register_buffer("positions", torch.arange(8), persistent=False)
        self.head = nn.Linear(16, 3)

    def forward(self, ids):
        h = self.tok(ids) + self.pos(self.positions[: ids.shape[1]])
        return self.head(h.mean(dim=1)), h.sum(dim=(0, 2), keepdim=True)


class SplitCat(nn.Module):
    def forward(self, x):
        a, b = x.split([2, 4], dim=1)
        c, d, e = torch.chunk(x, 3, dim=-1)
        rows = x.unbind(dim=2)
        y = torch.cat([b, a, c.transpose(1, 2)], dim=1)
        z = torch.cat([rows[0], rows[-1].t().t(), e[:, :, 1]], dim=-1).unsqueeze(1).expand(-1, 3, -1)
        return y.permute(0, 2, 1).contiguous(), z[..., 1::2], d.flatten(), x[1].to(torch.float64)


class WithOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x):
        return torch.flip(self.pad(self.conv(x)), dims=[-1]).relu()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1))


class ShapeOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        p = y.mean(dim=(2, 3), keepdim=True)
        s = p.squeeze(-1).squeeze(-1)
        u = s.unsqueeze(1).expand(-1, 3, -1)
        return u, y.view(y.size(0), -1), y.reshape(y.size(0), y.size(1), -1), s.squeeze(0)


def _seeded(cls, *inputs):
    torch.manual_seed(0)
    return cls().eval(), inputs


CASES = {
    "convnet": lambda: _seeded(ConvNet, torch.randn(2, 3, 31, 29)),
    "mlp": lambda: _seeded(MLP, torch.randn(5, 16)),
    "transformer": lambda: _seeded(TransformerBlock, torch.randn(2, 7, 32)),
    "embedding": lambda: _seeded(EmbeddingModel, torch.randint(0, 50, (3, 6))),
    "split_cat": lambda: _seeded(SplitCat, torch.randn(4, 6, 6)),
    "opaque": lambda: _seeded(WithOpaque, torch.randn(2, 8, 5, 5)),
    "shape_ops": lambda: _seeded(ShapeOps, torch.randn(2, 3, 5, 5)),
}


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_roundtrip(case):
    model, inputs = CASES[case]()
    roundtrip(model, inputs)


@pytest.mark.parametrize("case", ["convnet", "transformer", "mlp", "split_cat"])
def test_roundtrip_decomposed(case):
    """The ATen forms run_decompositions() produces (addmm, convolution, native_* norms) map too."""
    model, inputs = CASES[case]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ep = torch.export.export(model, inputs).run_decompositions()
    graph = import_exported(ep, name=case)
    graph.verify()
    with torch.no_grad():
        want, got = _leaves(model(*inputs)), _leaves(graph.to_torch()(*inputs))
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    if case != "split_cat":  # addmm(b, x, permute(w)) is recognized as linear
        assert "linear" in graph.op_counts()
    opaque = {n.attrs["target"] for n in graph.nodes if n.is_opaque}
    assert opaque <= {"aten.constant_pad_nd.default"}, opaque  # 'same' padding, even kernel


def test_convnet_ops_and_pads():
    model, inputs = CASES["convnet"]()
    graph = roundtrip(model, inputs)
    counts = graph.op_counts()
    assert not any(k.startswith("opaque") for k in counts), counts
    assert counts["conv"] == 6 and counts["batch_norm"] == 2 and counts["clip"] == 1
    convs = {n.meta["module"]: n for n in graph.nodes if n.op == "conv"}
    assert convs["same"].attrs["pads"] == [1, 1, 2, 2]  # kernel 4: the odd pixel goes at the end
    assert convs["valid"].attrs["pads"] == [0, 0, 0, 0]
    assert convs["grouped"].attrs == {"stride": [1, 1], "pads": [2, 2, 2, 2], "dilation": [2, 2], "groups": 2}
    assert convs["depthwise"].attrs["groups"] == 8
    assert convs["stem"].attrs["stride"] == [2, 2]


def test_transformer_maps_every_op():
    model, inputs = CASES["transformer"]()
    counts = roundtrip(model, inputs).op_counts()
    assert not any(k.startswith("opaque") for k in counts), counts
    for op in ("linear", "layer_norm", "matmul", "softmax", "permute", "reshape", "gelu", "select"):
        assert op in counts, op


def test_split_ops_become_split_nodes():
    model, inputs = CASES["split_cat"]()
    graph = roundtrip(model, inputs)
    counts = graph.op_counts()
    assert counts["split"] == 2 and counts["concat"] == 2 and "cast" in counts
    assert not any(k.startswith("opaque") for k in counts), counts
    chunk = next(n for n in graph.nodes if n.op == "split" and n.name.startswith("chunk"))
    assert chunk.attrs == {"axis": 2, "sizes": [2, 2, 2]} and len(chunk.outputs) == 3


def test_shape_ops_keep_axes_not_sizes():
    model, inputs = CASES["shape_ops"]()
    graph = roundtrip(model, inputs)
    attrs = {n.name: (n.op, dict(n.attrs)) for n in graph.nodes if n.op not in ("conv", "mean")}
    assert attrs == {
        "squeeze": ("squeeze", {"axes": [3]}),
        "squeeze_1": ("squeeze", {"axes": [2]}),
        "unsqueeze": ("unsqueeze", {"axes": [1]}),
        "expand": ("expand", {"shape": [-1, 3, -1]}),
        "view": ("reshape", {"shape": [0, -1]}),
        "reshape": ("reshape", {"shape": [0, 0, -1]}),
    }
    assert graph.outputs[3] == "squeeze_1"  # squeeze(0) of a dim that is not 1 is x itself
    # prune the conv to 5 output channels: every shape op still fits, no attribute rewritten
    conv = next(n for n in graph.nodes if n.op == "conv")
    keep = [0, 2, 3, 5, 7]
    for w in conv.inputs[1:]:
        graph.slice_param(w, 0, keep)
    graph.infer_types(from_values=conv.inputs[1:])
    graph.verify()
    assert [graph.type_of(o).shape for o in graph.outputs] == [(2, 3, 5), (2, 125), (2, 5, 25), (2, 5)]
    with torch.no_grad():
        model.conv.weight.data, model.conv.bias.data = model.conv.weight[keep], model.conv.bias[keep]
        for w, g in zip(model(*inputs), graph.to_torch()(*inputs)):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "size,want",
    [
        ((2, -1), [0, -1]),  # batch copied, -1 kept
        ((2, 3, 20), [0, 0, -1]),  # the one dim after the copied ones is the rest
        ((6, 20), [6, 20]),  # nothing copied: sizes stay
        ((2, 3, 4, 5), [0, 0, 0, 0]),
        ((2, 12, 5), [0, 12, 5]),  # dim 1 changed meaning: not copied
        ((2, 3, 2, 10), [0, 0, 2, 10]),
    ],
)
def test_view_copies_only_a_matching_prefix(size, want):
    class View(nn.Module):
        def forward(self, x):
            return x.view(*size)

    graph = roundtrip(View().eval(), (torch.randn(2, 3, 4, 5),))
    assert graph.nodes[0].op == "reshape" and list(graph.nodes[0].attrs["shape"]) == want


@pytest.mark.parametrize(
    "squeeze,axes",
    [
        (lambda x: x.squeeze(), [1, 3]),  # every size-1 dim at export
        (lambda x: x.squeeze((1, 3)), [1, 3]),
        (lambda x: torch.squeeze(x, dim=-1), [3]),
        (lambda x: x.squeeze((0, 1)), [1]),  # torch skips dim 0 (size 2)
    ],
)
def test_squeeze_forms_keep_axes(squeeze, axes):
    class Squeeze(nn.Module):
        def forward(self, x):
            return squeeze(x)

    graph = roundtrip(Squeeze().eval(), (torch.randn(2, 1, 3, 1),))
    assert [(n.op, list(n.attrs["axes"])) for n in graph.nodes] == [("squeeze", axes)]


def test_unmapped_ops_become_opaque():
    model, inputs = CASES["opaque"]()
    graph = roundtrip(model, inputs)
    opaque = {n.attrs["target"]: n for n in graph.nodes if n.is_opaque}
    assert set(opaque) == {"aten.pad.default", "aten.flip.default"}
    pad = opaque["aten.pad.default"]
    assert pad.attrs["framework"] == "torch" and pad.attrs["kwargs"] == {}
    assert graph.type_of(pad.output).shape == (2, 8, 7, 7)
    assert pad.meta == {"module": "pad"}


def test_scalars_become_frozen_zero_d_params():
    graph = trace(*CASES["mlp"]())
    scalars = [p for name, p in graph.params.items() if p.data.ndim == 0]
    assert scalars and all(not p.trainable for p in scalars)
    assert graph.params["mul_1_scalar"].data == 2.0


def test_params_buffers_and_module_paths():
    model, inputs = CASES["convnet"]()
    graph = trace(model, inputs)
    assert set(model.state_dict()) <= set(graph.params)
    assert graph.params["stem.weight"].trainable
    assert not graph.params["bn.running_mean"].trainable
    assert graph.params["bn.num_batches_tracked"].data.dtype.name == "int64"
    bn = next(n for n in graph.nodes if n.op == "batch_norm")
    assert bn.inputs[1:] == ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
    assert bn.meta["module"] == "bn"
    emb = trace(*CASES["embedding"]())
    assert not emb.params["positions"].trainable and emb.inputs == ("ids",)


def test_inplace_ops_are_read_functionally():
    class InPlace(nn.Module):
        def forward(self, x):
            y = x * 2
            z = y.relu_()  # y is read afterwards: the importer functionalizes first
            out = torch.sigmoid(z)
            out += 1
            return y + 1, out

    roundtrip(InPlace().eval(), (torch.randn(3, 4),))


# --- golden IR -----------------------------------------------------------------------------

GOLDEN_TINY = """\
graph Tiny(%x: f32[1,3,4,4]) -> (%linear)
  @conv.weight: f32[4,3,3,3]
  @conv.bias: f32[4]
  @bn.weight: f32[4]
  @bn.bias: f32[4]
  @fc.weight: f32[2,64]
  @fc.bias: f32[2]
  @bn.running_mean: f32[4]  (frozen)
  @bn.running_var: f32[4]  (frozen)
  @bn.num_batches_tracked: i64[]  (frozen, value=0)
  %conv2d: f32[1,4,4,4] = conv(%x, @conv.weight, @conv.bias) {dilation=[1,1], groups=1, pads=[1,1,1,1], stride=[1,1]}
  %batch_norm: f32[1,4,4,4] = batch_norm(%conv2d, @bn.weight, @bn.bias, @bn.running_mean, @bn.running_var) {eps=1e-05}
  %relu: f32[1,4,4,4] = relu(%batch_norm)
  %flatten: f32[1,64] = flatten(%relu) {end_dim=3, start_dim=1}
  %linear: f32[1,2] = linear(%flatten, @fc.weight, @fc.bias)
  return %linear"""


def test_golden_ir_tiny():
    model, inputs = _seeded(Tiny, torch.randn(1, 3, 4, 4))
    assert str(roundtrip(model, inputs)) == GOLDEN_TINY


# --- the caller's model ------------------------------------------------------------------------


def test_model_untouched_in_train_mode():
    model, inputs = CASES["convnet"]()
    model.train()
    model.bn2.eval()  # mixed flags survive too
    flags = {name: m.training for name, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = trace(model, inputs)
    assert {name: m.training for name, m in model.named_modules()} == flags
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # the graph holds eval semantics (running statistics), and copies, not views
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(graph.to_torch()(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)
        model.stem.weight.add_(1.0)
    assert not torch.equal(torch.tensor(graph.params["stem.weight"].data), model.stem.weight)


def test_untraceable_model_raises_frontend_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # Python control flow on a tensor value
                return x * 2
            return x - 1

    model = DataDependent()
    model.train()
    with pytest.raises(FrontendError, match=r"torch.export cannot trace DataDependent: \S"):
        trace(model, (torch.randn(3),))
    assert model.training


def test_name_and_single_tensor_input():
    model, (x,) = CASES["mlp"]()
    graph = trace(model, x, name="mlp")
    assert graph.name == "mlp" and graph.inputs == ("x",)


# --- the model zoo ----------------------------------------------------------------------------

ZOO = ["resnet18", "mobilenet_v2", "vit_small", "bert_small", "digits_cnn", "digits_mlp"]


@pytest.mark.skipif(
    importlib.util.find_spec("graphopt.models.registry") is None, reason="graphopt.models.registry is not available"
)
@pytest.mark.parametrize("name", ZOO)
def test_model_zoo_roundtrip(name):
    from graphopt.models.registry import get_model

    model, inputs = get_model(name, batch_size=1, seed=0)
    graph = roundtrip(model, inputs)
    assert not any(n.is_opaque for n in graph.nodes), graph.op_counts()
