"""The rewrite engine: multi-node patterns (matching, commutativity, captures, single use) and
the worklist driver (fixpoint, guarantees, the guard against rules that never settle)."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import GraphError
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes.pattern import Pat, PatternRule, const_value, matches
from graphopt.passes.rewrite import Rule, apply_rules, replaceable

T = TensorType((2, 3))


def graph_with(*steps, inputs=("x",), outputs=None) -> Graph:
    """A graph from (name, op, inputs) steps; parameters are given as ('@name', value)."""
    g = Graph("g")
    for i in inputs:
        g.add_input(i, T)
    for name, op, ins in steps:
        args = [
            g.add_param(v[0][1:], np.full(3, v[1], np.float32), trainable=False) if isinstance(v, tuple) else v
            for v in ins
        ]
        g.add_node(op, args, name=name)
    g.set_outputs(list(outputs or [steps[-1][0]]))
    return g


def captures(g: Graph, pattern: Pat, root: str) -> list[dict[str, str]]:
    return [dict(m.values) for m in matches(g, pattern, g.node(root))]


# ---- matching ------------------------------------------------------------------------------


def test_nested_pattern_captures_values_and_nodes():
    g = graph_with(("r", "relu", ["x"]), ("e", "exp", ["r"]), ("y", "mul", ["e", ("@c", 2.0)]))
    pat = Pat("mul", (Pat("exp", (Pat("relu", (Pat.any("x"),), name="r"),), name="e"), Pat.param("c")))
    (m,) = matches(g, pat, g.node("y"))
    assert dict(m.values) == {"x": "x", "r": "r", "e": "e", "c": "c"}
    assert m.node("r") is g.node("r") and m.root is g.node("y")
    assert [n.name for n in m.nodes] == ["y", "e", "r"]
    with pytest.raises(KeyError, match="no producer"):
        m.node("x")


def test_op_arity_params_and_predicates():
    g = graph_with(("r", "relu", ["x"]), ("y", "add", ["r", ("@c", 2.0)]))
    assert not captures(g, Pat("add", (Pat("exp"), Pat.any())), "y")  # wrong op
    assert not captures(g, Pat("add", (Pat.any(),)), "y")  # wrong arity
    assert not captures(g, Pat("add", (Pat.param(), Pat.param())), "y")  # r is no parameter
    assert captures(g, Pat("add", (Pat(("exp", "relu")), Pat.any())), "y")  # an op tuple
    assert captures(g, Pat("add"), "y") == [{}]  # inputs not looked at
    assert captures(g, Pat("add", (Pat.any(), Pat.const(2.0, name="c"))), "y") == [{"c": "c"}]
    assert not captures(g, Pat("add", (Pat.any(), Pat.const(2.1))), "y")
    assert captures(g, Pat("add", (Pat.any(), Pat.const(2.1, rel=0.1))), "y")
    big = Pat("add", (Pat.any(), Pat.param(where=lambda gr, v: const_value(gr, v) > 1)))
    assert captures(g, big, "y")
    assert not captures(g, Pat("add", where=lambda gr, n: n.name == "other"), "y")


def test_const_value():
    g = Graph("g")
    assert const_value(g, g.add_param("a", np.full((2, 2), -0.0, np.float32))) == 0.0
    assert const_value(g, g.add_param("b", np.array([1.0, 2.0], np.float32))) is None
    assert const_value(g, g.add_param("n", np.array([np.nan], np.float32))) is None
    assert const_value(g, g.add_param("e", np.zeros(0, np.float32))) is None
    assert const_value(g, g.add_input("x", T)) is None


def test_commutative_ops_match_either_order():
    g = graph_with(
        ("r", "relu", ["x"]),
        ("y", "add", [("@c", 1.0), "r"]),
        ("s", "sub", [("@d", 1.0), "y"]),
        ("m", "maximum", [("@e", 1.0), "s"]),
    )
    assert captures(g, Pat("add", (Pat("relu", name="r"), Pat.param("c"))), "y") == [{"r": "r", "c": "c"}]
    assert not captures(g, Pat("sub", (Pat.any(), Pat.param())), "s")  # sub is not commutative
    assert captures(g, Pat("sub", (Pat.any(), Pat.param()), commutative=True), "s")
    assert not captures(g, Pat("maximum", (Pat.any(), Pat.param()), commutative=False), "m")


def test_repeated_capture_must_bind_one_value_and_backtracks():
    g = graph_with(
        ("a", "relu", ["x"]),
        ("b", "relu", ["x"]),
        ("sq", "mul", ["a", "a"]),
        ("ab", "mul", ["a", "b"]),
        ("y", "add", ["sq", "ab"]),
    )
    same = Pat("mul", (Pat.any("v"), Pat.any("v")))
    assert captures(g, same, "sq") == [{"v": "a"}]
    assert not captures(g, same, "ab")
    # x * relu(x) where x is the second input: needs the swapped order of the inner mul
    g2 = graph_with(("r", "relu", ["x"]), ("p", "mul", ["r", "x"]))
    assert captures(g2, Pat("mul", (Pat.any("x"), Pat("relu", (Pat.any("x"),)))), "p") == [{"x": "x"}]


def test_either_tries_each_alternative():
    g = graph_with(("d", "div", ["x", ("@c", 2.0)]), ("e", "erf", ["d"]))
    alt = Pat(
        "erf", (Pat.either(Pat("mul", (Pat.any("x"), Pat.const(0.5))), Pat("div", (Pat.any("x"), Pat.const(2.0)))),)
    )
    assert captures(g, alt, "e") == [{"x": "x"}]
    assert Pat.either(Pat("mul"), Pat(("div", "sub"))).root_ops() == ("mul", "div", "sub")
    assert Pat.either(Pat("mul"), Pat()).root_ops() is None
    with pytest.raises(ValueError, match="root"):
        Pat.any().root_ops()


def test_single_use_means_read_only_inside_the_match():
    inner = Pat("relu", (Pat.any("x"),), single_use=True)
    pat = Pat("add", (inner, Pat.param()))
    shared = graph_with(("r", "relu", ["x"]), ("y", "add", ["r", ("@c", 1.0)]), ("z", "mul", ["r", "y"]))
    assert not captures(shared, pat, "y")  # r is also read by z
    as_output = graph_with(("r", "relu", ["x"]), ("y", "add", ["r", ("@c", 1.0)]), outputs=["y", "r"])
    assert not captures(as_output, pat, "y")
    assert captures(graph_with(("r", "relu", ["x"]), ("y", "add", ["r", ("@c", 1.0)])), pat, "y")
    # a DAG: r is read twice, both times by nodes of the match
    dag = graph_with(("r", "relu", ["x"]), ("e", "exp", ["r"]), ("y", "add", ["r", "e"]))
    assert captures(dag, Pat("add", (inner, Pat("exp", (inner,)))), "y") == [{"x": "x"}]


# ---- the driver -----------------------------------------------------------------------------


def drop_double_neg(graph, m):
    # neg(neg(x)) => x
    x = m["x"]
    return x if replaceable(graph, m.root.output, x) else None


DOUBLE_NEG = PatternRule(Pat("neg", (Pat("neg", (Pat.any("x"),), single_use=True),)), drop_double_neg)


def neg_chain(n: int) -> Graph:
    g = Graph("chain")
    v = g.add_input("x", T)
    for i in range(n):
        v = g.add_node("neg", [v], name=f"n{i}").output
    g.set_outputs([g.add_node("relu", [v], name="out").output])
    return g


def test_worklist_reaches_the_fixpoint_and_removes_orphans():
    g = neg_chain(7)
    assert apply_rules(g, [DOUBLE_NEG]) == 3
    assert (
        str(g)
        == """\
