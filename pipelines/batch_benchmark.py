"""Batch scoring speed and memory, measured.

1. Throughput: a 1,000,000-row, 20-column CSV scored end to end by `anomaly-vae batch`
   with the default tabular model, beside the time pandas alone needs to read that CSV
   and write a CSV of the same row count (the I/O floor).
2. Memory: the peak resident memory of `anomaly-vae batch` on a CSV of 5,000,000 rows
   (``--memory-rows 0``: not measured). The throughput run's own peak is recorded too.

Each peak is the batch process's own (its VmHWM, read from Linux's /proc as it exits),
not this script's: see :func:`measured`.

    python pipelines/batch_benchmark.py --out results/batch

``--explain K`` times ``anomaly-vae batch --explain K`` (each row's K columns that added
most to its score); 0, the default, times scoring alone, as the figures of docs/batch.md.

Writes ``results.json`` in the output folder (with the model, inputs and outputs it
made) and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae import VAEDetector
from anomaly_vae.config import load_config


def table(rows: int, columns: int, seed: int) -> pd.DataFrame:
    """Rows driven by 4 hidden factors (the structure the model learns), float32 values."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(4, columns))
    values = np.tanh(rng.normal(size=(rows, 4)) @ mixing) + 0.1 * rng.normal(size=(rows, columns))
    frame = pd.DataFrame(values.astype(np.float32), columns=[f"f{i:02d}" for i in range(columns)])
    frame.insert(0, "id", np.arange(rows))
    return frame


def write_big(path: Path, rows: int, columns: int) -> None:
    """Write ``rows`` rows in pieces, so making the file needs little memory too."""
    piece = 500_000
    for start in range(0, rows, piece):
        part = table(min(piece, rows - start), columns, seed=start + 1)
        part["id"] += start
        part.to_csv(
            path, mode="a" if start else "w", header=start == 0, index=False, float_format="%.6g"
        )


# Run as `python -c CHILD PEAK_FILE MODULE ARGS...`: ``python -m MODULE ARGS...``, then the
# process's peak resident memory since it started (the VmHWM line of /proc/self/status,
# Linux only) written to PEAK_FILE, also when the module exits with an error.
CHILD = """\
import runpy, sys
peak_file, module = sys.argv[1:3]
sys.argv = sys.argv[2:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.writelines(line for line in status if line.startswith("VmHWM:"))
"""


def measured(module: str, *args: str) -> tuple[float, int]:
    """(seconds, peak resident memory in MiB) of ``python -m module args`` run in a child
    process; CalledProcessError when it fails.

    The peak is the child's own high-water mark (VmHWM). Not getrusage's ru_maxrss of
    RUSAGE_CHILDREN, as this script measured before: on Linux a child's ru_maxrss starts
    at its parent's peak, carried over through fork and exec, so a batch started after
    this script had read the 1,000,000-row CSV whole (the I/O floor) was given the
    script's peak for its own (docs/batch.md, Memory).
    """
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", CHILD, str(peak_file), module, *args],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - start
        line = peak_file.read_text()  # "VmHWM:   1126400 kB"
    if not line.startswith("VmHWM:"):
        raise RuntimeError(f"no peak memory from the child (VmHWM of /proc/self/status): {line!r}")
    return seconds, int(line.split()[1]) // 1024


def batch(model: Path, inputs: Path, out: Path, explain: int = 0) -> tuple[float, int]:
    """(seconds, peak resident memory in MiB) of one `anomaly-vae batch --explain explain`
    run in a child process (:func:`measured`)."""
    return measured(
        "anomaly_vae",
        "batch",
        str(inputs),
        "--output-dir",
        str(out),
        "--model",
        str(model),
        "--no-tracking",
        "--explain",
        str(explain),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/batch"))
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the throughput run's CSV"
    )
    parser.add_argument(
        "--memory-rows", type=int, default=5_000_000, help="rows of the memory run's CSV (0: none)"
    )
    parser.add_argument("--columns", type=int, default=20, help="feature columns of both CSVs")
    parser.add_argument("--explain", type=int, default=0, metavar="K")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    model = args.out / "model"
    config = load_config(overrides=["data.id_column=id"]).detector_config()
    VAEDetector(config).fit(table(20_000, args.columns, seed=0)).save(model)

    memory_seconds, peak_mib = None, None
    if args.memory_rows:
        memory_in = args.out / "memory_in"
        memory_in.mkdir(exist_ok=True)
        write_big(memory_in / "rows.csv", args.memory_rows, args.columns)
        memory_seconds, peak_mib = batch(model, memory_in, args.out / "memory_out", args.explain)

    throughput_in = args.out / "throughput_in"
    throughput_in.mkdir(exist_ok=True)
    csv = throughput_in / "rows.csv"
    write_big(csv, args.rows, args.columns)
    start = time.perf_counter()
    frame = pd.read_csv(csv)
    frame.assign(score=0.0).to_csv(args.out / "io_floor.csv", index=False)
    io_seconds = time.perf_counter() - start
    del frame
    (args.out / "io_floor.csv").unlink()
    batch_seconds, batch_peak_mib = batch(
        model, throughput_in, args.out / "throughput_out", args.explain
    )

    results = {
        "rows": args.rows,
        "columns": args.columns,
        "explain": args.explain,
        "pandas_read_write_seconds": round(io_seconds, 1),
        "batch_seconds": round(batch_seconds, 1),
        "batch_rows_per_second": round(args.rows / batch_seconds),
        "batch_over_io_floor": round(batch_seconds / io_seconds, 2),
        "memory_rows": args.memory_rows,
        "memory_run_seconds": None if memory_seconds is None else round(memory_seconds, 1),
        "peak_rss_mib": peak_mib,
        "batch_peak_rss_mib": batch_peak_mib,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
