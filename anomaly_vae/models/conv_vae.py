"""Convolutional VAE for images (the convolutional encoder/decoder of DCGAN-style
VAEs; Kingma & Welling 2014 for the objective)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from anomaly_vae.config import ModelConfig
from anomaly_vae.models import register
from anomaly_vae.models.base import BaseVAE, bounded_logvar
from anomaly_vae.nn import conv_decoder, conv_encoder, downsampled_shape


@register("conv-vae")
class ConvVAE(BaseVAE):
    """Stride-2 convolutions down to a small feature map, a linear layer to the latent,
    and the mirror image back. Images of 1 or 3 channels whose sides divide by
    ``2 ** len(conv_channels)``."""

    description = "Convolutional VAE for images (1 or 3 channels)"
    data_kinds = ("image",)
    config_fields = (*BaseVAE.config_fields, "conv_channels")  # no MLP: not hidden_dims

    @classmethod
    def image_side_multiple(cls, config: ModelConfig) -> int:
        return 2 ** len(config.conv_channels)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: ModelConfig,
        binary_features: Tensor | None = None,
        condition_dim: int = 0,
    ) -> None:
        super().__init__(input_shape, config, binary_features, condition_dim)
        self.feature_shape = downsampled_shape(self.input_shape, config.conv_channels)
        flat = math.prod(self.feature_shape)
        self.encoder = nn.Sequential(
            conv_encoder(self.input_shape[0], config.conv_channels),
            nn.Flatten(),
            nn.Linear(flat, 2 * config.latent_dim),
        )
        self.decoder_input = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.SiLU())
        self.decoder = conv_decoder(config.conv_channels, self.input_shape[0])
        # A per-pixel bias lets the decoder start at the mean image (transposed
        # convolutions only have one bias per channel).
        self.pixel_bias = nn.Parameter(torch.zeros(self.input_shape))

    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, bounded_logvar(logvar)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        features = self.decoder_input(z).reshape(z.shape[0], *self.feature_shape)
        return self.decoder(features) + self.pixel_bias

    def output_bias(self) -> Tensor:
        return self.pixel_bias
