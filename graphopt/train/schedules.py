"""Sparsity schedules and the iterative prune → fine-tune loop.

The polynomial ramp is Zhu & Gupta, "To prune, or not to prune" (2017):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt)) ** 3      for t0 <= t <= t0 + n Δt

it prunes fast while many redundant weights remain and slowly near the final
sparsity. `sparsity_schedule(steps, final)` samples it at the end of each of
`steps` prune steps (t0 = 0, n Δt = steps), so the last step reaches `final`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from graphopt.errors import TrainError
from graphopt.ir.graph import Graph

__all__ = ["polynomial_sparsity", "sparsity_schedule", "iterative_prune", "SCHEDULES"]

Schedule = Literal["polynomial", "linear", "constant"]
SCHEDULES = ("polynomial", "linear", "constant")


def polynomial_sparsity(
    step: float, *, final: float, initial: float = 0.0, begin: float = 0, end: float, power: float = 3
) -> float:
    """Sparsity at `step`, ramping from `initial` at `begin` to `final` at `end` (and after); power 3 is Zhu & Gupta."""
    if not end > begin:
        raise TrainError(f"polynomial_sparsity: end ({end}) must come after begin ({begin})")
    if step <= begin:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - begin) / (end - begin)) ** power


def sparsity_schedule(
    steps: int, final: float, schedule: Schedule = "polynomial", *, initial: float = 0.0
) -> list[float]:
    """The target sparsity after each of `steps` prune steps, ending at `final`.

    polynomial: the cubic ramp; linear: equal increments; constant: `final` at every step.
    """
    _check_ratios(final, initial, steps)
    if schedule == "constant":
        return [final] * steps
    if schedule not in SCHEDULES:
        raise TrainError(f"sparsity schedule {schedule!r} is not one of {list(SCHEDULES)}")
    power = 3 if schedule == "polynomial" else 1
    return [polynomial_sparsity(k, final=final, initial=initial, end=steps, power=power) for k in range(1, steps + 1)]


def iterative_prune(
    graph: Graph,
    prune_step: Callable[[Graph, float], Graph],
    finetune_step: Callable[[Graph], Graph] | None = None,
    *,
    final_ratio: float,
    steps: int,
    schedule: Schedule = "polynomial",
    initial_ratio: float = 0.0,
    relative_to: Literal["original", "current"] = "original",
    log: Callable[[str], object] | None = print,
) -> Graph:
    """Prune in `steps` steps up to `final_ratio`, fine-tuning after each; return the new graph.

    At step k, `prune_step(graph, ratio)` prunes and `finetune_step(graph)` (if
    given) recovers accuracy; each returns the graph to continue with. The
    ratio passed is, by default (`relative_to="original"`), cumulative: the
    target sparsity of the *original* model after step k (`sparsity_schedule`),
    so a magnitude prune_step masks that fraction of the original weights.
    With `relative_to="current"` it is the fraction of what remains to remove
    now, 1 - (1 - s_k) / (1 - s_{k-1}), for prune steps that cut a share of
    the graph they are given (structured pruning that slices). The caller's
    graph is never modified (the steps work on a copy).
    """
    if not callable(prune_step):
        raise TrainError(f"iterative_prune: prune_step must be callable (graph, ratio) -> graph, got {prune_step!r}")
    if finetune_step is not None and not callable(finetune_step):
        raise TrainError(f"iterative_prune: finetune_step must be callable (graph) -> graph, got {finetune_step!r}")
    if relative_to not in ("original", "current"):
        raise TrainError(f"iterative_prune: relative_to {relative_to!r} is not 'original' or 'current'")
    targets = sparsity_schedule(steps, final_ratio, schedule, initial=initial_ratio)
    current, previous = graph.copy(), initial_ratio
    for k, target in enumerate(targets, 1):
        ratio = target if relative_to == "original" else 1.0 - (1.0 - target) / (1.0 - previous)
        current = _expect_graph(prune_step(current, ratio), "prune_step", k)
        if finetune_step is not None:
            current = _expect_graph(finetune_step(current), "finetune_step", k)
        if log:
            log(f"prune: step {k}/{steps}: sparsity {target:.3f} of the original (ratio passed {ratio:.3f})")
        previous = target
    return current


def _check_ratios(final: float, initial: float, steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise TrainError(f"sparsity schedule: steps must be a positive integer, got {steps!r}")
    if not 0.0 <= initial <= final < 1.0:
        raise TrainError(f"sparsity schedule: need 0 <= initial ({initial}) <= final ({final}) < 1")


def _expect_graph(out, what: str, step: int) -> Graph:
    if not isinstance(out, Graph):
        raise TrainError(f"iterative_prune step {step}: {what} returned a {type(out).__name__}, not a Graph")
    return out
