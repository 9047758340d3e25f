"""How do anomaly maps (`score --maps`) look, with and without clipping and scaling?

A detector (configs/fast.yaml, seed of the config) is fit on the first ``--train``
training images of one Fashion-MNIST class (``--normal``, default 7: sneaker); its maps
are then computed for held-out test images of that class (normal) and of the other
classes (anomalies), ``--per-class`` of each, four ways:

- ``unclipped, x1``: |x - x_hat| with the decoder mean as it comes (it overshoots
  [0, 1]), error 1 shown white (the maps before map scales);
- ``clipped, x1``: the reconstruction clipped to [0, 1] first, error 1 white;
- ``clipped, per image``: each map divided by its own largest value (every map's
  brightest pixel white: maps no longer compare);
- ``clipped, fixed``: divided by the model's ``map_scale_`` (what ``score --maps``
  writes now), the same for every image.

Groups: the normal class, boots, and the other nine classes together. Per way and
group: ``bg mass`` (the share of the map's total on pixels that are 0 in
the model's input, where an image is black: error there from a reconstruction
"blacker than black" is none a picture can have), ``peak`` (median over images of the
map's brightest grey level, 0-255, as written) and ``peak AUROC`` (how well a map's
brightest level tells the class's anomalies from the normal images; 0.5 when all are
white). Also the decoder mean's range over the images.

    python pipelines/map_check.py --data-dir ../shared/data/FashionMNIST --out results/map-check.md

Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly_vae.config import load_config
from anomaly_vae.data.images import read_idx_set
from anomaly_vae.detector import VAEDetector

FASHION = ["T-shirt", "trouser", "pullover", "dress", "coat"]
FASHION += ["sandal", "shirt", "sneaker", "bag", "boot"]
LEVELS = 255  # grey levels of a map file


def peaks(maps: np.ndarray) -> np.ndarray:
    """Each map's brightest grey level as written, ``(n,)``, from ``maps (n, C, H, W)``
    already scaled (1 = white)."""
    levels = np.rint(np.clip(maps.mean(axis=1), 0, 1) * LEVELS)
    return levels.reshape(len(maps), -1).max(axis=1)


def ways(error: np.ndarray, clipped: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """The four ways of showing maps ``(n, C, h, w)``, each scaled so that 1 is white."""
    largest = clipped.reshape(len(clipped), -1).max(axis=1)[:, None, None, None]
    return {
        "unclipped, x1": error,
        "clipped, x1": clipped,
        "clipped, per image": clipped / np.maximum(largest, 1e-12),
        "clipped, fixed": clipped / scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="FashionMNIST root")
    parser.add_argument("--normal", type=int, default=7, help="normal class (7: sneaker)")
    parser.add_argument("--train", type=int, default=3000, help="normal images to fit on")
    parser.add_argument("--per-class", type=int, default=300, help="test images per class")
    parser.add_argument("--out", required=True, type=Path, help="markdown file to write")
    args = parser.parse_args()
    train, test = read_idx_set(args.data_dir, True), read_idx_set(args.data_dir, False)
    config = load_config(Path(__file__).parents[1] / "configs" / "fast.yaml").detector_config()
    started = time.perf_counter()
    detector = VAEDetector(config).fit(train.images[train.labels == args.normal][: args.train])
    seconds = time.perf_counter() - started
    scale = detector.map_scale_
    assert scale is not None
    lines = [
        f"fit on {args.train} {FASHION[args.normal]} images in {seconds:.0f} s; "
        f"map_scale_ = {scale:.3f}\n"
    ]
    # Normal images, boots (the reviewer's case for sneakers) and all other classes.
    anomalous = [c for c in range(len(FASHION)) if c != args.normal]
    groups = {f"{FASHION[args.normal]} (normal)": [args.normal]}
    groups |= {"boot": [9], f"other {len(anomalous)} classes": anomalous}
    shown: dict[str, dict[str, np.ndarray]] = {}
    background: dict[str, np.ndarray] = {}
    low, high = np.inf, -np.inf
    for name, labels in groups.items():
        images = np.concatenate([test.images[test.labels == c][: args.per_class] for c in labels])
        x = detector.transform_features(images)
        reconstruction = detector.reconstruct(images)
        low, high = min(low, reconstruction.min()), max(high, reconstruction.max())
        clipped = np.abs(x - np.clip(reconstruction, 0, 1))
        # What score --maps writes is the clipped error (before the pool's upsampling).
        upsampled = detector._image_preprocessor.upsample(clipped)
        np.testing.assert_allclose(upsampled, detector.anomaly_map(images), atol=1e-6)
        shown[name] = ways(np.abs(x - reconstruction), clipped, scale)
        background[name] = x == 0
    lines.append(f"decoder mean over all images: {low:.2f} to {high:.2f}\n")
    normal = next(iter(groups))
    lines += ["| way | images | bg mass | peak (0-255) | peak AUROC |", "|---|---|---:|---:|---:|"]
    for way in shown[normal]:
        for name in groups:
            maps = np.clip(shown[name][way], 0, 1)  # as written: white is the most shown
            mass = float((maps * background[name]).sum() / maps.sum())
            peak = peaks(maps)
            auroc = "-"
            if name != normal:
                reference = peaks(shown[normal][way])
                labels = np.r_[np.zeros(len(reference)), np.ones(len(peak))]
                auroc = f"{roc_auc_score(labels, np.r_[reference, peak]):.3f}"
            lines.append(
                f"| {way} | {name} | {100 * mass:.1f}% | {np.median(peak):.0f} | {auroc} |"
            )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
