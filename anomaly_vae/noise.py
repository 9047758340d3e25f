"""Deterministic per-row Monte Carlo noise for scoring.

A row's noise depends only on its content and the seed, never on its position
in a batch or on the batch size, so the same row always gets the same ELBO
estimate. A fixed bank of ``bank_size`` noise draws is generated once from the
seed; each row picks one by a hash of its feature bytes.
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_hashes(features: np.ndarray) -> np.ndarray:
    """``(n, ...)`` float32 rows -> ``(n,)`` uint64 hashes of their bytes (vectorised)."""
    words = np.ascontiguousarray(features, dtype=np.float32).reshape(len(features), -1)
    words = words.view(np.uint32).astype(np.uint64)
    # Position-dependent odd multipliers so permuted features hash differently.
    multipliers = _splitmix64(np.arange(1, words.shape[1] + 1, dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (words * multipliers).sum(axis=1, dtype=np.uint64)
    return _splitmix64(mixed)


def noise_bank(bank_size: int, samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """``(bank_size, samples, latent_dim)`` standard normal draws, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(bank_size, samples, latent_dim, generator=generator)


def noise_for_rows(features: np.ndarray, bank: torch.Tensor) -> torch.Tensor:
    """The ``(n, samples, latent_dim)`` noise of each row of ``features``."""
    index = row_hashes(features) % np.uint64(bank.shape[0])
    return bank[torch.from_numpy(index.astype(np.int64))]


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a cheap, well-mixed 64-bit hash of each value."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
