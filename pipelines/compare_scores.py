"""Which score should drive `predict` by default? Measured on the T-clean protocol.

Fits the default detector on every ADBench-format ``.npz`` file in a folder
(seeds as given) and reports AUROC/AUCPR (percent) of each score it computes.

    python pipelines/compare_scores.py --data-dir ../shared/data/adbench --out results/scores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.protocols import load_npz, t_clean_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(args.data_dir.glob("*.npz")):
        X, y = load_npz(path)
        for seed in [int(s) for s in args.seeds.split(",")]:
            X_train, X_test, y_test = t_clean_split(X, y, seed)
            config = load_config(overrides=[f"training.seed={seed}", *args.overrides])
            start = time.perf_counter()
            detector = VAEDetector(config.detector_config()).fit(X_train)
            fit_s = time.perf_counter() - start
            scores = detector.score_frame(X_test)
            for name in detector.model_.score_names:
                rows.append(
                    {
                        "dataset": path.stem,
                        "seed": seed,
                        "score": name,
                        "aucroc": 100 * roc_auc_score(y_test, scores[name]),
                        "aucpr": 100 * average_precision_score(y_test, scores[name]),
                        "fit_s": fit_s,
                        "epochs": len(detector.history_.epochs),
                    }
                )
            print(
                path.stem,
                seed,
                f"{fit_s:.1f}s",
                {
                    r["score"]: round(r["aucroc"], 2)
                    for r in rows
                    if r["seed"] == seed and r["dataset"] == path.stem
                },
                flush=True,
            )
    results = pd.DataFrame(rows)
    results.round(2).to_csv(args.out / "results.csv", index=False)
    per_dataset = results.groupby(["dataset", "score"])[["aucroc", "aucpr"]].mean().unstack("score")
    overall = results.groupby("score")[["aucroc", "aucpr", "fit_s"]].mean()
    text = (
        f"# Score comparison (T-clean, seeds {args.seeds}, "
        f"overrides {args.overrides or 'none'})\n\n"
        f"## Mean over data sets\n\n```\n{overall.round(2).to_string()}\n```\n\n"
        f"## Per data set\n\n```\n{per_dataset.round(2).to_string()}\n```\n"
    )
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
