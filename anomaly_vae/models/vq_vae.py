"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation
Learning", NeurIPS 2017).

The encoder output is snapped to its nearest vector in a learned codebook of
``codebook_size`` (K) codes of size ``latent_dim`` (D): ``code_slots`` (S) vectors
per table row, one per spatial position of the encoder's feature map for images.
The decoder sees the quantized vectors; gradients pass the quantization straight
through to the encoder. The codebook is learned by exponential moving averages (the
paper's appendix A.1), not by gradients, and codes left unused are restarted on
encoder outputs (Dhariwal et al., "Jukebox", 2020) so that the codebook is used.

Shapes: ``x (n, *input_shape)``; encoder vectors ``(n, S, D)``; the latent the
decoder takes is their flattening ``(n, S * D)``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from anomaly_vae.config import ModelConfig
from anomaly_vae.models import register
from anomaly_vae.models.base import (
    SHARED_CONFIG_FIELDS,
    VARIANCE_MOMENTUM,
    BaseVAE,
    LatentSample,
    trimmed_mean,
)
from anomaly_vae.nn import conv_decoder, conv_encoder, downsampled_shape, mlp

LAPLACE_EPSILON = 1e-5  # smoothing of the EMA code counts (as in Sonnet's VectorQuantizerEMA):
# keeps the division by a count finite for codes that are never chosen
DEAD_CODE_USAGE = 0.1  # a code is restarted when its EMA share of the encoder vectors falls
# below this fraction of the uniform share 1/K. The EMA only moves codes that are chosen, so
# an unchosen code would never come back to the data by itself; a tenth of uniform use is
# rare enough to spare codes of rare but normal patterns, and independent of the batch size


@register("vq-vae")
class VQVAE(BaseVAE):
    """Deterministic encoder, a codebook of K vectors, and a decoder of the quantized latent.

    Tables: MLP encoder to ``code_slots * latent_dim`` values, mirrored MLP decoder.
    Images: the stride-2 convolutions of ``conv_channels``, then a 1x1 convolution to
    ``latent_dim`` channels, quantized at every position; the decoder mirrors it.

    The codebook starts at small uniform values in ±1/K (the usual choice of reference
    implementations); at the first training step every code the first batch does not
    choose is restarted on one of that batch's encoder outputs, so in effect the
    codebook is initialised from data, on the encoder's own scale.
    """

    description = "VQ-VAE: discrete codebook latent; code_distance in place of the IWAE bound"
    data_kinds = ("table", "image")
    score_names = ("reconstruction_error", "negative_elbo", "code_distance")
    continuous_latent = False  # a discrete codebook: nothing to traverse between codes
    # Not "beta": kl_weight is the commitment cost. Tables read hidden_dims, dropout and
    # code_slots, images conv_channels.
    config_fields = (
        *SHARED_CONFIG_FIELDS,
        "hidden_dims",
        "dropout",
        "code_slots",
        "conv_channels",
        "codebook_size",
        "commitment_cost",
        "codebook_decay",
    )

    codebook: Tensor
    ema_count: Tensor
    ema_sum: Tensor

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
        size, dim = config.codebook_size, config.latent_dim
        self.is_image = len(self.input_shape) == 3
        if self.is_image:
            channels = list(config.conv_channels)
            self.feature_shape = downsampled_shape(self.input_shape, channels)
            self.slots = self.feature_shape[1] * self.feature_shape[2]
            self.encoder = nn.Sequential(
                conv_encoder(self.input_shape[0], channels), nn.Conv2d(channels[-1], dim, 1)
            )
            self.decoder = nn.Sequential(
                nn.Conv2d(dim, channels[-1], 1),
                nn.SiLU(),
                conv_decoder(channels, self.input_shape[0]),
            )
            # Transposed convolutions have one bias per channel; this lets the decoder
            # start at the mean image (see initialise_from_data).
            self.pixel_bias = nn.Parameter(torch.zeros(self.input_shape))
        else:
            features, hidden = math.prod(self.input_shape), list(config.hidden_dims)
            self.slots = config.code_slots
            self.encoder = mlp(features, hidden, self.slots * dim, config.dropout)
            self.decoder = mlp(self.slots * dim, hidden[::-1], features, config.dropout)
        # Buffers, not parameters: the EMA updates them, and they save with the weights.
        self.register_buffer("codebook", torch.empty(size, dim).uniform_(-1 / size, 1 / size))
        # Zero-initialised EMAs need no bias correction: the codebook is their ratio.
        self.register_buffer("ema_count", torch.zeros(size))
        self.register_buffer("ema_sum", torch.zeros(size, dim))

    @property
    def noise_dim(self) -> int:
        """0: the posterior is deterministic, so no Gaussian noise is drawn."""
        return 0

    def kl_weight(self) -> float:
        """The weight of the commitment term, which the ``kl`` slot holds for VQ-VAE."""
        return self.config.commitment_cost

    # -- encoder, quantizer, decoder -----------------------------------------------------------
    def encode_vectors(self, x: Tensor) -> Tensor:
        """``x (n, *input_shape)`` -> encoder outputs z_e ``(n, S, D)`` (before quantization)."""
        if self.is_image:
            return self.encoder(x).flatten(2).transpose(1, 2)  # positions in row-major order
        return self.encoder(x.flatten(1)).reshape(x.shape[0], self.slots, self.latent_dim)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Nearest codes of ``z_e (n, S, D)``: indices ``(n, S)``, quantized vectors
        ``(n, S, D)`` (no gradient) and squared Euclidean distances ``(n, S)``."""
        flat = z_e.detach().reshape(-1, self.latent_dim)
        # |z|^2 is the same for every code, so it does not change the argmin.
        distances = self.codebook.pow(2).sum(1) - 2 * flat @ self.codebook.T
        codes = distances.argmin(1).reshape(z_e.shape[:2])
        z_q = self.codebook[codes]
        return codes, z_q, (z_e.detach() - z_q).pow(2).sum(-1)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z_e, zeros)``, each ``(n, S * D)``: the encoder output before quantization and a
        log-variance of zeros, so generic code expecting a Gaussian ``(mu, logvar)`` runs.
        The latent the decoder takes is :meth:`latent_mean`."""
        z_e = self.encode_vectors(x).flatten(1)
        return z_e, torch.zeros_like(z_e)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Quantized latent ``z (n, S * D)`` -> decoder output ``(n, *input_shape)``."""
        if self.is_image:
            _, height, width = self.feature_shape
            grid = z.reshape(-1, height, width, self.latent_dim).permute(0, 3, 1, 2)
            return self.decoder(grid) + self.pixel_bias
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)

    def output_bias(self) -> Tensor:
        if self.is_image:
            return self.pixel_bias
        return cast(nn.Linear, self.decoder[-1]).bias  # mlp() ends in a Linear

    def latent_mean(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """The quantized latent, ``(n, S * D)``."""
        return self.quantize(self.encode_vectors(x))[1].flatten(1)

    def prior_kl(self, n: int) -> Tensor:
        """KL(q(z|x) || uniform prior over codes), ``(n,)`` nats: log K per quantized vector.

        q is one-hot (deterministic), so the KL is the constant log K (paper, section 3.1).
        """
        kl = self.slots * math.log(self.config.codebook_size)
        return torch.full((n,), kl, device=self.codebook.device)

    def sample_latent(
        self, x: Tensor, noise: Tensor, condition: Tensor | None = None
    ) -> LatentSample:
        """Every "sample" is the quantized latent (``noise`` only sets how many)."""
        n, samples = x.shape[0], noise.shape[1]
        z = self.latent_mean(x).unsqueeze(1).expand(n, samples, -1)
        kl = self.prior_kl(n)
        return LatentSample(z, kl, -kl.unsqueeze(1).expand(n, samples))

    @torch.no_grad()
    def generate(
        self, count: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Expected x for codes drawn from the uniform prior, ``(count, *input_shape)``."""
        size = self.config.codebook_size
        codes = torch.randint(size, (count, self.slots), generator=generator)
        z = self.codebook[codes.to(self.codebook.device)].flatten(1)
        return self.mean_output(self.decode(z))

    # -- training ------------------------------------------------------------------------------
    @torch.no_grad()
    def update_codebook(self, vectors: Tensor, codes: Tensor) -> None:
        """One EMA step of the codebook towards the mean of the encoder ``vectors (N, D)``
        assigned to each code (``codes (N,)``), then restarts of the codes used too rarely."""
        size, decay = self.config.codebook_size, self.config.codebook_decay
        counts = torch.bincount(codes, minlength=size).to(vectors.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, vectors)
        self.ema_count.lerp_(counts, 1 - decay)
        self.ema_sum.lerp_(sums, 1 - decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + LAPLACE_EPSILON) / (total + size * LAPLACE_EPSILON) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        floor = DEAD_CODE_USAGE * total / size
        dead = self.ema_count < floor
        if dead.any():
            picks = vectors[torch.randint(len(vectors), (int(dead.sum()),), device=vectors.device)]
            self.codebook[dead] = picks
            # Restarted at the floor: a code still unchosen next step is redrawn at once, and
            # a chosen one moves quickly to the mean of its vectors (little EMA mass to move).
            self.ema_count[dead] = floor
            self.ema_sum[dead] = picks * floor

    def loss_terms(
        self, x: Tensor, noise: Tensor | None = None, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Batch means of ``loss`` = ``reconstruction`` + commitment_cost * ``kl`` (without
        the ``trim_fraction`` rows of largest loss), ``reconstruction`` and ``kl``.

        ``reconstruction`` is -log p(x | z_q) in nats; ``kl`` holds, for VQ-VAE, the
        commitment term ||z_e - sg(e)||^2 summed over the S * D latent elements of a
        row (the name keeps the logs uniform across variants). ``noise`` is ignored.
        In training mode this also updates the codebook (EMA) and the calibrated decoder
        variance; in eval mode it changes nothing.
        """
        z_e = self.encode_vectors(x)
        codes, z_q, _ = self.quantize(z_e)
        # Straight-through estimator: the forward pass uses z_q, the backward pass copies
        # the decoder input's gradient to z_e (the nearest-code lookup has no gradient).
        output = self.decode((z_e + (z_q - z_e).detach()).flatten(1))
        commitment = (z_e - z_q).pow(2).sum((1, 2))
        decoder_logvar = None
        if self.training:
            self.update_codebook(z_e.detach().reshape(-1, self.latent_dim), codes.flatten())
            if self.config.decoder_variance == "calibrated":
                # This batch's optimal variance for its loss; a moving average for evaluation.
                decoder_logvar = self._calibrated_log_variance(x, output.detach())
                with torch.no_grad():
                    self.decoder_log_variance.lerp_(decoder_logvar, VARIANCE_MOMENTUM)
        reconstruction = self.reconstruction_nll(x, output, decoder_logvar)
        loss = self.objective(reconstruction, commitment)
        return {
            "loss": trimmed_mean(loss, self.trim_fraction),
            "reconstruction": reconstruction.mean(),
            "kl": commitment.mean(),
        }

    def _calibration_reconstruction(
        self, x: Tensor, noise: Tensor, condition: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(x, its quantized reconstruction)`` for :meth:`calibrate_decoder` (``noise`` is
        ignored: nothing is sampled)."""
        return x, self.decode(self.latent_mean(x))

    # -- scores (higher = more anomalous) ------------------------------------------------------
    @torch.no_grad()
    def scores(
        self, x: Tensor, noise: Tensor, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Every score of ``x`` at once, each ``(n,)``, higher = more anomalous; deterministic
        (``noise``, of any shape, is ignored).

        - ``reconstruction_error``: mean squared error of the reconstruction from the
          quantized latent, in (scaled) feature units squared;
        - ``negative_elbo``: -log p(x | z_q) in nats plus the KL to the uniform prior over
          codes, S * log K (a constant, see :meth:`prior_kl`);
        - ``code_distance``: squared Euclidean distance from each encoder vector to its
          nearest code, averaged over the S vectors of the row (latent units squared).
        """
        _, z_q, distances = self.quantize(self.encode_vectors(x))
        output = self.decode(z_q.flatten(1))
        error = F.mse_loss(self.mean_output(output), x, reduction="none").flatten(1).mean(1)
        return {
            "reconstruction_error": error,
            "negative_elbo": self.reconstruction_nll(x, output) + self.prior_kl(x.shape[0]),
            "code_distance": distances.mean(1),
        }
