"""Shared pieces of the CPU schedule rules: the rule base class, block analysis, loop helpers."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

log = logging.getLogger("graphopt.backends.tvm.schedules")

# Below this many output elements a kernel runs on one thread: the thread
# pool's wake-up costs more than the work.
MIN_PARALLEL_ELEMENTS = 4096


class GraphoptCPURule(CPUScheduleRule):
    """A CPU rule: ``schedule`` recognises a kernel and schedules it, or returns None.

    Any exception while scheduling is caught: the kernel goes to the next
    rule (in the end the generic fallback) and one line is logged.
    """

    name = "rule"

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            return self.schedule(s_tir.Schedule(func), target)
        except Exception as err:  # TVM raises its own error classes from schedule primitives
            first = str(err).strip().splitlines()[-1:] or [type(err).__name__]
            name = kernel_name(func)
            log.warning("%s rule failed on kernel %s (%s); trying the next rule", self.name, name, first[0])
            return None

    def schedule(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        raise NotImplementedError


def kernel_name(func: tirx.PrimFunc) -> str:
    """A readable name of a kernel: its blocks' names."""
    names = [n for n in re.findall(r'sblock\("(\w+)"', func.script()) if n != "root"]
    return "(" + ", ".join(names) + ")" if names else "(no blocks)"


def vector_lanes(target: Target, bits: int = 32) -> int:
    """SIMD lanes of ``bits``-wide elements on the target (at least 4)."""
    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 4)


def extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of ``n`` not above ``limit`` (1 when none)."""
    for d in range(min(n, max(limit, 1)), 0, -1):
        if n % d == 0:
            return d
    return 1


@dataclass
class BlockInfo:
    """A root-level block: its handle, name and iterator kinds ("S" spatial, "R" reduction, "O" other)."""

    rv: s_tir.schedule.SBlockRV
    name: str
    kinds: str

    @property
    def is_spatial(self) -> bool:
        return set(self.kinds) <= {"S"}

    @property
    def is_reduction(self) -> bool:
        return "R" in self.kinds and "O" not in self.kinds


def _kind(iv: tirx.IterVar) -> str:
    return {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}.get(iv.iter_type, "O")


def root_blocks(sch: s_tir.Schedule) -> list[BlockInfo]:
    """The blocks directly under the root, in order."""
    blocks = []
    for rv in sch.get_child_blocks(get_root_block(sch)):
        block = sch.get(rv)
        blocks.append(BlockInfo(rv, block.name_hint, "".join(_kind(iv) for iv in block.iter_vars)))
    return blocks


def loops_match_iters(sch: s_tir.Schedule, info: BlockInfo) -> bool:
    """Whether the block sits in a plain nest: one loop per iterator, in iterator order."""
    loops = sch.get_loops(info.rv)
    block = sch.get(info.rv)
    if len(loops) != len(block.iter_vars):
        return False
    binding = _block_realize(sch, info.rv).iter_values
    return all(isinstance(v, tirx.Var) and v.same_as(sch.get(lp).loop_var) for v, lp in zip(binding, loops))


def _block_realize(sch: s_tir.Schedule, rv: s_tir.schedule.SBlockRV) -> s_tir.SBlockRealize:
    loop = sch.get(sch.get_loops(rv)[-1])
    body = loop.body
    if not isinstance(body, s_tir.SBlockRealize):
        raise ValueError("block is not directly under its innermost loop")
    return body


def single_main_reduction(sch: s_tir.Schedule) -> tuple[int, list[BlockInfo]] | None:
    """Index of the one reduction block among the root blocks (None if not exactly one)."""
    blocks = root_blocks(sch)
    found = [i for i, b in enumerate(blocks) if not b.is_spatial]
    if len(found) != 1 or not blocks[found[0]].is_reduction:
        return None
    return found[0], blocks


def main_reduction(sch: s_tir.Schedule, accepts: Callable[[str], bool]) -> tuple[int, list[BlockInfo]] | None:
    """The one reduction block's index and the root blocks (side inputs inlined, see below) when
    ``accepts`` its iteration kinds (e.g. "SSSSRRR") and its loops match its iterators; else None."""
    found = single_main_reduction(sch)
    if found is None:
        return None
    main, blocks = inline_side_inputs(sch, *found)
    if not accepts(blocks[main].kinds) or not loops_match_iters(sch, blocks[main]):
        return None
    return main, blocks


def is_param(sch: s_tir.Schedule, buffer) -> bool:
    """Whether ``buffer`` is a parameter of the kernel (not made by a block inside it)."""
    return any(p.same_as(buffer) for p in sch.mod["main"].params)


def inline_side_inputs(sch: s_tir.Schedule, main: int, blocks: list[BlockInfo]) -> tuple[int, list[BlockInfo]]:
    """Inline the spatial blocks before ``main`` that it does not read (e.g. a residual input's dequantize,
    fused in because the epilogue adds it) into their readers; return the main index and blocks afresh.

    Left where they were, they would keep the epilogue from moving into the main block's tiles.
    """
    main_reads = [r.source for r in sch.get(blocks[main].rv).reads]
    inlined = False
    for b in blocks[:main]:
        written = sch.get(b.rv).writes
        if b.is_spatial and not any(w.source.same_as(r) for w in written for r in main_reads):
            sch.compute_inline(b.rv)
            inlined = True
    if not inlined:
        return main, blocks
    blocks = root_blocks(sch)
    return next(i for i, b in enumerate(blocks) if not b.is_spatial), blocks


def inline_epilogue(sch: s_tir.Schedule, blocks: list[BlockInfo], main: int) -> s_tir.schedule.SBlockRV | None:
    """Fold the elementwise blocks after ``main`` into one (the last); return it, or None if there are none.

    Raises when an epilogue block cannot be inlined (e.g. it transposes):
    the caller then leaves the epilogue to the generic schedule.
    """
    epilogue = blocks[main + 1 :]
    if not epilogue or not all(b.is_spatial for b in epilogue):
        return None
    for b in epilogue[:-1]:
        sch.compute_inline(b.rv)
    return epilogue[-1].rv


# Outer loops are fused for the parallel loop only until they offer this many
# iterations: fusing more buys nothing on a few cores and costs div/mod index math.
PARALLEL_CHUNKS = 64


def _parallel_leading(sch: s_tir.Schedule, loops: list) -> None:
    """Fuse the leading loops until they give PARALLEL_CHUNKS iterations, and run them in parallel."""
    taken, product = [], 1
    for lp in loops:
        taken.append(lp)
        product *= extent(sch, lp) or 1
        if product >= PARALLEL_CHUNKS:
            break
    if product >= 2:
        sch.parallel(sch.fuse(*taken) if len(taken) > 1 else taken[0])


def parallel_vectorize_spatial(sch: s_tir.Schedule, rv: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Generic schedule of an all-spatial block: vectorize the innermost loop, parallelize the outer ones."""
    loops = sch.get_loops(rv)
    if not loops:
        return
    total = 1
    for lp in loops:
        ext = extent(sch, lp)
        if ext is None:
            return
        total *= ext
    vec = largest_divisor(extent(sch, loops[-1]), lanes)
    if vec >= 2 and vec >= lanes // 2:
        outer, inner = sch.split(loops[-1], factors=[None, vec])
        sch.vectorize(inner)
        loops = [*loops[:-1], outer]
    if total >= MIN_PARALLEL_ELEMENTS:
        _parallel_leading(sch, loops)


def parallel_outer_spatial(sch: s_tir.Schedule, info: BlockInfo) -> None:
    """Parallelize the leading spatial loops of a block whose loops follow its iterators."""
    if not loops_match_iters(sch, info):
        return
    loops = sch.get_loops(info.rv)
    lead = len(info.kinds) - len(info.kinds.lstrip("S"))
    if lead:
        _parallel_leading(sch, loops[:lead])
