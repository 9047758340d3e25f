"""Why a table row is anomalous: the original columns that moved its score most.

A row's reconstruction term, -log p(x | z), sums over the model's features. Each
feature's term is a part that every row pays, whatever its value (a Gaussian feature's
log-normaliser, 0.5 log(2 pi sigma_j^2)), plus what the row's own value adds. Only the
second moves one row's score above another's, so a column is ranked by it:
:meth:`BaseVAE.feature_surprise`, at the posterior mean z = mu, in nats:

- a Gaussian feature: (x_j - mean_j)^2 / (2 sigma_j^2), half its squared standardised
  residual, which is 0 at a perfect reconstruction;
- a 0/1 feature (a one-hot category, a missing-value indicator): its whole
  cross-entropy, which is also 0 at a perfect reconstruction.

Raw per-feature negative log-likelihoods are not comparable: the log-normaliser differs
from feature to feature with its calibrated variance: 3 nats between a feature predicted
to the tables' variance floor (log-variance -6) and a standardised one not predicted at
all (log-variance about 0). Ranked by them, a column the model predicts closely, several
of its standard deviations off, came after a loosely predicted column in its usual range.

The features of one original column are summed into it: a categorical column's one-hot
categories, a numeric column's missing-value indicator. A conditional model's condition
columns are given, not scored, and are never named. The contributions need not add up
to the score: it also holds the KL term (and, for the negative ELBO, the spread of z).

That surprise at the row's own posterior mean is the method "posterior". The default,
"repair", ranks a column by how much the row's summed surprise drops when the column is
replaced by what the row's other columns predict of it (:meth:`BaseVAE.repair_gain`):
one large value pulls the row's posterior mean towards itself, so at that mean it is
reconstructed nearly right and the columns related to it take the blame; predicted from
the others, it cannot. On planted anomalies in 14 real tables (docs/scores.md) it named
the planted column first in 78.1% of rows (mean over four kinds) against 69.0% for
"posterior", better in each kind. Its gains are surprises too, free of the log-normaliser;
one can be negative (repairing the column made the row no more normal).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from anomaly_vae.data.preprocessing import warnings_per_file
from anomaly_vae.errors import DataError

# What `VAEDetector.explain` names per row by default: the few columns a reviewer reads
# for a flagged row (`score --explain` has none by default: the score file stays as it was).
EXPLAINED_COLUMNS = 3
# How a column's contribution is computed (`VAEDetector.explain`'s method; the module
# docstring says more): "repair", the drop in the row's surprise when the column is
# replaced by what the other columns predict of it; "posterior", the column's surprise at
# the row's own posterior mean (the first method, kept to compare with).
# (pipelines/explain_check.py --method measures either.)
EXPLAIN_METHODS = ("repair", "posterior")
EXPLAIN_METHOD = "repair"
# "repair" tries only each row's this many columns of largest "posterior" contribution:
# each column tried costs REPAIR_STEPS + 1 passes of the row through the model
REPAIR_CANDIDATES = 8
# ... and predicts each of them from the others in this many steps, each feeding the last
# prediction back in (1 step named a column of the tests' 2-D plane moved by 3 of its
# decoder sds only in half the rows, tests/test_explanation.py; 3 and 6 in all)
REPAIR_STEPS = 3
WHY_COLUMN = "why_{rank}"  # the rank-th column that most made the row anomalous (1 = most)
WHY_NATS_COLUMN = "why_{rank}_nats"  # its contribution, nats
IMAGES_NOT_EXPLAINED = (
    "explanations name table columns; an image model shows where an image is wrong in its "
    "anomaly map: `anomaly-vae score IMAGES --maps DIR` (in Python, VAEDetector.anomaly_map)"
)


def explanation_columns(top: int) -> list[str]:
    """The columns :func:`top_columns` writes for ``top`` columns per row, in order.

    >>> explanation_columns(2)
    ['why_1', 'why_1_nats', 'why_2', 'why_2_nats']
    """
    return [
        name.format(rank=rank)
        for rank in range(1, top + 1)
        for name in (WHY_COLUMN, WHY_NATS_COLUMN)
    ]


# Every name explanation_columns(K) gives a column, for any K
EXPLANATION_NAME = re.compile(r"why_[1-9][0-9]*(_nats)?")


def named_like_explanation(name: object) -> bool:
    """True for a name that ``--explain K`` gives a column of the scores, for some K: an id
    column so named, passed through to the scores, would clash with that column, or
    pass for one where K is smaller.

    >>> [named_like_explanation(n) for n in ("why_1", "why_12_nats", "why", "why_0")]
    [True, True, False, False]
    >>> all(named_like_explanation(name) for name in explanation_columns(12))
    True
    """
    return isinstance(name, str) and EXPLANATION_NAME.fullmatch(name) is not None


def column_starts(feature_columns: np.ndarray) -> np.ndarray:
    """Where each original column's features begin, ``(k,)`` int, given the column of each
    feature ``(d,)``, whose features are contiguous (as the preprocessor lays them out).

    >>> column_starts(np.array([0, 1, 1, 2])).tolist()
    [0, 1, 3]
    """
    return np.flatnonzero(np.r_[True, feature_columns[1:] != feature_columns[:-1]])


def column_contributions(surprise: np.ndarray, feature_columns: np.ndarray) -> np.ndarray:
    """Per-feature surprise ``(n, d)`` nats summed per original column: ``(n, k)`` float64
    nats, one per distinct value of ``feature_columns (d,)``, the column of each feature,
    whose features are contiguous (as the preprocessor lays them out), in their order.

    >>> column_contributions(np.array([[1.0, 0.5, 0.25]]), np.array([0, 1, 1])).tolist()
    [[1.0, 0.75]]
    """
    return np.add.reduceat(surprise.astype(np.float64), column_starts(feature_columns), axis=1)


def top_columns(
    contributions: np.ndarray, names: list[str], top: int, index: pd.Index | None = None
) -> pd.DataFrame:
    """The ``top`` columns of largest contribution in each row of ``contributions (n, k)``
    (nats; ``names (k,)`` their columns), largest first, at most ``k``; ties keep the
    columns' order. One row per row (``index``), columns :func:`explanation_columns`:
    ``why_R`` the name, ``why_R_nats`` its contribution."""
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    top = min(top, contributions.shape[1])
    # -NaN is NaN, which argsort puts last: a column that cannot be scored is named last.
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :top]
    chosen = np.asarray(names, dtype=object)[order]
    nats = np.take_along_axis(contributions, order, axis=1)
    values = [column for rank in range(top) for column in (chosen[:, rank], nats[:, rank])]
    return pd.DataFrame(dict(zip(explanation_columns(top), values, strict=True)), index=index)


def explain_scored(detector: Any, frame: pd.DataFrame, top: int) -> pd.DataFrame:
    """``detector.explain(frame, top)`` of rows that ``detector.score_frame`` has just
    scored, without its warnings about the data (an unseen category, an ignored column):
    scoring gave them already. Explaining reads the rows again, so they were given twice,
    and within a file's warnings (``warnings_per_file``) an unseen category's or
    condition's rows were counted twice ("(2 rows)" for one)."""
    with warnings_per_file():  # gathered here and dropped
        return detector.explain(frame, top)


