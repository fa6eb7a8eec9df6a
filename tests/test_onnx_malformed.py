"""Issue 12, item 4: malformed ONNX files. Each is refused by `load_onnx` and by `graphopt opt`
with one GraphoptError line naming the file and the node, tensor or opset at fault; none
hangs, crashes the interpreter, allocates what its dims declare, or reads outside the
model's folder. (Duplicate names, unknown domains and element types, negative dims and
newer opsets are in test_onnx_hostile_inputs.py.)

The files are loaded in one subprocess with a timeout (tests/scripts/load_malformed_onnx.py):
a case that hangs or kills the interpreter fails here by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from graphopt.backends.onnxruntime import run_onnx
from graphopt.cli import main
from graphopt.frontends.onnx import load_onnx

WORKER = Path(__file__).parent / "scripts" / "load_malformed_onnx.py"
TIMEOUT_S = 300  # the whole batch, on a loaded 2-core machine
HUGE = 2**40


def model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    inputs = inputs or [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])]
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = 8
    return m


def tensor(dims, data_type=T.FLOAT, name="W", **fields):
    t = onnx.TensorProto(name=name, data_type=data_type)
    t.dims.extend(dims)
    for key, value in fields.items():
        if key == "raw_data":
            t.raw_data = value
        else:
            getattr(t, key).extend(value)
    return t


def external(location):
    t = tensor([4, 4])
    t.data_location = T.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def mlp(w=None):
    """x @ W -> relu -> y: the model every tensor case corrupts."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "W") if w is None else w
    return model(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        [w],
    )


def good_bytes() -> bytes:
    return mlp().SerializeToString()


IF = helper.make_node(
    "If",
    ["c"],
    ["y"],
    name="if0",
    then_branch=helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", T.FLOAT, [1, 4])]
    ),
    else_branch=helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", T.FLOAT, [1, 4])]
    ),
)
X_C = [helper.make_tensor_value_info("x", T.FLOAT, [1, 4]), helper.make_tensor_value_info("c", T.BOOL, [])]

