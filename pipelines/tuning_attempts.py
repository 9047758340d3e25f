"""Measure one tuning attempt of the default detector on a protocol.

Fits ``VAEDetector`` with the given ``--set`` overrides on every (file, seed) of a
folder of ADBench-format ``.npz`` files, split by ``--protocol`` (T-clean unless
``t-contaminated``), or on every class of a torchvision image set (``--protocol
i-oneclass``, ``--data-dir`` the torchvision root, ``--datasets`` the set, ``--classes``
the normal classes, seed 0), and reports the mean AUROC/AUCPR (percent)
of each score, next to reference scores computed from the same fit:

- every score the detector computes (``negative_elbo``, ``negative_iwae_bound``,
  ``reconstruction_error``, and ``latent_knn_distance``, ``elbo_latent_knn`` where the
  driving score is one of these two);
- ``elbo+rec``: rank average of the ELBO and the reconstruction error;
- ``latent_knn``: distance to the 5th nearest training row in latent space (posterior means);
- ``std_knn``: the same in the detector's own scaled input features (a baseline, not a VAE);
- tables, one fit per unit: ``knn`` (the benchmark's k-NN baseline: min-max scaled on the
  training rows), ``elbo+knn`` (rank average of the ELBO and ``knn`` within the test
  set), and ``elbo|knn`` and ``elbo+knn_z``: the larger and the sum of the two scores
  put on a robust scale, (score - median) / interquartile range, of normal rows (the
  ELBO's held-out calibration rows; ``knn``'s training rows, each to its 5th nearest
  other training row).

``--transform power`` applies scikit-learn's Yeo-Johnson ``PowerTransformer`` (fit on the
training rows) before the detector; ``--seed-ensemble N`` averages the ranks of N fits
with different seeds; ``--train-rows N`` fits on a seeded sample of N training rows (how
a choice behaves on small training sets); ``--refit-drop Q`` fits twice, the second time
without the share Q of training rows that the first fit scores worst (against anomalies
in the training data). Work units run in ``--jobs`` processes with one
torch thread each.

    python pipelines/tuning_attempts.py --data-dir ../shared/data/adbench \
        --datasets 2_annthyroid,30_satellite --tag latent16 --set model.latent_dim=16 \
        --out results/tuning
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import PowerTransformer

if TYPE_CHECKING:
    from anomaly_vae import VAEDetector

NEIGHBOURS = 5


@dataclass(frozen=True)
class Unit:
    path: Path  # an .npz file, or ROOT/NAME of a torchvision image set
    seed: int
    normal_class: int | None  # i-oneclass only
    protocol: str
    overrides: tuple[str, ...]
    transform: str
    seed_ensemble: int
    train_rows: int  # 0 = all
    refit_drop: float  # 0 = one fit


def kth_neighbour_distance(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``(m,)`` distance of each test row to its 5th nearest training row."""
    distances, _ = NearestNeighbors(n_neighbors=NEIGHBOURS).fit(train).kneighbors(test)
    return distances[:, -1]


