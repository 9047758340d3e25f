"""What does conditioning on the class buy an image detector trained on several normal
classes? The plain VAE against the conditional one (cvae), same data, same settings.

    python pipelines/conditional_images.py --data-dir ../shared/data --dataset FashionMNIST \
        --classes 0,7 --out results/cvae-images

Both are trained on the training images of ``--classes`` (cvae given each image's
class). On the test split they are measured twice:

- other classes: test images of the other classes (anomalies) against those of the
  normal classes, each normal image given its own class (AUROC, %);
- misfiled (cvae only): every normal test image given another normal class than its own
  (anomalies) against the same images given their own class, AUROC and the share of
  each flagged at the fitted threshold. A plain VAE cannot tell these apart: it scores
  the same image the same, whatever its class.

Writes ``OUT/results.csv`` and prints it. Any data set in torchvision's MNIST layout
under ``--data-dir`` works (``--dataset`` names its folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.data.images import read_idx_set, torchvision_classes

MODELS = ("vae", "cvae")


def misfiled(classes: np.ndarray, names: list[str]) -> np.ndarray:
    """Each of ``classes`` (object array of normal class names) replaced by the next
    normal class name in ``names``: every image filed under a class not its own."""
    position = pd.Index(names).get_indexer(classes)
    return np.asarray(names, dtype=object)[(position + 1) % len(names)]


def measure(model: str, train: tuple, test: tuple, normal: list[str], overrides: list[str]) -> dict:
    """Fit ``model`` on ``train`` (images, class names) and measure it on ``test``."""
    overrides = [*overrides, f"model.name={model}"]
    config = load_config(overrides=overrides).detector_config()
    start = time.perf_counter()
    detector = VAEDetector(config).fit(train[0], condition=train[1])
    result = {"model": model, "fit_s": round(time.perf_counter() - start, 1)}
    images, classes = test
    is_normal = np.isin(classes, normal)
    # Images of other classes are of no trained class: cvae takes their best class.
    scores = detector.anomaly_score(images, classes)
    result["other_classes_auroc"] = round(100 * roc_auc_score(~is_normal, scores), 2)
    if model == "cvae":
        own = scores[is_normal]
        other = detector.anomaly_score(images[is_normal], misfiled(classes[is_normal], normal))
        labels = np.r_[np.zeros(len(own)), np.ones(len(other))]
        result["misfiled_auroc"] = round(100 * roc_auc_score(labels, np.r_[own, other]), 2)
        result["misfiled_flagged_pct"] = round(100 * np.mean(other > detector.threshold_), 1)
        result["filed_flagged_pct"] = round(100 * np.mean(own > detector.threshold_), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="torchvision root")
    parser.add_argument("--dataset", default="FashionMNIST", help="folder under --data-dir")
    parser.add_argument("--classes", default="0,7", help="normal class indices, e.g. 0,7")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for both models (repeatable); default: the defaults",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    folder = args.data_dir / args.dataset
    sets = [
        read_idx_set(folder, train, torchvision_classes(args.dataset)) for train in (True, False)
    ]
    normal = [sets[0].classes[int(i)] for i in args.classes.split(",")]
    train_names, test_names = (images.label_names() for images in sets)
    rows = np.isin(train_names, normal)
    train = (sets[0].images[rows], train_names[rows])
    test = (sets[1].images, test_names)
    overrides = [f"training.num_threads={args.threads}", *args.overrides]
    results = pd.DataFrame([measure(m, train, test, normal, overrides) for m in MODELS])
    results.insert(0, "normal_classes", ",".join(normal))
    results.insert(0, "dataset", args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "results.csv", index=False)
    print(results.to_string(index=False))


if __name__ == "__main__":
    main()
