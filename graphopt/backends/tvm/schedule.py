"""The schedule stage of the TVM build, and the build itself.

``build`` runs four stages, each a plain function that can be replaced:

1. ``legalize``: graphopt's Relax passes (``relax_passes``), then Relax
   operators -> fused TIR kernels (inference decompositions, library
   dispatch, LegalizeOps (on CPUs float32 erf/GELU as a vectorizable polynomial,
   ``schedules.fast_math``), FuseOps, FuseTIR). Tuning extracts its tasks from
   this form, so tuned records match the build.
2. ``apply_database``: kernels with a tuning record get the tuned schedule
   (MetaSchedule's ``MetaScheduleApplyDatabase``; marks them scheduled).
3. ``apply_default_schedules``: every kernel still unscheduled gets a
   default schedule from ``default_rules(target)``.
4. ``tvm.compile`` with the target's Relax lowering passes (no second
   legalization or fusion).

Default rules: on GPU targets the dlight GPU rules (Matmul, GEMV,
Reduction, GeneralReduction, Fallback), without which GPU kernels have no
thread bindings and fail to build. A dlight rule that raises on a kernel
(its Matmul rule asserts when a matmul's consumers cannot be inlined into
its cache-write stage: a squeeze-excitation gate, a token linear) gives
way to the next rule for that kernel alone; only when every rule fails
does the build fail, naming the kernel. On CPU targets (the ``x86`` and ``arm``
presets, any LLVM target) graphopt's own rules (``schedules``: conv2d,
depthwise conv2d, matmul, reductions, a generic fallback), so an untuned
build runs parallel, vectorized kernels. Weight repacking those rules ask
for (blocks marked ``meta_schedule.layout_rewrite_preproc``) is split into
its own kernels and folded on the constant weights at build time.

A CUDA build works without a GPU. With no CUDA runtime (a CPU machine) TVM
keeps the kernels as CUDA C source, which the CUDA runtime compiles when the
executable is loaded on a GPU machine; on a GPU machine it compiles at build
time. ``cuda_source`` reads that source and ``cuda_ptx`` turns it into PTX
with nvcc, to inspect the generated code anywhere nvcc is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence

import tvm
from tvm import relax, s_tir
from tvm.ir import IRModule
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.meta_schedule import Database
from tvm.target import Target

from graphopt.errors import BackendError

from .relax_passes import graphopt_relax_passes
from .schedules import cpu_rules
from .schedules.conv2d import LAYOUT_REWRITE_PREPROC
from .schedules.fast_math import cpu_legalize_overrides
from .targets import TargetSpec, resolve_target, target_is_gpu

__all__ = [
    "CudaToolchainError",
    "UnscheduledKernelError",
    "apply_database",
    "apply_default_schedules",
    "build",
    "cuda_ptx",
    "cuda_source",
    "default_rules",
    "legalize",
]


class CudaToolchainError(BackendError, RuntimeError):
    """PTX was asked for but no CUDA compiler (nvcc) is available."""


class UnscheduledKernelError(BackendError, RuntimeError):
    """GPU kernels left the schedule stage without a schedule."""


def legalize(mod: IRModule, target: TargetSpec) -> IRModule:
    """Run graphopt's Relax passes, then lower to fused TIR kernels (no schedules yet)."""
    target = resolve_target(target)
    passes = [
        *graphopt_relax_passes(target),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        *relax.pipeline.library_dispatch_passes(target),
        relax.transform.LegalizeOps(cpu_legalize_overrides(target) or None),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def apply_database(mod: IRModule, target: TargetSpec, database: Database) -> IRModule:
    """Give every kernel that has a record in ``database`` its tuned schedule."""
    target = resolve_target(target)
    with target, database:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)


def default_rules(target: TargetSpec) -> list[dl.ScheduleRule]:
    """The default schedule rules for a target, tried in order per kernel."""
    if target_is_gpu(target):
        return [
            dl.gpu.Matmul(),
            dl.gpu.GEMV(),
            dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(),
            dl.gpu.Fallback(),
        ]
    return list(cpu_rules(resolve_target(target)))


def apply_default_schedules(
    mod: IRModule, target: TargetSpec, rules: Sequence[dl.ScheduleRule] | None = None
) -> IRModule:
    """Schedule every kernel not yet scheduled with ``rules`` (default: ``default_rules``).

    Expects a legalized module (TIR kernels present); kernels already
    scheduled (e.g. from a tuning database) are left alone.
    """
    target = resolve_target(target)
    rules = default_rules(target) if rules is None else list(rules)
    if not rules:
        return mod
    with target:
        if target_is_gpu(target):
            scheduled = _schedule_each_kernel(mod, target, rules)
            return tvm.ir.transform.module_pass(
                lambda m, _ctx: _with_functions(m, scheduled), opt_level=0, name="ScheduleEachKernel"
            )(mod)
        return fold_weight_packing(dl.ApplyDefaultSchedule(*rules)(mod))


