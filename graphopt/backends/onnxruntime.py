"""Reference runner: onnxruntime on an ONNX model (the cross-check for every emitter)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx


def ort_session(model: onnx.ModelProto | str | Path, *, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_onnx(model: onnx.ModelProto | str | Path, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
             ) -> list[np.ndarray]:
    """Run `model` in onnxruntime; inputs in graph-input order or by name."""
    sess = ort_session(model)
    names = [i.name for i in sess.get_inputs()]
    feeds = dict(inputs) if isinstance(inputs, Mapping) else dict(zip(names, inputs))
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    return list(sess.run(None, feeds))
