"""Issue 16, item 5: TVM's own output stays off the terminal unless -v; save/load print nothing."""

from __future__ import annotations

import ctypes
import logging

import numpy as np
import pytest

import graphopt
from graphopt.backends.tvm.compiled import compile_graph, load_compiled
from graphopt.cli import main
from graphopt.models import get_model
from graphopt.verbosity import set_verbose, tvm_output

_libc = ctypes.CDLL(None)


def _native_write(text: str) -> None:
    """Write to file descriptor 2 below Python, as TVM's C++ LOG(WARNING) does."""
    data = text.encode()
    assert _libc.write(2, data, len(data)) == len(data)


@pytest.fixture
def log_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHOPT_LOG", str(tmp_path / "tvm.log"))
    monkeypatch.delenv("GRAPHOPT_VERBOSE", raising=False)
    yield tmp_path / "tvm.log"
    set_verbose(False)


def test_native_stderr_goes_to_the_log_file_unless_verbose(capfd, log_path):
    with tvm_output("a test call"):
        _native_write("Scope Saving: global\n")
    assert capfd.readouterr().err == ""
    assert "a test call" in log_path.read_text() and "Scope Saving: global" in log_path.read_text()
    set_verbose(True)
    with tvm_output("a verbose call"):
        _native_write("Scope Loaded: global\n")
    assert "Scope Loaded: global" in capfd.readouterr().err
    assert "Scope Loaded" not in log_path.read_text()


def test_stderr_is_restored_when_the_call_fails(capfd, log_path):
    with pytest.raises(RuntimeError), tvm_output("a failing call"):
        raise RuntimeError("build failed")
    _native_write("after\n")
    assert capfd.readouterr().err == "after\n"


def test_build_save_load_and_run_print_nothing_by_default(capfd, log_path, tmp_path):
    model, (x,) = get_model("digits_mlp", seed=0)
    graph = graphopt.trace(model, (x,))
    capfd.readouterr()
    compiled = compile_graph(graph, "x86")
    compiled.save(tmp_path / "m.so")
    loaded = load_compiled(tmp_path / "m.so")
    y = loaded(x.numpy())
    assert capfd.readouterr() == ("", "")
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert "exporting" in log_path.read_text() and "loading" in log_path.read_text()


def test_cli_verbose_flag_shows_info_logs(capsys, log_path):
    assert main(["-v", "passes", "fold-bn"]) == 0
    logging.getLogger("graphopt").info("an info line")
    assert "graphopt: INFO: an info line" in capsys.readouterr().err
    assert main(["passes", "fold-bn"]) == 0  # without -v: quiet again
    logging.getLogger("graphopt").info("hidden")
    assert "hidden" not in capsys.readouterr().err


def test_verbose_is_off_unless_asked_for_every_command():
    from graphopt.cli import build_parser
    from graphopt.cli_commands import COMMANDS

    parser = build_parser()
    for name in COMMANDS:
        action = next(a for a in parser._subparsers._group_actions[0].choices[name]._actions if a.dest == "verbose")
        assert action.option_strings == ["-v", "--verbose"], name  # a flag, never a positional
    assert parser.parse_args(["passes"]).verbose is False
    assert parser.parse_args(["passes", "-v"]).verbose is True
