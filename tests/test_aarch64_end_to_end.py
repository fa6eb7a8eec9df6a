"""ARM really runs: ``graphopt.optimize(..., target="arm")`` on bundled models,
run on the emulated aarch64 device, matches torch eager.

Needs the emulated root: run (as root) scripts/setup_aarch64_emulator.sh.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from graphopt.backends.tvm.emulator import SETUP_COMMAND, emulator_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not emulator_available(),
        reason=f"emulated aarch64 root not set up; run (as root): {SETUP_COMMAND}",
    ),
]

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")

import graphopt  # noqa: E402
from graphopt.backends.tvm.emulator import emulated_aarch64_server  # noqa: E402
from graphopt.errors import BackendError  # noqa: E402
from graphopt.models import get_model  # noqa: E402

MODELS = ["digits_cnn", "mobilenet_v2"]


@pytest.fixture(scope="module")
def emulator():
    with emulated_aarch64_server() as emu:
        yield emu


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    """(name, arm CompiledModel, input, torch eager output) for one bundled model."""
    model, (x,) = get_model(request.param, batch_size=1)
    with torch.no_grad():
        expected = model(x).numpy()
    compiled = graphopt.optimize(model, (x,), target="arm")
    return request.param, compiled, x, expected


@pytest.fixture(scope="module")
def session(emulator, case):
    """An RPC session on the emulated aarch64 server, one per model.

    One per model: ``run_remote`` uploads a fresh build under one fixed file
    name, and a session that already loaded another model's library under
    that name fails to load the new one. The server serves one session at a time, and a
    session closes only once Python frees everything that refers to it
    (TVM's VirtualMachine holds a reference cycle), hence the collection.
    """
    gc.collect()
    return emulator.connect()


def test_arm_build_is_cross_and_not_runnable_here(case):
    _, compiled, x, _ = case
    assert compiled.is_cross and compiled.host_arch == "aarch64"
    with pytest.raises(BackendError, match="run_remote"):
        compiled(x)


def test_runs_on_emulated_aarch64_and_matches_torch(case, session):
    name, compiled, x, expected = case
    got = compiled.run_remote(session, x)
    assert isinstance(got, torch.Tensor)  # torch in, torch out
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=0, err_msg=name)


def test_saved_so_reloads_and_runs(case, session, tmp_path):
    name, compiled, x, expected = case
    path = compiled.save(tmp_path / "m.so")
    loaded = graphopt.load_compiled(path)
    assert loaded.is_cross and loaded.library_path == path
    got = loaded.run_remote(session, x.numpy())
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=name)
