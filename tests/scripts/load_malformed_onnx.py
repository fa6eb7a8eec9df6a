"""Load each ONNX file named on the command line through `load_onnx` and the CLI's `opt`; one JSON line each.

Run by tests/test_onnx_malformed.py in a subprocess with a timeout, so that a case that
hangs or crashes the interpreter fails the test naming the case (a "start" line is
printed and flushed before each case) instead of taking pytest down with it.

    python3 tests/scripts/load_malformed_onnx.py OUT_DIR CASE.onnx ...
    python3 tests/scripts/load_malformed_onnx.py --sweep MODEL.onnx STEP   # every STEP-th truncation
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import warnings
from pathlib import Path

import graphopt
from graphopt.cli import main
from graphopt.errors import GraphoptError


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(source) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = graphopt.load_onnx(source)
    except GraphoptError as e:
        return {"outcome": "error", "type": type(e).__name__, "message": str(e)}
    except Exception as e:  # not a graphopt error: a bug the test reports
        return {"outcome": "raw", "type": type(e).__name__, "message": str(e)}
    return {"outcome": "loaded", "nodes": len(graph.nodes)}


def cli(path: str, out: str) -> dict:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["--quiet", "opt", path, "-o", out])
    return {"rc": rc, "stderr": err.getvalue(), "wrote": Path(out).exists()}


def sweep(path: str, step: int) -> None:
    data = Path(path).read_bytes()
    for cut in range(0, len(data), step):
        print(json.dumps({"cut": cut, **load(data[:cut])}), flush=True)


def cases(out_dir: str, paths: list[str]) -> None:
    for path in paths:
        print(json.dumps({"start": path}), flush=True)
        before = rss_mib()
        result = {"case": path, "api": load(path)}
        result["cli"] = cli(path, str(Path(out_dir) / (Path(path).stem + ".out.onnx")))
        result["rss_growth_mib"] = rss_mib() - before
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--sweep":
        sweep(sys.argv[2], int(sys.argv[3]))
    else:
        cases(sys.argv[1], sys.argv[2:])
