"""Monte Carlo noise for scoring: one fixed draw, shared by every row.

Every row's ELBO (and importance-weighted bound) is estimated with the same
``samples`` standard normal draws, fixed by the seed. So a row's score depends only
on the row, never on its batch, and is a smooth function of it: a change in the
last bits of the input (a row read as float32 rather than float64) moves the score
by as little. Rows compared against each other or against the threshold share their
Monte Carlo error (common random numbers), which then does not reorder them.

An earlier scheme picked each row's draw from a bank by a hash of the row's bytes:
also independent of the batch, but any change in a row's bits drew other noise and
moved its ELBO by its Monte Carlo error (docs/tuning.md: a median 2% for the same rows
given as float32 instead of float64).
"""

from __future__ import annotations

import torch


def scoring_noise(samples: int, noise_dim: int, seed: int) -> torch.Tensor:
    """``(samples, noise_dim)`` standard normal draws, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(samples, noise_dim, generator=generator)


def noise_for_rows(rows: int, noise: torch.Tensor) -> torch.Tensor:
    """``noise (L, k)`` for each of ``rows`` rows: ``(rows, L, k)``, a view (no copy)."""
    return noise.unsqueeze(0).expand(rows, -1, -1)
