"""The paper's convolutional networks: LeNet-5 (image tasks) and CNN-S (keyword spotting)."""

from __future__ import annotations

import math

import torch
from torch import nn

from walkingnoise.models.registry import register_model


def _conv_block(
    in_channels: int,
    out_channels: int,
    kernel: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    batchnorm: bool,
    pool: bool,
) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=stride)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


def _dense_block(in_features: int, out_features: int, *, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(out_features))
    layers.append(nn.ReLU())
    return layers


def _feature_size(features: nn.Module, input_shape: tuple[int, ...], model: str) -> int:
    """Flattened size of ``features`` applied to one input, or a clear error if it is too small."""
    if len(input_shape) != 3:
        raise ValueError(f"{model} needs image-like inputs (C, H, W), got shape {input_shape}")
    was_training = features.training
    try:
        with torch.no_grad():
            return math.prod(features.eval()(torch.zeros(1, *input_shape)).shape[1:])
    except RuntimeError as error:
        raise ValueError(
            f"{model} cannot take inputs of shape {input_shape}: {str(error).splitlines()[0]}"
        ) from None
    finally:
        features.train(was_training)


class ConvClassifier(nn.Module):
    """A ``features`` stack of convolution blocks, flattened into a ``classifier`` stack."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.flatten = nn.Flatten()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of (C, H, W) inputs."""
        return self.classifier(self.flatten(self.features(x)))


@register_model("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool) -> nn.Module:
    """LeNet-5: two 5×5 convolutions (6, 16 channels, no padding) with 2×2 max-pooling, FC 120, 84.

    16 noise sites with BatchNorm, 12 without. Needs inputs of at least 16×16 (MNIST, CIFAR-10).
    """
    features = nn.Sequential(
        *_conv_block(input_shape[0], 6, 5, batchnorm=batchnorm, pool=True),
        *_conv_block(6, 16, 5, batchnorm=batchnorm, pool=True),
    )
    flat = _feature_size(features, input_shape, "lenet5")
    classifier = nn.Sequential(
        *_dense_block(flat, 120, batchnorm=batchnorm),
        *_dense_block(120, 84, batchnorm=batchnorm),
        nn.Linear(84, num_classes),
    )
    return ConvClassifier(features, classifier)


@register_model("cnn_s")
def cnn_s(input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool) -> nn.Module:
    """CNN-S of "Hello Edge" for keyword spotting on 1×10×49 MFCCs.

    Two convolutions with 4×10 kernels (28 and 30 channels; strides (1, 2) and (1, 1), no
    padding), FC 128, output layer. 11 noise sites with BatchNorm, 8 without.
    """
    features = nn.Sequential(
        *_conv_block(input_shape[0], 28, (4, 10), stride=(1, 2), batchnorm=batchnorm, pool=False),
        *_conv_block(28, 30, (4, 10), batchnorm=batchnorm, pool=False),
    )
    flat = _feature_size(features, input_shape, "cnn_s")
    classifier = nn.Sequential(
        *_dense_block(flat, 128, batchnorm=batchnorm),
        nn.Linear(128, num_classes),
    )
    return ConvClassifier(features, classifier)
