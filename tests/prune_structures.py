"""Small models, one per structure the dependency analysis must follow (issue: structured pruning).

Each entry: name -> (module factory, input shape). Every model ends in a
classifier, so its output width is fixed and everything before it may shrink.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())


class Residual(nn.Module):
    """Elementwise ops and residual adds: conv1 and both block convs share one group."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), _bn_relu(24), nn.Conv2d(24, 16, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), _bn_relu(24), nn.Conv2d(24, 16, 3, padding=1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.a(x))
        x = x + self.b(x) * 0.5
        return self.fc(x.mean(dim=(2, 3)))


class ConcatSplit(nn.Module):
    """concat (offsets) and split (sizes): each branch is its own group."""

    def __init__(self):
        super().__init__()
        self.p = nn.Conv2d(3, 8, 1)
        self.q = nn.Conv2d(3, 12, 3, padding=1)
        self.mix = nn.Conv2d(20, 16, 1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        y = torch.cat([torch.relu(self.p(x)), torch.sigmoid(self.q(x))], dim=1)
        a, b = torch.split(self.mix(y), [6, 10], dim=1)
        z = torch.cat([a * 2.0, torch.relu(b)], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, (2, 4)), 1))


class GroupedDepthwise(nn.Module):
    """Grouped conv (whole groups go) and depthwise conv (groups shrink with channels)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.g = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.g(x))
        x = torch.relu(self.dw(x))
        return self.fc(self.pw(x).mean(dim=(2, 3)))


class FlattenLinear(nn.Module):
    """reshape/flatten: a channel becomes a block of features of the linear layer."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.fc1 = nn.Linear(12 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.c(x)))
        return self.fc2(torch.relu(self.fc1(x.reshape(x.shape[0], -1))))


class PermuteLinear(nn.Module):
    """permute/transpose: the channel axis moves to the end, a per-channel scale broadcasts there, a linear reads it."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.c(x).permute(0, 2, 3, 1)) * self.scale  # NHWC
        return self.fc(y.mean(dim=(1, 2)))


class ChannelShuffle(nn.Module):
    """Channel shuffle (reshape + transpose + reshape) between grouped 1x1 convs and a depthwise conv."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups
        self.c0 = nn.Conv2d(3, 16, 1)
        self.g1 = nn.Conv2d(16, 16, 1, groups=groups)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.g2 = nn.Conv2d(16, 16, 1, groups=groups)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.g1(torch.relu(self.c0(x))))
        n, c, h, w = x.shape
        x = x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = self.g2(self.dw(x))
        return self.fc(x.mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    """Broadcast gating: x * sigmoid(fc(mean(x))) couples the gate's channels with x's."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 24, 3, padding=1)
        self.se1 = nn.Conv2d(24, 8, 1)
        self.se2 = nn.Conv2d(8, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.c(x))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(x.mean(dim=(2, 3), keepdim=True)))))
        return self.fc((x * s).mean(dim=(2, 3)))


class TokenMixer(nn.Module):
    """Token mixing: a matmul with a parameter over the token axis, and a token MLP over the transposed axis."""

    def __init__(self, tokens: int = 16, dim: int = 24, hidden: int = 32):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.mix = nn.Parameter(torch.randn(20, tokens) * 0.2)  # tokens -> 20 mixed tokens, by matmul
        self.unmix = nn.Parameter(torch.randn(tokens, 20) * 0.2)
        self.tok1 = nn.Linear(tokens, hidden)
        self.tok2 = nn.Linear(hidden, tokens)
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):  # x: [B, tokens, 8]
        h = self.embed(x)
        h = h + torch.matmul(self.unmix, torch.relu(torch.matmul(self.mix, h)))
        t = self.tok2(nn.functional.gelu(self.tok1(h.transpose(1, 2))))
        h = h + t.transpose(1, 2)
        return self.fc(h.mean(dim=1))


class Attention(nn.Module):
    """Hand-written multi-head attention, fused qkv or three projections."""

    def __init__(self, dim: int = 32, heads: int = 4, fused: bool = True, tokens: int = 6):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.embed = nn.Linear(5, dim)
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim)
        self.ffn1, self.ffn2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):  # x: [B, tokens, 5]
        h = self.embed(x)
        b, t, d = h.shape
        dh = d // self.heads
        if self.fused:
            q, k, v = self.qkv(h).reshape(b, t, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (p(h).reshape(b, t, self.heads, dh).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) / dh**0.5, dim=-1)
        h = h + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        h = self.ln(h)
        h = h + self.ffn2(nn.functional.gelu(self.ffn1(h)))
        return self.fc(h[:, 0])


STRUCTURES = {
    "residual": (Residual, (2, 3, 8, 8)),
    "concat_split": (ConcatSplit, (2, 3, 8, 8)),
    "grouped_depthwise": (GroupedDepthwise, (2, 3, 8, 8)),
    "flatten_linear": (FlattenLinear, (2, 1, 8, 8)),
    "permute_linear": (PermuteLinear, (2, 3, 6, 6)),
    "channel_shuffle": (ChannelShuffle, (2, 3, 6, 6)),
    "squeeze_excite": (SqueezeExcite, (2, 3, 8, 8)),
    "token_mixer": (TokenMixer, (2, 16, 8)),
    "attention_fused": (lambda: Attention(fused=True), (2, 6, 5)),
    "attention_split": (lambda: Attention(fused=False), (2, 6, 5)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = STRUCTURES[name]
    torch.manual_seed(seed)
    model = factory().eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so bn-scale and folding see real values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.2, 1.5)
    return model, torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
