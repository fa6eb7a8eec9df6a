"""A compiled model: a Relax executable plus what is needed to call, save and reload it.

    model = compile_graph(graph, "x86")         # lower_to_relax + schedule.build
    y = model(x)                                # numpy in -> numpy out; torch in -> torch out
    model.save("m.so")                          # m.so + m.so.json (metadata)
    model = load_compiled("m.so")

Where it runs: `model(...)` runs on a local `relax.VirtualMachine`, on the CPU
for LLVM targets and on the first GPU for CUDA targets. When this machine
cannot run the code (`targets.target_is_cross`: aarch64 built on x86, CPU
features the host lacks, CUDA without a suitable GPU) the call raises a
BackendError saying so, and `model.run_remote(session, *arrays)` runs it on the
CPU behind a TVM RPC session instead (a board, or the emulated aarch64 of
`graphopt.backends.tvm.emulator`).

Save format, chosen by the file suffix:
- `.so`: a shared library, loadable as is. When the host code is for another
  architecture (aarch64) it is linked with that architecture's cross compiler
  (`aarch64-linux-gnu-g++`), so the device loads it without a compiler of its
  own; this is what `run_remote` uploads, and the format to use for aarch64.
  CUDA kernels travel inside the library.
- `.tar`: the object files, unlinked. Saving needs no compiler, but whoever
  loads it links it (the device needs a C++ compiler for its architecture);
  for shipping to a device whose own toolchain should do the final link.

Outputs come back with exactly the shapes and dtypes the graph declares
(a 0-d output is 0-d, numpy and torch alike).

Beside the library, `<path>.json` holds the metadata: format version, graphopt
and TVM versions, pipeline, target (TVM's JSON form), host code architecture,
inputs and outputs (name, shape, dtype), output count and names. Both files
are written atomically (temporary file, then rename), the library first, so a
metadata file always describes a complete library. `load_compiled` loads the library
only where it can run; elsewhere the model keeps its path for `run_remote`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tvm
from tvm import relax

import graphopt
from graphopt.backends.tvm.lower import lower_to_relax
from graphopt.backends.tvm.schedule import build
from graphopt.backends.tvm.targets import resolve_target, target_is_cross
from graphopt.errors import BackendError
from graphopt.fileio import atomic_output, atomic_write_text, check_output_path
from graphopt.ir.graph import Graph
from graphopt.ir.types import carrier_dtype
from graphopt.verbosity import tvm_output

FORMAT_VERSION = 1
LIBRARY_SUFFIXES = (".so", ".tar")
# Cross compilers for `.so` exports, by the target triple's architecture.
CROSS_COMPILERS = {"aarch64": "aarch64-linux-gnu-g++"}


@dataclass(frozen=True)
class InputSpec:
    """Name, shape and dtype of one model input (or output); a str dim is a symbol (a dynamic batch "N")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    @property
    def symbols(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "InputSpec":
        return cls(str(d["name"]), tuple(s if isinstance(s, str) else int(s) for s in d["shape"]), str(d["dtype"]))

    def bind(self, shape: Sequence[int], sizes: dict[str, int]) -> bool:
        """Does `shape` fit? Each symbol takes any size >= 1, the same wherever it appears (recorded in `sizes`)."""
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape):
            if isinstance(want, str):
                if got < 1 or sizes.setdefault(want, got) != got:
                    return False
            elif want != got:
                return False
        return True


def metadata_path(path: str | os.PathLike) -> Path:
    """Where the metadata of the library at `path` lives: `<path>.json`."""
    return Path(f"{os.fspath(path)}.json")


def _machine_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_code_arch(target: tvm.target.Target) -> str:
    """The CPU architecture of the target's host code (the VM, the kernel launchers)."""
    host = target.host if target.host is not None else target
    triple = str(host.attrs["mtriple"]) if "mtriple" in host.attrs else ""
    return triple.split("-")[0] if triple else _machine_arch()


def _describe_target(target: tvm.target.Target) -> str:
    kind = str(target.kind.name)
    if kind == "llvm":
        mcpu = f" ({target.attrs['mcpu']})" if "mcpu" in target.attrs else ""
        return f"{host_code_arch(target)}{mcpu}"
    arch = f" {target.attrs['arch']}" if "arch" in target.attrs else ""
    return f"{kind}{arch}"


