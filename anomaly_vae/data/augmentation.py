"""Translation augmentation: training images moved by a pixel, at random, as they are drawn.

A model trained on a few thousand centred images of one class can tie what it learns
to exact pixel positions. Shown each training image moved by ``shift`` pixels up, down,
left or right, or left in place (drawn afresh every time the image is in a batch), it
learns that so small a translation is normal, and what differs in shape stands out
more (I-oneclass, MLP VAE with ``elbo_latent_knn``: docs/tuning.md). Validation,
calibration and scoring see the images as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from anomaly_vae.data.images import ImagePreprocessor, as_nchw

# Each move as (rows down, columns right), in units of the shift; (0, 0) keeps the image.
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


class ShiftedImages:
    """Training images ``(n, C, H, W)`` at input resolution (uint8, or floats in [0, 1]);
    :meth:`batch` gives the model's input for some of them, each moved at random.

    The move happens before the preprocessor pools, so ``shift`` is in pixels of the
    input image; the edge pixels are repeated into the strip a move uncovers.
    """

    def __init__(
        self,
        images: np.ndarray,
        preprocessor: ImagePreprocessor,
        shift: int,
        rows: np.ndarray | None = None,
    ) -> None:
        if shift < 1:
            raise ValueError(f"shift must be at least 1 pixel, got {shift}")
        self.images = as_nchw(images)
        self.preprocessor = preprocessor
        self.shift = shift
        # The training images are images[rows]: a batch picks from them, so that the
        # training part of a set is not copied (at input resolution) beside the set.
        self.rows = rows

    def batch(self, rows: Tensor, generator: torch.Generator) -> Tensor:
        """``(len(rows), *preprocessor.model_shape)`` float32: training images ``rows
        (b,)`` (positions among ``images[self.rows]`` when it is set), each moved by one
        of ``MOVES`` drawn from ``generator``."""
        positions = rows.numpy()
        picked = self.images[positions if self.rows is None else self.rows[positions]]
        shift = self.shift
        padded = np.pad(picked, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode="edge")
        height, width = picked.shape[2:]
        moves = torch.randint(len(MOVES), (len(picked),), generator=generator).numpy()
        moved = np.empty_like(picked)
        for index, (down, right) in enumerate(MOVES):
            chosen = moves == index
            top, left = shift * (1 - down), shift * (1 - right)
            moved[chosen] = padded[chosen, :, top : top + height, left : left + width]
        return torch.from_numpy(self.preprocessor.transform(moved))
