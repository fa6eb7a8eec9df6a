"""Errors raised by graphopt. Every message names the file, node, op, pass or position at fault."""

from __future__ import annotations


class GraphoptError(Exception):
    """Base of every error graphopt raises on purpose."""


class GraphError(GraphoptError):
    """An editing verb was misused (unknown value, duplicate name, ...)."""


class VerificationError(GraphoptError):
    """The graph is structurally invalid; `node` names the offending node when there is one."""

    def __init__(self, message: str, node: str | None = None):
        super().__init__(f"node '{node}': {message}" if node else message)
        self.node = node


class FrontendError(GraphoptError):
    """A model could not be imported (malformed file, untraceable model)."""


class EmitError(GraphoptError):
    """The graph cannot be emitted to the requested form; names the node and why."""


class PipelineParseError(GraphoptError):
    """A pipeline string is malformed; `position` is the 0-based character offset."""

    def __init__(self, message: str, text: str, position: int):
        caret = " " * position + "^"
        super().__init__(f"{message} at position {position}\n  {text}\n  {caret}")
        self.text = text
        self.position = position


class PassError(GraphoptError):
    """A pass failed or broke the model; names the pass, its options and the passes before it."""


class NumericalMismatchError(PassError):
    """The numerical verifier found a pass changed the model's outputs beyond its declared tolerance."""


class BackendError(GraphoptError):
    """Lowering, building or running through a backend failed."""


class TrainError(GraphoptError):
    """Training could not run: bad data, loss, optimizer or options; names the batch, step or option at fault."""


class StorageError(GraphoptError):
    """A compressed model file cannot be written or read (truncated, tampered, newer format); names the problem."""
