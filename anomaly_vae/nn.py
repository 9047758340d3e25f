"""Network building blocks (architecture only, no objective)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn


def mlp(
    in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0
) -> nn.Sequential:
    """Linear -> SiLU (-> Dropout) blocks, then a final Linear with no activation.

    Input ``(..., in_features)``, output ``(..., out_features)``.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def conv_encoder(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """Stride-2 4x4 convolutions with SiLU.

    ``(n, C, H, W)`` -> ``(n, channels[-1], H / 2^k, W / 2^k)`` for ``k = len(channels)``.
    """
    layers: list[nn.Module] = []
    width = in_channels
    for size in channels:
        layers += [nn.Conv2d(width, size, kernel_size=4, stride=2, padding=1), nn.SiLU()]
        width = size
    return nn.Sequential(*layers)


def conv_decoder(channels: Sequence[int], out_channels: int) -> nn.Sequential:
    """Mirror of :func:`conv_encoder` for the same ``channels``: ``(n, channels[-1], h, w)``
    -> ``(n, out_channels, h * 2^k, w * 2^k)``; no activation on the output."""
    layers: list[nn.Module] = []
    widths = [*reversed(channels), out_channels]
    for index, (width, size) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.ConvTranspose2d(width, size, kernel_size=4, stride=2, padding=1))
        if index < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def downsampled_shape(input_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    """Shape ``(channels[-1], H / 2^k, W / 2^k)`` after :func:`conv_encoder`.

    Raises ConfigError when the image size does not divide by the total stride.
    """
    from anomaly_vae.errors import ConfigError

    if len(input_shape) != 3:
        raise ConfigError(
            f"convolutional models need (channels, height, width) inputs, got {tuple(input_shape)}"
        )
    _, height, width = input_shape
    stride = 2 ** len(channels)
    if height % stride or width % stride:
        raise ConfigError(
            f"image size {height}x{width} does not divide by the total stride {stride} of "
            f"model.conv_channels={list(channels)}; use fewer layers or resize the images"
        )
    return channels[-1], height // stride, width // stride
