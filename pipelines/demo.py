"""The README's main job: fit a detector on data that ships with scikit-learn and score a file.

Data: the Wisconsin breast-cancer table bundled with scikit-learn (569 rows, 30
numeric features). Benign tumours are the normal class; malignant ones are the
anomalies, labelled so that the fit can report AUROC/AUCPR. Four fifths of the
rows (with labels) are the training file; the rest, without labels, is the
"new data" file that gets scored.

    python pipelines/demo.py [--workdir demo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def write_demo_files(workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "malignant"})
    frame["malignant"] = (data.target == 0).astype(int)  # sklearn: 0 = malignant
    frame.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(frame))])
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(0.8 * len(frame))
    workdir.mkdir(parents=True, exist_ok=True)
    train, new = workdir / "train.csv", workdir / "new_rows.csv"
    frame.iloc[order[:cut]].to_csv(train, index=False)
    frame.iloc[order[cut:]].drop(columns="malignant").to_csv(new, index=False)
    return train, new


def run(*args: str) -> None:
    print("$ anomaly-vae " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "anomaly_vae", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo"))
    args = parser.parse_args()
    train, new = write_demo_files(args.workdir)
    print(
        f"Wrote {train} (labelled) and {new} (to score) from scikit-learn's breast-cancer data.\n"
    )
    run("fit", str(train), "--label-col", "malignant", "--id-col", "patient_id", "--register")
    scores = args.workdir / "new_rows_scores.csv"
    print()
    run("score", str(new), "--output", str(scores))
    print(f"\nScores: {scores}")
    print("Plots, tables and the model are in the MLflow run printed above; browse them with")
    print("  make ui    (MLflow UI on http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
