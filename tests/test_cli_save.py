"""`graphopt save` writes a compressed model file from a pipeline; `graphopt show` reads it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import graphopt
from graphopt.cli import main
from graphopt.models.digits import DigitsMLP
from graphopt.passes import PassContext, Pipeline

PIPELINE = "fold-bn,prune-magnitude{sparsity=0.9},share-weights{clusters=16}"


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli_save") / "mlp.onnx"
    graphopt.trace(DigitsMLP().eval(), (torch.randn(1, 64),)).save_onnx(path)
    return path


def test_save_writes_what_the_pipeline_made(mlp_onnx, tmp_path, capsys):
    out = tmp_path / "mlp.gopt"
    assert main(["save", "-q", "-p", PIPELINE, str(mlp_onnx), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    size = os.path.getsize(out)
    assert f"wrote {out}: {size:,} bytes ({os.path.getsize(mlp_onnx):,} bytes in" in printed
    loaded = graphopt.load_compressed(out)
    expected = Pipeline.parse(PIPELINE).run(graphopt.load_onnx(mlp_onnx), PassContext(log=None)).graph
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    assert np.array_equal(loaded.run([x])[0], expected.run([x])[0])
    weights = [p for p in loaded.params.values() if p.mask is not None]
    assert len(weights) == 3 and all(p.encoding is not None for p in weights)
    assert size * 10 < os.path.getsize(mlp_onnx)


def test_show_lists_storage_per_parameter_and_the_total(mlp_onnx, tmp_path, capsys):
    out = tmp_path / "mlp.gopt"
    main(["save", "-q", "-p", PIPELINE, str(mlp_onnx), "-o", str(out)])
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "= linear(" in printed and "format version 1" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    weight, bias = rows["body.0.weight"], rows["body.0.bias"]
    assert weight[3] == "sparse" and weight[-3] == "Codebook" and float(weight[-2]) < 2  # bits per weight
    assert bias[3] == "dense" and bias[1:3] == ["128", "float32"]
    parts = [int(rows[k][-1].replace(",", "")) for k in ("parameters", "structure", "header")]
    assert sum(parts) == int(rows["total"][-1].replace(",", "")) == os.path.getsize(out)


def test_show_and_load_refuse_a_tampered_file(mlp_onnx, tmp_path, capsys):
    out = tmp_path / "mlp.gopt"
    main(["save", "-q", "-p", "fold-bn", str(mlp_onnx), "-o", str(out)])
    data = bytearray(out.read_bytes())
    data[-7] ^= 1
    out.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["show", str(out)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_bad_pipeline_or_output_writes_nothing(mlp_onnx, tmp_path, capsys):
    out = tmp_path / "never.gopt"
    assert main(["save", "-q", "-p", "prune-magnitude{sparsity=1.0}", str(mlp_onnx), "-o", str(out)]) == 1
    assert main(["save", "-q", "-p", "no-such-pass", str(mlp_onnx), "-o", str(out)]) == 1
    assert "no-such-pass" in capsys.readouterr().err
    assert main(["save", "-q", "-p", "fold-bn", str(mlp_onnx), "-o", str(tmp_path) + "/"]) == 1
    assert main(["save", "-q", "-p", "fold-bn", str(mlp_onnx)]) == 2  # -o is required
    assert os.listdir(tmp_path) == []
