"""The pass registry: kebab-case name -> pass class."""

from __future__ import annotations

import dataclasses
import difflib
import re

from graphopt.passes.base import Pass

_REGISTRY: dict[str, type[Pass]] = {}
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make `cls` available by its `name` in pipelines and the CLI.

    Put it above `@dataclass(frozen=True)` so it sees the finished dataclass.
    """
    name = getattr(cls, "name", "")
    if not (isinstance(name, str) and _KEBAB.match(name)):
        raise TypeError(f"pass {cls.__name__} needs a kebab-case class attribute `name`, got {name!r}")
    if not (issubclass(cls, Pass) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise TypeError(f"pass {cls.__name__} must subclass Pass and be a @dataclass(frozen=True)")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"pass name '{name}' is already registered by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister_pass(name: str) -> None:
    """Remove a registration (tests that register throwaway passes clean up with this)."""
    _REGISTRY.pop(name, None)


def get_pass_class(name: str) -> type[Pass]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(unknown_pass_message(name)) from None


def unknown_pass_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown pass '{name}'{hint}; registered passes: {', '.join(sorted(_REGISTRY))}"


def registered_passes() -> dict[str, type[Pass]]:
    return dict(sorted(_REGISTRY.items()))
