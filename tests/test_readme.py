"""The README is exactly true: every command and snippet in it runs, and shown output matches in shape.

The conventions are in `readme_blocks.py`. Commands run in a scratch directory that holds links to
the checkout's folders (so `examples/...` and `scripts/...` resolve as they do for a user in the
clone) and keeps the files the README's commands write out of the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import Block, console_commands, read_blocks, sh_commands, shape_mismatch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KNOWN_LANGS = {"", "sh", "bash", "console", "python", "text"}
COMMAND_TIMEOUT_S = 900
_SENTINEL = "=====readme-block-end====="


def _blocks() -> list[Block]:
    return read_blocks(README.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            (work / entry.name).symlink_to(entry)
    return work


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The interpreter's own bin first: `graphopt` and `python3` are the ones of this environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def test_every_block_has_a_known_language_and_each_output_block_follows_a_snippet():
    blocks = _blocks()
    assert blocks, "README has no code blocks"
    for block in blocks:
        assert block.lang in KNOWN_LANGS, f"README line {block.line}: unknown block language {block.lang!r}"
        assert block.lang != "text", f"README line {block.line}: a ```text block must follow a ```python block"


def test_the_readme_commands_run_and_print_what_it_shows(workdir):
    ran = 0
    for block in _blocks():
        if block.skip or block.lang not in {"sh", "bash", "console"}:
            continue
        commands = console_commands(block) if block.lang == "console" else sh_commands(block)
        for cmd in commands:
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", cmd.command],
                cwd=workdir,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            out = proc.stdout
            shows_an_error = any("error:" in line for line in cmd.expected)
            assert (proc.returncode != 0) == shows_an_error, (
                f"README line {cmd.line}: `{cmd.command}` exited {proc.returncode}\n{out[-3000:]}"
            )
            problem = shape_mismatch(cmd.expected, out)
            assert problem is None, f"README line {cmd.line}: `{cmd.command}`: {problem}\noutput:\n{out[-3000:]}"
            ran += 1
    assert ran > 0


def test_the_readme_python_snippets_run_in_order_and_print_what_it_shows(workdir):
    snippets = [b for b in _blocks() if b.lang == "python" and not b.skip]
    assert snippets
    script = "\n".join(f"{b.text}\nprint({_SENTINEL!r}, flush=True)\n" for b in snippets)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    outputs = proc.stdout.split(_SENTINEL + "\n")
    done = len(outputs) - 1
    assert proc.returncode == 0, (
        f"README python block at line {snippets[min(done, len(snippets) - 1)].line} failed:\n{proc.stderr[-4000:]}"
    )
    for block, out in zip(snippets, outputs, strict=False):
        if block.expected is not None:
            problem = shape_mismatch(block.expected.splitlines(), out)
            assert problem is None, f"README python block at line {block.line}: {problem}\noutput:\n{out[-3000:]}"


def test_shown_output_is_compared_in_shape_and_in_order():
    out = "pass  time\nfold-bn  1.4 ms  yes  folded=3\nwrote a.onnx\n"
    assert shape_mismatch(["fold-bn 99.0 ms yes folded=12", "wrote a.onnx"], out) is None
    assert shape_mismatch(["wrote a.onnx", "fold-bn 1.4 ms yes folded=3"], out) is not None  # order
    assert shape_mismatch(["fold-bn 1.4 ms no folded=3"], out) is not None  # words count


def test_skip_marks_and_text_blocks_attach_to_the_block_they_follow():
    blocks = read_blocks(
        "<!-- readme-test: skip too slow -->\n```sh\nsleep 1000\n```\n\n```python\nprint(1)\n```\n\n```text\n1\n```\n"
    )
    assert [(b.lang, b.skip, b.expected) for b in blocks] == [("sh", "too slow", None), ("python", None, "1")]
