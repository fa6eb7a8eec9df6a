"""Target presets: what each resolves to, pass-through, errors, cross detection, fingerprints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

tvm = pytest.importorskip("tvm")

from tvm.target import Target, codegen  # noqa: E402

from graphopt.backends.tvm.targets import (  # noqa: E402
    PRESETS,
    TargetError,
    UnknownTargetError,
    resolve_target,
    target_fingerprint,
    target_is_cross,
    target_is_gpu,
    target_kind,
)


def _attrs(target: Target) -> dict:
    return json.loads(str(target))


def test_x86_uses_the_host_cpu_and_core_count():
    t = resolve_target("x86")
    assert t.kind.name == "llvm"
    assert t.attrs["mcpu"] == codegen.llvm_get_system_cpu()
    assert int(t.attrs["num-cores"]) >= 1
    assert "mtriple" not in _attrs(t)  # the host's own triple
    assert not target_is_cross(t)


@pytest.mark.parametrize(
    "name, mattr, dotprod",
    [("arm", ["+neon"], False), ("arm-dotprod", ["+neon", "+dotprod"], True)],
)
def test_arm_presets(name, mattr, dotprod):
    t = resolve_target(name)
    assert t.kind.name == "llvm"
    assert t.attrs["mtriple"] == "aarch64-linux-gnu"
    assert list(t.attrs["mattr"]) == mattr
    assert "arm_cpu" in t.keys
    assert bool(t.attrs["feature.has_dotprod"]) is dotprod
    assert target_is_cross(t)  # this test machine is x86_64


@pytest.mark.parametrize("name, arch", [("cuda", "sm_80"), ("cuda-sm80", "sm_80"), ("cuda-sm90", "sm_90")])
def test_cuda_presets(name, arch):
    t = resolve_target(name)
    assert t.kind.name == "cuda"
    assert t.attrs["arch"] == arch
    assert t.host is not None and t.host.kind.name == "llvm"
    assert int(t.attrs["max_shared_memory_per_block"]) == 49152
    assert target_is_gpu(t) and target_kind(t) == "cuda"


def test_cuda_alias_is_sm80():
    assert target_fingerprint("cuda") == target_fingerprint("cuda-sm80")


def test_cuda_is_cross_unless_a_capable_device_is_present():
    dev = tvm.cuda(0)
    if not dev.exist:
        assert target_is_cross("cuda-sm80") and target_is_cross("cuda-sm90")
    else:
        capability = float(dev.compute_version)
        assert target_is_cross("cuda-sm80") == (capability < 8.0)
        assert target_is_cross("cuda-sm90") == (capability < 9.0)


def test_dict_json_tag_and_target_pass_through():
    spec = {"kind": "llvm", "mcpu": "haswell", "num-cores": 4}
    t = resolve_target(spec)
    assert t.attrs["mcpu"] == "haswell" and int(t.attrs["num-cores"]) == 4
    assert resolve_target(t) is t
    assert str(resolve_target(json.dumps(spec))) == str(t)
    assert resolve_target("nvidia/nvidia-a100").attrs["arch"] == "sm_80"


def test_unknown_name_lists_presets():
    with pytest.raises(UnknownTargetError) as err:
        resolve_target("armv7")
    assert isinstance(err.value, ValueError)
    for name in PRESETS:
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [{"kind": "no-such-kind"}, "{not json", 42])
def test_bad_specs_raise_target_error(bad):
    with pytest.raises(TargetError):
        resolve_target(bad)


def test_cross_detection_for_cpus():
    assert not target_is_cross({"kind": "llvm"})
    assert target_is_cross({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    host_features = codegen.llvm_get_cpu_features(resolve_target("x86"))
    if "avx512f" not in host_features:
        assert target_is_cross({"kind": "llvm", "mcpu": "sapphirerapids"})
    assert not target_is_cross({"kind": "llvm", "mcpu": "x86-64"})


def test_fingerprint_is_stable_and_distinguishes_targets():
    prints = {name: target_fingerprint(name) for name in PRESETS}
    assert prints["x86"].startswith("llvm-") and prints["cuda-sm90"].startswith("cuda-")
    assert len({prints[n] for n in ("x86", "arm", "arm-dotprod", "cuda-sm80", "cuda-sm90")}) == 5
    assert target_fingerprint({"kind": "llvm", "num-cores": 2}) != target_fingerprint({"kind": "llvm", "num-cores": 4})
    # The same in a fresh process (no hash randomisation, no object ids).
    code = "from graphopt.backends.tvm.targets import target_fingerprint as f;print(f('arm'), f('cuda-sm90'), f('x86'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [prints["arm"], prints["cuda-sm90"], prints["x86"]]
