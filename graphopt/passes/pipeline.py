"""Text pipelines in the MLIR style, round-tripping through `str`.

    pipeline := pass ("," pass)*          (empty text = no passes)
    pass     := NAME ["{" option (" " option)* "}"]
    option   := KEY "=" value
    value    := word | "quoted string" | "[" value ("," value)* "]"

Option text is converted to the field's annotated type (bool, int, float, str,
Literal[...], X | None, tuple[X, ...]). Errors name the character position.
Lists nest at most MAX_NESTING deep (no option needs more; the parser recurses
per bracket, so the limit keeps hostile text from exhausting Python's stack).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from graphopt.errors import PipelineParseError
from graphopt.passes.base import Pass
from graphopt.passes.registry import get_pass_class, unknown_pass_message

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.passes.context import PassContext
    from graphopt.passes.manager import PipelineResult

_WORD = re.compile(r"[A-Za-z0-9_.+\-/:]+")
_NAME = re.compile(r"[a-z][a-z0-9\-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # kebab-case keys name snake_case fields
MAX_NESTING = 32  # list brackets inside one option value


@dataclass(frozen=True)
class Pipeline:
    passes: tuple[Pass, ...] = ()

    def __init__(self, passes: Iterable[Pass | str] = ()):
        resolved = []
        for p in passes:
            resolved.extend(Pipeline.parse(p).passes if isinstance(p, str) else [p])
        for p in resolved:
            if not isinstance(p, Pass):
                raise TypeError(f"pipeline entries must be Pass instances or text, got {p!r}")
        object.__setattr__(self, "passes", tuple(resolved))

    @classmethod
    def parse(cls, text: str) -> "Pipeline":
        return cls(_Parser(text).pipeline())

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __iter__(self):
        return iter(self.passes)

    def run(self, graph: "Graph", ctx: "PassContext | None" = None) -> "PipelineResult":
        """Run on a copy of `graph` (never mutated) under `ctx`'s instruments."""
        from graphopt.passes.manager import run_pipeline

        return run_pipeline(self, graph, ctx)


# ---- formatting ------------------------------------------------------------------


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if _WORD.fullmatch(s) and s not in ("true", "false", "none"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_pass(p: Pass) -> str:
    opts = [
        f"{f.name}={format_value(getattr(p, f.name))}"
        for f in dataclasses.fields(p)
        if getattr(p, f.name) != _default(f)
    ]
    return p.name + ("{" + " ".join(opts) + "}" if opts else "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {describe_type(typing.get_args(tp)[0])}"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def option_types(cls: type[Pass]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# ---- parsing --------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos, self.depth = text, 0, 0

    def error(self, message: str, pos: int | None = None) -> PipelineParseError:
        return PipelineParseError(message, self.text, self.pos if pos is None else pos)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.peek() != ch:
            found = repr(self.peek()) if self.peek() else "end of text"
            raise self.error(f"expected '{ch}', found {found}")
        self.pos += 1

    def pipeline(self) -> list[Pass]:
        passes: list[Pass] = []
        self.skip_ws()
        if not self.peek():
            return passes
        while True:
            passes.append(self.pass_())
            self.skip_ws()
            if not self.peek():
                return passes
            self.expect(",")

    def pass_(self) -> Pass:
        self.skip_ws()
        start = self.pos
        m = _NAME.match(self.text, self.pos)
        if not m:
            found = repr(self.peek()) if self.peek() else "end of text"
            raise self.error(f"expected a pass name, found {found}")
        name = m.group()
        self.pos = m.end()
        try:
            cls = get_pass_class(name)
        except KeyError:
            raise self.error(unknown_pass_message(name), start) from None
        kwargs: dict[str, Any] = {}
        self.skip_ws()
        if self.peek() == "{":
            self.pos += 1
            kwargs = self.options(cls)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise self.error(f"invalid options for pass '{name}': {e}", start) from None

    def options(self, cls: type[Pass]) -> dict[str, Any]:
        types_ = option_types(cls)
        kwargs: dict[str, Any] = {}
        while True:
            self.skip_ws()
            if self.peek() == "}":
                self.pos += 1
                return kwargs
            key_pos = self.pos
            m = _KEY.match(self.text, self.pos)
            if not m:
                raise self.error("expected an option name or '}'")
            key = m.group().replace("-", "_")
            self.pos = m.end()
            if key not in types_:
                valid = ", ".join(f"{k}: {describe_type(t)}" for k, t in types_.items()) or "none"
                raise self.error(f"unknown option '{key}' for pass '{cls.name}'; valid options: {valid}", key_pos)
            if key in kwargs:
                raise self.error(f"option '{key}' given twice", key_pos)
            self.expect("=")
            self.skip_ws()
            value_pos = self.pos
            raw = self.value()
            try:
                kwargs[key] = convert(raw, types_[key])
            except ValueError as e:
                raise self.error(
                    f"option '{key}' of pass '{cls.name}' expects {describe_type(types_[key])}: {e}", value_pos
                ) from None

    def value(self) -> str | list:
        ch = self.peek()
        if ch == "[":
            if self.depth == MAX_NESTING:
                raise self.error(f"lists nested more than {MAX_NESTING} deep")
            self.depth += 1
            self.pos += 1
            items: list = []
            self.skip_ws()
            if self.peek() == "]":
                self.pos += 1
                self.depth -= 1
                return items
            while True:
                self.skip_ws()
                items.append(self.value())
                self.skip_ws()
                if self.peek() == "]":
                    self.pos += 1
                    self.depth -= 1
                    return items
                self.expect(",")
        if ch == '"':
            return self.quoted()
        m = _WORD.match(self.text, self.pos)
        if not m:
            raise self.error("expected a value")
        self.pos = m.end()
        return m.group()

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == '"':
                self.pos += 1
                return _Quoted("".join(out))
            out.append(ch)
            self.pos += 1
        raise self.error("unterminated string", start)


class _Quoted(str):
    """A string that was written in quotes (so 'none' stays the text 'none')."""


def convert(raw: str | list, tp: Any) -> Any:
    """Convert parsed option text to type `tp`; ValueError says why not."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and raw == "none" and not isinstance(raw, _Quoted):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return convert(raw, a)
            except ValueError:
                pass
        raise ValueError(f"got {_show(raw)}")
    if origin is Literal:
        for choice in typing.get_args(tp):
            try:
                if convert(raw, type(choice)) == choice:
                    return choice
            except ValueError:
                pass
        raise ValueError(f"got {_show(raw)}")
    if origin is tuple:
        if not isinstance(raw, list):
            raw = [raw]
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(r, args[0]) for r in raw)
        if len(args) != len(raw):
            raise ValueError(f"expected {len(args)} items, got {len(raw)}")
        return tuple(convert(r, a) for r, a in zip(raw, args))
    if isinstance(raw, list):
        raise ValueError(f"got a list {_show(raw)}")
    if tp is bool:
        if raw in ("true", "false"):
            return raw == "true"
        raise ValueError(f"got '{raw}' (write true or false)")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"got '{raw}'") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"got '{raw}'") from None
    if tp is str:
        return str(raw)
    raise ValueError(f"unsupported option type {tp}")


def _show(raw: str | list) -> str:
    return format_value(raw) if isinstance(raw, list) else f"'{raw}'"
