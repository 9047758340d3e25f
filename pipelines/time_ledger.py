"""How long do the batch ledger's per-input lookups take on a ledger grown by a schedule,
with its indexes and without them (a ledger as versions before them kept it)?

    python pipelines/time_ledger.py [--out results/time-ledger.json]

Writes a ledger of ``--inputs`` inputs scored ``--runs`` times each (a row per input
per run, as a scheduled ``anomaly-vae batch`` adds them; 1 row in 50 a failure), opens
it with :class:`~anomaly_vae.batch.Ledger` (which creates the indexes on an older
ledger: timed), then times the two lookups each input costs a run
(:meth:`~anomaly_vae.batch.Ledger.last_written` by its output,
:meth:`~anomaly_vae.batch.Ledger.failed_attempts` by the input) for ``--sample`` inputs,
with the indexes and once they are dropped. Prints milliseconds per input, and with
``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from anomaly_vae.batch import LEDGER_COLUMNS, LEDGER_FILE, LEDGER_INDEXES, Ledger

MODEL = "anomaly-vae/1"


def write_old_ledger(path: Path, inputs: int, runs: int) -> None:
    """A ledger of ``inputs * runs`` rows, without indexes, as an older version wrote it.
    An input's bytes change every 10 runs; every 50th row is a failed attempt."""
    connection = sqlite3.connect(path)
    connection.execute(f"CREATE TABLE scored ({', '.join(LEDGER_COLUMNS)})")

    def rows():
        for run in range(runs):
            for i in range(inputs):
                digest = hashlib.sha256(f"{i}-{run // 10}".encode()).hexdigest()
                failed = (run * inputs + i) % 50 == 0
                yield (
                    f"/data/incoming/file{i:05}.csv",
                    1_000_000,
                    digest,
                    MODEL,
                    "failed" if failed else "done",
                    None if failed else 10_000,
                    f"/data/scored/file{i:05}.csv",
                    "a reason" if failed else None,
                    f"2026-01-01T00:00:{run:02}+00:00",
                    1 if failed else None,
                )

    marks = ", ".join("?" * len(LEDGER_COLUMNS))
    connection.executemany(f"INSERT INTO scored VALUES ({marks})", rows())
    connection.commit()
    connection.close()


def time_lookups(ledger: Ledger, inputs: int, sample: int) -> float:
    """Milliseconds per input for both lookups, over ``sample`` inputs spread evenly."""
    chosen = range(0, inputs, max(1, inputs // sample))
    started = time.perf_counter()
    for i in chosen:
        ledger.last_written(f"/data/scored/file{i:05}.csv")
        digest = hashlib.sha256(f"{i}-0".encode()).hexdigest()
        ledger.failed_attempts(f"/data/incoming/file{i:05}.csv", digest, MODEL)
    return (time.perf_counter() - started) * 1000 / len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=2_000, help="inputs a run")
    parser.add_argument("--runs", type=int, default=100, help="runs recorded")
    parser.add_argument("--sample", type=int, default=200, help="inputs looked up")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / LEDGER_FILE
        write_old_ledger(path, args.inputs, args.runs)
        started = time.perf_counter()
        ledger = Ledger(path)  # creates the indexes
        opened = time.perf_counter() - started
        indexed = time_lookups(ledger, args.inputs, args.sample)
        for name in LEDGER_INDEXES:
            ledger.connection.execute(f"DROP INDEX {name}")
        scanned = time_lookups(ledger, args.inputs, args.sample)
        ledger.close()
    rows = args.inputs * args.runs
    print(f"ledger of {rows:,} rows ({args.inputs:,} inputs x {args.runs} runs)")
    print(f"first open, creating the indexes: {opened:.2f} s")
    print(f"lookups per input, with the indexes: {indexed:.3f} ms")
    print(f"lookups per input, without (before): {scanned:.3f} ms")
    per_run = f"{indexed * args.inputs / 1000:.2f} s ({scanned * args.inputs / 1000:.1f} s without)"
    print(f"lookups of a run of {args.inputs:,} inputs: {per_run}")
    if args.out is not None:
        figures = {
            "rows": rows,
            "inputs": args.inputs,
            "runs": args.runs,
            "index_creation_s": round(opened, 3),
            "lookup_ms_indexed": round(indexed, 4),
            "lookup_ms_without": round(scanned, 4),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
