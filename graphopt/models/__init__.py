"""Bundled model zoo: ResNet-18, MobileNetV2, a small ViT, a small BERT, digits models.

All models use plain, statically shaped ops (conv/linear/norm/activation,
view/permute/cat, explicit matmul-softmax attention) so they export cleanly
with ``torch.export`` and stay analyzable by compression passes.
"""

from .bert import BertClassifier, BertEmbeddings, BertLayer, BertSelfAttention, bert_small
from .digits import DigitsCNN, DigitsData, DigitsMLP, evaluate_digits_model, load_digits_data, train_digits_model
from .mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from .registry import MODELS, ModelSpec, build_model, example_inputs, get_model, get_spec, list_models
from .resnet import BasicBlock, ResNet, resnet18
from .vit import Attention, Block, ViT, vit_small

__all__ = [
    "MODELS",
    "ModelSpec",
    "get_model",
    "get_spec",
    "build_model",
    "example_inputs",
    "list_models",
    "load_digits_data",
    "train_digits_model",
    "evaluate_digits_model",
    "DigitsData",
    "BasicBlock",
    "ResNet",
    "resnet18",
    "InvertedResidual",
    "MobileNetV2",
    "mobilenet_v2",
    "Attention",
    "Block",
    "ViT",
    "vit_small",
    "BertSelfAttention",
    "BertLayer",
    "BertEmbeddings",
    "BertClassifier",
    "bert_small",
    "DigitsCNN",
    "DigitsMLP",
]
