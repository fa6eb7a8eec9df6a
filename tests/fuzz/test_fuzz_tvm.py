"""A few fuzzed models through TVM: compiled for x86 and run against graph.run; built for arm and cuda.

TVM builds cost seconds each, so CI takes TVM_MODELS models (derandomized) and the
soak run many more. Each model first passes every check of test_fuzz_models.
"""

from __future__ import annotations

import pytest
from fuzz_arch import archs, build
from fuzz_checks import Plan, check_model, check_tvm
from hypothesis import Phase, given, settings

pytest.importorskip("tvm")

TVM_MODELS = 3
EXACT_ONLY = Plan(prune_ratio=0.0, importance="l1", compression="", quantize=False, onnx_import=False)


# No shrinking in CI: each try costs three builds. The soak run shrinks.
@settings(settings.get_profile("fuzz-ci"), max_examples=TVM_MODELS, phases=[Phase.explicit, Phase.generate])
@given(arch=archs(max_blocks=3))
def test_fuzzed_models_compile_and_run(arch):
    graph = check_model(arch, EXACT_ONLY)
    check_tvm(graph, build(arch)[1].numpy())


@pytest.mark.soak
@settings(settings.get_profile("fuzz-soak"), max_examples=200)
@given(arch=archs(max_blocks=5))
def test_fuzzed_models_compile_and_run_soak(arch):
    graph = check_model(arch, EXACT_ONLY)
    check_tvm(graph, build(arch)[1].numpy())
