"""Passes: the registry, text pipelines, instruments, and the built-in rewrite passes.

Importing this package registers every built-in pass.
"""

from graphopt.passes.base import Pass, PassResult, Tolerance
from graphopt.passes.context import PassContext
from graphopt.passes.instruments import IRDump, NumericalVerifier, Statistics, Timing, default_instruments
from graphopt.passes.manager import PipelineResult, run_pipeline
from graphopt.passes.pipeline import Pipeline
from graphopt.passes.registry import get_pass_class, register_pass, registered_passes

__all__ = [
    "Pass",
    "PassResult",
    "Tolerance",
    "PassContext",
    "Pipeline",
    "PipelineResult",
    "run_pipeline",
    "register_pass",
    "registered_passes",
    "get_pass_class",
    "IRDump",
    "NumericalVerifier",
    "Statistics",
    "Timing",
    "default_instruments",
]

from graphopt.passes import (  # noqa: E402,F401  (registers)  # noqa: E402,F401  (registers)
    binarize,
    convert_bf16,
    convert_fp16,
    correct_bias,
    eliminate_dead_code,
    eliminate_identity,
    equalize_cross_layer,
    fold_bn,
    fold_constants,
    fuse_gelu,
    fuse_layer_norm,
    fuse_linear_bias,
    mixed_precision,
    prune_channels,
    prune_ffn,
    prune_heads,
    prune_magnitude,
    quantize,
    quantize_lut,
    quantize_pow2,
    quantize_weights,
    round_adaptive,
    share_weights,
)
