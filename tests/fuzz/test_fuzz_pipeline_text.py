"""Pipeline text fuzzing: any text parses to a pipeline that round-trips through `str`, or fails with
PipelineParseError at a position inside the text; no other exception, ever.

Valid pipelines are drawn from the registry (every pass, options of their annotated
types); mutated text is a valid pipeline with characters deleted, inserted,
duplicated or swapped; random text is anything hypothesis makes.
"""

from __future__ import annotations

import types
import typing
from typing import Literal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphopt.errors import PipelineParseError
from graphopt.passes import Pipeline, registered_passes
from graphopt.passes.pipeline import option_types

CI_EXAMPLES = 300
PASSES = {name: cls for name, cls in registered_passes().items() if not name.startswith("test-")}
SYNTAX = '{}[],="\\ =-_.:/+'


def _values(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_values(a) for a in typing.get_args(tp)])
    if origin is Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is tuple:
        return st.lists(_values(typing.get_args(tp)[0]), max_size=3).map(tuple)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**40), 2**40)
    if tp is float:
        return st.floats(allow_nan=False)  # nan != nan: a pass holding nan cannot equal its parse
    if tp is str:
        return st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(SYNTAX))
    raise AssertionError(f"no strategy for option type {tp}")


@st.composite
def passes(draw):
    name = draw(st.sampled_from(sorted(PASSES)))
    cls = PASSES[name]
    types_ = option_types(cls)
    chosen = draw(st.lists(st.sampled_from(sorted(types_)), unique=True)) if types_ else []
    kwargs = {k: draw(_values(types_[k])) for k in chosen}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # the pass validates its options; the parser reports these too
        assume(False)


def pipelines():
    return st.lists(passes(), max_size=4).map(Pipeline)


@st.composite
def mutated(draw):
    text = str(draw(pipelines()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(("delete", "insert", "duplicate", "swap")))
        if edit == "delete":
            text = text[:i] + text[i + 1 :]
        elif edit == "insert":
            text = text[:i] + draw(st.sampled_from(SYNTAX) | st.characters()) + text[i:]
        elif edit == "duplicate":
            j = draw(st.integers(i, len(text)))
            text = text[:j] + text[i:j] + text[j:]
        elif i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def check_text(text: str) -> None:
    """Parse `text`: a pipeline that round-trips, or PipelineParseError with a position in range."""
    try:
        parsed = Pipeline.parse(text)
    except PipelineParseError as e:
        assert 0 <= e.position <= len(text), f"position {e.position} outside text of length {len(text)}"
        assert f"at position {e.position}" in str(e)
        return
    canonical = str(parsed)
    assert Pipeline.parse(canonical) == parsed, canonical
    assert str(Pipeline.parse(canonical)) == canonical


@settings(settings.get_profile("fuzz-ci"), max_examples=CI_EXAMPLES)
@given(pipelines())
def test_valid_pipelines_round_trip(pipeline):
    text = str(pipeline)
    assert Pipeline.parse(text) == pipeline, text
    assert str(Pipeline.parse(text)) == text


@settings(settings.get_profile("fuzz-ci"), max_examples=CI_EXAMPLES)
@given(mutated())
def test_mutated_text_parses_or_fails_at_a_position(text):
    check_text(text)


@settings(settings.get_profile("fuzz-ci"), max_examples=CI_EXAMPLES)
@given(st.text(alphabet=st.sampled_from(SYNTAX + "abcdefghiklmnopqrstuvwxyz0123456789") | st.characters()))
def test_random_text_parses_or_fails_at_a_position(text):
    check_text(text)


@pytest.mark.soak
@settings(settings.get_profile("fuzz-soak"), max_examples=20 * CI_EXAMPLES)
@given(st.one_of(mutated(), st.text(), pipelines().map(str)))
def test_pipeline_text_soak(text):
    check_text(text)
