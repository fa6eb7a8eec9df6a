"""Minimal reproducers of what the fuzzer found; each names its bug in /work/notes/fuzz_bugs.md.

An `xfail(strict=True)` test is an open bug in a file owned elsewhere: it starts
passing (and so fails here) when the bug is fixed, and the mark comes off.
"""

from __future__ import annotations

import onnx
import pytest
from fuzz_arch import Arch, Block, build
from fuzz_checks import check_emitters, run_pipeline

import graphopt
from graphopt.backends.onnxruntime import run_onnx
from graphopt.defaults import DEFAULT_PIPELINE
from graphopt.errors import BackendError, PassError
from graphopt.passes.base import sqnr_db


def _traced(arch: Arch):
    model, x = build(arch)
    return graphopt.trace(model, (x,)), x.numpy()


EMBED_LINEAR = Arch("tokens", 1, (3, 5), (Block("embed", (("out", 6),)),), "mean", 3, 0)
CONV_OPTS = (("act", "relu"), ("bias", True), ("bn", True), ("groups", 1), ("k", 3), ("out", 4))
CONV = Arch("conv", 1, (3, 4, 4), (Block("norm_act", (("act", "relu"),)), Block("conv", CONV_OPTS)), "mean", 3, 0)


@pytest.mark.parametrize("half, dtype", [("convert-fp16", "float16"), ("convert-bf16", "bfloat16")])
def test_quantize_after_half_conversion(half, dtype):
    """Fuzz bug 1 (fixed): quantize crashed on a half graph; it refuses, naming the pass, a node and the dtype."""
    graph, x = _traced(EMBED_LINEAR)
    with pytest.raises(PassError, match=rf"pass 'quantize' failed: .*node 'linear\w*' computes in {dtype}"):
        run_pipeline(graph, x, f"{half},quantize")


def test_bf16_conv_emits_to_onnx():
    """Fuzz bug 2 (fixed): ONNX has no bfloat16 Conv, onnxruntime no bfloat16 Relu; they compute in float32 between
    casts, and onnxruntime runs the model close to graph.run."""
    graph, x = _traced(CONV)
    half = run_pipeline(graph, x, "convert-bf16")
    check_emitters(half, x, exact=False)
    model = half.to_onnx()
    produced = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert all(produced[v].op_type == "Cast" for v in conv.input if v in produced)
    stored = {t.name: t.data_type for t in model.graph.initializer}
    assert stored[produced[conv.input[1]].input[0]] == onnx.TensorProto.BFLOAT16  # the weight stays bfloat16
    assert [o.name for o in model.graph.output] == list(half.outputs)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_traced_upsample_emits_to_onnx(mode):
    """Fuzz bug 3 (fixed): upsample from the torch frontend was opaque and had no ONNX form."""
    block = Block("upskip", (("act", "relu"), ("down", "maxpool"), ("mid", 2), ("mode", mode)))
    graph, x = _traced(Arch("conv", 1, (2, 4, 4), (block,), "mean", 3, 0))
    check_emitters(run_pipeline(graph, x, DEFAULT_PIPELINE), x, exact=True)


SHUFFLE = Block("feature_shuffle", (("groups", 3),))
CANCELLING = {  # one output number per input set, near zero: -0.0096 and 0.011 from terms of ~0.4
    "convert-fp16": Arch(
        "tokens",
        1,
        (3, 5),
        (Block("embed", (("out", 6),)), SHUFFLE, SHUFFLE, Block("layernorm"), SHUFFLE),
        "mean",
        1,
        4,
    ),
    "quantize-weights{bits=8 scales=per-channel}": Arch(
        "tokens",
        1,
        (1, 8),
        (Block("embed", (("out", 4),)), Block("ffn", (("act", "relu"), ("hidden", 1)))),
        "mean",
        1,
        0,
    ),
}


@pytest.mark.xfail(strict=True, reason="fuzz bug 4: SQNR of a single output number that cancels to near zero")
@pytest.mark.parametrize("lossy", list(CANCELLING))
def test_lossy_bound_on_a_single_output_number_that_cancels(lossy):
    graph, x = _traced(CANCELLING[lossy])
    run_pipeline(run_pipeline(graph, x, DEFAULT_PIPELINE), x, lossy)


@pytest.mark.xfail(strict=True, reason="fuzz bug 5: quantize misses its bound once pruning leaves a 2-wide layer norm")
def test_quantize_after_pruning_a_layer_norm_to_two_features():
    blocks = (
        Block("embed", (("out", 6),)),
        Block("layernorm"),
        Block("attention", (("fused", False), ("heads", 1), ("pre_norm", False))),
        Block("layernorm"),
        Block("feature_shuffle", (("groups", 2),)),
    )
    graph, x = _traced(Arch("tokens", 2, (1, 5), blocks, "mean", 3, 4))
    pruned = run_pipeline(graph, x, f"{DEFAULT_PIPELINE},prune-channels{{ratio=0.75 importance=random}}")
    run_pipeline(pruned, x, "quantize", calibrate_on_x=False)  # calibrated on x, it keeps its bound