graph chain(%x: f32[2,3]) -> (%out)
  %n6: f32[2,3] = neg(%x)
  %out: f32[2,3] = relu(%n6)
  return %out"""
    )
    assert apply_rules(g, [DOUBLE_NEG]) == 0


def test_rules_enable_each_other():
    # relu(@c) reads a constant only after the neg pair under it is gone; x + 0 appears after that
    g = Graph("enable")
    x = g.add_input("x", T)
    c = g.add_param("c", np.full(3, -1.0, np.float32), trainable=False)
    n1 = g.add_node("neg", [c], name="n1")
    n2 = g.add_node("neg", [n1.output], name="n2")
    r = g.add_node("relu", [n2.output], name="r")
    g.set_outputs([g.add_node("add", [x, r.output], name="y").output])

    def fold_relu(graph, node):
        # relu(@c) => @c' (c' = max(c, 0))
        p = node.inputs[0]
        if not graph.is_param(p):
            return None
        return graph.add_param("relu_c", np.maximum(graph.param(p).data, 0), trainable=False)

    def drop_zero(graph, m):
        # x + 0 => x
        return m["x"] if replaceable(graph, m.root.output, m["x"]) else None

    add_zero = PatternRule(Pat("add", (Pat.any("x"), Pat.const(0.0))), drop_zero)
    count = apply_rules(g, [add_zero, Rule("relu", fold_relu), DOUBLE_NEG])
    assert count == 2  # x + 0 stays: x is a graph input and y a graph output
    assert (
        str(g)
        == """\
