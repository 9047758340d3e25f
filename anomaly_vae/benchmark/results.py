"""The files of a benchmark run, written row by row so that a killed run keeps what it
finished: ``results.csv`` (one row per data set, class, seed and method),
``warnings.csv`` (of the rows in results.csv), ``failures.csv`` and ``failures.log``
(the latest run's failures and their tracebacks)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly_vae.errors import DataError

RESULT_COLUMNS = [
    "protocol",
    "dataset",
    "class",
    "seed",
    "method",
    "aucroc",
    "aucpr",
    "fit_s",
    "score_s",
    "n_train",
    "n_test",
]
KEY_COLUMNS = RESULT_COLUMNS[:5]  # a row is done when this key is in results.csv
FAILURE_COLUMNS = [*KEY_COLUMNS, "error"]
WARNING_COLUMNS = [*KEY_COLUMNS, "category", "message", "count"]

Key = tuple[str, str, str, str, str]  # protocol, dataset, class ("" for tables), seed, method


def row_key(protocol: str, dataset: str, cls: int | None, seed: int | None, method: str) -> Key:
    """The key of a row as written: class and seed as text, empty when not applicable."""
    return (
        protocol,
        dataset,
        "" if cls is None else str(cls),
        "" if seed is None else str(seed),
        method,
    )


@dataclass
class CsvLog:
    """A CSV file appended one flushed row at a time."""

    path: Path
    columns: list[str]

    def start(self, fresh: bool) -> None:
        """Write the header if the file is new (or ``fresh``); check it otherwise."""
        if fresh or not self.path.exists() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="") as file:
                csv.writer(file).writerow(self.columns)
            return
        with self.path.open(newline="") as file:
            header = next(csv.reader(file), [])
        if header != self.columns:
            raise DataError(
                f"{self.path} has the columns {', '.join(header)}, not "
                f"{', '.join(self.columns)}; choose another --out folder"
            )

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)
            file.flush()

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as file:
            return list(csv.DictReader(file))


class RunFiles:
    """results.csv and warnings.csv (kept across runs: resume), failures.csv and
    failures.log (this run)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.results = CsvLog(self.out / "results.csv", RESULT_COLUMNS)
        self.failures = CsvLog(self.out / "failures.csv", FAILURE_COLUMNS)
        self.warnings = CsvLog(self.out / "warnings.csv", WARNING_COLUMNS)
        self.traceback_log = self.out / "failures.log"

    def start(self) -> set[Key]:
        """Create the files; return the keys of the rows already done.

        Failures start afresh (they are retried); warnings are kept for the rows done.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        self.results.start(fresh=False)
        done = {tuple(row[c] for c in KEY_COLUMNS) for row in self.results.rows()}
        kept = [r for r in self.warnings.rows() if tuple(r[c] for c in KEY_COLUMNS) in done]
        self.warnings.start(fresh=True)
        for row in kept:
            self.warnings.append(row)
        self.failures.start(fresh=True)
        self.traceback_log.write_text("")
        return done

    def add_result(
        self,
        key: Key,
        aucroc: float,
        aucpr: float,
        fit_s: float,
        score_s: float,
        n_train: int,
        n_test: int,
    ) -> None:
        """One finished row; AUROC/AUCPR as fractions, written in percent."""
        self.results.append(
            dict(zip(KEY_COLUMNS, key, strict=True))
            | {
                "aucroc": f"{100 * aucroc:.2f}",
                "aucpr": f"{100 * aucpr:.2f}",
                "fit_s": f"{fit_s:.3f}",
                "score_s": f"{score_s:.3f}",
                "n_train": n_train,
                "n_test": n_test,
            }
        )

    def add_failure(self, key: Key, error: str, traceback_text: str) -> None:
        self.failures.append(dict(zip(KEY_COLUMNS, key, strict=True)) | {"error": error})
        with self.traceback_log.open("a") as file:
            file.write(f"== {' / '.join(part for part in key if part)}\n{traceback_text}\n")

    def add_warnings(self, key: Key, counts: dict[tuple[str, str], int]) -> None:
        for (category, message), count in counts.items():
            self.warnings.append(
                dict(zip(KEY_COLUMNS, key, strict=True))
                | {"category": category, "message": message, "count": count}
            )
