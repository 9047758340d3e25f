"""MLP VAE (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014)."""

from __future__ import annotations

import math
from typing import cast

from torch import Tensor, nn

from anomaly_vae.config import ModelConfig
from anomaly_vae.models import register
from anomaly_vae.models.base import BaseVAE, bounded_logvar
from anomaly_vae.nn import mlp


@register("vae")
class MLPVAE(BaseVAE):
    """Fully connected encoder and mirrored decoder; inputs are flattened."""

    description = "MLP VAE: fully connected Gaussian encoder/decoder"
    data_kinds = ("table", "image")
    config_fields = (*BaseVAE.config_fields, "hidden_dims", "dropout")

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: ModelConfig,
        binary_features: Tensor | None = None,
        condition_dim: int = 0,
    ) -> None:
        super().__init__(input_shape, config, binary_features, condition_dim)
        features = math.prod(self.input_shape)
        hidden = list(config.hidden_dims)
        self.encoder = mlp(features, hidden, 2 * config.latent_dim, config.dropout)
        self.decoder = mlp(config.latent_dim, hidden[::-1], features, config.dropout)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, bounded_logvar(logvar)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)

    def output_bias(self) -> Tensor:
        return cast(nn.Linear, self.decoder[-1]).bias  # mlp() ends in a Linear
