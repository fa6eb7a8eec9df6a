"""How graph edits scale: insert a node on every edge of an N-node chain, then remove them all.

This is the edit pattern of quantization (a quantize/dequantize pair on nearly
every edge) and of cleanup passes. The verbs keep producers and users up to
date, so each edit costs what it touches and the whole run should grow
linearly with N. Each phase is timed separately; "order" is the one
topological-order restoration after the edits, "verify" a full structural check.

    python benchmarks/ir_scaling.py                 # N = 1000, 5000, 20000
    python benchmarks/ir_scaling.py --sizes 1000,2000
"""

from __future__ import annotations

import argparse
import platform
import time

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType


def chain(n: int) -> Graph:
    g = Graph(f"chain{n}")
    v = g.add_input("x", TensorType((1, 8)))
    for i in range(n):
        v = g.add_node("relu", [v], name=f"r{i}").output
    g.set_outputs([v])
    return g


def measure(n: int) -> dict[str, float]:
    t = {}
    start = time.perf_counter()
    g = chain(n)
    t["build"] = time.perf_counter() - start

    edges = [node.output for node in g.nodes]
    start = time.perf_counter()
    inserted = [g.insert_on_edge(v, "identity") for v in edges]
    t["insert"] = time.perf_counter() - start

    start = time.perf_counter()
    assert len(g.nodes) == 2 * n
    t["order"] = time.perf_counter() - start

    start = time.perf_counter()
    g.verify()
    t["verify"] = time.perf_counter() - start

    start = time.perf_counter()
    for node in inserted:
        g.bypass_node(node)
    t["remove"] = time.perf_counter() - start
    assert len(g.nodes) == n
    g.verify()
    t["insert+remove"] = t["insert"] + t["order"] + t["remove"]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    measure(10)  # warm-up: torch's meta kernels (shape inference) load on first use
    print(f"# {platform.machine()}, {platform.python_implementation()} {platform.python_version()}; seconds")
    print("| nodes | build | insert | order | remove | insert+remove | per edge (us) | verify |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        t = measure(n)
        print(
            f"| {n} | {t['build']:.2f} | {t['insert']:.2f} | {t['order']:.3f} | {t['remove']:.2f} | "
            f"{t['insert+remove']:.2f} | {t['insert+remove'] / n * 1e6:.0f} | {t['verify']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
