"""The README's code blocks, as the doc test runs them.

Conventions the README follows (and `test_readme.py` enforces):

- ```` ```sh ````: commands, one per line (a trailing `# comment` is fine); run, output not shown.
- ```` ```console ````: `$ command` lines, each followed by the output it prints (stdout and
  stderr together, as in a terminal).
- ```` ```python ````: run in order in one interpreter, like a user following along; a
  ```` ```text ```` block right after one is what that block prints.
- A line `<!-- readme-test: skip REASON -->` right above a block keeps it from running.
- Blocks with no language (directory trees, synopses) are text, never run.

Shown output matches "in shape": every shown line appears in the real output, in order, with
every number standing for any number (timings and counts vary) and runs of spaces as one.
Other lines may come between (progress on stderr; a shown `...` marks lines left out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b(.*?)-->")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    skip: str | None = None  # the reason, when marked skip
    expected: str | None = None  # for python: the ```text block after it


@dataclass
class Command:
    command: str
    expected: list[str] = field(default_factory=list)
    line: int = 0


def read_blocks(markdown: str) -> list[Block]:
    """Every fenced block, with its skip mark; a ```text block is attached to the python block before it."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if j == len(lines):
            raise ValueError(f"README line {start + 1}: code block is never closed")
        skip = None
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0 and (s := _SKIP.search(lines[above])):
            skip = s.group(1).strip() or "marked skip"
        block = Block(lang, "\n".join(lines[start + 1 : j]), start + 1, skip)
        if lang == "text" and blocks and blocks[-1].lang == "python" and _only_blank_between(lines, blocks[-1], start):
            blocks[-1].expected = block.text
        else:
            blocks.append(block)
        i = j + 1
    return blocks


def _only_blank_between(lines: list[str], previous: Block, start: int) -> bool:
    end = previous.line + previous.text.count("\n") + 1  # index of the previous closing fence
    return all(not line.strip() for line in lines[end + 1 : start])


def console_commands(block: Block) -> list[Command]:
    """The `$ command` lines of a console block, each with the output lines shown after it."""
    commands: list[Command] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            commands.append(Command(line[2:], [], block.line + 1 + offset))
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"README line {block.line + 1 + offset}: console output before any '$ ' command")
    return commands


def sh_commands(block: Block) -> list[Command]:
    """The commands of a sh block (blank and comment-only lines dropped)."""
    return [
        Command(line, [], block.line + 1 + n)
        for n, line in enumerate(block.text.splitlines())
        if line.strip() and not line.lstrip().startswith("#")
    ]


def shape(line: str) -> str:
    """A line with every number replaced by N and runs of whitespace by one space."""
    return " ".join(_NUMBER.sub("N", line).split())


def shape_mismatch(expected: list[str], actual: str) -> str | None:
    """None when every shown line appears in `actual` in order, in shape; else the first one missing.

    Lines between shown ones are allowed (progress on stderr, lines the README elides with `...`).
    """
    got = [shape(line) for line in actual.splitlines()]
    pos = 0
    for want_line in expected:
        want = shape(want_line)
        if not want or want == "...":
            continue
        try:
            pos = got.index(want, pos) + 1
        except ValueError:
            return f"shown line {want_line!r} is not in the output (compared in shape: {want!r})"
    return None
