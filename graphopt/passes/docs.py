"""Pass reference in Markdown, generated from the registry (`graphopt passes --markdown`).

Per pass: its class docstring, its module's docstring (the details: before/after,
stats), the options with their types and defaults (the frozen dataclass fields),
the tolerance the numerical verifier holds it to, and an example pipeline with
every option written out at its default, which parses back to the same pass.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys

from graphopt.passes.base import Pass, Tolerance
from graphopt.passes.pipeline import Pipeline, _default, describe_type, format_value, option_types

HEADER = """# Passes

Generated from the pass registry by `graphopt passes --markdown > docs/passes.md`;
`tests/test_passes_docs.py` fails when this file and the registry disagree.

A pipeline is MLIR-style text: passes separated by commas, options in braces
(`prune-channels{ratio=0.5 importance=l1}`); an option left out takes its default,
and kebab-case keys name the snake_case options. Run one with
`graphopt opt -p PIPELINE model.onnx -o out.onnx` (or `-p @file` for a pipeline file),
`graphopt check MODEL -p PIPELINE`, or `graphopt.optimize(model, pipeline=...)`.
After every pass the verifier compares the graph with the graph before it on
seeded inputs, within the tolerance below: *exact* passes keep outputs within
atol/rtol; *bounded* ones keep an SQNR (dB) or top-1 agreement, or only output
shapes where no numeric bound holds in general (fine-tuning restores accuracy).
"""


def passes_markdown(passes: dict[str, type[Pass]]) -> str:
    """The whole reference: header, index, then one section per pass (in the order given)."""
    index = [f"| [`{name}`](#{name}) | {_summary(cls)} |" for name, cls in passes.items()]
    parts = [HEADER, "| pass | what it does |", "|---|---|", *index, ""]
    parts += [pass_markdown(cls) for cls in passes.values()]
    return "\n".join(parts).rstrip() + "\n"


def pass_markdown(cls: type[Pass]) -> str:
    """One pass's section."""
    lines = [f"## {cls.name}", "", class_doc(cls) or "(no description)", ""]
    details = _module_details(cls)
    if details:
        lines += [details, ""]
    types = option_types(cls)
    if types:
        lines += ["| option | type | default |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = _default(f)
            shown = "required" if default is dataclasses.MISSING else f"`{format_value(default)}`"
            lines.append(f"| `{f.name}` | {_cell(describe_type(types[f.name]))} | {_cell(shown)} |")
    else:
        lines.append("Options: none.")
    lines += ["", f"Tolerance: {_tolerance(cls)}", ""]
    example = example_pipeline(cls)
    if example is not None:
        lines += ["Example:", "", "```sh", f"graphopt opt -p '{example}' model.onnx -o model.opt.onnx", "```", ""]
    return "\n".join(lines)


def example_pipeline(cls: type[Pass]) -> str | None:
    """The pass with its options written out at their defaults (empty lists and none left out);
    None when an option has no default."""
    fields = dataclasses.fields(cls)
    if any(_default(f) is dataclasses.MISSING for f in fields):
        return None
    shown = [f for f in fields if _default(f) not in ((), [], None)]
    opts = " ".join(f"{f.name.replace('_', '-')}={format_value(_default(f))}" for f in shown)
    text = cls.name + (f"{{{opts}}}" if opts else "")
    if Pipeline.parse(text).passes != (cls(),):
        raise AssertionError(f"example pipeline '{text}' of pass '{cls.name}' does not parse back to its defaults")
    before = RUNS_AFTER.get(cls.name)
    return f"{before},{text}" if before else text


# Passes that do nothing on a float model: their example runs what they refine first.
RUNS_AFTER = {"correct-bias": "quantize", "round-adaptive": "quantize"}


def class_doc(cls: type[Pass]) -> str:
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc  # dataclasses invent "Name(field: type, ...)"


def _summary(cls: type[Pass]) -> str:
    return _cell(class_doc(cls).split("\n\n")[0].replace("\n", " ") or "(no description)")


def _module_details(cls: type[Pass]) -> str:
    """The defining module's docstring without its title line, when the module defines only this pass."""
    module = sys.modules.get(cls.__module__)
    doc = inspect.getdoc(module) if module is not None else None
    if not doc:
        return ""
    others = [c for c in vars(module).values() if _is_pass(c) and c is not cls and c.__module__ == cls.__module__]
    if others:
        return ""
    body = doc.split("\n", 1)[1].strip("\n") if "\n" in doc else ""
    return body


def _is_pass(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, Pass) and obj is not Pass and bool(getattr(obj, "name", ""))


def _tolerance(cls: type[Pass]) -> str:
    try:
        tol = cls().tolerance()
    except Exception:  # an option without a default
        return "depends on the options."
    if tol.atol is not None and tol.min_sqnr_db is None and tol.min_top1_agreement is None:
        text = f"exact (atol={tol.atol:g}, rtol={tol.rtol:g})"
    elif tol == Tolerance.bounded():
        text = "bounded, no numeric bound (output count and shapes are checked)"
    else:
        text = f"bounded ({tol.describe()})"
    if cls.tolerance is not Pass.tolerance and "self." in inspect.getsource(cls.tolerance):
        text += " with the default options; the bound depends on the options"
    return text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
