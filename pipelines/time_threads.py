"""How fast do fit and scoring run with 1 torch thread against one per core, on a quiet
machine and with one core kept busy by another process (a shared host)?

    python pipelines/time_threads.py --out results/threads

Fits the default detector for a few epochs on a 50,000-row, 30-column table and scores
200,000 rows, alternating the thread counts (``--repeats`` rounds each), first alone and
then beside a busy loop in a child process. Writes ``OUT/results.csv`` and prints it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from time_family import synthetic_table  # this folder is on the path when run as a script

from anomaly_vae import VAEDetector, load_config

TRAIN_ROWS, SCORE_ROWS, COLUMNS = 50_000, 200_000, 30
EPOCHS = 5  # enough to time an epoch's work; early stopping plays no part


def _busy() -> None:
    """Keep one core busy until terminated (the other work of a shared host)."""
    while True:
        pass


def time_once(threads: int, train: pd.DataFrame, rows: pd.DataFrame) -> dict[str, float]:
    """Seconds to fit (``EPOCHS`` epochs) and to score ``rows`` with ``threads`` threads."""
    overrides = [
        f"training.num_threads={threads}",
        f"training.epochs={EPOCHS}",
        "training.min_steps=0",
        "data.label_column=label",
    ]
    config = load_config(overrides=overrides).detector_config()
    start = time.perf_counter()
    detector = VAEDetector(config).fit(train)
    fit_seconds = time.perf_counter() - start
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        detector.anomaly_score(rows)
        score_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return {"fit_s": fit_seconds, "score_s": score_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    train = synthetic_table(TRAIN_ROWS, COLUMNS, seed=0)
    rows = synthetic_table(SCORE_ROWS, COLUMNS, seed=1).drop(columns="label")
    results = []
    for condition in ("quiet", "one core busy"):
        busy = None
        if condition != "quiet":
            busy = multiprocessing.Process(target=_busy, daemon=True)
            busy.start()
        try:
            for repeat in range(args.repeats):
                for threads in (1, cores):
                    timing = time_once(threads, train, rows)
                    results.append(
                        {"condition": condition, "repeat": repeat, "threads": threads, **timing}
                    )
                    print(results[-1], flush=True)
        finally:
            if busy is not None:
                busy.terminate()
    table = pd.DataFrame(results)
    table["score_rows_per_s"] = np.round(SCORE_ROWS / table["score_s"])
    args.out.mkdir(parents=True, exist_ok=True)
    table.round(2).to_csv(args.out / "results.csv", index=False)
    print(table.groupby(["condition", "threads"])[["fit_s", "score_s"]].median().round(2))


if __name__ == "__main__":
    main()