def ensemble_not_explained() -> DataError:
    """The error for explaining a family ensemble's rows: its score is a mean of its
    members' ranks, which no column's nats add up to; each member explains its own."""
    from anomaly_vae.detector import MEMBERS_FOLDER  # the detector builds on this module

    return DataError(
        "--explain needs one model, and this is a family ensemble: explain with one of its "
        f"members, --model <its folder>/{MEMBERS_FOLDER}/<variant> (in Python, "
        "ensemble.members[variant].explain)"
    )


def refuse_unexplained(detector: object) -> None:
    """DataError when ``detector`` cannot explain rows, saying what to use instead: an
    image model (its anomaly maps) or a family ensemble (one of its members); or when
    its id column, passed through to the scores, is named as the explanation's columns
    are (:func:`named_like_explanation`; fit refuses such a name, a model fit by an
    earlier version may have one). The one check of ``score --explain``, ``batch --explain`` (either
    engine) and the logged model's ``explain``, made before anything is scored."""
    from anomaly_vae.detector import VAEDetector  # the detector builds on this module

    if getattr(detector, "data_kind_", None) == "image":
        raise DataError(f"--explain is for tables: {IMAGES_NOT_EXPLAINED}")
    if not isinstance(detector, VAEDetector):
        raise ensemble_not_explained()
    id_column = detector.effective_config.data.id_column
    if named_like_explanation(id_column):
        raise DataError(
            f"this model's id column {id_column!r} is named as --explain names its columns "
            f"({', '.join(explanation_columns(2))}, ...): score without --explain, or refit "
            "the model with the id column renamed in the data (--id-col)"
        )
