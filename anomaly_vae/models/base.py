"""BaseVAE: what every Gaussian-latent VAE variant shares, written once.

A variant implements ``encode`` and ``decode`` (and overrides a loss term only
where its objective differs). Everything else lives here: the reparameterisation,
the decoder likelihood, the closed-form KL, the training loss and the scores.

Shapes: ``x`` is ``(n, *input_shape)`` float32; latents are ``(n, latent_dim)``;
Monte Carlo noise is ``(n, L, latent_dim)``. Scores are ``(n,)`` with higher =
more anomalous; likelihood terms are in nats per row (summed over features).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from anomaly_vae.config import ModelConfig

LOG_2PI = math.log(2 * math.pi)
BERNOULLI_RATE_FLOOR = 1e-3  # initial decoder rates are kept in [1e-3, 1 - 1e-3]
VARIANCE_MOMENTUM = 0.1  # moving average of the calibrated decoder log-variance per step


class BaseVAE(nn.Module):
    """Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))), prior N(0, I).

    The decoder likelihood is chosen per feature: Gaussian with a learned
    per-feature variance for real-valued features, Bernoulli (decoder output =
    logit) for binary ones. ``binary_features`` marks the latter.
    """

    registry_name: ClassVar[str] = ""  # set by @register
    description: ClassVar[str] = ""  # one line, shown by `anomaly-vae models`
    data_kinds: ClassVar[tuple[str, ...]] = ()  # "table" and/or "image"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: ModelConfig,
        binary_features: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.config = config
        self.latent_dim = config.latent_dim
        flat_mask = torch.zeros(self.input_shape, dtype=torch.bool)
        if config.likelihood == "bernoulli":
            flat_mask[...] = True
        elif config.likelihood == "auto" and binary_features is not None:
            flat_mask = torch.as_tensor(binary_features, dtype=torch.bool).reshape(self.input_shape)
        # Not learned, but saved with the weights so a loaded model uses the same likelihood.
        self.register_buffer("bernoulli_mask", flat_mask)
        # One variance per feature makes the Gaussian ELBO a real likelihood (features the
        # model reconstructs poorly get wide variances instead of dominating the score).
        initial = torch.zeros(self.input_shape)
        if config.decoder_variance == "learned":
            self.decoder_log_variance = nn.Parameter(initial)
        else:  # "calibrated": set from the reconstruction error, not by gradient steps
            self.register_buffer("decoder_log_variance", initial)

    # -- the parts a variant provides ------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (n, *input_shape)`` -> ``(mu, logvar)``, each ``(n, latent_dim)``."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """``z (n, latent_dim)`` -> decoder output ``(n, *input_shape)``.

        Gaussian features: the mean; Bernoulli features: the logit.
        """
        raise NotImplementedError

    def output_bias(self) -> Tensor | None:
        """The decoder's final bias, ``(*input_shape)`` elements, if it has one per feature."""
        return None

    # -- shared machinery --------------------------------------------------------------------
    @torch.no_grad()
    def initialise_from_data(self, x: Tensor) -> None:
        """Start the decoder at the data mean: Gaussian features at their mean, Bernoulli
        features at the logit of their rate. A rare or constant 0/1 feature (a missing
        indicator, a one-hot category) then starts near its rate instead of at 50%,
        which gradient steps of size ~learning-rate would take thousands of steps to reach.
        """
        bias = self.output_bias()
        if bias is None:
            return
        mean = x.mean(0)
        rate = mean.clamp(BERNOULLI_RATE_FLOOR, 1 - BERNOULLI_RATE_FLOOR)
        start = torch.where(self.bernoulli_mask, torch.log(rate) - torch.log1p(-rate), mean)
        bias.copy_(start.reshape(bias.shape))

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
        """z = mu + sigma * noise. ``mu, logvar (n, k)``, ``noise (n, L, k)`` -> ``(n, L, k)``."""
        return mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * noise

    def log_variance(self) -> Tensor:
        """Decoder log-variance ``(*input_shape)``, floored at ``min_log_variance``."""
        return self.decoder_log_variance.clamp(min=self.config.min_log_variance)

    def _calibrated_log_variance(self, x: Tensor, output: Tensor) -> Tensor:
        """Per-feature maximum-likelihood log-variance of ``x`` around ``output``.

        The "calibrated decoder" of Rybkin et al. (sigma-VAE, ICML 2021): the optimal
        variance is the mean squared error, so it needs no slow gradient descent
        (Adam moves a log-variance by about the learning rate per step).
        """
        error = (x.expand_as(output) - output).pow(2)
        per_feature = error.reshape(-1, *self.input_shape).mean(0)
        return torch.log(per_feature + 1e-12).clamp(min=self.config.min_log_variance)

    @torch.no_grad()
    def calibrate_decoder(self, x: Tensor, noise: Tensor) -> None:
        """Set the calibrated decoder variance from rows ``x`` (one z per row in ``noise``).

        Called once after training on the training rows; no-op for a learned variance.
        """
        if self.config.decoder_variance != "calibrated":
            return
        mu, logvar = self.encode(x)
        output = self._decode_samples(self.reparameterize(mu, logvar, noise))
        self.decoder_log_variance.copy_(self._calibrated_log_variance(x.unsqueeze(1), output))

    def reconstruction_nll(self, x: Tensor, output: Tensor, logvar: Tensor | None = None) -> Tensor:
        """-log p(x | z) summed over features. ``x`` broadcasts against ``output (..., *shape)``.

        ``logvar`` defaults to the decoder's stored log-variance. Returns
        ``output.shape[:-len(input_shape)]``, in nats.
        """
        x = x.expand_as(output)
        logvar = self.log_variance() if logvar is None else logvar
        gaussian = 0.5 * (LOG_2PI + logvar + (x - output) ** 2 * torch.exp(-logvar))
        bernoulli = F.binary_cross_entropy_with_logits(output, x, reduction="none")
        per_feature = torch.where(self.bernoulli_mask, bernoulli, gaussian)
        return per_feature.flatten(start_dim=output.dim() - len(self.input_shape)).sum(-1)

    @staticmethod
    def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) in closed form, ``(n,)`` nats."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)

    def kl_weight(self) -> float:
        """The weight of the KL term in the training loss (beta)."""
        return self.config.beta

    def loss_terms(self, x: Tensor, noise: Tensor | None = None) -> dict[str, Tensor]:
        """Training objective on a batch, one z sample per row unless ``noise`` says more.

        Returns batch means: ``loss`` (reconstruction + beta * KL, what is minimised),
        ``reconstruction`` (-log p(x|z)) and ``kl``.
        """
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn(x.shape[0], 1, self.latent_dim, device=x.device)
        z = self.reparameterize(mu, logvar, noise)
        output = self._decode_samples(z)
        decoder_logvar = None
        if self.training and self.config.decoder_variance == "calibrated":
            # This batch's optimal variance for its loss; a moving average for evaluation.
            decoder_logvar = self._calibrated_log_variance(x.unsqueeze(1), output.detach())
            with torch.no_grad():
                self.decoder_log_variance.lerp_(decoder_logvar, VARIANCE_MOMENTUM)
        reconstruction = self.reconstruction_nll(x.unsqueeze(1), output, decoder_logvar).mean(1)
        kl = self.kl_divergence(mu, logvar)
        loss = reconstruction + self.kl_weight() * kl
        return {"loss": loss.mean(), "reconstruction": reconstruction.mean(), "kl": kl.mean()}

    def _decode_samples(self, z: Tensor) -> Tensor:
        """``z (n, L, k)`` -> outputs ``(n, L, *input_shape)`` in one decoder pass."""
        n, samples, _ = z.shape
        return self.decode(z.reshape(n * samples, -1)).reshape(n, samples, *self.input_shape)

    def mean_output(self, output: Tensor) -> Tensor:
        """Decoder output -> expected x (Bernoulli logits become probabilities)."""
        return torch.where(self.bernoulli_mask, torch.sigmoid(output), output)

    # -- scores (higher = more anomalous) ----------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Expected reconstruction at z = mu, ``(n, *input_shape)``."""
        mu, _ = self.encode(x)
        return self.mean_output(self.decode(mu))

    @torch.no_grad()
    def scores(self, x: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """Every score of ``x`` at once, each ``(n,)``, higher = more anomalous.

        - ``reconstruction_error``: mean squared error of the reconstruction at z = mu,
          in (scaled) feature units squared;
        - ``negative_elbo``: -ELBO in nats, reconstruction term averaged over the
          ``L = noise.shape[1]`` samples of z, KL in closed form;
        - ``negative_iwae_bound``: -log (1/L) sum_l p(x, z_l) / q(z_l | x), the
          importance-weighted bound on -log p(x) from the same samples (tighter
          than the ELBO).
        """
        mu, logvar = self.encode(x)
        reconstruction = self.mean_output(self.decode(mu))
        error = (x - reconstruction).pow(2).flatten(1).mean(1)
        z = self.reparameterize(mu, logvar, noise)
        nll = self.reconstruction_nll(x.unsqueeze(1), self._decode_samples(z))  # (n, L)
        kl = self.kl_divergence(mu, logvar)
        log_prior = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_posterior = -0.5 * (noise.pow(2) + LOG_2PI + logvar.unsqueeze(1)).sum(-1)
        log_weights = -nll + log_prior - log_posterior
        iwae = torch.logsumexp(log_weights, dim=1) - math.log(noise.shape[1])
        return {
            "reconstruction_error": error,
            "negative_elbo": nll.mean(1) + kl,
            "negative_iwae_bound": -iwae,
        }