def _schedule_each_kernel(mod: IRModule, target: Target, rules: Sequence[dl.ScheduleRule]) -> dict:
    """dlight's ApplyDefaultSchedule, returning the scheduled kernels, except that a rule raising on a
    kernel passes it to the next rule.

    dlight's rules are third-party code whose applicability checks miss some
    kernels they then fail on; the next rule (GEMV, a reduction rule, the
    fallback) schedules such a kernel correctly, if less well.
    """
    scheduled = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue
        failures = []
        for rule in rules:
            try:
                space = rule.apply(func, func.attrs.get("target") or target, False)
            except Exception as e:  # noqa: BLE001 - a rule's failure on one kernel is that rule not applying
                failures.append(f"{type(rule).__name__}: {e}")
                continue
            if space is None:
                continue
            sch = space if isinstance(space, s_tir.Schedule) else space[0]
            scheduled[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            break
        else:
            if failures:
                raise BackendError(f"no schedule rule could schedule kernel '{gv.name_hint}': " + "; ".join(failures))
    return scheduled


def _with_functions(mod: IRModule, functions: dict) -> IRModule:
    for gv, func in functions.items():  # a module pass gets its own copy of the module
        mod[gv] = func
    return mod


def fold_weight_packing(mod: IRModule) -> IRModule:
    """Move weight-repacking blocks into their own kernels and run them at build time on constant weights.

    Only kernels holding a repacking block go through TVM's split (it refuses
    kernels without compute blocks, such as topk or cumsum); the others are
    set aside meanwhile and put back unchanged.
    """
    aside = {gv: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and not _has_packing_block(f)}
    if len(aside) == sum(isinstance(f, tvm.tirx.PrimFunc) for _, f in mod.functions_items()):
        return mod
    kept = IRModule({gv: f for gv, f in mod.functions_items() if gv not in aside}, attrs=mod.attrs)
    passes = [
        relax.transform.SplitLayoutRewritePreproc(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(),
    ]
    out = tvm.transform.Sequential(passes)(kept)
    for gv, f in aside.items():
        out[gv] = f
    return relax.transform.DeadCodeElimination()(out)


def _has_packing_block(func) -> bool:
    """Whether a kernel's root holds a block marked as weight repacking (the CPU rules put it there)."""
    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
    except Exception:  # noqa: BLE001 - kernels without a root block (extern calls) hold none
        return False
    return any(LAYOUT_REWRITE_PREPROC in sch.get(b).annotations for b in blocks)


def _check_scheduled(mod: IRModule) -> None:
    # TVM 0.27 builds a GPU kernel that has no thread bindings as host code,
    # silently: the executable would then run it on the CPU over GPU memory.
    missing = [
        gv.name_hint
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
        and not func.attrs.get("tirx.is_scheduled", False)
        and not func.attrs.get("tirx.is_host_func", False)
    ]
    if missing:
        raise UnscheduledKernelError(
            f"no schedule for GPU kernels {', '.join(sorted(missing))}: the schedule stage "
            "must schedule every kernel (and mark it tirx.is_scheduled)"
        )


def _lowering(target: Target) -> tvm.transform.Pass:
    # The backend pipeline modules directly: in 0.27 relax.pipeline's
    # dataflow_lower_passes() fails for llvm and cuda (not re-exported).
    # pylint: disable=import-outside-toplevel
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    backend = cuda if target.kind.name == "cuda" else gpu if target_is_gpu(target) else cpu
    passes = backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
    return tvm.transform.Sequential(passes, name="graphopt_lowering")


def build(
    mod: IRModule,
    target: TargetSpec,
    database: Database | None = None,
    *,
    schedule: Callable[[IRModule, Target], IRModule] = apply_default_schedules,
) -> relax.VMExecutable:
    """Build a Relax module for ``target``: legalize, tuned and default schedules, compile.

    ``schedule`` is the default-schedule stage (a legalized module in, the
    same with kernels scheduled out); replace it to try other rules. On GPU
    targets every kernel must come out scheduled (``UnscheduledKernelError``).
    """
    target = resolve_target(target)
    mod = legalize(mod, target)
    if database is not None:
        mod = apply_database(mod, target, database)
    mod = schedule(mod, target)
    if target_is_gpu(target):
        _check_scheduled(mod)
    return tvm.compile(mod, target, relax_pipeline=_lowering(target))


def _find_module(mod: tvm.runtime.Module, kind: str) -> tvm.runtime.Module | None:
    if mod.kind == kind:
        return mod
    for imported in mod.imports:
        found = _find_module(imported, kind)
        if found is not None:
            return found
    return None


def cuda_source(executable: relax.VMExecutable) -> str:
    """The CUDA C source of the kernels in a CUDA build."""
    cuda = _find_module(executable.mod, "cuda")
    if cuda is None:
        raise ValueError("the executable has no CUDA module (not built for a CUDA target?)")
    return cuda.inspect_source("cuda")


def cuda_ptx(executable: relax.VMExecutable, target: TargetSpec) -> str:
    """The PTX of the kernels in a CUDA build: the embedded PTX, else nvcc on its source."""
    target = resolve_target(target)
    source = cuda_source(executable)
    embedded = _find_module(executable.mod, "cuda").inspect_source("ptx")
    if embedded:  # built as PTX already
        return embedded
    if shutil.which("nvcc") is None:
        raise CudaToolchainError("cuda_ptx needs nvcc (the CUDA toolkit) on PATH")
    from tvm.support import nvcc  # pylint: disable=import-outside-toplevel

    arch = str(target.attrs["arch"])
    with target:  # nvcc.compile_cuda reads the compute version from the current target
        ptx = nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc")
    return bytes(ptx).decode()
