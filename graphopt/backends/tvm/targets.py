"""Target presets for the TVM backend.

TVM 0.27 refuses CLI target strings ("llvm -mcpu=..."); targets are dicts.
graphopt names the common ones:

========== ============================================================
preset     TVM target
========== ============================================================
x86        this host's LLVM CPU: ``mcpu`` from LLVM's host detection (so
           AVX2 / AVX-512 / VNNI are used where the host has them) and
           ``num-cores`` (physical cores, needed by MetaSchedule)
arm        aarch64 Linux with NEON, ``num-cores`` 4 (see below)
arm-dotprod  aarch64 Linux with NEON and the int8 dot product (sdot/udot),
           ``num-cores`` 4
cuda       alias of cuda-sm80: sm_80 code also runs on later GPUs
cuda-sm80  CUDA, arch sm_80 (Ampere), LLVM host
cuda-sm90  CUDA, arch sm_90 (Hopper), LLVM host
========== ============================================================

The arm presets are cross targets, so no host detection can supply
``num-cores``, which MetaSchedule needs to tune a CPU target (it sizes
parallel loops by it). They carry 4, the core count of the common Cortex-A
boards (TVM's own ``raspberry-pi/4b-aarch64`` tag says the same), so that
``tune``, ``load_database`` and the build all see one fixed target and one
fingerprint on every machine. Code runs on any core count; for a device
with another, tune with a target dict stating its ``num-cores``.

``resolve_target`` also accepts any TVM target dict (or its JSON text), a
TVM target tag (``tvm.target.list_tags()``) and a ``tvm.target.Target``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from typing import Any

import tvm
from tvm.target import Target, codegen

from graphopt.errors import GraphoptError

__all__ = [
    "ARM_NUM_CORES",
    "PRESETS",
    "host_cores",
    "TargetError",
    "UnknownTargetError",
    "resolve_target",
    "target_fingerprint",
    "target_is_cross",
    "target_is_gpu",
    "target_kind",
]

TargetSpec = str | Mapping[str, Any] | Target

# LLVM feature-name prefixes that are instruction-set extensions (code built
# with them faults on a CPU without them); other LLVM "features" are tuning
# hints such as "fast-vector-fsqrt" that any CPU of the arch runs.
_ISA_FEATURE_PREFIXES = (
    "aes", "amx", "avx", "bmi", "f16c", "fma", "gfni", "lzcnt", "movbe",
    "popcnt", "sha", "sse", "ssse", "vaes", "vpclmul",
)  # fmt: skip


class TargetError(GraphoptError, ValueError):
    """A target spec that cannot be turned into a TVM target."""


class UnknownTargetError(TargetError):
    """A target name that is neither a preset nor a TVM tag."""


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_cores() -> int:
    """Physical cores of this host (the threads TVM's runtime uses by default)."""
    try:
        import psutil  # pylint: disable=import-outside-toplevel

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return cores or os.cpu_count() or 1


def _x86() -> dict[str, Any]:
    if _host_arch() != "x86_64":
        # Not on an x86 host: generic x86-64, nothing host-specific to read.
        return {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
    return {
        "kind": "llvm",
        "mcpu": codegen.llvm_get_system_cpu(),
        "num-cores": host_cores(),
    }


def _cuda(arch: str) -> Callable[[], dict[str, Any]]:
    # Per-block limits common to sm_80 and sm_90 (48 KiB is the static shared
    # memory limit); MetaSchedule's GPU code verifier reads them.
    return lambda: {
        "kind": "cuda",
        "arch": arch,
        "max_shared_memory_per_block": 49152,
        "max_threads_per_block": 1024,
        "registers_per_block": 65536,
        "thread_warp_size": 32,
        "host": {"kind": "llvm"},
    }


# Cores assumed by the arm presets when tuning (see the module docstring).
ARM_NUM_CORES = 4


def _arm(*mattr: str) -> Callable[[], dict[str, Any]]:
    return lambda: {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mattr": list(mattr),
        "num-cores": ARM_NUM_CORES,
    }


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "x86": _x86,
    "arm": _arm("+neon"),
    "arm-dotprod": _arm("+neon", "+dotprod"),
    "cuda": _cuda("sm_80"),
    "cuda-sm80": _cuda("sm_80"),
    "cuda-sm90": _cuda("sm_90"),
}


def resolve_target(spec: TargetSpec) -> Target:
    """Turn a preset name, TVM target dict, JSON text, tag or Target into a Target.

    LLVM options TVM accepts but would ignore or misuse are refused: an ``mcpu``
    LLVM does not know for the triple (LLVM would silently build for a generic
    CPU) and a ``num-cores`` below 1 (MetaSchedule sizes parallel loops by it).
    """
    target = _make_target(spec)
    for t in (target, target.host):
        if t is not None and t.kind.name == "llvm":
            _check_llvm_options(t)
    return target


def _check_llvm_options(target: Target) -> None:
    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    mcpu = str(target.attrs.get("mcpu", "") or "")
    if mcpu and not codegen.llvm_is_valid_cpu(mcpu, triple):
        known = [str(c) for c in codegen.llvm_get_cpu_archlist(Target({"kind": "llvm", "mtriple": triple}))]
        close = difflib.get_close_matches(mcpu, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"LLVM knows {len(known)} CPUs for it"
        if mcpu == "native":
            hint = "the x86 preset names this host's CPU"
        raise TargetError(f"mcpu {mcpu!r} is not a CPU LLVM knows for {triple}; {hint}")
    cores = target.attrs.get("num-cores")
    if cores is not None and int(cores) < 1:
        raise TargetError(f"num-cores must be at least 1, got {int(cores)}")


def _make_target(spec: TargetSpec) -> Target:
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text in PRESETS:
            return Target(PRESETS[text]())
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as err:
                raise TargetError(f"target JSON does not parse: {err}") from None
        elif text in tvm.target.list_tags():
            return Target(text)
        else:
            raise UnknownTargetError(
                f"unknown target {spec!r}; presets: {', '.join(PRESETS)} "
                "(or pass a TVM target dict such as {'kind': 'llvm', 'mcpu': ...})"
            )
    if not isinstance(spec, Mapping):
        raise TargetError(f"a target is a preset name, a dict or a Target, not {type(spec)}")
    try:
        return Target(dict(spec))
    except Exception as err:  # TVM raises ValueError / TVMError for bad dicts
        raise TargetError(f"invalid TVM target {dict(spec)!r}: {err}") from None


def target_kind(target: TargetSpec) -> str:
    """TVM target kind name: "llvm", "cuda", ..."""
    return resolve_target(target).kind.name


def target_is_gpu(target: TargetSpec) -> bool:
    """Whether the target is a GPU (its keys include "gpu")."""
    return "gpu" in resolve_target(target).keys


def _isa_features(target: Target) -> set[str]:
    return {f for f in codegen.llvm_get_cpu_features(target) if f.startswith(_ISA_FEATURE_PREFIXES)}


def _llvm_is_cross(target: Target) -> bool:
    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    if triple.split("-")[0] != _host_arch():
        return True
    if _host_arch() != "x86_64" or not (target.attrs.get("mcpu") or target.attrs.get("mattr")):
        return False
    host = Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
    return not _isa_features(target) <= _isa_features(host)


def _cuda_is_cross(target: Target) -> bool:
    dev = tvm.cuda(0)
    if not dev.exist:
        return True
    arch = str(target.attrs.get("arch", "") or target.attrs.get("mcpu", ""))
    if not arch.startswith("sm_"):
        return False
    # PTX/cubin for sm_XY runs on devices of compute capability >= X.Y.
    wanted = int("".join(c for c in arch[3:] if c.isdigit()))
    have = int(dev.compute_version.replace(".", ""))
    return have < wanted


def target_is_cross(target: TargetSpec) -> bool:
    """Whether code built for ``target`` cannot run on this host.

    LLVM CPU targets are cross when their arch differs from the host's or
    (on x86) they use instruction-set extensions the host CPU lacks. CUDA
    targets are cross unless a CUDA device of at least their arch is present.
    Other device kinds are cross unless TVM sees such a device.
    """
    target = resolve_target(target)
    kind = target.kind.name
    if kind == "llvm":
        return _llvm_is_cross(target)
    if kind == "c":
        return False
    if kind in ("cuda", "nvptx"):
        return _cuda_is_cross(target)
    try:
        return not tvm.device(kind, 0).exist
    except Exception:  # no runtime for this kind in this build
        return True


def _plain(value: Any) -> Any:
    """TVM containers -> JSON-able Python values."""
    if isinstance(value, Target):
        return _plain(value.export())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)


def target_fingerprint(target: TargetSpec) -> str:
    """A stable id of the target: its kind and a hash of its canonical form.

    The canonical form is TVM's ``Target.export()`` (all attributes, the
    host included) as sorted JSON, so equal targets agree across processes
    and machines; any attribute change (mcpu, num-cores, arch) changes it.
    """
    target = resolve_target(target)
    canonical = json.dumps(_plain(target), sort_keys=True, separators=(",", ":"))
    return f"{target.kind.name}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"
