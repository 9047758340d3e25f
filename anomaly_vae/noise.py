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
given as float32 instead of float64). Models saved then (their config names
``scoring.noise_bank_size``) keep it: their thresholds were set on scores so drawn
(:func:`noise_bank`, :func:`hashed_noise_for_rows`).
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment


def scoring_noise(samples: int, noise_dim: int, seed: int) -> torch.Tensor:
    """``(samples, noise_dim)`` standard normal draws, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(samples, noise_dim, generator=generator)


def noise_for_rows(rows: int, noise: torch.Tensor) -> torch.Tensor:
    """``noise (L, k)`` for each of ``rows`` rows: ``(rows, L, k)``, a view (no copy)."""
    return noise.unsqueeze(0).expand(rows, -1, -1)


def noise_bank(bank_size: int, samples: int, noise_dim: int, seed: int) -> torch.Tensor:
    """``(bank_size, samples, noise_dim)`` standard normal draws, fixed by ``seed``: the
    earlier scheme's bank, for a model saved when scoring drew from it."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(bank_size, samples, noise_dim, generator=generator)


def hashed_noise_for_rows(features: np.ndarray, bank: torch.Tensor) -> torch.Tensor:
    """The ``(n, samples, noise_dim)`` noise the earlier scheme gave each of the ``(n, ...)``
    float32 rows of ``features``: the draw of ``bank`` picked by a hash of the row's bytes."""
    index = _row_hashes(features) % np.uint64(bank.shape[0])
    return bank[torch.from_numpy(index.astype(np.int64))]


def _row_hashes(features: np.ndarray) -> np.ndarray:
    """``(n, ...)`` float32 rows -> ``(n,)`` uint64 hashes of their bytes (vectorised)."""
    words = np.ascontiguousarray(features, dtype=np.float32).reshape(len(features), -1)
    words = words.view(np.uint32).astype(np.uint64)
    # Position-dependent odd multipliers so permuted features hash differently.
    multipliers = _splitmix64(np.arange(1, words.shape[1] + 1, dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (words * multipliers).sum(axis=1, dtype=np.uint64)
    return _splitmix64(mixed)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a cheap, well-mixed 64-bit hash of each value."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
