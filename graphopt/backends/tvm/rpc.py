"""TVM RPC helpers: a local tracker, a local (host CPU) RPC server, and
running a built Relax executable on a remote device.

The tracker needs the ``tornado`` package on the host.
"""

from __future__ import annotations

import gc
import hashlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# A tracker given as (host, port), "host:port", or an object with .host/.port
# (tvm.rpc.tracker.Tracker, or anything shaped like it).
TrackerLike = Any


def tracker_address(tracker: TrackerLike) -> tuple[str, int]:
    """Normalise a tracker reference to ``(host, port)``."""
    if isinstance(tracker, str):
        host, port = tracker.rsplit(":", 1)
        return host, int(port)
    if isinstance(tracker, Sequence) and len(tracker) == 2:
        return str(tracker[0]), int(tracker[1])
    if hasattr(tracker, "host") and hasattr(tracker, "port"):
        return str(tracker.host), int(tracker.port)
    raise TypeError(f"not a tracker address: {tracker!r} (use (host, port) or 'host:port')")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_range(port: int | None, host: str) -> tuple[int, int]:
    # An explicit port is used as is; otherwise search upward from a free one.
    if port is not None:
        return port, port + 1
    start = free_port(host)
    return start, min(start + 100, 65536)


def start_tracker(port: int | None = None, host: str = "127.0.0.1", silent: bool = True):
    """Start a TVM RPC tracker in a subprocess; stop it with ``.terminate()``.

    Returns a ``tvm.rpc.tracker.Tracker`` with ``.host`` and ``.port``.
    """
    try:
        from tvm.rpc.tracker import Tracker
    except ImportError as err:
        raise RuntimeError(f"cannot start a TVM RPC tracker ({err}); run: pip install tornado") from err
    lo, hi = _port_range(port, host)
    return Tracker(host, port=lo, port_end=hi, silent=silent)


def start_local_server(
    tracker: TrackerLike | None = None,
    key: str = "x86",
    host: str = "127.0.0.1",
    port: int | None = None,
    silent: bool = True,
):
    """Start a TVM RPC server for this host's CPU in a subprocess.

    With ``tracker`` it registers there under ``key``; reach it with
    ``connect_tracker(...).request(key)``. Stop it with ``.terminate()``.
    Returns a ``tvm.rpc.Server`` with ``.host`` and ``.port``.
    """
    from tvm import rpc

    lo, hi = _port_range(port, host)
    return rpc.Server(
        host,
        port=lo,
        port_end=hi,
        tracker_addr=tracker_address(tracker) if tracker is not None else None,
        key=key if tracker is not None else "",
        silent=silent,
    )


def tracker_summary(tracker: TrackerLike) -> dict:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``."""
    from tvm import rpc

    return rpc.connect_tracker(*tracker_address(tracker)).summary()


def wait_for_keys(tracker: TrackerLike, keys: Sequence[str], timeout: float = 60.0) -> dict:
    """Wait until a free server is registered under every key; return the summary."""
    deadline = time.monotonic() + timeout
    while True:
        summary = tracker_summary(tracker)
        queue = summary.get("queue_info", {})
        missing = [k for k in keys if queue.get(k, {}).get("free", 0) < 1]
        if not missing:
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no server registered under {missing} at tracker {tracker_address(tracker)} "
                f"after {timeout:.0f}s; queues: {dict(queue)}"
            )
        time.sleep(0.5)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_numpy(v) for v in value]
    return value.numpy()


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, list):
        return [a for v in value for a in _flatten(v)]
    return [value]


def run_remote_vm(
    session,
    lib_path: str | os.PathLike,
    inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    func_name: str = "main",
) -> list[np.ndarray]:
    """Run a Relax executable exported to ``lib_path`` on a remote CPU.

    ``lib_path`` must be a shared library built for the remote (e.g. with
    ``export_library(path, fcompile=tvm.support.cc.cross_compiler(...))``).
    Uses set_input/invoke_stateful/get_outputs, since calling the function
    directly over RPC returns an opaque reference for tuple results. Returns
    the outputs as numpy arrays, nested tuples flattened in order.
    """
    import tvm
    from tvm import relax

    lib_path = os.fspath(lib_path)
    # A content-addressed remote name: several models can run in one session.
    with open(lib_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    remote_name = f"{digest}-{os.path.basename(lib_path)}"
    session.upload(lib_path, target=remote_name)
    lib = session.load_module(remote_name)
    dev = session.cpu()
    vm = relax.VirtualMachine(lib, dev)

    # Copy inputs to the remote device first, so only handles cross the link.
    def remote(a: np.ndarray):
        return tvm.runtime.tensor(np.ascontiguousarray(a), dev)

    if isinstance(inputs, Mapping):
        vm.set_input(func_name, **{k: remote(v) for k, v in inputs.items()})
    else:
        vm.set_input(func_name, *[remote(v) for v in inputs])
    try:
        vm.invoke_stateful(func_name)
        return _flatten(_to_numpy(vm.get_outputs(func_name)))
    finally:
        # get_outputs leaves a reference cycle holding the session open; the server
        # serves one session at a time, so break it now rather than at the next GC.
        del vm, lib
        gc.collect()
