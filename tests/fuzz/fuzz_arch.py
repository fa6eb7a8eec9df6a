"""Random architectures for fuzzing: a hypothesis strategy for `Arch` specs and `build(arch)`.

An `Arch` is plain data (family, batch, input shape, blocks, head, seed), so a
failing example prints as a reproducer: `build(Arch(...))` gives the same
module with the same weights and inputs. Blocks are drawn one after another from
the shape the previous block left, so every drawn spec builds; hypothesis
shrinks a failing spec to fewer, smaller blocks.

Conv blocks (x: [B, C, H, W]): conv (grouped, 1x1 or 3x3), depthwise +
pointwise, residual, concat of two branches, split + concat, channel shuffle,
squeeze-excitation, downsample + upsample (nearest/bilinear) + skip concat,
NHWC permute + linear, pooling, and a switch to tokens (flatten + transpose).
Token blocks (x: [B, T, D]): attention (fused or separate q/k/v), feed-forward,
token-mixing MLP, layer norm, linear, feature shuffle (reshape + permute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

ACTIVATIONS = ("relu", "gelu", "sigmoid", "silu", "tanh", "hardswish", "relu6", "leaky_relu", "none")
CHANNELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16)


@dataclass(frozen=True)
class Block:
    kind: str
    opts: tuple[tuple[str, object], ...] = ()

    def __getitem__(self, key: str):
        return dict(self.opts)[key]

    def __repr__(self) -> str:
        return f"Block({self.kind!r}, {self.opts!r})"


@dataclass(frozen=True)
class Arch:
    family: str  # "conv" (input [B, C, H, W]) or "tokens" (input [B, T, F])
    batch: int
    in_shape: tuple[int, ...]  # without the batch axis
    blocks: tuple[Block, ...]
    head: str  # conv: "mean" | "flatten"; tokens: "mean" | "first"
    classes: int
    seed: int

    def describe(self) -> str:
        return f"{self.family} b={self.batch} {list(self.in_shape)}: " + " ".join(b.kind for b in self.blocks)


def _block(kind: str, **opts) -> Block:
    return Block(kind, tuple(sorted(opts.items())))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---- strategy ------------------------------------------------------------------------------------


@st.composite
def _conv_block(draw, c: int, h: int, w: int):
    """(block, channels, height, width) after it."""
    even = h % 2 == 0 and w % 2 == 0
    kinds = ["conv", "depthwise", "residual", "concat", "se", "permute_linear", "norm_act"]
    kinds += ["split"] if c >= 2 else []
    kinds += ["shuffle"] if c >= 4 and any(g > 1 for g in _divisors(c) if g < c) else []
    kinds += ["upskip", "pool"] if even and h >= 4 and w >= 4 else []
    kind = draw(st.sampled_from(kinds))
    act = draw(st.sampled_from(ACTIVATIONS))
    bn = draw(st.booleans())
    if kind == "conv":
        out = draw(st.sampled_from(CHANNELS))
        k = draw(st.sampled_from((1, 3)))
        groups = draw(st.sampled_from(_divisors(math.gcd(c, out))))
        return _block(kind, out=out, k=k, groups=groups, bn=bn, act=act, bias=draw(st.booleans())), out, h, w
    if kind == "depthwise":
        out = draw(st.sampled_from(CHANNELS))
        return _block(kind, out=out, bn=bn, act=act), out, h, w
    if kind == "residual":
        return _block(kind, mid=draw(st.sampled_from(CHANNELS)), bn=bn, act=act), c, h, w
    if kind == "concat":
        a, b = draw(st.sampled_from(CHANNELS)), draw(st.sampled_from(CHANNELS))
        return _block(kind, a=a, b=b, act=act), a + b, h, w
    if kind == "split":
        first = draw(st.integers(1, c - 1))
        out = draw(st.sampled_from(CHANNELS))
        return _block(kind, first=first, out=out, act=act), first + out, h, w
    if kind == "shuffle":
        groups = draw(st.sampled_from([g for g in _divisors(c) if 1 < g < c]))
        return _block(kind, groups=groups), c, h, w
    if kind == "se":
        return _block(kind, mid=draw(st.sampled_from((1, 2, 3, 4, 8)))), c, h, w
    if kind == "upskip":
        mid = draw(st.sampled_from(CHANNELS))
        down = draw(st.sampled_from(("maxpool", "avgpool", "stride")))
        mode = draw(st.sampled_from(("nearest", "bilinear")))
        return _block(kind, mid=mid, down=down, mode=mode, act=act), c + mid, h, w
    if kind == "pool":
        return _block(kind, op=draw(st.sampled_from(("max", "avg")))), c, h // 2, w // 2
    if kind == "permute_linear":
        out = draw(st.sampled_from(CHANNELS))
        return _block(kind, out=out, act=act), out, h, w
    return _block("norm_act", act=act), c, h, w


@st.composite
def _token_block(draw, t: int, d: int):
    """(block, tokens, features) after it."""
    kind = draw(st.sampled_from(("attention", "ffn", "token_mlp", "layernorm", "linear", "feature_shuffle")))
    act = draw(st.sampled_from(ACTIVATIONS))
    if kind == "attention":
        heads = draw(st.sampled_from(_divisors(d)))
        return _block(kind, heads=heads, fused=draw(st.booleans()), pre_norm=draw(st.booleans())), t, d
    if kind == "ffn":
        return _block(kind, hidden=draw(st.sampled_from(CHANNELS)), act=act), t, d
    if kind == "token_mlp":
        return _block(kind, hidden=draw(st.sampled_from(CHANNELS)), act=act), t, d
    if kind == "linear":
        out = draw(st.sampled_from(CHANNELS))
        return _block(kind, out=out, act=act), t, out
    if kind == "feature_shuffle" and len(_divisors(d)) > 2:
        return _block(kind, groups=draw(st.sampled_from([g for g in _divisors(d) if 1 < g < d]))), t, d
    return _block("layernorm"), t, d


@st.composite
def archs(draw, max_blocks: int = 4) -> Arch:
    """An Arch of 1..max_blocks blocks; conv models may switch to tokens part way."""
    family = draw(st.sampled_from(("conv", "tokens")))
    batch = draw(st.sampled_from((1, 2, 3)))
    n = draw(st.integers(1, max_blocks))
    blocks = []
    if family == "conv":
        c, h, w = draw(st.sampled_from((1, 2, 3, 5))), draw(st.sampled_from((4, 6, 8))), draw(st.sampled_from((4, 6)))
        in_shape = (c, h, w)
        tokens = False
        for _ in range(n):
            if not tokens and blocks and h * w <= 48 and draw(st.integers(0, 4)) == 0:
                blocks.append(_block("to_tokens"))
                tokens, t, d = True, h * w, c
                continue
            if tokens:
                block, t, d = draw(_token_block(t, d))
            else:
                block, c, h, w = draw(_conv_block(c, h, w))
            blocks.append(block)
        head = draw(st.sampled_from(("mean", "first") if tokens else ("mean", "flatten")))
    else:
        t, f = draw(st.sampled_from((1, 3, 4, 6))), draw(st.sampled_from((3, 5, 8)))
        d = draw(st.sampled_from((4, 6, 8, 12)))
        in_shape = (t, f)
        blocks.append(_block("embed", out=d))
        for _ in range(n):
            block, t, d = draw(_token_block(t, d))
            blocks.append(block)
        head = draw(st.sampled_from(("mean", "first")))
    # One output number per input set makes SQNR bounds ill-conditioned (fuzz bug 4): one class only with batch 3.
    classes = draw(st.sampled_from((1, 3, 10) if batch == 3 else (3, 10)))
    return Arch(family, batch, in_shape, tuple(blocks), head, classes, draw(st.integers(0, 2**16)))


# ---- modules ------------------------------------------------------------------------------------


def _act(name: str) -> nn.Module:
    table = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "hardswish": nn.Hardswish,
        "relu6": nn.ReLU6,
        "leaky_relu": lambda: nn.LeakyReLU(0.1),
        "none": nn.Identity,
    }
    return table[name]()


def _conv_bn_act(cin: int, cout: int, k: int, *, groups: int = 1, bn: bool = True, act: str = "relu", bias=True):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias)]
    layers += [nn.BatchNorm2d(cout)] if bn else []
    return nn.Sequential(*layers, _act(act))


class Residual(nn.Module):
    def __init__(self, c: int, mid: int, bn: bool, act: str):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_act(c, mid, 3, bn=bn, act=act), nn.Conv2d(mid, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, c: int, a: int, b: int, act: str):
        super().__init__()
        self.p, self.q = nn.Conv2d(c, a, 1), _conv_bn_act(c, b, 3, bn=False, act=act)

    def forward(self, x):
        return torch.cat([torch.relu(self.p(x)), self.q(x)], dim=1)


class Split(nn.Module):
    def __init__(self, c: int, first: int, out: int, act: str):
        super().__init__()
        self.sizes = [first, c - first]
        self.conv = _conv_bn_act(c - first, out, 3, bn=False, act=act)

    def forward(self, x):
        a, b = torch.split(x, self.sizes, dim=1)
        return torch.cat([a * 0.5, self.conv(b)], dim=1)


class Shuffle(nn.Module):
    def __init__(self, c: int, groups: int):
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv2d(c, c, 1, groups=groups)

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, mid: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class UpSkip(nn.Module):
    """A U-Net step: downsample, conv, upsample by 2 (nearest or bilinear), concat with the skip."""

    def __init__(self, c: int, mid: int, down: str, mode: str, act: str):
        super().__init__()
        self.down = {"maxpool": nn.MaxPool2d(2), "avgpool": nn.AvgPool2d(2), "stride": nn.Conv2d(c, c, 3, 2, 1)}[down]
        self.conv = _conv_bn_act(c, mid, 3, act=act)
        self.mode = mode

    def forward(self, x):
        y = self.conv(self.down(x))
        y = F.interpolate(
            y, scale_factor=2.0, mode=self.mode, **({} if self.mode == "nearest" else {"align_corners": False})
        )
        return torch.cat([x, y], dim=1)


class PermuteLinear(nn.Module):
    def __init__(self, c: int, out: int, act: str):
        super().__init__()
        self.fc, self.act = nn.Linear(c, out), _act(act)

    def forward(self, x):
        return self.act(self.fc(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class ToTokens(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, fused: bool, pre_norm: bool):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.norm = nn.LayerNorm(d) if pre_norm else nn.Identity()
        if fused:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        dh = d // self.heads
        h = self.norm(x)
        if self.fused:
            q, k, v = self.qkv(h).reshape(b, t, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (p(h).reshape(b, t, self.heads, dh).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        return x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int, act: str):
        super().__init__()
        self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(d), nn.Linear(d, hidden), _act(act), nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class TokenMLP(nn.Module):
    def __init__(self, t: int, hidden: int, act: str):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(t, hidden), _act(act), nn.Linear(hidden, t)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x.transpose(1, 2)))).transpose(1, 2)


class FeatureShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, t, d = x.shape
        return x.reshape(b, t, self.groups, d // self.groups).permute(0, 1, 3, 2).reshape(b, t, d)


class Head(nn.Module):
    def __init__(self, kind: str, tokens: bool, width: int, classes: int):
        super().__init__()
        self.kind, self.tokens = kind, tokens
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        if self.tokens:
            return self.fc(x.mean(dim=1) if self.kind == "mean" else x[:, 0])
        return self.fc(x.mean(dim=(2, 3)) if self.kind == "mean" else torch.flatten(x, 1))


def _conv_module(b: Block, c: int) -> nn.Module:
    k = b.kind
    if k == "conv":
        return _conv_bn_act(c, b["out"], b["k"], groups=b["groups"], bn=b["bn"], act=b["act"], bias=b["bias"])
    if k == "depthwise":
        return nn.Sequential(_conv_bn_act(c, c, 3, groups=c, bn=b["bn"], act=b["act"]), nn.Conv2d(c, b["out"], 1))
    if k == "residual":
        return Residual(c, b["mid"], b["bn"], b["act"])
    if k == "concat":
        return Concat(c, b["a"], b["b"], b["act"])
    if k == "split":
        return Split(c, b["first"], b["out"], b["act"])
    if k == "shuffle":
        return Shuffle(c, b["groups"])
    if k == "se":
        return SqueezeExcite(c, b["mid"])
    if k == "upskip":
        return UpSkip(c, b["mid"], b["down"], b["mode"], b["act"])
    if k == "pool":
        return nn.MaxPool2d(2) if b["op"] == "max" else nn.AvgPool2d(2)
    if k == "permute_linear":
        return PermuteLinear(c, b["out"], b["act"])
    if k == "norm_act":
        return nn.Sequential(nn.BatchNorm2d(c), _act(b["act"]))
    raise ValueError(f"unknown conv block {k!r}")


def _token_module(b: Block, t: int, d: int) -> nn.Module:
    k = b.kind
    if k == "attention":
        return Attention(d, b["heads"], b["fused"], b["pre_norm"])
    if k == "ffn":
        return FeedForward(d, b["hidden"], b["act"])
    if k == "token_mlp":
        return TokenMLP(t, b["hidden"], b["act"])
    if k == "layernorm":
        return nn.LayerNorm(d)
    if k == "linear":
        return nn.Sequential(nn.Linear(d, b["out"]), _act(b["act"]))
    if k == "feature_shuffle":
        return FeatureShuffle(b["groups"])
    if k == "embed":
        return nn.Linear(d, b["out"])
    raise ValueError(f"unknown token block {k!r}")


def _conv_channels_after(b: Block, c: int) -> int:
    if b.kind in ("conv", "depthwise", "permute_linear"):
        return b["out"]
    if b.kind == "concat":
        return b["a"] + b["b"]
    if b.kind == "split":
        return b["first"] + b["out"]
    if b.kind == "upskip":
        return c + b["mid"]
    return c


def build(arch: Arch) -> tuple[nn.Module, torch.Tensor]:
    """(module in eval mode, example input) for `arch`; the same arch always gives the same weights and input."""
    torch.manual_seed(arch.seed)
    layers: list[nn.Module] = []
    if arch.family == "conv":
        c, h, w = arch.in_shape
        tokens = False
    else:
        (t, d), tokens = arch.in_shape, True
    for b in arch.blocks:
        if b.kind == "to_tokens":
            layers.append(ToTokens())
            tokens, t, d = True, h * w, c
        elif tokens:
            layers.append(_token_module(b, t, d))
            d = b["out"] if b.kind in ("linear", "embed") else d
        else:
            layers.append(_conv_module(b, c))
            c = _conv_channels_after(b, c)
            h, w = (h // 2, w // 2) if b.kind == "pool" else (h, w)
    width = d if tokens else (c if arch.head == "mean" else c * h * w)
    layers.append(Head(arch.head, tokens, width, arch.classes))
    model = nn.Sequential(*layers).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so folding sees real values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.randn(arch.batch, *arch.in_shape, generator=torch.Generator().manual_seed(arch.seed + 1))
    return model, x
