"""How the rewrite driver scales: rule passes on N-node graphs built of repeated idioms.

The worklist visits each node once, plus what each rewrite touches, plus one
closing round, so time per node should stay flat as N grows. Cases:
"double-neg" (a multi-node pattern on a chain of negs: every other pair goes),
"identity" (eliminate-identity on relu/dropout pairs) and "gelu" (fuse-gelu on
chained erf GELUs, five nodes each).

    python benchmarks/rewrite_scaling.py                 # N = 1000, 5000, 20000
    python benchmarks/rewrite_scaling.py --sizes 1000,2000
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.passes import PassContext
from graphopt.passes.eliminate_identity import EliminateIdentity
from graphopt.passes.fuse_gelu import FuseGelu
from graphopt.passes.pattern import Pat, PatternRule
from graphopt.passes.rewrite import apply_rules, replaceable


def drop_double_neg(graph, m):
    # neg(neg(x)) => x
    return m["x"] if replaceable(graph, m.root.output, m["x"]) else None


DOUBLE_NEG = [PatternRule(Pat("neg", (Pat("neg", (Pat.any("x"),), single_use=True),)), drop_double_neg)]


def chain(n: int, ops: list[str]) -> Graph:
    g = Graph("chain")
    v = g.add_input("x", TensorType((1, 8)))
    for i in range(n):
        v = g.add_node(ops[i % len(ops)], [v]).output
    g.set_outputs([g.add_node("relu", [v]).output])
    return g


def gelus(n: int) -> Graph:
    g = Graph("gelus")
    v = g.add_input("x", TensorType((1, 8)))
    consts = [
        g.add_param(k, np.float32(c), trainable=False)
        for k, c in (("sqrt2", math.sqrt(2)), ("one", 1.0), ("half", 0.5))
    ]
    for _ in range(n // 5):
        e = g.add_node("erf", [g.add_node("div", [v, consts[0]]).output]).output
        h = g.add_node("mul", [v, g.add_node("add", [e, consts[1]]).output]).output
        v = g.add_node("mul", [h, consts[2]]).output
    g.set_outputs([g.add_node("relu", [v]).output])
    return g


CASES = {
    "double-neg": (lambda n: chain(n, ["neg"]), lambda g: apply_rules(g, DOUBLE_NEG)),
    "identity": (lambda n: chain(n, ["relu", "dropout"]), lambda g: EliminateIdentity().run(g, PassContext())),
    "gelu": (gelus, lambda g: FuseGelu().run(g, PassContext())),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# {platform.machine()}, {platform.python_implementation()} {platform.python_version()}; seconds")
    print("| case | nodes | rewrite | per node (us) |")
    print("|---|---|---|---|")
    for name, (build, run) in CASES.items():
        for n in sizes:
            g = build(n)
            nodes = len(g.nodes)
            start = time.perf_counter()
            run(g)
            took = time.perf_counter() - start
            g.verify()
            print(f"| {name} | {nodes} | {took:.3f} | {took / nodes * 1e6:.0f} |", flush=True)


if __name__ == "__main__":
    main()
