"""Translation augmentation of training images (data/augmentation.py)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomaly_vae import VAEDetector
from anomaly_vae.data.augmentation import MOVES, ShiftedImages
from anomaly_vae.data.images import ImagePreprocessor
from anomaly_vae.errors import ConfigError
from tests.conftest import correlated_normal, tiny_config


def moved(image: np.ndarray, down: int, right: int) -> np.ndarray:
    """``image (C, H, W)`` moved by whole pixels, the edge pixels repeated into the gap."""
    height, width = image.shape[1:]
    rows = np.clip(np.arange(height) - down, 0, height - 1)
    columns = np.clip(np.arange(width) - right, 0, width - 1)
    return image[:, rows][:, :, columns]


def test_each_image_is_moved_by_one_of_the_moves_drawn_from_the_generator():
    image = np.arange(25, dtype=np.uint8).reshape(1, 1, 5, 5) * 10
    shifted = ShiftedImages(image, ImagePreprocessor(pool=1).fit(image), shift=2)
    rows = torch.zeros(400, dtype=torch.long)
    batch = shifted.batch(rows, torch.Generator().manual_seed(0)).numpy()
    expected = [moved(image[0], 2 * down, 2 * right) / 255 for down, right in MOVES]
    which = [
        [k for k, candidate in enumerate(expected) if np.allclose(row, candidate)] for row in batch
    ]
    assert all(len(match) == 1 for match in which)  # every row is exactly one move
    counts = np.bincount([match[0] for match in which], minlength=len(MOVES))
    assert counts.min() > 50  # each move is drawn (400 draws, 80 expected each)
    again = shifted.batch(rows, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(batch, again)


def test_moved_images_are_pooled_as_the_model_sees_images():
    images = np.random.default_rng(0).integers(0, 256, size=(6, 1, 8, 8), dtype=np.uint8)
    pre = ImagePreprocessor(pool=2).fit(images)
    batch = ShiftedImages(images, pre, shift=1).batch(
        torch.arange(6), torch.Generator().manual_seed(1)
    )
    assert batch.shape == (6, *pre.model_shape) and batch.dtype == torch.float32
    for image, row in zip(images, batch.numpy(), strict=True):
        candidates = [pre.transform(moved(image, d, r)[None])[0] for d, r in MOVES]
        assert any(np.allclose(row, candidate) for candidate in candidates)


def squares(n: int, seed: int, moved_by: int = 0, ring: bool = False) -> np.ndarray:
    """``(n, 1, 12, 12)`` uint8: a bright 4 x 4 square (or a ring: its middle 2 x 2 dim)
    at the centre, moved ``moved_by`` pixels up, down, left or right, on a dim noisy
    background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, size=(n, 1, 12, 12), dtype=np.uint8)
    moves = np.array(MOVES[1:])[rng.integers(0, 4, size=n)] * moved_by
    for image, (down, right) in zip(images, moves, strict=True):
        top, left = 4 + down, 4 + right
        image[0, top : top + 4, left : left + 4] = 230
        if ring:
            image[0, top + 1 : top + 3, left + 1 : left + 3] = 15
    return images


def test_a_model_trained_with_shifts_takes_a_moved_normal_image_for_normal():
    # Training squares sit exactly at the centre; the normal test squares are moved by a
    # pixel, as a camera or a crop would move them. The anomalies are rings at the centre:
    # without shifts the model ranks them below the moved squares.
    test = np.concatenate([squares(60, seed=1, moved_by=1), squares(30, seed=2, ring=True)])
    labels = np.r_[np.zeros(60), np.ones(30)]
    auroc = {}
    for share in (0, 0.1):  # 0.1 x 12 pixels: moves of 1 pixel
        config = tiny_config(
            "model.hidden_dims=[64]", "model.latent_dim=4", f"training.image_shift={share}"
        )
        detector = VAEDetector(config.detector_config()).fit(squares(300, seed=0))
        auroc[share] = roc_auc_score(labels, detector.anomaly_score(test))
    assert auroc[0.1] > 0.9 and auroc[0.1] > auroc[0] + 0.1, auroc


def test_the_shift_is_a_share_of_the_image_side_and_off_when_under_a_pixel(monkeypatch):
    shifts = []
    original = ShiftedImages.__init__

    def recording_init(self, images, preprocessor, shift, *rows):
        shifts.append(shift)
        original(self, images, preprocessor, shift, *rows)

    monkeypatch.setattr(ShiftedImages, "__init__", recording_init)
    config = tiny_config("training.epochs=1", "training.image_shift=0.04").detector_config()
    VAEDetector(config).fit(squares(40, seed=0))  # 0.04 x 12 = 0.48: no move
    assert shifts == []
    images = np.zeros((40, 1, 28, 28), dtype=np.uint8)
    images[:, :, 10:18, 10:18] = 200
    VAEDetector(config).fit(images)  # 0.04 x 28 = 1.12: 1 pixel
    config.training.image_shift = 0.1
    VAEDetector(config).fit(images)  # 2.8: 3 pixels
    assert shifts == [1, 3]


def test_image_shift_leaves_tables_alone():
    table = correlated_normal(300, seed=0)
    scores = [
        VAEDetector(tiny_config(f"training.image_shift={shift}").detector_config())
        .fit(table)
        .anomaly_score(table[:50])
        for shift in (0, 0.3)
    ]
    np.testing.assert_array_equal(*scores)


@pytest.mark.parametrize("share", [-0.1, 0.5])
def test_a_shift_outside_the_image_is_a_config_error(share):
    with pytest.raises(ConfigError, match=r"training\.image_shift must be >= 0 and < 0\.5"):
        VAEDetector(tiny_config(f"training.image_shift={share}").detector_config()).fit(
            squares(40, seed=0)
        )
