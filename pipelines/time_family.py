"""How long does the whole family take on a 10,000-row, 20-column table with the
default settings? Writes the table, times `fit_family`, records the result.

    python pipelines/time_family.py --out results/family-timing

The table: 20 numeric columns driven by 4 hidden factors plus noise (a structure
a VAE can learn), 2% of rows with one column shifted (labelled, for evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anomaly_vae.config import load_config
from anomaly_vae.family import fit_family, format_comparison


def synthetic_table(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(rows, 4))
    values = np.tanh(factors @ rng.normal(size=(4, columns))) + 0.1 * rng.normal(
        size=(rows, columns)
    )
    label = np.zeros(rows, dtype=int)
    anomalous = rng.choice(rows, size=rows // 50, replace=False)
    values[anomalous, rng.integers(0, columns, size=len(anomalous))] += 3.0
    label[anomalous] = 1
    frame = pd.DataFrame(values, columns=[f"f{i:02d}" for i in range(columns)])
    frame["label"] = label
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/family-timing"))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--columns", type=int, default=20)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "table.csv"
    synthetic_table(args.rows, args.columns).to_csv(data, index=False)
    config = load_config(overrides=["data.label_column=label"])
    start = time.perf_counter()
    result = fit_family(data, config, project_dir=args.out)
    seconds = time.perf_counter() - start
    record = {
        "rows": args.rows,
        "columns": args.columns,
        "seconds_total": round(seconds, 1),
        "seconds_family": round(result.seconds, 1),
        "variants": result.comparison["variant"].tolist(),
        "chosen": result.chosen,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    (args.out / "timing.json").write_text(json.dumps(record, indent=2))
    (args.out / "comparison.md").write_text(format_comparison(result) + "\n")
    print(format_comparison(result))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