graph enable(%x: f32[2,3]) -> (%y)
  @relu_c: f32[3]  (frozen)
  %y: f32[2,3] = add(%x, @relu_c)
  return %y"""
    )


def test_a_rewrite_that_frees_a_value_enables_its_other_reader():
    # q's inner neg becomes single-use only when t, visited after q, stops reading p
    g = graph_with(("p", "neg", ["x"]), ("q", "neg", ["p"]), ("t", "exp", ["p"]), ("y", "add", ["q", "t"]))

    def exp_of_neg(graph, m):
        # exp(neg(x)) => reciprocal(exp(x))
        e = graph.add_node("exp", [m["x"]], name="e")
        return graph.rewrite_node(m.root, "reciprocal", [e.output]).outputs

    rules = [DOUBLE_NEG, PatternRule(Pat("exp", (Pat("neg", (Pat.any("x"),)),)), exp_of_neg)]
    assert apply_rules(g, rules) == 2
    assert (
        str(g)
        == """\
graph g(%x: f32[2,3]) -> (%y)
  %e: f32[2,3] = exp(%x)
  %t: f32[2,3] = reciprocal(%e)
  %y: f32[2,3] = add(%x, %t)
  return %y"""
    )


def test_a_long_chain_completes():
    # linear work: each rewrite touches its neighbours only (timing lives in benchmarks/)
    g = neg_chain(5001)
    assert apply_rules(g, [DOUBLE_NEG]) == 2500
    assert [n.op for n in g.nodes] == ["neg", "relu"]
    g.verify()


def test_pattern_rule_offers_every_match_until_one_is_taken():
    g = graph_with(("y", "mul", [("@a", 3.0), ("@b", 2.0)]))
    seen = []

    def only_b(graph, m):
        seen.append(m["p"])
        return None

    apply_rules(g, [PatternRule(Pat("mul", (Pat.param("p"), Pat.param())), only_b)])
    assert seen == ["a", "b"]  # both orders


def test_a_rule_that_keeps_matching_is_named():
    g = graph_with(("y", "add", ["x", ("@c", 1.0)]))

    def swap(graph, node):
        # a + b => b + a (forever)
        graph.rewrite_node(node, "add", node.inputs[::-1])
        return node.output

    with pytest.raises(GraphError, match="did not reach a fixpoint.*'swap'.*node 'y'"):
        apply_rules(g, [Rule("add", swap)])


def test_rules_that_undo_each_other_are_named():
    g = graph_with(("y", "relu", ["x"]))

    def to_sigmoid(graph, node):
        # relu(x) => sigmoid(x)
        return graph.rewrite_node(node, "sigmoid", node.inputs).outputs

    def to_relu(graph, node):
        # sigmoid(x) => relu(x)
        return graph.rewrite_node(node, "relu", node.inputs).outputs

    with pytest.raises(GraphError, match="'to_sigmoid', 'to_relu'|'to_relu', 'to_sigmoid'"):
        apply_rules(g, [Rule("relu", to_sigmoid), Rule("sigmoid", to_relu)])


def test_graph_outputs_stay_node_defined():
    g = graph_with(("y", "relu", ["x"]))
    with pytest.raises(GraphError, match="graph output '%y'"):
        apply_rules(g, [Rule("relu", lambda graph, node: node.inputs[0])])  # unchecked: relu(x) => x
    assert [n.name for n in g.nodes] == ["y"]


def test_a_replacement_keeps_the_type():
    g = Graph("g")
    s = g.add_node("sum", [g.add_input("x", T)], attrs={"dims": (1,)}, name="s")
    g.set_outputs([g.add_node("exp", [s.output], name="y").output])
    with pytest.raises(GraphError, match="different type"):
        apply_rules(g, [Rule("sum", lambda graph, node: node.inputs[0])])
