"""A small BERT-style encoder classifier (post-LN, GELU FFN, tanh pooler).

Token and position embeddings are ``nn.Embedding`` lookups; position ids live
in a buffer and are sliced to the (static) sequence length. Attention uses
separate query/key/value Linears and is written out op by op so heads stay
visible to a compiler. The model takes one input, int64 token ids (B, L).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BertSelfAttention", "BertLayer", "BertEmbeddings", "BertClassifier", "bert_small"]


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value`` projections."""

    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        assert hidden % num_heads == 0, "hidden must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.scale = self.head_dim**-0.5
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, H*D) -> (B, H, N, D)
        return x.reshape(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = self.dropout(attn.softmax(dim=-1))
        return torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(b, n, self.num_heads * self.head_dim)


class BertLayer(nn.Module):
    """Post-LN encoder layer: LN(x + attn(x)), then LN(x + ffn(x))."""

    def __init__(self, hidden: int, num_heads: int, intermediate: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = BertSelfAttention(hidden, num_heads, dropout)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_drop = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.out_drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn_drop(self.attn_out(self.attention(x))))
        return self.out_norm(x + self.out_drop(self.output(self.act(self.intermediate(x)))))


class BertEmbeddings(nn.Module):
    """Word + learned position embeddings, then LayerNorm and dropout."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(max_positions).unsqueeze(0), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_ids[:, : input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        return self.dropout(self.norm(x))


class BertClassifier(nn.Module):
    """BERT encoder + tanh pooler on the first token + linear classifier; returns logits."""

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate: int = 512,
        max_positions: int = 64,
        num_classes: int = 2,
        seq_len: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        assert seq_len <= max_positions, "seq_len exceeds max_positions"
        self.vocab_size = vocab_size
        self.seq_len = seq_len  # length used for example inputs
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions, dropout)
        self.layers = nn.Sequential(*[BertLayer(hidden, num_heads, intermediate, dropout) for _ in range(num_layers)])
        self.pooler = nn.Linear(hidden, hidden)
        self.pooler_act = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT scheme: N(0, 0.02) weights, zero biases, unit LayerNorm.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.embeddings(input_ids))
        pooled = self.pooler_act(self.pooler(x[:, 0]))
        return self.classifier(self.dropout(pooled))


def bert_small(num_classes: int = 2, num_layers: int = 2) -> BertClassifier:
    """BERT-style encoder: vocab 1000, hidden 128, 4 heads, FFN 512, 64 positions, seq 32."""
    return BertClassifier(num_classes=num_classes, num_layers=num_layers)