def robust_scale(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` as (value - median) / interquartile range of ``reference``."""
    low, median, high = np.percentile(reference, [25, 50, 75])
    return (values - median) / (high - low if high > low else 1.0)


def knn_hybrids(
    detector: VAEDetector, X_train: np.ndarray, X_test: np.ndarray
) -> dict[str, np.ndarray]:
    """The benchmark's k-NN baseline and its combinations with the detector's score, the
    ELBO for tables (see the module docstring)."""
    from anomaly_vae.benchmark.methods import KNN_NEIGHBOURS, KNNMethod

    elbo_test = detector.anomaly_score(X_test)  # not ranked, as the scores above are
    knn = KNNMethod().fit(X_train)
    knn_test = knn.score(X_test)
    # Each training row's distance to its 5th nearest other row (the first is itself).
    train = knn.scaler_.transform(X_train)
    knn_train = knn.model_.kneighbors(train, n_neighbors=KNN_NEIGHBOURS + 1)[0][:, -1]
    elbo_z = robust_scale(elbo_test, detector.calibration_scores_)
    knn_z = robust_scale(knn_test, knn_train)
    return {
        "knn": knn_test,
        "elbo+knn": rankdata(elbo_test) + rankdata(knn_test),
        "elbo|knn": np.maximum(elbo_z, knn_z),
        "elbo+knn_z": elbo_z + knn_z,
    }


def run_unit(unit: Unit) -> list[dict]:
    import torch

    from anomaly_vae import VAEDetector, load_config
    from anomaly_vae.protocols import (
        i_oneclass_split,
        load_image_dataset,
        load_npz,
        t_clean_split,
        t_contaminated_split,
    )

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if unit.normal_class is not None:
        dataset = unit.path.name
        X_train, X_test, y_test = i_oneclass_split(
            *load_image_dataset(unit.path.parent, dataset), unit.normal_class
        )
        dataset = f"{dataset}-{unit.normal_class}"
    else:
        dataset = unit.path.stem
        X, y = load_npz(unit.path)
        split = t_contaminated_split if unit.protocol == "t-contaminated" else t_clean_split
        X_train, X_test, y_test = split(X, y, unit.seed)
    if unit.train_rows and unit.train_rows < len(X_train):
        sample = np.random.default_rng(unit.seed).choice(len(X_train), unit.train_rows, False)
        X_train = X_train[np.sort(sample)]
    if unit.transform == "power":
        transformer = PowerTransformer().fit(X_train)
        X_train, X_test = transformer.transform(X_train), transformer.transform(X_test)
    scores: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for member in range(unit.seed_ensemble):
        seed = unit.seed + 1000 * member
        config = load_config(overrides=[f"training.seed={seed}", *unit.overrides])
        detector = VAEDetector(config.detector_config()).fit(X_train)
        if unit.refit_drop:
            train_scores = detector.anomaly_score(X_train)
            kept = train_scores <= np.quantile(train_scores, 1 - unit.refit_drop)
            detector = VAEDetector(config.detector_config()).fit(X_train[kept])
        for name, values in detector.all_scores(X_test).items():
            scores[name] = scores.get(name, 0) + rankdata(values)
    fit_s = time.perf_counter() - start
    scores["elbo+rec"] = scores["negative_elbo"] + scores["reconstruction_error"]
    scores["latent_knn"] = kth_neighbour_distance(detector.encode(X_train), detector.encode(X_test))
    scores["std_knn"] = kth_neighbour_distance(
        *(detector.transform_features(X).reshape(len(X), -1) for X in (X_train, X_test))
    )
    if unit.normal_class is None and unit.seed_ensemble == 1:
        scores.update(knn_hybrids(detector, X_train, X_test))
    return [
        {
            "dataset": dataset,
            "seed": unit.seed,
            "score": name,
            "aucroc": 100 * roc_auc_score(y_test, values),
            "aucpr": 100 * average_precision_score(y_test, values),
            "fit_s": fit_s,
        }
        for name, values in scores.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tag", required=True, help="name of the attempt (output file stem)")
    parser.add_argument("--datasets", default="", help="file stems; default: every .npz")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--protocol", choices=["t-clean", "t-contaminated", "i-oneclass"], default="t-clean"
    )
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="i-oneclass only")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--transform", choices=["none", "power"], default="none")
    parser.add_argument("--seed-ensemble", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=0, help="0 = every training row")
    parser.add_argument("--refit-drop", type=float, default=0.0, help="0 = one fit")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.protocol == "i-oneclass" and args.transform != "none":
        parser.error("--transform is for tables")
    common = (
        args.protocol,
        tuple(args.overrides),
        args.transform,
        args.seed_ensemble,
        args.train_rows,
        args.refit_drop,
    )
    if args.protocol == "i-oneclass":
        names = args.datasets.split(",") if args.datasets else ["FashionMNIST"]
        units = [
            Unit(args.data_dir / name, 0, int(normal_class), *common)
            for name in names
            for normal_class in args.classes.split(",")
        ]
    else:
        paths = sorted(args.data_dir.glob("*.npz"))
        if args.datasets:
            wanted = set(args.datasets.split(","))
            paths = [p for p in paths if p.stem in wanted]
        units = [
            Unit(path, int(seed), None, *common)
            for path in sorted(paths, key=lambda p: -p.stat().st_size)  # big first: balance
            for seed in args.seeds.split(",")
        ]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        rows = [row for unit_rows in pool.map(run_unit, units) for row in unit_rows]
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / f"{args.tag}.csv", index=False)
    print(frame.pivot_table(index="dataset", columns="score", values="aucroc").round(2))
    print(frame.groupby("score")[["aucroc", "aucpr"]].mean().round(2))
    fits = frame.groupby(["dataset", "seed"]).fit_s.first()
    print(f"total fit time {fits.sum():.1f} s over {len(fits)} fits")


if __name__ == "__main__":
    main()
