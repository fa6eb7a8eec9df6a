"""Fuzzed architectures through both frontends, the exact and the lossy passes, both emitters and onnxruntime.

CI: CI_MODELS derandomized models (the same every run): ~0.3 s of CPU each, most of it torch.export
(see the summary's CPU seconds per stage), so about 150 s on an idle machine. Soak: `pytest -m soak tests/fuzz`.
A failure prints the shrunk `Arch(...)` and `Plan(...)`; `check_model(arch, plan)` reproduces it.
"""

from __future__ import annotations

import pytest
from fuzz_arch import archs
from fuzz_checks import check_model, plans
from hypothesis import given, settings

CI_MODELS = 500
SOAK_MODELS = 5000


@settings(settings.get_profile("fuzz-ci"), max_examples=CI_MODELS)
@given(arch=archs(), plan=plans(onnx_share=4))
def test_fuzzed_models(arch, plan):
    check_model(arch, plan)


@pytest.mark.soak
@settings(settings.get_profile("fuzz-soak"), max_examples=SOAK_MODELS)
@given(arch=archs(max_blocks=6), plan=plans(onnx_share=1))
def test_fuzzed_models_soak(arch, plan):
    check_model(arch, plan)
