"""Issue 17: hostile ONNX inputs. Each test is the minimal reproducer of one report; each
malformed model is refused with a graphopt error naming the initializer, node or op at
fault, and each valid one imports, runs and writes back."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from graphopt.backends.onnxruntime import run_onnx
from graphopt.cli import main
from graphopt.errors import BackendError, FrontendError
from graphopt.frontends.onnx import load_onnx


def model(nodes, inits=(), inputs=None, outputs=None, opset=17, domains=()):
    inputs = inputs or [helper.make_tensor_value_info("x", T.FLOAT, [2])]
    outputs = outputs or [helper.make_tensor_value_info("y", T.FLOAT, [2])]
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    )
    m.ir_version = 8
    return m


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def raw_tensor(name, data_type, dims):
    t = onnx.TensorProto(name=name, data_type=data_type)
    t.dims.extend(dims)
    t.raw_data = b"\0" * 8
    return t


ADD_B = [helper.make_node("Add", ["x", "B"], ["y"], name="add0")]
X = np.array([1.0, -2.0], np.float32)


# --- item 2: names defined twice ----------------------------------------------------------


def test_duplicate_initializer_is_refused_by_name():
    m = model(ADD_B, [const("B", [1, 1]), const("B", [2, 2])])
    with pytest.raises(FrontendError, match="initializer 'B' is defined twice"):
        load_onnx(m)


def test_duplicate_initializer_in_a_subgraph_is_refused_by_name():
    body = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", T.FLOAT, [2])],
        [const("k", [1, 1]), const("k", [2, 2])],
    )
    m = model(
        [helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, [2]), helper.make_tensor_value_info("c", T.BOOL, [])],
    )
    with pytest.raises(FrontendError, match="initializer 'k' is defined twice"):
        load_onnx(m)


def test_value_defined_twice_is_refused_by_name():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")])
    with pytest.raises(FrontendError, match=r"value 'y' is defined twice, by node 'a' \(Relu\) and node 'b' \(Neg\)"):
        load_onnx(m)


def test_graph_input_declared_twice_is_refused_by_name():
    x = helper.make_tensor_value_info("x", T.FLOAT, [2])
    m = model([helper.make_node("Relu", ["x"], ["y"])], inputs=[x, x])
    with pytest.raises(FrontendError, match="graph input 'x' is declared twice"):
        load_onnx(m)


# --- item 4: subgraphs reading outer values ----------------------------------------------


def branch(op, name):
    return helper.make_graph(
        [helper.make_node(op, ["x", "one"], [name])], name, [], [helper.make_tensor_value_info(name, T.FLOAT, [2])]
    )


def test_if_body_reading_an_outer_initializer_keeps_it(tmp_path):
    m = model(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("Add", "t"), else_branch=branch("Sub", "e"))],
        [const("one", [1, 1])],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, [2]), helper.make_tensor_value_info("c", T.BOOL, [])],
    )
    onnx.checker.check_model(m, full_check=True)
    graph = load_onnx(m)
    assert "one" in graph.params
    assert "one" in graph.nodes[0].inputs and "one" in graph.nodes[0].attrs["onnx_captures"]
    emitted = graph.to_onnx()
    onnx.checker.check_model(emitted, full_check=True)
    for c in (True, False):
        feeds = [X, np.array(c)]
        np.testing.assert_array_equal(run_onnx(emitted, feeds)[0], run_onnx(m, feeds)[0])
    # the CLI path of the report: `graphopt opt` kept the initializer and wrote a model that runs
    src, out = tmp_path / "if.onnx", tmp_path / "out.onnx"
    onnx.save(m, src)
    assert main(["--quiet", "opt", "-p", "fold-constants,eliminate-dead-code", str(src), "-o", str(out)]) == 0
    np.testing.assert_array_equal(run_onnx(str(out), [X, np.array(True)])[0], X + 1)


def test_loop_body_reading_outer_initializer_constant_and_value():
    """A Loop body reads an initializer, a (folded) Constant node and a computed value; a
    nested If reads an initializer only it uses."""
    inner_then = helper.make_graph(
        [helper.make_node("Add", ["s", "one"], ["it"])], "it", [], [helper.make_tensor_value_info("it", T.FLOAT, [2])]
    )
    inner_else = helper.make_graph(
        [helper.make_node("Mul", ["s", "k"], ["ie"])], "ie", [], [helper.make_tensor_value_info("ie", T.FLOAT, [2])]
    )
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "two"], ["a1"]),
            helper.make_node("Add", ["a1", "r"], ["s"]),
            helper.make_node("If", ["cond_in"], ["s2"], then_branch=inner_then, else_branch=inner_else),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", T.INT64, []),
            helper.make_tensor_value_info("cond_in", T.BOOL, []),
            helper.make_tensor_value_info("acc", T.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("cond_out", T.BOOL, []), helper.make_tensor_value_info("s2", T.FLOAT, [2])],
    )
    m = model(
        [
            helper.make_node("Constant", [], ["k"], value=const("kv", [3, 3])),
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Loop", ["n", "c", "x"], ["y"], body=body),
        ],
        [const("one", [1, 1]), const("two", [2, 2])],
        inputs=[
            helper.make_tensor_value_info("x", T.FLOAT, [2]),
            helper.make_tensor_value_info("n", T.INT64, []),
            helper.make_tensor_value_info("c", T.BOOL, []),
        ],
    )
    onnx.checker.check_model(m, full_check=True)
    feeds = [X, np.array(3), np.array(True)]
    want = run_onnx(m, feeds)[0]
    for fold in (True, False):
        graph = load_onnx(m, fold_constants=fold)
        assert {"one", "two", "k"} <= set(graph.params)
        emitted = graph.to_onnx()
        onnx.checker.check_model(emitted, full_check=True)
        np.testing.assert_array_equal(run_onnx(emitted, feeds)[0], want)


# --- item 6: clear errors instead of raw ones -------------------------------------------------


def conv_model(weight_shape, x_shape=(1, 5, 8, 8)):
    return model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv0")],
        [const("W", np.ones(weight_shape))],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
        outputs=[helper.make_tensor_value_info("y", T.FLOAT, None)],
    )


def test_conv_weight_not_matching_its_input_is_refused_at_import():
    with pytest.raises(
        FrontendError,
        match=r"node 'conv0' \(Conv\): input 'x' has 5 channels, "
        r"weight 'W' \[4, 3, 3, 3\] with group=1 expects 3",
    ):
        load_onnx(conv_model((4, 3, 3, 3)))


def test_onnxruntime_failure_names_the_node_not_its_optimized_name():
    # onnxruntime's optimizer renames the conv ('y_nchwc'); the error names the model's node
    with pytest.raises(BackendError, match=r"cannot run node 'conv0' \(Conv\): .*Input channels") as e:
        run_onnx(conv_model((4, 3, 3, 3)), [np.ones((1, 5, 8, 8), np.float32)])
    assert "\n" not in str(e.value) and "y_nchwc" not in str(e.value).split(":")[0]


def test_op_of_an_unknown_domain_fails_to_run_naming_node_and_op():
    m = model([helper.make_node("Foo", ["x"], ["y"], domain="com.bogus", name="foo0")], domains=["com.bogus"])
    graph = load_onnx(m)  # kept opaque and written back as it came
    assert graph.nodes[0].attrs["domain"] == "com.bogus"
    with pytest.raises(BackendError, match=r"onnxruntime cannot load node 'foo0' \(com\.bogus:Foo\)") as e:
        graph.run([X])
    assert "\n" not in str(e.value) and "ONNXRuntimeError" not in str(e.value)


@pytest.mark.parametrize("where", ["initializer", "constant", "input"])
def test_unknown_element_type_names_the_tensor(where):
    if where == "initializer":
        m = model(ADD_B, [raw_tensor("B", 999, [2])])
        label = "initializer 'B'"
    elif where == "constant":
        m = model([helper.make_node("Constant", [], ["B"], name="c0", value=raw_tensor("v", 999, [2])), *ADD_B])
        label = r"attribute 'value' of node 'c0' \(Constant\)"
    else:
        m = model([helper.make_node("Relu", ["x"], ["y"])], inputs=[helper.make_tensor_value_info("x", 999, [2])])
        label = "value 'x'"
    with pytest.raises(FrontendError, match=f"{label} has unknown element type 999"):
        load_onnx(m)


# --- item 7: the same checks for a file, bytes and a ModelProto ------------------------------


def forms(m, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return {"proto": m, "bytes": m.SerializeToString(), "path": path}


@pytest.mark.parametrize("form", ["proto", "bytes", "path"])
def test_model_without_graph_or_opset_is_refused_in_every_form(form, tmp_path):
    with pytest.raises(FrontendError, match="no graph or no graph outputs"):
        load_onnx(forms(onnx.ModelProto(ir_version=8), tmp_path)[form])
    no_opset = model([helper.make_node("Relu", ["x"], ["y"])])
    del no_opset.opset_import[:]
    with pytest.raises(FrontendError, match="declares no opset"):
        load_onnx(forms(no_opset, tmp_path)[form])


def test_external_data_is_read_from_base_dir_never_the_current_directory(tmp_path, monkeypatch):
    m = model(ADD_B, [const("B", [5, 6])])
    onnx.save_model(m, tmp_path / "m.onnx", save_as_external_data=True, location="b.bin", size_threshold=0)
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    monkeypatch.chdir(tmp_path)  # b.bin is right here; bytes and protos must still not guess
    for source in (proto, proto.SerializeToString()):
        with pytest.raises(FrontendError, match="initializer 'B' keeps its data in external file 'b.bin'.*base_dir="):
            load_onnx(source)
        np.testing.assert_array_equal(load_onnx(source, base_dir=tmp_path).params["B"].data, [5, 6])
    np.testing.assert_array_equal(load_onnx(tmp_path / "m.onnx").params["B"].data, [5, 6])
    proto.graph.initializer[0].external_data[0].value = "../b.bin"
    with pytest.raises(FrontendError, match="points outside the directory"):
        load_onnx(proto, base_dir=tmp_path)


# --- item 8: what was silently accepted ----------------------------------------------------


def test_opset_newer_than_onnx_defines_is_refused():
    m = model([helper.make_node("Relu", ["x"], ["y"])], opset=onnx.defs.onnx_opset_version() + 2)
    with pytest.raises(FrontendError, match=f"opset {onnx.defs.onnx_opset_version() + 2} is newer than"):
        load_onnx(m)


def test_opset_imported_twice_is_refused():
    m = model([helper.make_node("Relu", ["x"], ["y"])])
    m.opset_import.append(helper.make_opsetid("ai.onnx", 13))
    with pytest.raises(FrontendError, match=r"imports domain 'ai\.onnx' twice \(opsets 17 and 13\)"):
        load_onnx(m)


def test_ir_version_newer_than_onnx_knows_warns_and_says_what_it_is_read_as():
    m = model([helper.make_node("Relu", ["x"], ["y"])])
    m.ir_version = 99
    with pytest.warns(UserWarning, match=f"IR version 99 is newer .* read as IR version {onnx.IR_VERSION}"):
        graph = load_onnx(m)
    assert graph.metadata["ir_version"] == onnx.IR_VERSION
    onnx.checker.check_model(graph.to_onnx(), full_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current IR version does not warn
        load_onnx(model([helper.make_node("Relu", ["x"], ["y"])]))


@pytest.mark.parametrize("where", ["initializer", "input"])
def test_negative_dimension_is_refused_by_name(where):
    if where == "initializer":
        m, label = model(ADD_B, [raw_tensor("B", T.FLOAT, [-1])]), "initializer 'B'"
    else:
        m, label = (
            model([helper.make_node("Relu", ["x"], ["y"])], inputs=[helper.make_tensor_value_info("x", T.FLOAT, [-3])]),
            "value 'x'",
        )
    with pytest.raises(FrontendError, match=f"{label} has a negative dimension"):
        load_onnx(m)
