"""beta-VAE (Higgins et al., ICLR 2017) with a KL warm-up, and optionally the
controlled-capacity objective of Burgess et al. ("Understanding disentangling in
beta-VAE", 2018)."""

from __future__ import annotations

from torch import Tensor

from anomaly_vae.models import register
from anomaly_vae.models.vae import MLPVAE


@register("beta-vae")
class BetaVAE(MLPVAE):
    """The MLP VAE trained with a scheduled KL weight; only the objective differs.

    - Warm-up: the KL weight rises linearly from 0 to ``beta`` over
      ``kl_warmup_epochs``, so the decoder learns to use z before the KL term pulls
      q(z|x) to the prior (avoids posterior collapse). beta < 1 favours
      reconstruction, beta > 1 a smoother, more factorised latent.
    - Controlled capacity (``capacity`` > 0): loss = reconstruction +
      beta * |KL - C(t)|, with C(t) rising linearly from 0 to ``capacity`` nats
      over ``capacity_epochs``.

    Scores are unaffected: they use the true ELBO (KL weight 1).
    """

    description = "beta-VAE: KL weight beta with warm-up (optional controlled capacity)"
    data_kinds = ("table", "image")
    config_fields = (*MLPVAE.config_fields, "kl_warmup_epochs", "capacity", "capacity_epochs")

    epoch: int = 10**9  # outside training (e.g. after loading) the schedule has finished

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    @property
    def schedule_finished(self) -> bool:
        return self.epoch >= self.schedule_epochs

    @property
    def schedule_epochs(self) -> int:
        # The KL weight reaches beta at epoch kl_warmup_epochs + 1, C(t) its capacity at
        # epoch capacity_epochs.
        warmup_done = self.config.kl_warmup_epochs + 1
        capacity_done = self.config.capacity_epochs if self.config.capacity > 0 else 1
        return max(warmup_done, capacity_done)

    @property
    def schedule_fields(self) -> tuple[str, ...]:
        if self.config.capacity > 0:
            return ("kl_warmup_epochs", "capacity_epochs")
        return ("kl_warmup_epochs",)

    def kl_weight(self) -> float:
        if self.config.kl_warmup_epochs == 0:
            return self.config.beta
        progress = min(1.0, (self.epoch - 1) / self.config.kl_warmup_epochs)
        return self.config.beta * progress

    def capacity_target(self) -> float:
        """C(t) in nats for the current epoch."""
        return self.config.capacity * min(1.0, self.epoch / self.config.capacity_epochs)

    def objective(self, reconstruction: Tensor, kl: Tensor) -> Tensor:
        if self.config.capacity > 0:
            return reconstruction + self.kl_weight() * (kl - self.capacity_target()).abs()
        return reconstruction + self.kl_weight() * kl