# case -> (file contents, regex the API error and the CLI line must match)
NOT_READABLE = r"not a readable ONNX model|no graph or no graph outputs|declares no opset"
CASES: dict[str, tuple[bytes, str]] = {
    **{f"truncated_at_{f}": (good_bytes()[: int(len(good_bytes()) * f)], NOT_READABLE) for f in (0.01, 0.3, 0.6, 0.99)},
    "truncated_last_byte": (good_bytes()[:-1], NOT_READABLE),
    "empty_file": (b"", "no graph or no graph outputs"),
    "random_bytes": (np.random.default_rng(0).bytes(4096), NOT_READABLE),
    "png_magic": (b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(200), NOT_READABLE),
    "zip_magic": (b"PK\x03\x04" + np.random.default_rng(2).bytes(200), NOT_READABLE),
    "text": (b"this is not a model\n", NOT_READABLE),
    "missing_initializer": (
        model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]).SerializeToString(),
        r"node 'mm' \(MatMul\) reads 'W', which no node, graph input or initializer defines",
    ),
    "cycle": (
        model(
            [
                helper.make_node("Add", ["x", "z"], ["h"], name="a"),
                helper.make_node("Relu", ["h"], ["z"], name="b"),
                helper.make_node("Relu", ["h"], ["y"], name="c"),
            ]
        ).SerializeToString(),
        r"the graph has a cycle: node '[ab]' \(\w+\) -> node '[ab]' \(\w+\) -> node '[ab]'",
    ),
    "opset_zero": (
        model([helper.make_node("Relu", ["x"], ["y"])], opset=0).SerializeToString(),
        r"domain 'ai.onnx' is imported at opset 0; opsets start at 1",
    ),
    "op_newer_than_its_opset": (
        model([helper.make_node("Gelu", ["x"], ["y"], name="gelu0")], opset=17).SerializeToString(),
        r"node 'gelu0' \(Gelu\): 'Gelu' is not defined in ai.onnx opset 17 \(it first appears in opset 20\)",
    ),
    "op_unknown_in_default_domain": (
        model([helper.make_node("Frobnicate", ["x"], ["y"], name="f0")]).SerializeToString(),
        r"node 'f0' \(Frobnicate\): 'Frobnicate' is not an operator of domain 'ai.onnx'",
    ),
    "huge_initializer_without_data": (
        mlp(tensor([HUGE, 4])).SerializeToString(),
        rf"initializer 'W' declares dims \[{HUGE}, 4\] \(4,398,046,511,104 FLOAT elements\) but holds no data",
    ),
    "huge_initializer_with_16_bytes": (
        mlp(tensor([HUGE, 4], raw_data=b"\0" * 16)).SerializeToString(),
        rf"initializer 'W' declares dims \[{HUGE}, 4\] .* but holds 16 bytes of raw_data",
    ),
    "raw_data_short": (
        mlp(tensor([4, 4], raw_data=b"\0" * 60)).SerializeToString(),
        r"initializer 'W' declares dims \[4, 4\] \(16 FLOAT elements, 64 bytes\) but holds 60 bytes of raw_data",
    ),
    "raw_data_long": (mlp(tensor([4, 4], raw_data=b"\0" * 68)).SerializeToString(), "holds 68 bytes of raw_data"),
    "float_data_short": (
        mlp(tensor([4, 4], float_data=[1.0] * 5)).SerializeToString(),
        r"initializer 'W' declares dims \[4, 4\] \(16 FLOAT elements\) but holds 5 values in float_data",
    ),
    "constant_attribute_wrong_size": (
        model(
            [
                helper.make_node("Constant", [], ["k"], name="c0", value=tensor([4], name="v", raw_data=b"\0" * 8)),
                helper.make_node("Add", ["x", "k"], ["y"]),
            ]
        ).SerializeToString(),
        r"attribute 'value' of node 'c0' \(Constant\) declares dims \[4\] .* but holds 8 bytes",
    ),
    "external_parent_dir": (mlp(external("../outside.bin")).SerializeToString(), r"W.*outside"),
    "external_absolute": (b"written by the fixture", r"W.*absolute path"),
    "external_symlink_out": (mlp(external("link.bin")).SerializeToString(), r"W.*symbolic link"),
    "external_through_linked_dir": (mlp(external("linked_dir/outside.bin")).SerializeToString(), r"W.*outside"),
    "external_fifo_out": (mlp(external("../outside.fifo")).SerializeToString(), r"W.*outside"),
    "external_missing": (mlp(external("nothere.bin")).SerializeToString(), r"W.*nothere.bin"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{case: worker result}; the cases live in tmp/model/, `outside*` one folder up."""
    root = tmp_path_factory.mktemp("malformed")
    folder, out = root / "model", root / "out"
    folder.mkdir()
    out.mkdir()
    outside = root / "outside.bin"
    outside.write_bytes(np.ones(16, np.float32).tobytes())
    os.mkfifo(root / "outside.fifo")  # opening it for reading would block: a read outside hangs the worker
    (folder / "link.bin").symlink_to(outside)
    (folder / "linked_dir").symlink_to(root)
    (folder / "dir.onnx").mkdir()
    paths = [folder / "good.onnx"]  # first: it warms the imports up before memory is measured
    paths[0].write_bytes(good_bytes())
    for name, (data, _) in CASES.items():
        if name == "external_absolute":  # the real path of the file one folder up
            data = mlp(external(str(outside))).SerializeToString()
        paths.append(folder / f"{name}.onnx")
        paths[-1].write_bytes(data)
    paths.append(folder / "dir.onnx")
    child = subprocess.run(
        [sys.executable, str(WORKER), str(out), *map(str, paths)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    done = {Path(r["case"]).stem: r for r in lines if "case" in r}
    started = [Path(r["start"]).stem for r in lines if "start" in r]
    assert child.returncode == 0, f"the worker died ({child.returncode}) in case {started[-1:]}: {child.stderr[-2000:]}"
    assert done["good"]["api"]["outcome"] == "loaded", done["good"]
    return done, out


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_refused_by_name_by_api_and_cli(results, case):
    done, out = results
    r = done[case]
    api, cli = r["api"], r["cli"]
    assert api["outcome"] == "error" and api["type"] == "FrontendError", api
    assert f"{case}.onnx'" in api["message"]  # the file is named
    assert "\n" not in api["message"]
    assert re.search(CASES[case][1], api["message"]), api["message"]
    assert cli["rc"] == 1 and not cli["wrote"], cli
    assert cli["stderr"].count("\n") == 1 and cli["stderr"].startswith("graphopt: error: "), cli["stderr"]
    assert f"{case}.onnx'" in cli["stderr"]  # the CLI names a zip as a torch file; the file is named either way
    assert r["rss_growth_mib"] < 200, f"{case} grew the process by {r['rss_growth_mib']:.0f} MiB"


def test_directory_is_refused_as_a_directory(results):
    r = results[0]["dir"]
    assert r["api"]["outcome"] == "error" and "dir.onnx': is a directory, not an ONNX file" in r["api"]["message"]
    assert r["cli"]["rc"] == 1 and "is a directory" in r["cli"]["stderr"]


def test_every_truncation_of_a_model_is_refused(tmp_path):
    path = tmp_path / "good.onnx"
    path.write_bytes(good_bytes())
    child = subprocess.run(
        [sys.executable, str(WORKER), "--sweep", str(path), "3"], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert child.returncode == 0, child.stderr[-2000:]
    cuts = [json.loads(line) for line in child.stdout.splitlines()]
    assert len(cuts) == len(range(0, len(good_bytes()), 3))
    bad = [c for c in cuts if c["outcome"] != "error" or c["type"] != "FrontendError"]
    assert not bad, bad[:3]


def test_huge_declared_input_dims_import_without_allocating_and_opt_names_the_input(results, tmp_path, capsys):
    m = model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        inputs=[helper.make_tensor_value_info("x", T.FLOAT, [HUGE, HUGE])],
        outputs=[helper.make_tensor_value_info("y", T.FLOAT, None)],
    )
    graph = load_onnx(m)  # types only: nothing of that size is made
    assert graph.values["x"].type.shape == (HUGE, HUGE)
    path = tmp_path / "huge_input.onnx"
    onnx.save(m, path)
    rc = main(["--quiet", "opt", str(path), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert f"graph input 'x' has shape [{HUGE}, {HUGE}]" in err and "too large" in err
    assert not (tmp_path / "out.onnx").exists()


def test_the_real_cli_process_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(CASES["huge_initializer_without_data"][0])
    out = tmp_path / "out.onnx"
    child = subprocess.run(
        [sys.executable, "-m", "graphopt", "opt", str(bad), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert child.returncode == 1 and child.stdout == ""
    assert child.stderr.count("\n") == 1, child.stderr
    assert "bad.onnx': initializer 'W' declares dims" in child.stderr
    assert not out.exists()


@pytest.mark.parametrize("kind", ["If", "Loop"])
def test_control_flow_is_imported_and_written_back_runnable(kind, tmp_path, capsys):
    if kind == "If":
        m, feeds = (
            model([IF], inputs=X_C),
            [[np.array([[1, -2, 3, -4]], np.float32), np.array(c)] for c in (True, False)],
        )
    else:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc", "acc"], ["a2"])],
            "body",
            [
                helper.make_tensor_value_info("i", T.INT64, []),
                helper.make_tensor_value_info("cond_in", T.BOOL, []),
                helper.make_tensor_value_info("acc", T.FLOAT, [1, 4]),
            ],
            [
                helper.make_tensor_value_info("cond_out", T.BOOL, []),
                helper.make_tensor_value_info("a2", T.FLOAT, [1, 4]),
            ],
        )
        m = model(
            [helper.make_node("Loop", ["n", "c", "x"], ["y"], name="loop0", body=body)],
            inputs=[*X_C[:1], helper.make_tensor_value_info("n", T.INT64, []), X_C[1]],
        )
        feeds = [[np.array([[1, -2, 3, -4]], np.float32), np.array(3), np.array(True)]]
    src, out = tmp_path / "cf.onnx", tmp_path / "out.onnx"
    onnx.save(m, src)
    graph = load_onnx(src)
    assert [n.attrs.get("op_type") for n in graph.nodes] == [kind]  # kept whole, as an opaque node
    assert main(["--quiet", "opt", str(src), "-o", str(out)]) == 0
    capsys.readouterr()
    for f in feeds:
        np.testing.assert_array_equal(run_onnx(str(out), f)[0], run_onnx(m, f)[0])
