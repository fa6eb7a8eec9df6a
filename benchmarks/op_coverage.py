"""Op coverage of the TVM backend: every op the frontends map, and the opaque ops small probes exercise.

    python3 benchmarks/op_coverage.py           # rewrite docs/op_coverage.md (builds every probe: a few minutes)
    python3 benchmarks/op_coverage.py --check   # regenerate the cheap columns; exit 1 when the file is stale

Mapped ops (the rule tables of `frontends/fx_ops.py` and `frontends/onnx_ops.py`)
import as canonical ops, or stay opaque for argument forms their rule declines
(the rule returns None / False or raises Unmappable). Every canonical op has a
TVM rule and a numerical case in tests/test_tvm_lower.py, so those columns are
derived, not measured. Opaque ops lower through TVM's own frontends
(`backends/tvm/lower_opaque.py`); for them each probe model is traced and
exported to ONNX, then built for x86 and compared with torch (traced) or
onnxruntime (imported) to 1e-4.
"""

from __future__ import annotations

import argparse
import inspect
import io
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

DOC = Path(__file__).resolve().parents[1] / "docs" / "op_coverage.md"
ATOL = 1e-4


# --- mapped ops (cheap) -----------------------------------------------------------------------------


def _source(rule: Callable) -> str:
    fn = rule.func if isinstance(rule, partial) else rule
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def _imports_as(rule: Callable, declines: tuple[str, ...]) -> str:
    return "canonical, else opaque" if any(d in _source(rule) for d in declines) else "canonical"


def mapped_rows() -> list[tuple[str, str, str, str, str]]:
    """(frontend, op, imports as, lowers to TVM x86, numerics checked) for every mapped op."""
    from graphopt.backends.tvm.lower_ops import RULES as TVM_RULES
    from graphopt.frontends import fx_ops, onnx_ops
    from graphopt.ir.ops import OPS

    every_op_lowers = "yes" if set(TVM_RULES) == set(OPS) else "partly"
    rows = []
    for target, rule in fx_ops.RULES.items():
        rows.append(("torch", str(target), _imports_as(rule, ("return None",)), every_op_lowers, "yes"))
    rows += [("torch", str(t), "dropped (an assertion)", "-", "-") for t in fx_ops.IGNORED]
    for op_type, rule in onnx_ops.RULES.items():
        rows.append(("onnx", op_type, _imports_as(rule, ("return False", "Unmappable")), every_op_lowers, "yes"))
    return sorted(rows)


# --- opaque probes (expensive columns) ------------------------------------------------------------------


class Fn(nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class LSTMLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _fill(x):
    y = x * 2
    y[:, 0].fill_(1.0)
    return y


@dataclass(frozen=True)
class Probe:
    name: str
    make: Callable[[], nn.Module]
    input: Callable[[], torch.Tensor]


def _randn(*shape: int) -> Callable[[], torch.Tensor]:
    """Seeded inputs: the same tensor on every call."""
    return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(0))


_image = _randn(1, 4, 4, 4)


