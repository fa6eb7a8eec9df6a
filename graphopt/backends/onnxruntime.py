"""Reference runner: onnxruntime on an ONNX model (the cross-check for every emitter).

onnxruntime's failures become one-line `BackendError`s naming the node and op at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from graphopt.errors import BackendError


def ort_session(model: onnx.ModelProto | str | Path, *, threads: int | None = None, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors are raised, not logged
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:  # keeps the model's node names in onnxruntime's messages
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BackendError(f"onnxruntime cannot load {_culprit(model, str(e))}: {_message(e)}") from None


def run_onnx(
    model: onnx.ModelProto | str | Path,
    inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
) -> list[np.ndarray]:
    """Run `model` in onnxruntime; inputs in graph-input order or by name."""
    sess = ort_session(model)
    names = [i.name for i in sess.get_inputs()]
    feeds = dict(inputs) if isinstance(inputs, Mapping) else dict(zip(names, inputs))
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    try:
        return list(sess.run(None, feeds))
    except Exception as e:
        text = str(e)
        if _running(text) and not _culprit_known(model, text):
            try:  # onnxruntime's optimizer renamed the node: rerun without it for the model's name
                ort_session(model, optimize=False).run(None, feeds)
            except Exception as plain:
                e, text = plain, str(plain)
        raise BackendError(f"onnxruntime cannot run {_culprit(model, text)}: {_message(e)}") from None


_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_UNREGISTERED = re.compile(r"(?:([\w.]+):)?(\w+)\(-?\d+\) is not a registered function/op")
_RUNNING = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def _message(e: Exception) -> str:
    return " ".join(_PREFIX.sub("", str(e)).split())


def _running(text: str) -> re.Match | None:
    return _RUNNING.search(text)


def _nodes(model) -> list[onnx.NodeProto]:
    try:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    except Exception:
        return []
    return list(proto.graph.node)


def _culprit_known(model, text: str) -> bool:
    m = _running(text)
    return m is not None and any(n.name == m.group(2) for n in _nodes(model))


def _culprit(model, text: str) -> str:
    """'node NAME (OP)' for the node an onnxruntime message points at, else 'the model'."""
    nodes = _nodes(model)
    if m := _running(text):
        op, hits = m.group(1), [n for n in nodes if n.name == m.group(2)]
    elif m := _UNREGISTERED.search(text):
        domain, op = m.group(1) or "ai.onnx", m.group(2)
        hits = [n for n in nodes if n.op_type == op and (n.domain or "ai.onnx") == domain]
    else:
        return "the model"
    if not hits:
        return f"the model (a {op} node)"
    n = hits[0]
    more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
    return f"node '{n.name or n.output[0]}' ({f'{n.domain}:' if n.domain else ''}{n.op_type}){more}"
