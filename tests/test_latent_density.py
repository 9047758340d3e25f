"""Latent nearest-neighbour scores: the distance, its scales, and the detector using them."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from anomaly_vae import VAEDetector, latent_density
from anomaly_vae.errors import ConfigError, ModelNotFoundError
from anomaly_vae.latent_density import LatentNeighbours, RobustScale
from tests.conftest import tiny_config

LATENT_SCORE = ["scoring.score=elbo_latent_knn"]


def test_distance_is_the_kth_nearest_reference_distance_in_any_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    reference, queries = rng.normal(size=(200, 3)), rng.normal(size=(50, 3))
    expected = NearestNeighbors(n_neighbors=5).fit(reference).kneighbors(queries)[0][:, -1]
    neighbours = LatentNeighbours(torch.from_numpy(reference), 5)
    np.testing.assert_allclose(neighbours.distance(torch.from_numpy(queries)), expected, rtol=1e-5)
    monkeypatch.setattr(latent_density, "QUERY_CHUNK", 7)
    np.testing.assert_allclose(neighbours.distance(torch.from_numpy(queries)), expected, rtol=1e-5)


def test_scales_are_robust_and_needed_before_scoring():
    scale = RobustScale.of(np.array([0.0, 1.0, 2.0, 3.0, 1000.0]))
    assert (scale.median, scale.spread) == (2.0, 2.0)  # the outlier moves neither
    assert RobustScale.of(np.full(10, 4.0)).spread == 1.0  # constant: no division by zero
    neighbours = LatentNeighbours(torch.zeros(10, 2), 5)
    with pytest.raises(RuntimeError, match="calibrate"):
        neighbours.scores(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="fewer than k"):
        LatentNeighbours(torch.zeros(3, 2), 5)


def line_with_gap(n: int, seed: int, gap: bool) -> np.ndarray:
    """``(n, 4)`` rows on a 1-D line; normal rows have position |t| in [1, 3], rows
    "in the gap" |t| < 0.3: on the manifold, where no normal row lies."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-0.3, 0.3, n) if gap else rng.choice([-1, 1], n) * rng.uniform(1, 3, n)
    return np.outer(t, [1.0, -0.5, 0.8, 0.3]) + 0.05 * rng.normal(size=(n, 4))


@pytest.fixture(scope="module")
def gap_detector() -> VAEDetector:
    config = tiny_config(*LATENT_SCORE).detector_config()
    return VAEDetector(config).fit(line_with_gap(600, seed=0, gap=False))


def test_latent_scores_find_rows_between_the_clusters_of_normal_rows(gap_detector):
    X = np.vstack([line_with_gap(200, seed=1, gap=False), line_with_gap(40, seed=2, gap=True)])
    y = np.r_[np.zeros(200), np.ones(40)]
    frame = gap_detector.score_frame(X)
    # Rows in the gap are reconstructed well and sit near the prior's mode, so the ELBO
    # alone cannot see them; their latent means are far from every training row's.
    assert roc_auc_score(y, frame["latent_knn_distance"]) > 0.95
    assert roc_auc_score(y, frame["elbo_latent_knn"]) > roc_auc_score(y, frame["negative_elbo"])
    assert gap_detector.score_name == "elbo_latent_knn"
    np.testing.assert_array_equal(frame["score"], frame["elbo_latent_knn"])
    assert gap_detector.calibration_["score"] == "elbo_latent_knn"


def test_latent_scores_save_load_and_batch_the_same(gap_detector, tmp_path):
    X = line_with_gap(300, seed=3, gap=False)
    reference = gap_detector.score_frame(X)
    gap_detector.save(tmp_path / "model")
    saved = tmp_path / "model" / "latent_reference.pt"
    assert isinstance(torch.load(saved, weights_only=True)["reference"], torch.Tensor)
    loaded = VAEDetector.load(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.score_frame(X), reference)
    assert loaded.threshold_ == gap_detector.threshold_
    small_batches = clone(gap_detector)
    small_batches.__dict__.update(gap_detector.__dict__)
    small_batches.config_ = tiny_config(*LATENT_SCORE, "scoring.batch_size=7").detector_config()
    batched = small_batches.score_frame(X)
    np.testing.assert_allclose(
        batched["latent_knn_distance"], reference["latent_knn_distance"], rtol=1e-5, atol=1e-5
    )
    # The sum of two scaled float32 scores: its rounding is relative to the parts (O(1)),
    # not to the sum, which is near 0 for typical rows.
    np.testing.assert_allclose(batched["elbo_latent_knn"], reference["elbo_latent_knn"], atol=1e-4)
    saved.unlink()
    with pytest.raises(ModelNotFoundError, match=r"latent_reference\.pt"):
        VAEDetector.load(tmp_path / "model")


def test_tables_score_by_the_elbo_unless_told_otherwise(normal_rows):
    detector = VAEDetector(tiny_config("training.epochs=2").detector_config()).fit(normal_rows)
    assert detector.score_name == "negative_elbo"
    assert detector.latent_neighbours_ is None
    assert "latent_knn_distance" not in detector.score_frame(normal_rows[:5])


def test_more_neighbours_than_training_rows_is_a_config_error_before_training(normal_rows):
    # 600 rows: 450 train. It failed after training with LatentNeighbours' ValueError.
    config = tiny_config(
        *LATENT_SCORE, "scoring.latent_neighbours=1000", "scoring.latent_reference_rows=1000"
    )
    epochs = []
    with pytest.raises(ConfigError, match=r"scoring.latent_neighbours=1000 is more than the 450 "):
        VAEDetector(config.detector_config()).fit(
            normal_rows, on_epoch=lambda epoch, losses: epochs.append(epoch)
        )
    assert epochs == []


def test_the_reference_is_a_bounded_sample_of_training_rows(normal_rows):
    config = tiny_config(*LATENT_SCORE, "training.epochs=2", "scoring.latent_reference_rows=50")
    detector = VAEDetector(config.detector_config()).fit(normal_rows)
    assert detector.latent_neighbours_.reference.shape == (50, 2)