class CompiledModel:
    """A built model: call it, save it, run it remotely. See the module docstring."""

    def __init__(
        self,
        executable,
        target: tvm.target.Target,
        inputs: Sequence[InputSpec],
        num_outputs: int,
        *,
        output_names: Sequence[str] = (),
        output_specs: Sequence[InputSpec] = (),
        pipeline: str = "",
        version: str = graphopt.__version__,
        library_path: str | os.PathLike | None = None,
    ):
        # executable: a relax.VMExecutable (fresh build), a runtime.Module (loaded from a
        # file), or None for a cross-target library read from disk (`library_path`).
        if executable is None and library_path is None:
            raise BackendError("a CompiledModel needs an executable or a library path")
        self.executable = executable
        self.target = target
        self.inputs = tuple(inputs)
        self.num_outputs = int(num_outputs)
        self.output_names = tuple(output_names)
        self.output_specs = tuple(output_specs)  # empty when unknown (metadata of older saves)
        self.pipeline = str(pipeline)
        self.version = version
        self.library_path = None if library_path is None else Path(library_path)
        self._vm: relax.VirtualMachine | None = None
        self.comparison = None  # analysis.compare.Comparison: set by graphopt.optimize when its pipeline changed it

    # ---- facts ---------------------------------------------------------------------
    @functools.cached_property
    def is_cross(self) -> bool:
        """True when this machine cannot run the code (aarch64 on x86; CUDA with no GPU)."""
        return target_is_cross(self.target)

    @property
    def host_arch(self) -> str:
        """CPU architecture of the host code; a `.so` for another one needs a cross compiler."""
        return host_code_arch(self.target)

    @property
    def device_kind(self) -> str:
        return str(self.target.kind.name)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "graphopt_version": self.version,
            "tvm_version": tvm.__version__,
            "pipeline": self.pipeline,
            "target": json.loads(str(self.target)),
            "host_arch": self.host_arch,
            "inputs": [s.to_json() for s in self.inputs],
            "num_outputs": self.num_outputs,
            "outputs": list(self.output_names),
            "output_specs": [s.to_json() for s in self.output_specs],
        }

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s}" for s in self.inputs)
        return (
            f"<CompiledModel {self.device_kind} ({ins}) -> {self.num_outputs} output(s)"
            f"{' (not runnable here)' if self.is_cross else ''}>"
        )

    # ---- running ---------------------------------------------------------------------
    def __call__(self, *arrays):
        """Run on this machine. numpy in -> numpy out, torch in -> torch out.

        One output is returned as one array, several as a tuple.
        """
        if self.is_cross:
            raise self._not_runnable_here()
        feeds, like, sizes = self._check_inputs(arrays)
        dev = tvm.device(int(self.target.get_target_device_type()), 0)
        vm = self._local_vm(dev)
        out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in feeds])
        return self._wrap([o.numpy() for o in _flatten(out)], like, sizes)

    def run_remote(self, session, *arrays):
        """Run on the remote CPU behind a TVM RPC `session`; same inputs/outputs as `__call__`.

        Uploads the library this model was loaded from (a `.tar` is linked by the
        remote side, which then needs a C++ compiler), else a `.so` exported to a
        temporary directory (cross-compiled for a cross target).
        """
        from graphopt.backends.tvm.rpc import run_remote_vm

        feeds, like, sizes = self._check_inputs(arrays)
        if self.library_path is not None:
            return self._wrap(run_remote_vm(session, self.library_path, feeds), like, sizes)
        with tempfile.TemporaryDirectory(prefix="graphopt-remote-") as tmp:
            lib = Path(tmp) / "model.so"
            self._export(lib)
            return self._wrap(run_remote_vm(session, lib, feeds), like, sizes)

    def _not_runnable_here(self) -> BackendError:
        what = _describe_target(self.target)
        if self.device_kind == "llvm":
            return BackendError(
                f"this model is compiled for {what}, which this {_machine_arch()} machine cannot "
                f"run (a cross target); run it on the device with CompiledModel.run_remote("
                f"session, *arrays), session being a TVM RPC session (e.g. "
                f"graphopt.backends.tvm.emulator for an emulated aarch64)"
            )
        return BackendError(
            f"this model is compiled for {what} and this machine has no such "
            f"device; load it (load_compiled) on a machine that has one"
        )

    def _local_vm(self, dev) -> relax.VirtualMachine:
        if self._vm is None:
            with tvm_output("starting the Relax VM"):
                self._vm = relax.VirtualMachine(self.executable, dev)
        return self._vm

    def _check_inputs(self, arrays) -> tuple[list[np.ndarray], torch.Tensor | None, dict[str, int]]:
        """Inputs as contiguous numpy arrays, a torch tensor to mimic (None: numpy in), the symbols' sizes."""
        if len(arrays) != len(self.inputs):
            names = ", ".join(s.name for s in self.inputs)
            raise BackendError(f"the model takes {len(self.inputs)} input(s) ({names}), got {len(arrays)}")
        feeds, like, sizes = [], None, {}
        for spec, a in zip(self.inputs, arrays):
            if isinstance(a, torch.Tensor):
                like = a if like is None else like
                if a.dtype == torch.bfloat16:
                    raise BackendError(f"input '{spec.name}': bfloat16 tensors cannot be passed through numpy")
                a = a.detach().cpu().numpy()
            elif not isinstance(a, np.ndarray):
                raise BackendError(f"input '{spec.name}' must be a numpy array or torch tensor, got {type(a).__name__}")
            got = f"{a.dtype.name}[{','.join(map(str, a.shape))}]"
            bound = dict(sizes)
            if not spec.bind(a.shape, bound) or a.dtype.name != spec.dtype:
                raise BackendError(f"input '{spec.name}' expects {spec}{_symbol_note(spec, sizes)}, got {got}")
            sizes = bound
            feeds.append(np.ascontiguousarray(a))
        return feeds, like, sizes

    def _wrap(self, outs: list[np.ndarray], like: torch.Tensor | None, sizes: dict[str, int]):
        if len(outs) != self.num_outputs:
            raise BackendError(f"the executable returned {len(outs)} outputs, expected {self.num_outputs}")
        outs = [_as_declared(o, spec, sizes) for o, spec in zip(outs, self.output_specs)] or outs
        if like is not None:
            # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
            outs = [torch.from_numpy(np.require(o, requirements="C")).to(like.device) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ---- saving -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the library (`.so` or `.tar`, see the module docstring) and `<path>.json`."""
        path = Path(path)
        if path.suffix not in LIBRARY_SUFFIXES:
            raise BackendError(
                f"cannot save to '{path}': use a .so (loadable shared library) or .tar (object files) path"
            )
        check_output_path(metadata_path(path))  # both targets usable before either is written
        if path.suffix == ".so" and isinstance(self.executable, relax.VMExecutable):
            check_library_toolchain(path, self.target)
        with atomic_output(path) as tmp:
            self._export(tmp)
        atomic_write_text(metadata_path(path), json.dumps(self.metadata(), indent=2) + "\n")
        return path

    def _export(self, path: Path) -> None:
        exe = self.executable
        if not isinstance(exe, relax.VMExecutable):
            # Loaded from disk: the library can only be copied as it is.
            src = self.library_path
            if src is None or src.suffix != path.suffix:
                raise BackendError(
                    f"this model was loaded from '{src}'; it can be saved again "
                    f"only in the same format ({src.suffix if src else '?'})"
                )
            shutil.copyfile(src, path)
            return
        kwargs = {}
        if path.suffix == ".so" and self.host_arch != _machine_arch():
            kwargs["fcompile"] = _cross_compile_fn(self.target)
        try:
            with tvm_output(f"exporting {path}"):
                exe.export_library(os.fspath(path), **kwargs)
        except (RuntimeError, OSError) as e:
            raise BackendError(f"exporting the {self.device_kind} library to '{path}' failed: {e}") from e


def _cross_compile_fn(target: tvm.target.Target):
    return tvm.support.cc.cross_compiler(cross_compiler_for(target))


# How to get each cross compiler, for the error that says it is missing (Debian/Ubuntu package names).
CROSS_COMPILER_PACKAGES = {"aarch64": "g++-aarch64-linux-gnu"}


def cross_compiler_for(target: tvm.target.Target) -> str:
    """The cross compiler a `.so` for `target`'s host architecture needs; BackendError, saying how to
    install it or to write a `.tar` instead, when it is not on PATH."""
    arch = host_code_arch(target)
    cxx = CROSS_COMPILERS.get(arch)
    if cxx is None:
        raise BackendError(f"no cross compiler known for {arch}; save as .tar and link on the device")
    if shutil.which(cxx) is None:
        package = CROSS_COMPILER_PACKAGES.get(arch, f"a C++ cross compiler for {arch}")
        raise BackendError(
            f"saving an {arch} .so needs the cross compiler '{cxx}', which is not on PATH: install it "
            f"(Debian/Ubuntu: 'sudo apt-get install {package}', or ./scripts/setup.sh), or write a .tar "
            f"instead (object files, linked on the device)"
        )
    return cxx


def check_library_toolchain(path: str | os.PathLike, target) -> None:
    """Refuse, before any build work, a `.so` path for a cross target whose cross compiler is missing."""
    tgt = resolve_target(target)
    if Path(path).suffix == ".so" and host_code_arch(tgt) != _machine_arch():
        cross_compiler_for(tgt)


def _symbol_note(spec: InputSpec, sizes: dict[str, int]) -> str:
    """What the symbols of `spec` accept, given the sizes other inputs already fixed."""
    notes = [f"{d} = {sizes[d]} as in an earlier input" if d in sizes else f"{d}: any size" for d in spec.symbols]
    return f" ({'; '.join(dict.fromkeys(notes))})" if notes else ""


def _as_declared(out: np.ndarray, spec: InputSpec, sizes: dict[str, int]) -> np.ndarray:
    """`out` with the declared shape (the VM may hand back a 0-d tensor as shape (1,)); dtype checked."""
    if out.dtype.name != spec.dtype:
        raise BackendError(f"output '{spec.name}' came back as {out.dtype.name}, the graph declares {spec}")
    if spec.symbols:
        if not spec.bind(out.shape, dict(sizes)):
            raise BackendError(
                f"output '{spec.name}' came back with shape {list(out.shape)}, the graph declares {spec}"
            )
        return out
    if tuple(out.shape) != spec.shape:
        if out.size != int(np.prod(spec.shape)):
            raise BackendError(
                f"output '{spec.name}' came back with shape {list(out.shape)}, the graph declares {spec}"
            )
        out = out.reshape(spec.shape)
    return out


def _spec(graph: Graph, name: str, dtype=lambda dt: dt) -> InputSpec:
    t = graph.type_of(name)
    return InputSpec(name, tuple(d if isinstance(d, str) else int(d) for d in t.shape), dtype(t.dtype))


def _flatten(value) -> list:
    if isinstance(value, (tvm.runtime.Tensor,)):
        return [value]
    return [t for v in value for t in _flatten(v)]


def compile_graph(graph: Graph, target, *, database=None, pipeline: str = "") -> CompiledModel:
    """Lower `graph` to Relax and build it for `target` (a preset name, dict or Target).

    `database` is a MetaSchedule tuning database applied before the default schedules;
    `pipeline` records the passes the graph went through (stored in the metadata).
    """
    tgt = resolve_target(target)
    mod = lower_to_relax(graph)
    try:
        with tvm_output(f"building graph '{graph.name}' for {tgt.kind.name}"):
            exe = build(mod, tgt, database=database)
    except Exception as e:  # TVM's errors subclass RuntimeError/ValueError/TypeError
        raise BackendError(f"building graph '{graph.name}' for {tgt.kind.name} failed: {e}") from e
    return CompiledModel(
        exe,
        tgt,
        [_spec(graph, name) for name in graph.inputs],
        len(graph.outputs),
        output_names=graph.outputs,
        output_specs=[_spec(graph, name, carrier_dtype) for name in graph.outputs],  # int4 rides in int8
        pipeline=str(pipeline),
    )


def load_compiled(path: str | os.PathLike) -> CompiledModel:
    """Read a model written by `CompiledModel.save`: the library and `<path>.json`."""
    path = Path(path)
    meta_file = metadata_path(path)
    if not meta_file.exists():
        raise BackendError(
            f"no metadata file '{meta_file}' for '{path}': a saved model is the "
            f"library plus <library>.json, written by CompiledModel.save"
        )
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        target = tvm.target.Target(meta["target"])
        inputs = [InputSpec.from_json(d) for d in meta["inputs"]]
        num_outputs = int(meta["num_outputs"])
        output_specs = [InputSpec.from_json(d) for d in meta.get("output_specs", ())]
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"metadata file '{meta_file}' is corrupt: {e}") from e
    if not path.exists():
        raise BackendError(f"library '{path}' named by '{meta_file}' is missing")
    model = CompiledModel(
        None,
        target,
        inputs,
        num_outputs,
        output_names=meta.get("outputs", ()),
        output_specs=output_specs,
        pipeline=meta.get("pipeline", ""),
        version=meta.get("graphopt_version", "?"),
        library_path=path,
    )
    if not model.is_cross:
        try:
            with tvm_output(f"loading {path}"):
                model.executable = tvm.runtime.load_module(os.fspath(path))
        except (RuntimeError, OSError) as e:
            raise BackendError(f"cannot load library '{path}': {e}") from e
    return model
