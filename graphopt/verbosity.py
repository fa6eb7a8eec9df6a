"""Quiet by default: what TVM itself prints goes to a log file unless verbose.

TVM's C++ side writes straight to the process's stderr (file descriptor 2):
LOG(WARNING) lines such as "Scope Saving: global" on every constant of an
executable that is saved or loaded, and build chatter. `tvm_output(what)`
wraps a call into TVM: the descriptor points at the log file for the call's
duration (Python text written to sys.stderr meanwhile goes there too), so a
library user and the CLI see only graphopt's own lines. With `-v`
(`set_verbose(True)`, or GRAPHOPT_VERBOSE=1) nothing is redirected and the
"tvm" and "graphopt" loggers show INFO on stderr.

The log file is $GRAPHOPT_LOG, else $XDG_CACHE_HOME/graphopt/tvm.log
(~/.cache/graphopt/tvm.log); each call appends a header line naming itself.
Where the file cannot be opened, the output is dropped rather than failing the call.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_verbose = False


def set_verbose(on: bool) -> None:
    """Show TVM's own output and INFO logging on stderr (the CLI's -v); False undoes it."""
    global _verbose
    _verbose = bool(on)
    for name in ("graphopt", "tvm"):
        logger = logging.getLogger(name)
        if _verbose and _handler not in logger.handlers:
            logger.addHandler(_handler)
            logger.setLevel(logging.INFO)
        elif not _verbose and _handler in logger.handlers:
            logger.removeHandler(_handler)
            logger.setLevel(logging.NOTSET)


class _Stderr(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (which tests and callers may replace)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_handler = _Stderr()


def is_verbose() -> bool:
    return _verbose or os.environ.get("GRAPHOPT_VERBOSE", "") not in ("", "0")


def log_file() -> Path:
    """Where TVM's own output goes when not verbose."""
    if os.environ.get("GRAPHOPT_LOG"):
        return Path(os.environ["GRAPHOPT_LOG"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "graphopt" / "tvm.log"


@contextmanager
def tvm_output(what: str) -> Iterator[None]:
    """Send what is written to file descriptor 2 during the block to the log file (see module docstring)."""
    if is_verbose():
        yield
        return
    sink = _open_log(what)
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect (a daemon): nothing to keep quiet
        os.close(sink)
        yield
        return
    os.dup2(sink, 2)
    os.close(sink)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _open_log(what: str) -> int:
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)
    os.write(fd, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {what}\n".encode())
    return fd
