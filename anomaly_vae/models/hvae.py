"""Hierarchical VAE with two stochastic layers and ladder inference (Sønderby, Raiko,
Maaløe, Sønderby & Winther, "Ladder Variational Autoencoders", NeurIPS 2016).

Generative model, top down: p(z2) = N(0, I), p(z1 | z2) = N(mu_p(z2), var_p(z2)),
p(x | z1) the per-feature decoder likelihood of :class:`BaseVAE`.

Inference shares the generative top-down path: a deterministic bottom-up pass
d1 = MLP(x), d2 = MLP(d1) gives Gaussian estimates (mu_hat_i, var_hat_i) per layer;
q(z2 | x) = N(mu_hat_2, var_hat_2), and q(z1 | x, z2) is the precision-weighted
combination of the bottom-up estimate with the top-down prior p(z1 | z2):
var = 1 / (1/var_hat_1 + 1/var_p), mu = var * (mu_hat_1/var_hat_1 + mu_p/var_p).

Shapes: ``x (n, *input_shape)``; ``z1 (n, L, latent_dim)`` is what the decoder takes;
``z2 (n, L, top_latent_dim)``; Monte Carlo noise is ``(n, L, top_latent_dim + latent_dim)``,
the z2 draws first. KLs and log-densities are in nats per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from anomaly_vae.config import ModelConfig
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import register
from anomaly_vae.models.base import (
    BaseVAE,
    LatentSample,
    bounded_logvar,
    gaussian_kl,
    gaussian_log_density,
)
from anomaly_vae.nn import mlp

# z1's prior is a mixture over z2, with no closed-form moments: the views' grids are laid
# out in moments estimated from this many seeded draws of z2 (the same every call, so a
# view drawn twice is the same picture).
PRIOR_MOMENT_DRAWS = 4096


def precision_weighted(
    mu_a: Tensor, logvar_a: Tensor, mu_b: Tensor, logvar_b: Tensor
) -> tuple[Tensor, Tensor]:
    """The product of two diagonal Gaussians, renormalised: ``(mu, logvar)``.

    var = 1 / (1/var_a + 1/var_b) and mu = var * (mu_a/var_a + mu_b/var_b), computed in
    log-variance (logaddexp, sigmoid weights) so no variance is exponentiated on its own.
    Inputs broadcast against each other.
    """
    logvar = -torch.logaddexp(-logvar_a, -logvar_b)
    weight_a = torch.sigmoid(logvar_b - logvar_a)  # = precision_a / (precision_a + precision_b)
    return weight_a * mu_a + (1 - weight_a) * mu_b, logvar


@dataclass
class LadderPosterior:
    """Both layers of q for a batch, with the quantities the KLs and bounds need.

    Top layer, ``(n, top_latent_dim)``: ``mu2, logvar2`` of q(z2 | x); ``z2 (n, L, ·)``.
    Bottom layer, ``(n, latent_dim)``: ``up_mu1, up_logvar1``, the bottom-up estimate;
    ``(n, L, latent_dim)``: ``prior_mu1, prior_logvar1`` of p(z1 | z2) at each sampled z2,
    ``mu1, logvar1`` of q(z1 | x, z2), and the samples ``z1``.
    """

    mu2: Tensor
    logvar2: Tensor
    z2: Tensor
    up_mu1: Tensor
    up_logvar1: Tensor
    prior_mu1: Tensor
    prior_logvar1: Tensor
    mu1: Tensor
    logvar1: Tensor
    z1: Tensor

    def layer_kls(self) -> tuple[Tensor, Tensor]:
        """``(kl1, kl2)``, each ``(n,)``: KL(q(z1|x,z2) || p(z1|z2)) in closed form per
        sampled z2, averaged over the L samples; KL(q(z2|x) || N(0, I)) in closed form."""
        kl1 = gaussian_kl(self.mu1, self.logvar1, self.prior_mu1, self.prior_logvar1).mean(1)
        return kl1, gaussian_kl(self.mu2, self.logvar2)


@register("hvae")
class HierarchicalVAE(BaseVAE):
    """MLP ladder VAE on flattened inputs: z2 -> z1 -> x, inferred bottom up then top down.

    The bottom-up path uses ``hidden_dims`` up to d1 and one more layer of the last
    width for d2; the top-down prior p(z1 | z2) has one hidden layer of that width; the
    decoder from z1 mirrors ``hidden_dims`` as in the MLP VAE.
    """

    description = "Hierarchical VAE: two stochastic layers, ladder (top-down) inference"
    # The views' latent axes run over z1, whose prior is p(z1 | z2) with z2 ~ N(0, I).
    latent_prior_unit = "z1 prior standard deviations from its mean (z1 ~ p(z1 | z2))"
    data_kinds = ("table", "image")
    config_fields = (*BaseVAE.config_fields, "hidden_dims", "dropout", "top_latent_dim")

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: ModelConfig,
        binary_features: Tensor | None = None,
        condition_dim: int = 0,
    ) -> None:
        super().__init__(input_shape, config, binary_features, condition_dim)
        if not config.hidden_dims:
            raise ConfigError("hvae needs at least one hidden layer in model.hidden_dims")
        features = math.prod(self.input_shape)
        hidden = list(config.hidden_dims)
        width, top = hidden[-1], config.top_latent_dim
        self.top_latent_dim = top
        self.up1 = nn.Sequential(mlp(features, hidden[:-1], width, config.dropout), nn.SiLU())
        self.up2 = nn.Sequential(nn.Linear(width, width), nn.SiLU())
        self.head1 = nn.Linear(width, 2 * config.latent_dim)  # (mu_hat_1, logvar_hat_1)
        self.head2 = nn.Linear(width, 2 * top)  # (mu_hat_2, logvar_hat_2)
        self.prior1 = mlp(top, [width], 2 * config.latent_dim, config.dropout)
        self.decoder = mlp(config.latent_dim, hidden[::-1], features, config.dropout)

    @property
    def noise_dim(self) -> int:
        return self.top_latent_dim + self.latent_dim

    # -- the two paths -----------------------------------------------------------------------
    def bottom_up(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x (n, *input_shape)`` -> ``(mu_hat_1, logvar_hat_1, mu_hat_2, logvar_hat_2)``,
        ``(n, latent_dim)`` twice then ``(n, top_latent_dim)`` twice."""
        d1 = self.up1(x.flatten(1))
        d2 = self.up2(d1)
        mu1, raw1 = self.head1(d1).chunk(2, dim=-1)
        mu2, raw2 = self.head2(d2).chunk(2, dim=-1)
        return mu1, bounded_logvar(raw1), mu2, bounded_logvar(raw2)

    def prior_z1(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """``z2 (..., top_latent_dim)`` -> ``(mu_p, logvar_p)`` of p(z1 | z2), each
        ``(..., latent_dim)``."""
        mu, raw = self.prior1(z2).chunk(2, dim=-1)
        return mu, bounded_logvar(raw)

    def posterior(self, x: Tensor, noise: Tensor) -> LadderPosterior:
        """Sample z2 ~ q(z2 | x), then z1 ~ q(z1 | x, z2), with ``noise (n, L, noise_dim)``."""
        up_mu1, up_logvar1, mu2, logvar2 = self.bottom_up(x)
        noise2, noise1 = noise.split([self.top_latent_dim, self.latent_dim], dim=-1)
        z2 = self.reparameterize(mu2, logvar2, noise2)
        prior_mu1, prior_logvar1 = self.prior_z1(z2)
        mu1, logvar1 = precision_weighted(
            up_mu1.unsqueeze(1), up_logvar1.unsqueeze(1), prior_mu1, prior_logvar1
        )
        z1 = mu1 + torch.exp(0.5 * logvar1) * noise1
        return LadderPosterior(
            mu2, logvar2, z2, up_mu1, up_logvar1, prior_mu1, prior_logvar1, mu1, logvar1, z1
        )

    # -- the base interface ------------------------------------------------------------------
    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of q(z1 | x, z2) at z2 = the mean of q(z2 | x), each
        ``(n, latent_dim)``; its ``mu`` is also :meth:`latent_mean`."""
        up_mu1, up_logvar1, mu2, _ = self.bottom_up(x)
        return precision_weighted(up_mu1, up_logvar1, *self.prior_z1(mu2))

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)

    def output_bias(self) -> Tensor:
        return cast(nn.Linear, self.decoder[-1]).bias  # mlp() ends in a Linear

    def sample_latent(
        self, x: Tensor, noise: Tensor, condition: Tensor | None = None
    ) -> LatentSample:
        """z1 samples for the decoder; KL = KL(z2) + KL(z1 | z2) (see :meth:`layer_kls`);
        log-weights log p(z2) p(z1|z2) - log q(z2|x) q(z1|x,z2), ``(n, L)``."""
        q = self.posterior(x, noise)
        kl1, kl2 = q.layer_kls()
        zeros = torch.zeros_like(q.z2)
        log_weight = (
            gaussian_log_density(q.z2, zeros, zeros)
            + gaussian_log_density(q.z1, q.prior_mu1, q.prior_logvar1)
            - gaussian_log_density(q.z2, q.mu2.unsqueeze(1), q.logvar2.unsqueeze(1))
            - gaussian_log_density(q.z1, q.mu1, q.logvar1)
        )
        return LatentSample(q.z1, kl1 + kl2, log_weight)

    def layer_kls(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Per-layer KLs ``(kl1, kl2)``, each ``(n,)`` nats, for logging: the bottom layer's
        averaged over the L samples of z2 in ``noise (n, L, noise_dim)``."""
        return self.posterior(x, noise).layer_kls()

    @torch.no_grad()
    def latent_prior_moments(self) -> tuple[Tensor, Tensor]:
        """Mean ``(latent_dim,)`` and covariance ``(latent_dim, latent_dim)`` of z1's prior
        p(z1) = E_z2 p(z1 | z2): the decoder takes z1, whose prior is not N(0, I) (its
        spread is what training made of p(z1 | z2)). Cov = Cov(mu_p) + E[diag(var_p)],
        both over :data:`PRIOR_MOMENT_DRAWS` seeded draws of z2 ~ N(0, I)."""
        generator = torch.Generator().manual_seed(0)
        z2 = torch.randn(PRIOR_MOMENT_DRAWS, self.top_latent_dim, generator=generator)
        mu, logvar = self.prior_z1(z2)
        return mu.mean(0), torch.cov(mu.T).reshape(self.latent_dim, -1) + torch.diag(
            logvar.exp().mean(0)
        )

    @torch.no_grad()
    def generate(
        self, count: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Expected x for ``count`` ancestral draws z2 ~ N(0, I), z1 ~ p(z1 | z2)."""
        z2 = torch.randn(count, self.top_latent_dim, generator=generator)
        mu, logvar = self.prior_z1(z2)
        z1 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
        return self.mean_output(self.decode(z1))
