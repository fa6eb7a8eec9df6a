"""docs/passes.md is `graphopt passes --markdown` of the current registry, and the generator covers every pass."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from graphopt.cli import main
from graphopt.passes import Pass, Pipeline, register_pass, registered_passes
from graphopt.passes.docs import example_pipeline, pass_markdown, passes_markdown
from graphopt.passes.pipeline import option_types
from graphopt.passes.registry import unregister_pass

DOCS = Path(__file__).resolve().parents[1] / "docs" / "passes.md"
REGENERATE = "python3 -m graphopt passes --markdown > docs/passes.md"


def test_docs_passes_md_matches_the_registry():
    # A fresh process: test modules that register throwaway passes must not leak into the comparison.
    generated = subprocess.run(
        [sys.executable, "-m", "graphopt", "passes", "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    committed = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    assert generated == committed, (
        f"docs/passes.md is out of date with the pass registry (a pass, option, default, docstring or "
        f"tolerance changed, or a pass was added). Whoever changed the pass regenerates it: {REGENERATE}"
    )


def test_every_registered_pass_has_a_section_with_its_options_tolerance_and_example(capsys):
    assert main(["passes", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == passes_markdown(registered_passes())
    for name, cls in registered_passes().items():
        section = out.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for option in option_types(cls):
            assert f"| `{option}` |" in section, (name, option)
        assert "\nTolerance: " in section, name
        example = example_pipeline(cls)
        assert example is not None and f"graphopt opt -p '{example}'" in section
        assert Pipeline.parse(example).passes[-1] == cls()  # the example is runnable text for this pass


def test_section_of_a_pass_with_a_required_option_and_a_bound():
    @dataclass(frozen=True)
    class Documented(Pass):
        """Scale weights down.

        More words."""

        name: ClassVar[str] = "test-documented-md"
        factor: float
        mode: Literal["a|b", "c"] = "c"

    register_pass(Documented)
    try:
        section = pass_markdown(Documented)
        only = passes_markdown({"test-documented-md": Documented})
    finally:
        unregister_pass("test-documented-md")
    assert "| `factor` | float | required |" in section
    assert "| `mode` | one of a\\|b\\|c | `c` |" in section  # pipes escaped inside a table cell
    assert "Tolerance: depends on the options." in section
    assert "```sh" not in section  # no runnable example without a default for `factor`
    assert "| [`test-documented-md`](#test-documented-md) | Scale weights down. |" in only


def test_markdown_for_named_passes_only(capsys):
    assert main(["passes", "--markdown", "fold-bn", "quantize"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("## ")] == ["## fold-bn", "## quantize"]
    assert "Tolerance: exact (atol=1e-05, rtol=0.0001)." in out
    assert "Tolerance: bounded (SQNR>=" in out.split("\n## quantize\n")[1]
