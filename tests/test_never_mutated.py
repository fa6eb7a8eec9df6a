"""Issue 12, item 5: no public call modifies what the user hands it.

Digests taken before and after every call: an `nn.Module`'s state_dict, buffers (also
non-persistent ones), parameter identities, requires_grad and training flags; a Graph's
printed IR and content fingerprint (parameter bytes, masks, encodings); an ONNX file's
bytes and mtime; a ModelProto's serialization; input arrays. Calls: trace, load_onnx
(file, bytes, ModelProto), pipelines of exact, pruning, quantizing and weight-compression
passes through the pass manager, to_torch (then its module edited), run, save_onnx,
save_compressed, load_compressed, train, compile and graphopt.optimize, and `graphopt opt`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import graphopt
from graphopt.cli import main
from graphopt.ir.fingerprint import fingerprint
from graphopt.passes import PassContext, Pipeline, default_instruments
from graphopt.train import train


class Net(nn.Module):
    """conv -> bn -> relu -> conv -> bn -> relu -> pool -> linear, scaled by a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.register_buffer("scale", torch.tensor(0.5), persistent=False)
        with torch.no_grad():  # statistics that are not the defaults, so folding them matters
            for bn in (self.b1, self.b2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean(dim=(2, 3))) * self.scale


def module_digest(m: nn.Module) -> str:
    h = hashlib.sha256()
    tensors = {**m.state_dict(keep_vars=True), **dict(m.named_buffers())}
    for name, t in sorted(tensors.items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)} {t.requires_grad}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for name, p in m.named_parameters():
        h.update(f"{name} {id(p)}".encode())  # not replaced by another Parameter object
    h.update(repr([(n, s.training) for n, s in m.named_modules()]).encode())
    return h.hexdigest()


def graph_digest(g) -> tuple:
    return str(g), fingerprint(g), repr(g.metadata), g.inputs, g.outputs


def file_digest(path: Path) -> tuple:
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def arrays_digest(arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


@pytest.fixture(scope="module")
def user():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    return model, x


@pytest.fixture(scope="module")
def traced(user):
    model, x = user
    before, xb = module_digest(model), x.clone()
    graph = graphopt.trace(model, (x,))
    assert module_digest(model) == before and torch.equal(x, xb)
    return graph


@pytest.fixture(scope="module")
def onnx_file(traced, tmp_path_factory):
    path = tmp_path_factory.mktemp("never_mutated") / "net.onnx"
    traced.save_onnx(path)
    return path


def test_trace_leaves_the_module_and_inputs_alone(user, traced):
    model, x = user
    before = module_digest(model)
    model.train()  # a module in training mode stays in training mode (and its BN statistics stay)
    try:
        train_before = module_digest(model)
        with pytest.warns(UserWarning):
            graphopt.trace(model, (x,))
        assert module_digest(model) == train_before
    finally:
        model.eval()
    assert module_digest(model) == before


@pytest.mark.parametrize(
    "pipeline",
    [
        "fold-bn,fold-constants,eliminate-identity,eliminate-dead-code",
        "fold-bn,prune-channels{ratio=0.5}",
        "fold-bn,quantize",
        "prune-magnitude{sparsity=0.5},share-weights{clusters=4}",
        "quantize-lut{bits=3},binarize",
    ],
)
def test_pipelines_leave_the_graph_alone(traced, user, pipeline):
    model, x = user
    before, module_before = graph_digest(traced), module_digest(model)
    inputs = [x.numpy().copy()]
    ctx = PassContext(instruments=default_instruments(), inputs=[inputs])
    result = Pipeline.parse(pipeline).run(traced, ctx)
    assert result.graph is not traced and result.changed
    assert graph_digest(traced) == before
    assert module_digest(model) == module_before
    assert arrays_digest(inputs) == arrays_digest([x.numpy()])


def test_to_torch_module_is_not_the_graph(traced, user):
    before = graph_digest(traced)
    module = traced.to_torch()
    with torch.no_grad():  # a user editing the module they got
        for p in module.parameters():
            p.mul_(-3.0)
        for b in module.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    assert graph_digest(traced) == before
    x = [user[1].numpy().copy()]
    traced.run(x)
    assert graph_digest(traced) == before and arrays_digest(x) == arrays_digest([user[1].numpy()])


def test_saving_and_training_leave_the_graph_alone(traced, user, tmp_path):
    before = graph_digest(traced)
    traced.save_onnx(tmp_path / "a.onnx")
    compressed = Pipeline.parse("fold-bn,share-weights{clusters=4}").run(traced).graph
    c_before = graph_digest(compressed)
    compressed.save_compressed(tmp_path / "a.gopt")
    assert graph_digest(compressed) == c_before
    f_before = file_digest(tmp_path / "a.gopt")
    graphopt.load_compressed(tmp_path / "a.gopt")
    assert file_digest(tmp_path / "a.gopt") == f_before
    x = user[1]
    data = [(x, torch.zeros(2, dtype=torch.long))]
    trained = train(traced, data, nn.functional.cross_entropy, steps=2, lr=0.1, log=None).graph
    assert graph_digest(trained) != before  # it did train
    assert graph_digest(traced) == before


def test_load_onnx_leaves_file_bytes_and_proto_alone(onnx_file):
    before = file_digest(onnx_file)
    graphopt.load_onnx(onnx_file)
    assert file_digest(onnx_file) == before
    proto = onnx.load(onnx_file)
    text = proto.SerializeToString()
    graph = graphopt.load_onnx(proto)
    assert proto.SerializeToString() == text
    data = bytes(text)
    graphopt.load_onnx(data)
    assert data == text
    Pipeline.parse("fold-bn,prune-channels{ratio=0.5}").run(graph)
    assert proto.SerializeToString() == text and file_digest(onnx_file) == before


def test_cli_opt_leaves_its_input_file_alone(onnx_file, tmp_path, capsys):
    before = file_digest(onnx_file)
    argv = ["--quiet", "opt", "-p", "fold-bn,prune-channels{ratio=0.5}", str(onnx_file), "-o", str(tmp_path / "o.onnx")]
    assert main(argv) == 0
    capsys.readouterr()
    assert file_digest(onnx_file) == before


def test_compile_and_optimize_leave_module_and_graph_alone(user, traced):
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    model, x = user
    before, g_before = module_digest(model), graph_digest(traced)
    compiled = graphopt.optimize(model, example_inputs=(x,), target="x86", pipeline="fold-bn")
    assert module_digest(model) == before
    np.testing.assert_allclose(compiled(x.numpy()), model(x).detach().numpy(), atol=1e-4)
    compile_graph(traced, "x86")
    assert graph_digest(traced) == g_before
