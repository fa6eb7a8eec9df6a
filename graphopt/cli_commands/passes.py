"""List the registered passes: name, options (name, type, default), tolerance and description.

Examples:
  graphopt passes              every pass
  graphopt passes fold-bn      one pass
  graphopt passes --markdown > docs/passes.md
                               the pass reference in Markdown (what docs/passes.md holds)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect

HELP = "list the registered passes, their options and what they do"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these passes")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the reference in Markdown: description, options, tolerance and an example per pass",
    )


def run(args: argparse.Namespace) -> int:
    from graphopt.errors import GraphoptError
    from graphopt.passes import registered_passes
    from graphopt.passes.registry import unknown_pass_message

    passes = registered_passes()
    for name in args.names:
        if name not in passes:
            raise GraphoptError(unknown_pass_message(name))
    chosen = args.names or list(passes)
    if args.markdown:
        from graphopt.passes.docs import passes_markdown

        print(passes_markdown({name: passes[name] for name in chosen}), end="")
        return 0
    print("\n\n".join(describe_pass(passes[name]) for name in chosen) if chosen else "no passes are registered")
    return 0


def describe_pass(cls) -> str:
    """A pass's name, description, options and declared tolerance, as indented text."""
    from graphopt.passes.pipeline import _default, describe_type, format_value, option_types

    lines = [cls.name]
    doc = _docstring(cls)
    lines += [f"    {line}".rstrip() for line in (doc or "(no description)").splitlines()]
    types = option_types(cls)
    if types:
        lines.append("  options:")
        for f in dataclasses.fields(cls):
            default = _default(f)
            shown = "required" if default is dataclasses.MISSING else f"default {format_value(default)}"
            lines.append(f"    {f.name}: {describe_type(types[f.name])} ({shown})")
    else:
        lines.append("  options: none")
    try:
        lines.append(f"  tolerance: {cls().tolerance().describe()}")
    except Exception:  # options without defaults or a tolerance that depends on them
        pass
    return "\n".join(lines)


def _docstring(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    # dataclasses invent "Name(field: type, ...)" when a class has no docstring
    return "" if doc.startswith(f"{cls.__name__}(") else doc
