"""Latent nearest-neighbour scores: how far a row's latent mean lies from the training rows'.

The ELBO measures a row against the N(0, I) prior, but normal rows do not fill that
prior evenly (the aggregate posterior has clusters and holes), so a row whose latent
mean falls between the clusters of normal rows can still have a good ELBO. The distance
to the k-th nearest training latent mean is a non-parametric stand-in for that density
(the distance of k-NN detectors, in the latent space instead of the input space).

- ``latent_knn_distance``: that distance, in latent units;
- ``elbo_latent_knn``: the negative ELBO plus that distance, each first put on a
  common scale by the median and interquartile range of the held-out calibration rows
  (dimensionless; 0 is a typical normal row).

On I-oneclass Fashion-MNIST ``elbo_latent_knn`` ranks anomalies better than either part
alone; on tables it costs the contaminated protocol (docs/benchmarks.md), so it is the
default score for images only (``scoring.score`` auto).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

LATENT_SCORES = ("latent_knn_distance", "elbo_latent_knn")
QUERY_CHUNK = 1024  # query rows per distance block: 1024 x 10,000 reference rows = 41 MB


@dataclass(frozen=True)
class RobustScale:
    """``(values - median) / interquartile range`` of reference values."""

    median: float
    spread: float

    @classmethod
    def of(cls, values: np.ndarray) -> RobustScale:
        """The scale of ``values`` ``(n,)``; a zero spread (constant values) becomes 1."""
        low, median, high = np.quantile(values, [0.25, 0.5, 0.75])
        spread = float(high - low)
        return cls(float(median), spread if spread > 0 else 1.0)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (values - self.median) / self.spread


class LatentNeighbours:
    """Training latent means ``reference (m, latent_dim)`` and the k of the k-NN distance.

    :meth:`calibrate` fixes the scales that ``elbo_latent_knn`` adds on; both are saved
    with the model, the reference as a tensor.
    """

    def __init__(
        self,
        reference: Tensor,
        neighbours: int,
        elbo_scale: RobustScale | None = None,
        distance_scale: RobustScale | None = None,
    ) -> None:
        if len(reference) < neighbours:
            raise ValueError(f"{len(reference)} reference rows, fewer than k = {neighbours}")
        self.reference = reference.float()
        self.neighbours = neighbours
        self.elbo_scale = elbo_scale
        self.distance_scale = distance_scale

    def distance(self, latents: Tensor) -> np.ndarray:
        """``(n,)`` Euclidean distance of each row of ``latents (n, latent_dim)`` to its
        k-th nearest reference row."""
        parts = []
        for start in range(0, len(latents), QUERY_CHUNK):
            # Exact differences, not the matrix-product shortcut, which loses precision
            # for near neighbours and would make a row's score depend on its batch.
            block = torch.cdist(
                latents[start : start + QUERY_CHUNK].float(),
                self.reference,
                compute_mode="donot_use_mm_for_euclid_dist",
            )
            nearest = block.topk(self.neighbours, dim=1, largest=False).values
            parts.append(nearest[:, -1].double().numpy())
        return np.concatenate(parts) if parts else np.empty(0)

    def calibrate(self, negative_elbo: np.ndarray, distance: np.ndarray) -> None:
        """Fix the scales from held-out normal rows' ``(n,)`` scores."""
        self.elbo_scale = RobustScale.of(negative_elbo)
        self.distance_scale = RobustScale.of(distance)

    def scores(self, negative_elbo: np.ndarray, distance: np.ndarray) -> dict[str, np.ndarray]:
        """Both latent scores of rows with these ``(n,)`` negative ELBOs and distances."""
        if self.elbo_scale is None or self.distance_scale is None:
            raise RuntimeError("LatentNeighbours.calibrate has not been called")
        return {
            "latent_knn_distance": distance,
            "elbo_latent_knn": self.elbo_scale(negative_elbo) + self.distance_scale(distance),
        }

    def to_dict(self) -> dict:
        """Everything but the reference tensor, as JSON-ready values."""
        return {
            "neighbours": self.neighbours,
            "elbo_scale": None if self.elbo_scale is None else asdict(self.elbo_scale),
            "distance_scale": None if self.distance_scale is None else asdict(self.distance_scale),
        }

    @classmethod
    def from_dict(cls, document: dict, reference: Tensor) -> LatentNeighbours:
        """Inverse of :meth:`to_dict`, with the saved reference."""
        return cls(
            reference,
            document["neighbours"],
            RobustScale(**document["elbo_scale"]),
            RobustScale(**document["distance_scale"]),
        )
