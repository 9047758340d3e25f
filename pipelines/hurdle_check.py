"""Would a spike-and-slab likelihood help columns that hold one value in most rows?

A column where one value (the point mass) holds most training rows gets a tiny calibrated
decoder variance, so any other value costs the row thousands of nats, and the row's other
columns no longer count. A hurdle (spike-and-slab) likelihood would cost a row off the
point mass -log(1 - pi) plus a Gaussian term on the scale of the other values.

This measures it from the default detector's fits before anyone builds it into the
decoder. Per ADBench ``.npz`` file and seed, on the T-clean split (``shared/PROTOCOL.md``),
the default detector is fit and the test rows scored by ``negative_elbo``; each column
whose most common training value holds at least ``--share`` of the training rows (and
that has more than two values) then has its decoder surprise
(``VAEDetector.feature_surprise``, the row's own posterior mean) in the ELBO replaced by
the hurdle's negative log-likelihood: -log pi on the point mass (pi: its share of the
training rows), else -log(1 - pi) plus a Gaussian negative log-likelihood with the
standard deviation of the training rows' other values (in training standard units),
around their mean (``marginal``) or around the decoder's mean (``conditional``). A file
with no such column scores the same three ways.

    python pipelines/hurdle_check.py --data-dir ../shared/data/adbench \\
        --out results/hurdle-check --jobs 2

Writes into OUT: results.csv (one row per file, seed and score) and summary.md (means
per file and over files, AUROC / AUCPR in percent), also printed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.benchmark.report import markdown_frame
from anomaly_vae.benchmark.runner import map_in_workers
from anomaly_vae.protocols import load_npz, t_clean_split

SLAB_MIN_SD = 1e-3  # standard units: a floor for a slab of (nearly) one value


@dataclass(frozen=True)
class Unit:
    """One fit: an ADBench file, its name, a seed and the point mass's least share."""

    path: str
    name: str
    seed: int
    share: float
    overrides: tuple[str, ...] = ()


def hurdle_nll(
    x: np.ndarray, surprise: np.ndarray, variance: float, train: np.ndarray, share: float
) -> dict[str, np.ndarray] | None:
    """The two hurdle negative log-likelihoods, nats ``(n,)`` each, of one column's test
    values ``x (n,)`` given its training values ``train (m,)``, the decoder's surprise of
    ``x`` ``(n,)`` and its decoder variance (standard units); None when the column's most
    common value holds less than ``share`` of the training rows, or it has two values or
    fewer."""
    values, counts = np.unique(train, return_counts=True)
    pi = counts.max() / len(train)
    if pi < share or len(values) <= 2 or pi == 1:
        return None
    mass = values[counts.argmax()]
    scale = train.std() or 1.0
    slab = train[train != mass] / scale
    slab_sd = max(float(slab.std()), SLAB_MIN_SD)
    on_mass = x == mass
    off = -np.log1p(-pi) + np.log(slab_sd)
    squared_to_mean = ((x / scale - slab.mean()) / slab_sd) ** 2
    # (x - decoder mean)^2 in standard units, from the decoder's surprise and variance
    squared_to_decoder = 2 * surprise * variance / slab_sd**2
    return {
        "marginal": np.where(on_mass, -np.log(pi), off + 0.5 * squared_to_mean),
        "conditional": np.where(on_mass, -np.log(pi), off + 0.5 * squared_to_decoder),
    }


def run_unit(unit: Unit) -> list[dict]:
    """Fit the default detector (``--set`` overrides: trial runs only) on the unit's
    T-clean training half; results rows of the
    three scores of its test rows."""
    X, y = load_npz(unit.path)
    train, test, y_test = t_clean_split(X, y, unit.seed)
    config = load_config(overrides=[f"training.seed={unit.seed}", *unit.overrides])
    detector = VAEDetector(config.detector_config()).fit(train)
    elbo = detector.anomaly_score(test)
    surprise = detector.feature_surprise(test)
    variance = detector.model_.log_variance().exp().detach().numpy()
    value_feature = {name: i for i, name in enumerate(detector.preprocessor_.feature_names)}
    scores = {"negative_elbo": elbo, "marginal": elbo.copy(), "conditional": elbo.copy()}
    columns = 0
    for j, name in enumerate(detector.preprocessor_.input_columns):
        feature = value_feature[name]
        hurdle = hurdle_nll(
            test[:, j], surprise[:, feature], float(variance[feature]), train[:, j], unit.share
        )
        if hurdle is None:
            continue
        columns += 1
        for kind, nll in hurdle.items():
            scores[kind] += nll - surprise[:, feature]
    return [
        {
            "dataset": unit.name,
            "seed": unit.seed,
            "score": score,
            "columns": columns,
            "aucroc": 100 * roc_auc_score(y_test, values),
            "aucpr": 100 * average_precision_score(y_test, values),
        }
        for score, values in scores.items()
    ]


def summarise(results: pd.DataFrame, header: str) -> str:
    """Markdown: AUROC / AUCPR per file and score (means over seeds), and over files."""
    means = results.groupby(["dataset", "score"], sort=False)[["aucroc", "aucpr"]].mean()
    cells = means.apply(lambda row: f"{row.aucroc:.2f} / {row.aucpr:.2f}", axis=1).unstack()
    overall = means.groupby(level="score", sort=False).mean()
    cells.loc["mean"] = overall.apply(lambda row: f"{row.aucroc:.2f} / {row.aucpr:.2f}", axis=1)
    columns = results.groupby("dataset")["columns"].first().astype(str)
    cells.insert(0, "columns", columns.reindex(cells.index, fill_value=""))
    return f"{header}\n\n{markdown_frame(cells.reset_index())}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the results")
    parser.add_argument("--data-dir", required=True, type=Path, help="ADBench .npz files")
    parser.add_argument("--datasets", help="only these .npz file stems, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--share", type=float, default=0.5, help="least share of the point mass's value"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable; trial runs only)",
    )
    args = parser.parse_args()
    stems = set(args.datasets.split(",")) if args.datasets else None
    units = [
        Unit(str(path), path.stem, int(seed), args.share, tuple(args.overrides))
        for path in sorted(args.data_dir.glob("*.npz"))
        if stems is None or path.stem in stems
        for seed in args.seeds.split(",")
    ]
    if not units:
        parser.error(f"no .npz files to check in {args.data_dir}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = map_in_workers(run_unit, units, args.jobs, args.threads)
    results = pd.DataFrame([row for unit_rows in rows for row in unit_rows])
    results.to_csv(args.out / "results.csv", index=False)
    header = (
        f"# Hurdle check (T-clean, seeds {args.seeds}, point mass at least {args.share:g})\n\n"
        f"{len(units)} fits, {args.jobs} processes, wall {time.perf_counter() - start:.0f} s."
        " Cells: AUROC / AUCPR (%), means over seeds; columns: how many have a point mass."
    )
    text = summarise(results, header)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