SE = Arch("conv", 2, (3, 6, 6), (Block("se", (("mid", 3),)),), "mean", 3, 226)


def test_squeeze_excitation_builds_for_cuda():
    """Fuzz bug 6 (fixed): dlight's GPU matmul rule failed on the SE gate; the next rule takes that kernel."""
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    graph, x = _traced(SE)
    compile_graph(run_pipeline(graph, x, DEFAULT_PIPELINE), "cuda")


def test_token_linears_build_for_cuda():
    """Fuzz bug 6 (fixed): the same dlight matmul failure on a plain token model, no SE needed."""
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.compiled import compile_graph

    blocks = (Block("embed", (("out", 12),)), Block("linear", (("act", "none"), ("out", 7))))
    graph, x = _traced(Arch("tokens", 2, (6, 3), blocks, "first", 3, 9686))
    compile_graph(run_pipeline(graph, x, DEFAULT_PIPELINE), "cuda")


def test_a_gpu_rule_failing_on_a_kernel_gives_way_to_the_next():
    pytest.importorskip("tvm")
    from tvm.s_tir import dlight as dl

    from graphopt.backends.tvm.lower import lower_to_relax
    from graphopt.backends.tvm.schedule import apply_default_schedules, legalize

    graph, x = _traced(SE)
    legal = legalize(lower_to_relax(run_pipeline(graph, x, DEFAULT_PIPELINE)), "cuda")
    with pytest.raises(BackendError, match=r"kernel 'fused_conv2d\w*sigmoid\w*': Matmul: .*cache-write stage"):
        apply_default_schedules(legal, "cuda", rules=[dl.gpu.Matmul()])
    scheduled = apply_default_schedules(legal, "cuda", rules=[dl.gpu.Matmul(), dl.gpu.Fallback()])
    kernels = {gv.name_hint: f for gv, f in scheduled.functions_items() if "threadIdx.x" in f.script()}
    assert any("sigmoid" in name for name in kernels)
    assert all(f.attrs["tirx.is_scheduled"] for f in kernels.values())


def test_quantized_attention_runs_alike_in_onnxruntime():
    """Fuzz bug 7 (fixed): a one-feature layer norm outputs zeros; quantize gave them the scale 1.2e-38, so the
    next linear's int32 bias scale underflowed, its bias stayed float, and onnxruntime's bias quantization
    saturated it (11.4 dB). An all-zero range now gets scale 1, as onnxruntime's quantizer gives it."""
    from fuzz_checks import Plan

    arch = Arch(
        family="conv",
        batch=1,
        in_shape=(1, 4, 4),
        blocks=(
            Block(kind="se", opts=(("mid", 1),)),
            Block(kind="to_tokens", opts=()),
            Block(kind="ffn", opts=(("act", "hardswish"), ("hidden", 2))),
            Block(kind="attention", opts=(("fused", True), ("heads", 1), ("pre_norm", True))),
        ),
        head="first",
        classes=3,
        seed=19684,
    )
    plan = Plan(prune_ratio=0.0, importance="bn-scale", compression="", quantize=True, onnx_import=False)
    graph, x = _traced(arch)
    quantized = run_pipeline(run_pipeline(graph, x, DEFAULT_PIPELINE), x, plan.pipeline()[len(DEFAULT_PIPELINE) + 1 :])
    assert all(float(quantized.param(p).data) == 1.0 for p in ("layer_norm.scale", "layer_norm_1.scale"))
    expected, got = quantized.run([x]), run_onnx(quantized.to_onnx(), [x])
    assert sqnr_db(expected[0], got[0]) >= 60.0  # the same int8 arithmetic on both sides


def test_quantize_meets_its_bound_when_calibrated_on_the_check_inputs():
    """Finding 8 (not a graphopt bug): calibrated on seeded random sets, quantize's minmax ranges clip this input's
    residual stream (embedding -2.47 vs a calibrated -2.16), 10.6 dB < 12 dB; calibrated on it, it keeps its bound."""
    blocks = (
        Block("embed", (("out", 8),)),
        Block("ffn", (("act", "sigmoid"), ("hidden", 16))),
        Block("ffn", (("act", "sigmoid"), ("hidden", 4))),
        Block("ffn", (("act", "gelu"), ("hidden", 4))),
    )
    graph, x = _traced(Arch("tokens", 2, (6, 8), blocks, "first", 3, 951))
    pruned = run_pipeline(
        graph, x, f"{DEFAULT_PIPELINE},prune-channels{{ratio=0.5 importance=l2}},share-weights{{clusters=8}}"
    )
    run_pipeline(pruned, x, "quantize")  # run_pipeline calibrates on x
