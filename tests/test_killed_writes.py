"""Issue 12, item 5: a write killed with SIGKILL, for real, leaves the old file or none.

A subprocess writes a large file through the public calls (`save_onnx`, `save_compressed`,
`CompiledModel.save`) and is killed while the atomic write is in progress, i.e. while
its temporary file exists beside the target (seen by polling the folder); the kill
goes to its whole process group, so a linker it started dies too. The target must
then hold exactly the old bytes or the bytes of a complete write, and the next write
removes the killed one's temporary. (test_hostile_writes_and_options.py kills a
writer inside `atomic_output` directly; these kill the real writers.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType

DEADLINE_S = 240

GRAPH = """
import sys, numpy as np
from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
def linear(width):
    g = Graph("big")
    g.add_input("x", TensorType((1, width), "float32"))
    w = g.add_param("w", np.random.default_rng(0).standard_normal((width, width), dtype=np.float32))
    g.add_node("linear", ["x", w], name="fc")
    g.set_outputs(["fc"])
    return g
"""

# writes the reference copy once, then the target again and again until killed
WRITE_FOREVER = (
    GRAPH
    + """
g = linear({width})
g.{save}(sys.argv[2]{options})
print("reference written", flush=True)
while True:
    g.{save}(sys.argv[1]{options})
"""
)

SAVE_LIBRARY = (
    GRAPH
    + """
from graphopt.backends.tvm.compiled import compile_graph
compile_graph(linear(16), "x86").save(sys.argv[1])
"""
)


def temporaries(target: Path) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(target.name)}\.\d+\.\w+\.tmp{re.escape(target.suffix)}")
    return [p for p in target.parent.iterdir() if pattern.fullmatch(p.name)]


def kill_mid_write(script: str, target: Path, *extra: str, min_size: int = 1) -> list[Path]:
    """Run `script target *extra`; SIGKILL its process group once a temporary of `target`
    holds `min_size` bytes. Returns the temporaries left behind."""
    root = Path(__file__).resolve().parents[1]
    log = target.with_name("writer.log")
    with open(log, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(target), *extra],
            cwd=root,
            start_new_session=True,  # its own process group: a linker it starts is killed with it
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            caught = [p for p in temporaries(target) if _size(p) >= min_size]
            if caught:
                break
            if child.poll() is not None:
                pytest.fail(f"the writer ended ({child.returncode}) before it was caught: {log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "no write was caught in progress"
            time.sleep(0.001)
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return temporaries(target)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def small_graph() -> Graph:
    g = Graph("small")
    g.add_input("x", TensorType((1, 4), "float32"))
    g.add_node("relu", ["x"], name="r")
    g.set_outputs(["r"])
    return g


@pytest.mark.parametrize(
    "save, suffix, options, old",
    [
        ("save_onnx", ".onnx", "", True),  # an old file is kept whole
        ("save_compressed", ".gopt", ", entropy=False", False),  # no old file: none or a whole one
    ],
)
def test_killed_large_write_leaves_the_old_file_or_a_whole_new_one(tmp_path, save, suffix, options, old):
    target, reference = tmp_path / f"model{suffix}", tmp_path / f"reference{suffix}"
    old_bytes = None
    if old:
        getattr(small_graph(), save)(target)
        old_bytes = target.read_bytes()
    script = WRITE_FOREVER.format(width=2048, save=save, options=options)
    left = kill_mid_write(script, target, str(reference))
    new_bytes = reference.read_bytes()
    assert len(new_bytes) > 16 * 2**20  # large: 2048 x 2048 float32
    assert left, "the killed write left no temporary: it was not caught in progress"
    assert all(p.stat().st_size <= len(new_bytes) for p in left)
    if target.exists():
        assert target.read_bytes() in (old_bytes, new_bytes)  # never a mixture or a prefix
    else:
        assert old_bytes is None
    getattr(small_graph(), save)(target)  # the next write replaces it and removes the dead writer's temporary
    assert temporaries(target) == []


def test_killed_library_export_keeps_the_old_library_and_metadata(tmp_path):
    pytest.importorskip("tvm")
    target = tmp_path / "model.so"
    metadata = tmp_path / "model.so.json"
    target.write_bytes(b"old library\n")
    metadata.write_text('{"old": true}\n')
    left = kill_mid_write(SAVE_LIBRARY, target, min_size=0)  # killed while the linker writes the temporary
    assert target.read_bytes() == b"old library\n"
    assert metadata.read_text() == '{"old": true}\n'
    assert left and all(p.parent == tmp_path for p in left)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("model") and p not in (target, metadata)]
