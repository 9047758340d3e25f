"""Conditional VAE (Sohn, Lee & Yan, "Learning Structured Output Representation
using Deep Conditional Generative Models", NeurIPS 2015).

A row is modelled given its context c: q(z | x, c), p(x | z, c), prior N(0, I).
For tables the context is ``data.condition_columns`` (e.g. a machine id or the hour
of day), so a row is anomalous when it is unusual *for its context*; for images it
is the class label.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from anomaly_vae.config import ModelConfig
from anomaly_vae.models import register
from anomaly_vae.models.base import BaseVAE, bounded_logvar
from anomaly_vae.nn import mlp


@register("cvae")
class ConditionalVAE(BaseVAE):
    """MLP encoder and decoder that both take the condition vector as extra input."""

    description = "Conditional VAE: scores a row given its context columns (or image class)"
    data_kinds = ("table", "image")
    uses_condition = True
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
        self.encoder = mlp(features + condition_dim, hidden, 2 * config.latent_dim, config.dropout)
        self.decoder = mlp(
            config.latent_dim + condition_dim, hidden[::-1], features, config.dropout
        )

    def _with_condition(self, values: Tensor, condition: Tensor | None) -> Tensor:
        if self.condition_dim == 0:
            return values
        if condition is None:
            raise ValueError(f"cvae needs a condition of size {self.condition_dim} per row")
        return torch.cat([values, condition], dim=1)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(self._with_condition(x.flatten(1), condition)).chunk(2, dim=-1)
        return mu, bounded_logvar(logvar)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(self._with_condition(z, condition)).reshape(
            z.shape[0], *self.input_shape
        )

    def output_bias(self) -> Tensor:
        return cast(nn.Linear, self.decoder[-1]).bias  # mlp() ends in a Linear
