"""scikit-learn model selection with the detector: the scorer docs/python.md gives."""

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from anomaly_vae import VAEDetector
from tests.conftest import correlated_normal, planted_anomalies, tiny_config


def anomaly_auroc(detector, X, y):
    """The scorer of docs/python.md: AUROC of the anomaly score, anomalies labelled 1."""
    return roc_auc_score(y, detector.anomaly_score(X))


def test_a_grid_search_needs_the_documented_scorer_as_roc_auc_ranks_the_other_way():
    X = np.vstack([correlated_normal(300, 0), planted_anomalies(30, 1)])
    y = np.r_[np.zeros(300), np.ones(30)]
    search = GridSearchCV(
        VAEDetector(),
        {"config": [tiny_config("model.latent_dim=3").detector_config()]},
        scoring={"anomaly_auroc": anomaly_auroc, "roc_auc": "roc_auc"},
        refit="anomaly_auroc",
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    ).fit(X, y)
    ours = np.array([search.cv_results_[f"split{i}_test_anomaly_auroc"][0] for i in (0, 1)])
    sklearns = np.array([search.cv_results_[f"split{i}_test_roc_auc"][0] for i in (0, 1)])
    assert (ours > 0.75).all()
    # The trap the docs warn of: the same fits, ranked the other way round.
    np.testing.assert_allclose(sklearns, 1 - ours)
    assert search.best_estimator_.config_.model.latent_dim == 3
    assert anomaly_auroc(search.best_estimator_, X, y) > 0.75
