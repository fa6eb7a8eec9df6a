"""Text pipelines: round trips across option types, and errors that name the position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from graphopt.errors import PipelineParseError
from graphopt.passes import Pass, PassResult, Pipeline, register_pass
from graphopt.passes.registry import unregister_pass


@dataclass(frozen=True)
class OptionsPass(Pass):
    """One option of every supported type."""

    name: ClassVar[str] = "test-options"
    flag: bool = False
    count: int = 3
    ratio: float = 0.5
    label: str = "plain"
    mode: Literal["l1", "l2", "bn-scale"] = "l1"
    bits: Literal[2, 4, 8] = 8
    limit: int | None = None
    axes: tuple[int, ...] = ()
    scales: tuple[float, ...] = (1.0,)
    names: tuple[str, ...] = ()

    def run(self, graph, ctx):
        return PassResult(graph, False)


@dataclass(frozen=True)
class PlainPass(Pass):
    name: ClassVar[str] = "test-plain"

    def run(self, graph, ctx):
        return PassResult(graph, False)


@pytest.fixture(autouse=True)
def throwaway_passes():
    for cls in (OptionsPass, PlainPass):
        register_pass(cls)
    yield
    for cls in (OptionsPass, PlainPass):
        unregister_pass(cls.name)


ROUND_TRIP = [
    OptionsPass(),
    OptionsPass(flag=True),
    OptionsPass(count=-7, ratio=1e-05),
    OptionsPass(ratio=float("inf")),
    OptionsPass(ratio=0.1, label='has spaces, commas, {braces} and "quotes" \\ too'),
    OptionsPass(label=""),
    OptionsPass(label="none"),
    OptionsPass(label="true"),
    OptionsPass(label="models/resnet18.onnx"),
    OptionsPass(mode="bn-scale", bits=4),
    OptionsPass(limit=0),
    OptionsPass(limit=12),
    OptionsPass(axes=(0, -1, 2)),
    OptionsPass(scales=()),
    OptionsPass(scales=(0.25, 2.0, -1e-3)),
    OptionsPass(names=("a b", "none", "x,y", "]")),
    PlainPass(),
]


@pytest.mark.parametrize("pass_", ROUND_TRIP, ids=str)
def test_round_trip_one_pass(pass_):
    p = Pipeline([pass_])
    assert Pipeline.parse(str(p)) == p
    assert Pipeline.parse(str(p)).passes[0] == pass_


def test_round_trip_whole_pipeline():
    p = Pipeline(ROUND_TRIP)
    text = str(p)
    assert Pipeline.parse(text) == p
    assert str(Pipeline.parse(text)) == text


def test_defaults_are_omitted_and_text_is_canonical():
    assert str(OptionsPass()) == "test-options"
    assert str(OptionsPass(flag=True, axes=(1, 2))) == "test-options{flag=true axes=[1,2]}"
    messy = "  test-plain ,test-options{ axes = [ 1 , 2 ]   flag=true } "
    assert str(Pipeline.parse(messy)) == "test-plain,test-options{flag=true axes=[1,2]}"


def test_python_list_and_text_agree():
    assert Pipeline([PlainPass(), "test-options{bits=2}"]) == Pipeline.parse("test-plain,test-options{bits=2}")
    assert Pipeline.parse("") == Pipeline() and len(Pipeline.parse("   ")) == 0


def test_single_value_for_a_list_option():
    assert Pipeline.parse("test-options{axes=3}").passes[0].axes == (3,)


def test_quoted_none_is_text_and_bare_none_is_none():
    assert Pipeline.parse("test-options{limit=none}").passes[0].limit is None
    assert Pipeline.parse('test-options{label="none"}').passes[0].label == "none"


# ---- errors: each names the position, and the caret points at it -------------------------


def parse_error(text: str) -> PipelineParseError:
    with pytest.raises(PipelineParseError) as info:
        Pipeline.parse(text)
    err = info.value
    lines = str(err).splitlines()
    assert lines[0].endswith(f"at position {err.position}")
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * err.position + "^"
    return err


def test_unknown_pass_suggests_a_close_name():
    err = parse_error("test-plain,test-optoins{count=1}")
    assert err.position == 11
    assert "unknown pass 'test-optoins'" in str(err)
    assert "did you mean 'test-options'?" in str(err)
    assert "test-plain" in str(err)  # the registered passes are listed


def test_unknown_option_lists_valid_ones():
    err = parse_error("test-options{count=1 colour=red}")
    assert err.position == 21
    assert "unknown option 'colour' for pass 'test-options'" in str(err)
    assert "valid options: flag: bool, count: int, ratio: float, label: str, mode: one of l1|l2|bn-scale" in str(err)
    assert "limit: int or none" in str(err) and "axes: list of int" in str(err)


def test_option_on_a_pass_without_options():
    err = parse_error("test-plain{x=1}")
    assert err.position == 11 and "valid options: none" in str(err)


@pytest.mark.parametrize(
    "text, position, expected",
    [
        ("test-options{count=many}", 19, "option 'count' of pass 'test-options' expects int: got 'many'"),
        ("test-options{ratio=fast}", 19, "expects float: got 'fast'"),
        ("test-options{flag=yes}", 18, "expects bool: got 'yes' (write true or false)"),
        ("test-options{mode=l3}", 18, "expects one of l1|l2|bn-scale: got 'l3'"),
        ("test-options{bits=3}", 18, "expects one of 2|4|8: got '3'"),
        ("test-options{limit=lots}", 19, "expects int or none: got 'lots'"),
        ("test-options{axes=[1,x]}", 18, "expects list of int: got 'x'"),
        ("test-options{count=[1,2]}", 19, "expects int: got a list [1,2]"),
    ],
)
def test_wrong_type_names_option_type_and_position(text, position, expected):
    err = parse_error(text)
    assert err.position == position
    assert expected in str(err)


@pytest.mark.parametrize(
    "text, position, expected",
    [
        ("test-plain,,test-plain", 11, "expected a pass name, found ','"),
        ("test-plain,", 11, "expected a pass name, found end of text"),
        ("test-plain test-plain", 11, "expected ',', found 't'"),
        ("Test-plain", 0, "expected a pass name, found 'T'"),
        ("test-options{count=1", 20, "expected an option name or '}'"),
        ("test-options{count 1}", 19, "expected '=', found '1'"),
        ("test-options{count=}", 19, "expected a value"),
        ("test-options{axes=[1,2}", 22, "expected ',', found '}'"),
    ],
)
def test_bad_syntax_names_position(text, position, expected):
    err = parse_error(text)
    assert err.position == position
    assert expected in str(err)


def test_unterminated_string_points_at_its_opening_quote():
    err = parse_error('test-options{label="abc}')
    assert err.position == 19
    assert "unterminated string" in str(err)


def test_duplicate_option_points_at_the_second():
    err = parse_error("test-options{count=1 count=2}")
    assert err.position == 21
    assert "option 'count' given twice" in str(err)
