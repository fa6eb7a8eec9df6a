"""Shared by the weight-compression pass tests: a tiny net, trained digits models on both frontends, and the checks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from graph_support import _import

from graphopt.analysis.params import count_params
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.models import DigitsCNN, DigitsMLP, load_digits_data, train_digits_model
from graphopt.passes import NumericalVerifier, PassContext, Pipeline, default_instruments
from graphopt.train import evaluate

CE = torch.nn.CrossEntropyLoss()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Torch on one thread for these small models: steadier and faster on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_mlp(seed: int = 0) -> Graph:
    """x[2,8] -> linear(8->8, bias) -> relu -> linear(8->4): the golden-IR net."""
    rng = np.random.default_rng(seed)
    g = Graph("tiny")
    x = g.add_input("x", TensorType((2, 8)))
    w1 = g.add_param("fc1.weight", rng.standard_normal((8, 8)).astype(np.float32))
    b1 = g.add_param("fc1.bias", rng.standard_normal(8).astype(np.float32))
    h = g.add_node("linear", [x, w1, b1], name="fc1").output
    h = g.add_node("relu", [h], name="relu").output
    y = g.add_node("linear", [h, g.add_param("fc2.weight", rng.standard_normal((4, 8)).astype(np.float32))], name="fc2")
    g.set_outputs([y.output])
    return g


def conv_net(seed: int = 0, cin: int = 8) -> Graph:
    """x[1,cin,6,6] -> conv(cin->8, 3x3) -> relu -> conv(8->4, 1x1): conv weights for N:M and block tests."""
    rng = np.random.default_rng(seed)
    g = Graph("convs")
    x = g.add_input("x", TensorType((1, cin, 6, 6)))
    attrs = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    w1 = g.add_param("c1.weight", rng.standard_normal((8, cin, 3, 3)).astype(np.float32))
    h = g.add_node("conv", [x, w1], attrs=attrs, name="c1").output
    h = g.add_node("relu", [h], name="relu").output
    w2 = g.add_param("c2.weight", rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
    y = g.add_node("conv", [h, w2], attrs=dict(attrs, pads=(0, 0, 0, 0)), name="c2").output
    g.set_outputs([y])
    return g


def run_pass(graph: Graph, text: str, inputs=None):
    """(PipelineResult, the pass's record) of `text` under every instrument; the input graph must stay as it was."""
    before = str(graph), {k: p for k, p in graph.params.items()}
    ctx = PassContext(instruments=default_instruments(), inputs=None if inputs is None else [inputs])
    out = Pipeline.parse(text).run(graph, ctx)
    assert (str(graph), {k: p for k, p in graph.params.items()}) == before  # the caller's graph is untouched
    out.graph.verify()
    if out.records[-1].changed:
        assert ctx.instrument(NumericalVerifier).checked[-1] == str(out.records[-1].pass_)
    return out, out.records[-1]


def second_run_is_unchanged(graph: Graph, text: str) -> None:
    again = Pipeline.parse(text).run(graph)
    assert not again.records[-1].changed, again.records[-1].stats
    assert again.graph.params.keys() == graph.params.keys()
    assert all(np.array_equal(again.graph.params[k].data, p.data) for k, p in graph.params.items())


def stored_bytes(graph: Graph, names) -> int:
    """count_params' storage bytes of the named parameters."""
    return sum(p.nbytes for p in count_params(graph).params if p.name in set(names))


@functools.cache
def _trained(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = DigitsMLP() if kind == "mlp" else DigitsCNN()
    train_digits_model(model, epochs=10 if kind == "mlp" else 8, data=_data())
    return model.eval()


@functools.cache
def _data():
    return load_digits_data(seed=0)


@functools.cache
def _digits_graph(kind: str, frontend: str) -> Graph:
    x = digits_batches(kind)[0][0][0][:1]
    return _import(frontend, _trained(kind), (x,))


def digits(kind: str, frontend: str) -> Graph:
    """A fresh copy of the trained digits `kind` ("mlp" | "cnn") imported through `frontend` ("fx" | "onnx")."""
    return _digits_graph(kind, frontend).copy()


def digits_batches(kind: str):
    data = _data()
    x, xt = (data.x_train, data.x_test) if kind == "cnn" else (data.x_train.flatten(1), data.x_test.flatten(1))
    train = [(x[i : i + 64], data.y_train[i : i + 64]) for i in range(0, len(x), 64)]
    return train, [(xt, data.y_test)]


def accuracy(graph: Graph, kind: str) -> float:
    return evaluate(graph, digits_batches(kind)[1])
