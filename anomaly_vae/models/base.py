"""BaseVAE: what every VAE variant shares, written once.

A variant implements ``encode`` and ``decode`` (and overrides a loss term only
where its objective differs). Everything else lives here: the reparameterisation,
the decoder likelihood, the closed-form KL, the training loss and the scores.

Shapes: ``x`` is ``(n, *input_shape)`` float32; ``condition`` (conditional
variants only) is ``(n, condition_dim)``; latents are ``(n, latent_dim)``; Monte
Carlo noise is ``(n, L, noise_dim)``. Scores are ``(n,)`` with higher = more
anomalous; likelihood terms are in nats per row (summed over features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from anomaly_vae.config import (
    IMAGE_MIN_LOG_VARIANCE,
    TABLE_MIN_LOG_VARIANCE,
    TABLE_TRIM_FRACTION,
    ModelConfig,
)

LOG_2PI = math.log(2 * math.pi)
BERNOULLI_RATE_FLOOR = 1e-3  # initial decoder rates are kept in [1e-3, 1 - 1e-3]
VARIANCE_MOMENTUM = 0.1  # moving average of the calibrated decoder log-variance per step
CALIBRATION_BATCH_ROWS = 65_536  # rows decoded at a time by calibrate_decoder: bounds the
# memory of the network's activations whatever the number of training rows
TRIM_BLOCK_VALUES = 1 << 22  # values a trimmed mean over rows takes at a time (its topk
# holds about 48 MB for them)
SHARED_CONFIG_FIELDS = (  # the ModelConfig fields every variant reads through this class
    # (likelihood, decoder variance, trimmed loss) or the detector (quantisation floor)
    "name",
    "latent_dim",
    "likelihood",
    "decoder_variance",
    "min_log_variance",
    "quantisation_floor",
    "trim_fraction",
)


LOGVAR_LIMIT = 8.0  # Gaussian log-variances are squashed softly into (-8, 8): variances
# within e^±8 (std 0.018 to 55) keep exp(logvar) and exp(-logvar) finite even for
# inputs far outside the training data; tanh keeps a gradient where a clamp would not


def bounded_logvar(raw: Tensor) -> Tensor:
    """Map a network output to a log-variance in (-LOGVAR_LIMIT, LOGVAR_LIMIT), about
    the identity near 0."""
    return LOGVAR_LIMIT * torch.tanh(raw / LOGVAR_LIMIT)


@dataclass
class LatentSample:
    """Samples of the latent(s) for a batch, with what the ELBO and IWAE need.

    ``z (n, L, k)`` is what the decoder takes; ``kl (n,)`` is KL(q || p) in nats
    (closed form where possible); ``log_weight_latent (n, L)`` is
    log p(z) - log q(z | x) at each sample, for the importance-weighted bound.
    """

    z: Tensor
    kl: Tensor
    log_weight_latent: Tensor


def trimmed_mean(values: Tensor, fraction: float, dim: int = 0) -> Tensor:
    """Mean over ``dim`` without the ``fraction`` largest entries (at least one is kept);
    the plain mean when ``fraction`` is 0.

    >>> trimmed_mean(torch.tensor([1.0, 2.0, 3.0, 100.0]), 0.25).item()
    2.0
    """
    count = values.shape[dim]
    keep = max(1, math.ceil((1 - fraction) * count - 1e-9))
    if keep >= count:
        return values.mean(dim)
    return torch.topk(values, keep, dim=dim, largest=False, sorted=False).values.mean(dim)


def trimmed_mean_by_columns(values: Tensor, fraction: float) -> Tensor:
    """:func:`trimmed_mean` over dim 0 of ``values (n, *shape)``, ``shape`` out, taken a
    block of columns at a time (``TRIM_BLOCK_VALUES`` values): topk returns 95% of what it
    is given, with int64 indices, 3 times its input (0.57 GB for the 750,000 x 66 squared
    errors of a 1,000,000-row table). A block's result is the float rounding of the whole
    one's, which it is when the values fit one block."""
    flat = values.reshape(values.shape[0], -1)
    width = max(1, TRIM_BLOCK_VALUES // max(1, flat.shape[0]))
    if width >= flat.shape[1] or fraction <= 0:  # a plain mean holds no copy
        return trimmed_mean(values, fraction)
    blocks = [
        trimmed_mean(flat[:, j : j + width], fraction) for j in range(0, flat.shape[1], width)
    ]
    return torch.cat(blocks).reshape(values.shape[1:])


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def gaussian_kl(
    mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None, prior_logvar: Tensor | None = None
) -> Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) summed over the last dim.

    The prior defaults to N(0, I).
    """
    if prior_mu is None or prior_logvar is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return 0.5 * (
        prior_logvar
        - logvar
        + (logvar.exp() + (mu - prior_mu).pow(2)) * torch.exp(-prior_logvar)
        - 1.0
    ).sum(-1)


class BaseVAE(nn.Module):
    """Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))), prior N(0, I).

    The decoder likelihood is chosen per feature: Gaussian with one variance per
    feature for real-valued features, Bernoulli (decoder output = logit) for binary
    ones. ``binary_features`` marks the latter.
    """

    registry_name: ClassVar[str] = ""  # set by @register
    description: ClassVar[str] = ""  # one line, shown by `anomaly-vae models`
    data_kinds: ClassVar[tuple[str, ...]] = ()  # "table" and/or "image"
    uses_condition: ClassVar[bool] = False  # True: encode/decode take a condition vector
    continuous_latent: ClassVar[bool] = True  # False: no manifold, traversal or interpolation
    # What a step of 1 along a latent axis of the views is (latent_prior_moments): here a
    # standard deviation of the N(0, I) prior; a variant whose decoder latent has another
    # prior says what its steps are.
    latent_prior_unit: ClassVar[str] = "prior standard deviations"
    # The ModelConfig fields this variant reads; a run logs only these model.* settings as
    # MLflow parameters, so a reviewer comparing runs sees no setting that had no effect.
    # A variant adds what its own code reads; "beta" is read by kl_weight below.
    config_fields: ClassVar[tuple[str, ...]] = (*SHARED_CONFIG_FIELDS, "beta")
    score_names: ClassVar[tuple[str, ...]] = (
        "reconstruction_error",
        "negative_elbo",
        "negative_iwae_bound",
    )

    # Registered in __init__; declared so they type as tensors, not Tensor | Module.
    bernoulli_mask: Tensor
    log_variance_floor: Tensor
    decoder_log_variance: Tensor  # an nn.Parameter when learned, else a buffer

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: ModelConfig,
        binary_features: Tensor | None = None,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.config = config
        self.latent_dim = config.latent_dim
        self.condition_dim = condition_dim
        mask = torch.zeros(self.input_shape, dtype=torch.bool)
        if config.likelihood == "bernoulli":
            mask[...] = True
        elif config.likelihood == "auto" and binary_features is not None:
            mask = torch.as_tensor(binary_features, dtype=torch.bool).reshape(self.input_shape)
        # Not learned, but saved with the weights so a loaded model uses the same likelihood.
        self.register_buffer("bernoulli_mask", mask)
        # Per-feature floor of the decoder log-variance; tables raise it where the data are
        # quantised (set_feature_steps). Rebuilt from the saved schema, not saved itself.
        self.register_buffer(
            "log_variance_floor",
            torch.full(self.input_shape, self.min_log_variance),
            persistent=False,
        )
        # One variance per feature makes the Gaussian ELBO a real likelihood (features the
        # model reconstructs poorly get wide variances instead of dominating the score).
        initial = torch.zeros(self.input_shape)
        if config.decoder_variance == "learned":
            self.decoder_log_variance = nn.Parameter(initial)
        else:  # "calibrated": set from the reconstruction error, not by gradient steps
            self.register_buffer("decoder_log_variance", initial)

    @torch.no_grad()
    def set_feature_steps(self, steps: Tensor) -> None:
        """Floor each feature's decoder variance at ``step^2 / 12`` (the variance of a
        uniform over one quantisation step), never below ``min_log_variance``.

        ``steps`` is ``(*input_shape)`` in the model's (scaled) units; 0 = no step known.
        Dequantising so keeps a Gaussian from putting unbounded density on the few values
        an integer-coded feature takes (Theis et al., ICLR 2016).
        """
        steps = steps.reshape(self.input_shape).to(self.log_variance_floor)
        floor = torch.log(steps.pow(2) / 12).nan_to_num(neginf=self.min_log_variance)
        self.log_variance_floor.copy_(floor.clamp(min=self.min_log_variance))

    @classmethod
    def image_side_multiple(cls, config: ModelConfig) -> int:
        """Image sides (after pooling) must divide by this (the total conv stride)."""
        return 1

    # -- the parts a variant provides ------------------------------------------------------
    def encode(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (n, *input_shape)`` -> ``(mu, logvar)``, each ``(n, latent_dim)``."""
        raise NotImplementedError

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``z (n, latent_dim)`` -> decoder output ``(n, *input_shape)``.

        Gaussian features: the mean; Bernoulli features: the logit.
        """
        raise NotImplementedError

    def output_bias(self) -> Tensor | None:
        """The decoder's final bias, ``(*input_shape)`` elements, if it has one per feature."""
        return None

    @property
    def min_log_variance(self) -> float:
        """``model.min_log_variance``, with None resolved: ``TABLE_MIN_LOG_VARIANCE`` for
        tables, ``IMAGE_MIN_LOG_VARIANCE`` for images."""
        if self.config.min_log_variance is not None:
            return float(self.config.min_log_variance)
        return TABLE_MIN_LOG_VARIANCE if len(self.input_shape) == 1 else IMAGE_MIN_LOG_VARIANCE

    @property
    def trim_fraction(self) -> float:
        """``model.trim_fraction``, with None resolved: ``TABLE_TRIM_FRACTION`` for tables,
        0 for images."""
        if self.config.trim_fraction is not None:
            return self.config.trim_fraction
        return TABLE_TRIM_FRACTION if len(self.input_shape) == 1 else 0.0

    @property
    def noise_dim(self) -> int:
        """Standard-normal draws per Monte Carlo sample (the last dim of ``noise``)."""
        return self.latent_dim

    # -- hooks for variants with schedules ---------------------------------------------------
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before each epoch (1-based) of at most ``epochs``."""

    @property
    def schedule_finished(self) -> bool:
        """False while a training schedule (e.g. KL warm-up) still changes the loss,
        so that early stopping does not compare losses of different objectives."""
        return True

    @property
    def schedule_epochs(self) -> int:
        """The first epoch (1-based) at which ``schedule_finished`` holds; 1 without a schedule."""
        return 1

    @property
    def schedule_fields(self) -> tuple[str, ...]:
        """The ModelConfig fields that set ``schedule_epochs``: the training loop names them
        when the epoch limit ends training before the schedule has finished."""
        return ()

    def kl_weight(self) -> float:
        """The weight of the KL term in the training loss (beta)."""
        return self.config.beta

    def objective(self, reconstruction: Tensor, kl: Tensor) -> Tensor:
        """Per-row training loss from the reconstruction NLL and the KL, ``(n,)``."""
        return reconstruction + self.kl_weight() * kl

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

    def sample_latent(
        self, x: Tensor, noise: Tensor, condition: Tensor | None = None
    ) -> LatentSample:
        """Draw z ~ q(z | x) with the given noise; the KL and importance weights with it."""
        mu, logvar = self.encode(x, condition)
        z = self.reparameterize(mu, logvar, noise)
        log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        log_posterior = gaussian_log_density(z, mu.unsqueeze(1), logvar.unsqueeze(1))
        return LatentSample(z, gaussian_kl(mu, logvar), log_prior - log_posterior)

    def latent_mean(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """The posterior mean of the latent the decoder takes, ``(n, latent_dim)``."""
        return self.encode(x, condition)[0]

    def latent_prior_moments(self) -> tuple[Tensor, Tensor]:
        """Mean ``(latent_dim,)`` and covariance ``(latent_dim, latent_dim)`` of the prior
        of the latent the decoder takes: N(0, I), exactly. The views lay their grids out
        in its standard deviations around its mean (:attr:`latent_prior_unit`)."""
        return torch.zeros(self.latent_dim), torch.eye(self.latent_dim)

    def log_variance(self) -> Tensor:
        """Decoder log-variance ``(*input_shape)``, floored per feature (at
        ``min_log_variance`` or the quantisation floor)."""
        return torch.maximum(self.decoder_log_variance, self.log_variance_floor)

    def _calibrated_log_variance(self, x: Tensor, output: Tensor) -> Tensor:
        """Per-feature maximum-likelihood log-variance of ``x`` around ``output``.

        The "calibrated decoder" of Rybkin et al. (sigma-VAE, ICML 2021): the optimal
        variance is the mean squared error, so it needs no slow gradient descent
        (Adam moves a log-variance by about the learning rate per step). With
        ``trim_fraction`` each feature's largest squared errors are left out, so rows the
        model cannot explain (anomalies in the training data) do not widen it.
        """
        return self._log_variance_of_errors((x.expand_as(output) - output).pow(2))

    def _log_variance_of_errors(self, error: Tensor) -> Tensor:
        """:meth:`_calibrated_log_variance` from the squared errors ``(n, ..., *input_shape)``."""
        per_feature = trimmed_mean_by_columns(
            error.reshape(-1, *self.input_shape), self.trim_fraction
        )
        return torch.maximum(torch.log(per_feature + 1e-12), self.log_variance_floor)

    @torch.no_grad()
    def calibrate_decoder(self, x: Tensor, noise: Tensor, condition: Tensor | None = None) -> None:
        """Set the calibrated decoder variance from rows ``x`` (one z per row in ``noise``).

        Called once after training on the training rows; no-op for a learned variance.
        The rows are decoded ``CALIBRATION_BATCH_ROWS`` at a time: the trimmed mean needs
        every row's squared errors, but the network's activations are needed only a batch
        at a time (held for every row in one pass, they grow with the rows).
        """
        if self.config.decoder_variance != "calibrated":
            return
        error: Tensor | None = None
        for start in range(0, x.shape[0], CALIBRATION_BATCH_ROWS):
            rows = slice(start, start + CALIBRATION_BATCH_ROWS)
            part = None if condition is None else condition[rows]
            target, output = self._calibration_reconstruction(x[rows], noise[rows], part)
            # In the reconstructions' memory: the difference and its square, each of the
            # size of the rows decoded, made two more copies (0.25 GB each for 15,000
            # images of 64 x 64). (output - x)^2 is (x - output)^2 bit for bit: negating
            # a float is exact.
            squared = output.sub_(target).pow_(2)
            if error is None:
                if len(squared) == x.shape[0]:
                    error = squared  # one batch: no copy of its errors
                    break
                error = squared.new_empty((x.shape[0], *squared.shape[1:]))
            error[rows] = squared
        if error is not None:
            self.decoder_log_variance.copy_(self._log_variance_of_errors(error))

    def _calibration_reconstruction(
        self, x: Tensor, noise: Tensor, condition: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(x, its reconstructions)`` for :meth:`calibrate_decoder`, broadcastable: here
        ``x (n, 1, *input_shape)`` and one decoded z per row, ``(n, 1, *input_shape)``."""
        output = self._decode_samples(self.sample_latent(x, noise, condition).z, condition)
        return x.unsqueeze(1), output

    def reconstruction_nll(self, x: Tensor, output: Tensor, logvar: Tensor | None = None) -> Tensor:
        """-log p(x | z) summed over features. ``x`` broadcasts against ``output (..., *shape)``.

        ``logvar`` defaults to the decoder's stored log-variance. Returns
        ``output.shape[:-len(input_shape)]``, in nats.
        """
        x = x.expand_as(output)
        logvar = self.log_variance() if logvar is None else logvar
        gaussian = 0.5 * (LOG_2PI + logvar + (x - output) ** 2 * torch.exp(-logvar))
        per_feature = self._with_bernoulli_features(gaussian, output, x)
        return per_feature.flatten(start_dim=output.dim() - len(self.input_shape)).sum(-1)

    def _with_bernoulli_features(self, gaussian: Tensor, output: Tensor, x: Tensor) -> Tensor:
        """``gaussian`` (per-feature terms, ``(..., *input_shape)``) with the Bernoulli
        features' cross-entropy of logits ``output`` and targets ``x`` in their place.

        The cross-entropy is computed only when some feature is Bernoulli: computed and
        masked away for Gaussian images, it took half their scoring time. (For tables,
        which mix both, computing it for their binary features alone saved nothing.)
        """
        mask = self.bernoulli_mask
        if not mask.any():
            return gaussian
        bernoulli = F.binary_cross_entropy_with_logits(output, x, reduction="none")
        return bernoulli if mask.all() else torch.where(mask, bernoulli, gaussian)

    @staticmethod
    def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) in closed form, ``(n,)`` nats."""
        return gaussian_kl(mu, logvar)

    def _decode_samples(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``z (n, L, k)`` -> outputs ``(n, L, *input_shape)`` in one decoder pass."""
        n, samples, _ = z.shape
        if condition is not None:
            condition = condition.repeat_interleave(samples, dim=0)
        flat = self.decode(z.reshape(n * samples, -1), condition)
        return flat.reshape(n, samples, *self.input_shape)

    def loss_terms(
        self, x: Tensor, noise: Tensor | None = None, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Training objective on a batch, one z sample per row unless ``noise`` says more.

        Returns batch means: ``loss`` (what is minimised, by default reconstruction +
        beta * KL, without the ``trim_fraction`` rows of largest loss), ``reconstruction``
        (-log p(x|z)) and ``kl``.
        """
        if noise is None:
            noise = torch.randn(x.shape[0], 1, self.noise_dim, device=x.device)
        latent = self.sample_latent(x, noise, condition)
        output = self._decode_samples(latent.z, condition)
        decoder_logvar = None
        if self.training and self.config.decoder_variance == "calibrated":
            # This batch's optimal variance for its loss; a moving average for evaluation.
            decoder_logvar = self._calibrated_log_variance(x.unsqueeze(1), output.detach())
            with torch.no_grad():
                self.decoder_log_variance.lerp_(decoder_logvar, VARIANCE_MOMENTUM)
        reconstruction = self.reconstruction_nll(x.unsqueeze(1), output, decoder_logvar).mean(1)
        loss = self.objective(reconstruction, latent.kl)
        return {
            "loss": trimmed_mean(loss, self.trim_fraction),
            "reconstruction": reconstruction.mean(),
            "kl": latent.kl.mean(),
        }

    def mean_output(self, output: Tensor) -> Tensor:
        """Decoder output -> expected x (Bernoulli logits become probabilities)."""
        return torch.where(self.bernoulli_mask, torch.sigmoid(output), output)

    @torch.no_grad()
    def generate(
        self, count: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Expected x for ``count`` draws of z from the prior, ``(count, *input_shape)``."""
        z = torch.randn(count, self.latent_dim, generator=generator)
        return self.mean_output(self.decode(z, condition))

    # -- scores (higher = more anomalous) ----------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Expected reconstruction at the posterior mean, ``(n, *input_shape)``."""
        return self.mean_output(self.decode(self.latent_mean(x, condition), condition))

    @torch.no_grad()
    def feature_surprise(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Per-feature share of -log p(x | z) at the posterior mean, ``(n, *input_shape)``
        nats, without the part that is the same for every row: (x - mean)^2 / (2 var) for
        Gaussian features, the cross-entropy for Bernoulli ones. Shows which features
        make a row anomalous under the ELBO."""
        return self._surprise(x, self.decode(self.latent_mean(x, condition), condition))

    def _surprise(self, x: Tensor, output: Tensor) -> Tensor:
        """Per-feature surprise of ``x`` under decoder outputs ``output`` (both
        ``(..., *input_shape)``), nats: see :meth:`feature_surprise`."""
        gaussian = 0.5 * (x - output).pow(2) * torch.exp(-self.log_variance())
        return self._with_bernoulli_features(gaussian, output, x)

    @torch.no_grad()
    def repair_gain(
        self,
        x: Tensor,
        groups: Tensor,
        neutral: Tensor,
        condition: Tensor | None = None,
        steps: int = 1,
    ) -> Tensor:
        """How much each column of table rows ``x (n, d)`` adds to their surprise, ``(n, c)``
        nats: the drop in a row's surprise (:meth:`feature_surprise` summed over its
        features) when the column is repaired, its features replaced by what the row's
        other columns predict of them. ``groups (c, d)`` bool: the features of each column
        (``(n, c, d)``: each row's own c columns).

        The prediction of column j: j's features replaced by ``neutral (d,)`` (values the
        model knows, standing for "not seen"), the row encoded and decoded at the
        posterior mean, and j's features replaced by the decoder's expected value of
        them, ``steps`` times (the encoder was not trained to ignore a neutral value: one
        step's prediction of a closely predicted column was further off than its decoder
        sd, so repairing it made a normal row more surprising); then a 0/1 feature its
        likelier value. A large value in one column pulls the row's own posterior mean
        towards itself, so at that mean it is reconstructed nearly right and the columns
        related to it are not; left out, it cannot, and repairing it, not them, makes the
        row normal again.

        ``steps + 1`` passes of ``n * c`` rows through the encoder and decoder (and one of
        the ``n`` rows): the caller bounds ``n * c``.
        """
        n, c = x.shape[0], groups.shape[-2]
        repeated = None if condition is None else condition.repeat_interleave(c, dim=0)
        left_out = torch.where(groups, neutral, x.unsqueeze(1))  # (n, c, d)
        for _ in range(steps):
            flat = left_out.reshape(n * c, *self.input_shape)
            output = self.decode(self.latent_mean(flat, repeated), repeated).reshape(n, c, -1)
            predicted = self.mean_output(output)
            left_out = torch.where(groups, predicted, x.unsqueeze(1))
        # A 0/1 feature gets the value it is likelier to take (in a column of several, a
        # category's one-hots, the likeliest one): a rate of 0.7 put in, for its decoder's
        # 0.7, still costs its entropy (0.61 nats), and a repaired category did not then
        # save what its one-hot would have.
        binary = groups & self.bernoulli_mask
        several = binary.sum(-1, keepdim=True) > 1
        likeliest = torch.where(binary, output, -torch.inf).argmax(-1, keepdim=True)
        one_hot = torch.zeros_like(predicted).scatter_(-1, likeliest, 1.0)
        chosen = torch.where(several, one_hot, (output > 0).to(predicted.dtype))
        predicted = torch.where(binary, chosen, predicted)
        repaired = torch.where(groups, predicted, x.unsqueeze(1))
        repaired = repaired.reshape(n * c, *self.input_shape)
        after = self.feature_surprise(repaired, repeated).sum(-1).reshape(n, c)
        return self.feature_surprise(x, condition).sum(-1, keepdim=True) - after

    @torch.no_grad()
    def scores(
        self, x: Tensor, noise: Tensor, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Every score of ``x`` at once, each ``(n,)``, higher = more anomalous.

        - ``reconstruction_error``: mean squared error of the reconstruction at the
          posterior mean, in (scaled) feature units squared;
        - ``negative_elbo``: -ELBO in nats, reconstruction term averaged over the
          ``L = noise.shape[1]`` samples of z, KL in closed form;
        - ``negative_iwae_bound``: -log (1/L) sum_l p(x, z_l) / q(z_l | x), the
          importance-weighted bound on -log p(x) from the same samples (Burda et al.,
          2016; tighter than the ELBO).
        """
        error = (x - self.reconstruct(x, condition)).pow(2).flatten(1).mean(1)
        latent = self.sample_latent(x, noise, condition)
        nll = self.reconstruction_nll(x.unsqueeze(1), self._decode_samples(latent.z, condition))
        log_weights = -nll + latent.log_weight_latent
        iwae = torch.logsumexp(log_weights, dim=1) - math.log(noise.shape[1])
        return {
            "reconstruction_error": error,
            "negative_elbo": nll.mean(1) + latent.kl,
            "negative_iwae_bound": -iwae,
        }