# Ops that import as canonical ops now (resize, conv_transpose, pixel_shuffle, comparisons and
# where, einsum) have their own tests (tests/test_ops_*.py); these probes keep ops opaque.
PROBES = [
    Probe("topk", lambda: Fn(lambda x: torch.topk(x.flatten(1), 3)), _image),
    Probe("cumsum", lambda: Fn(lambda x: torch.cumsum(x, dim=1)), _image),
    Probe("int // and %", lambda: Fn(lambda x: (x // 3, x % 3)), lambda: torch.arange(-12, 12).reshape(4, 6)),
    Probe("lstm", LSTMLast, _randn(2, 3, 4)),
    Probe("fill_", lambda: Fn(_fill), _randn(2, 3)),
    Probe("kthvalue", lambda: Fn(lambda x: torch.kthvalue(x, 2, dim=1)[0]), _randn(3, 5)),
    Probe("logcumsumexp", lambda: Fn(lambda x: torch.logcumsumexp(x, 1)), _randn(3, 5)),
]


def _model(probe: Probe) -> nn.Module:
    torch.manual_seed(0)
    return probe.make().eval()


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes | None:
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17)
    except Exception:  # the exporter refuses the op: no ONNX row for it
        return None
    return buf.getvalue()


def probe_graphs(probe: Probe) -> dict:
    """frontend -> (graph, reference outputs as numpy), for the frontends that import the probe."""
    import graphopt

    model, x = _model(probe), probe.input()
    with torch.no_grad():
        want = model(x)
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    graphs = {"torch": (graphopt.trace(model, (x,)), want)}
    data = _onnx_bytes(model, x)
    if data is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        graphs["onnx"] = (graphopt.load_onnx(data), session.run(None, {session.get_inputs()[0].name: x.numpy()}))
    return graphs


def _op(node) -> str:
    return node.attrs.get("target") or node.attrs.get("op_type")


def opaque_keys() -> list[tuple[str, str, str]]:
    """(frontend, opaque op, probe) for every opaque node of every probe (cheap: import only)."""
    keys = set()
    for probe in PROBES:
        for frontend, (graph, _) in probe_graphs(probe).items():
            keys |= {(frontend, _op(n), probe.name) for n in graph.nodes if n.is_opaque}
    return sorted(keys)


def opaque_rows() -> list[tuple[str, str, str, str, str]]:
    """(frontend, op, probe, lowers to TVM x86, numerics checked): builds every probe for x86."""
    from graphopt.backends.tvm.compiled import compile_graph
    from graphopt.backends.tvm.lower_opaque import OpaqueRefused, convert_opaque
    from graphopt.errors import BackendError

    rows = []
    for probe in PROBES:
        x = probe.input().numpy()
        for frontend, (graph, want) in probe_graphs(probe).items():
            opaque = [n for n in graph.nodes if n.is_opaque]
            refused = {}
            for n in opaque:
                try:
                    convert_opaque(graph, n)
                except OpaqueRefused as e:
                    refused[_op(n)] = str(e).split(" (")[0]
            build = numerics = "no (TVM refuses an op)" if refused else None
            if not refused:
                try:
                    got = compile_graph(graph, "x86")(x)
                    got = got if isinstance(got, tuple) else (got,)
                    ok = all(np.allclose(g, w, atol=ATOL, rtol=0) and g.shape == w.shape for g, w in zip(got, want))
                    build, numerics = "yes", "yes" if ok else "no (mismatch)"
                except BackendError as e:
                    build, numerics = "no (build fails: " + str(e).split(": ", 1)[-1][:80] + ")", "no"
            for op in sorted({_op(n) for n in opaque}):
                lowers = f"no: {refused[op]}" if op in refused else build
                rows.append((frontend, op, probe.name, lowers, numerics))
    return sorted(set(rows))


# --- the document -------------------------------------------------------------------------------------------


def _table(header: tuple[str, ...], rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(r)) + " |" for r in rows]


MAPPED_HEADER = ("frontend", "op", "imports as", "lowers to TVM x86", "numerics checked")
OPAQUE_HEADER = ("frontend", "op", "probe", "lowers to TVM x86", "numerics checked (x86, 1e-4)")


def render(mapped, opaque) -> str:
    lines = [
        "# Op coverage of the TVM backend",
        "",
        "Generated by `python3 benchmarks/op_coverage.py`; `tests/test_op_coverage.py` regenerates the",
        "cheap columns and fails when this file is stale.",
        "",
        "## Ops the frontends map",
        "",
        '"canonical, else opaque": argument forms the rule declines stay opaque and lower as below.',
        "Every canonical op has a TVM rule checked against its torch reference (tests/test_tvm_lower.py).",
        "",
        *_table(MAPPED_HEADER, mapped),
        "",
        "## Opaque ops, lowered through TVM's own frontends",
        "",
        "Each probe is traced (frontend `torch`, compared with torch) and exported to ONNX (frontend `onnx`,",
        "compared with onnxruntime), then built for x86.",
        "",
        *_table(OPAQUE_HEADER, opaque),
        "",
    ]
    return "\n".join(lines)


def cheap_part(text: str) -> tuple[str, list[tuple[str, ...]]]:
    """The mapped section as text, and (frontend, op, probe) of each opaque row: what --check compares."""
    mapped, _, opaque = text.partition("## Opaque ops")
    rows = [ln.split(" | ") for ln in opaque.splitlines() if ln.startswith("| ") and not ln.startswith("| frontend")]
    keys = [(r[0][2:], r[1].strip("`"), r[2]) for r in rows]
    return mapped, sorted(keys)


def check() -> list[str]:
    """Why docs/op_coverage.md is stale (empty when it is current)."""
    if not DOC.exists():
        return [f"{DOC} is missing"]
    have_mapped, have_keys = cheap_part(DOC.read_text())
    want_mapped, _ = cheap_part(render(mapped_rows(), []))
    problems = []
    if have_mapped != want_mapped:
        problems.append("the mapped-ops table differs from the frontends' rule tables")
    want_keys = opaque_keys()
    if have_keys != want_keys:
        missing, extra = sorted(set(want_keys) - set(have_keys)), sorted(set(have_keys) - set(want_keys))
        problems.append(f"opaque rows differ: missing {missing}, no longer produced {extra}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the cheap columns with the file")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(f"{DOC.name} is stale: {p}; run python3 benchmarks/op_coverage.py", file=sys.stderr)
        return 1 if problems else 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(mapped_rows(), opaque_rows()))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
