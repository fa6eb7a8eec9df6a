"""sensitivity: per-layer output SQNR with only that layer quantized."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.analysis.sensitivity import sensitivity
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType

CONV = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1))


def two_layers() -> tuple[Graph, list]:
    """conv -> relu -> conv where the second conv's weights hold one huge outlier (coarse int8 steps)."""
    rng = np.random.default_rng(0)
    g = Graph("two_layers")
    x = g.add_input("x", TensorType((2, 3, 6, 6)))
    w1 = g.add_param("a.weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    w2[:, 0, 0, 0] = 500.0  # every output channel's scale is set by one outlier
    a = g.add_node("conv", [x, w1], attrs=CONV, name="a").output
    r = g.add_node("relu", [a], name="relu").output
    b = g.add_node("conv", [r, g.add_param("b.weight", w2)], attrs=CONV, name="b").output
    g.set_outputs([b])
    sets = [[rng.standard_normal((2, 3, 6, 6)).astype(np.float32)] for _ in range(4)]
    return g, sets


def test_rows_sorted_most_sensitive_first_and_graph_untouched():
    g, sets = two_layers()
    before = str(g)
    report = sensitivity(g, sets, options="calibrate=minmax outputs=false")
    assert str(g) == before
    assert [r.node for r in report.rows] == ["b", "a"]  # b's outlier-dominated weights lose the most
    assert report.rows[0].sqnr_db < report.rows[1].sqnr_db
    assert report.all_quantized_db <= report.rows[0].sqnr_db + 0.5
    table = report.table().splitlines()
    assert table[0].split() == ["node", "op", "SQNR", "(dB)"]
    assert table[1].split()[:2] == ["b", "conv"] and float(table[1].split()[2]) == pytest.approx(
        report.rows[0].sqnr_db, abs=0.01
    )
    assert table[-1].startswith("(all layers)")


def test_options_as_dict_and_nothing_left_to_quantize():
    g, sets = two_layers()
    report = sensitivity(g, sets, options={"skip": ("a",)})
    assert [r.node for r in report.rows] == ["b"]
    with pytest.raises(ValueError, match="no layer left to quantize"):
        sensitivity(g, sets, options={"skip": ("a", "b")})
