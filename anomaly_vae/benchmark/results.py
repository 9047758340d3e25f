"""The files of a benchmark run, written row by row so that a killed run keeps what it
finished: ``results.csv`` (one row per data set, class, seed and method, AUROC and
AUCPR in percent to two decimals), ``unrounded.csv`` (the same rows' AUROC and AUCPR
unrounded, which the summary's means are taken from), ``warnings.csv`` (of the rows in
results.csv), ``failures.csv`` and ``failures.log`` (the latest run's failures and their
tracebacks), and ``run.json`` (what the rows were made with: a resume with another
protocol, config or data is refused)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from anomaly_vae.errors import ConfigError, DataError

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
UNROUNDED_COLUMNS = [*KEY_COLUMNS, "aucroc", "aucpr"]  # percent, every digit a float has
RUN_FILE = "run.json"
MAX_SHOWN = 3  # differing config values an error names (it stays one line)
RUN_FILE_FORMAT = 1  # bumped when run.json changes in a way older readers cannot follow

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

    def drop_torn_row(self) -> None:
        """Cut a last row left without its newline (a run stopped while writing it): it
        is incomplete, would count as done, and the next row would be glued onto it."""
        with self.path.open("rb+") as file:
            data = file.read()
            if data.endswith(b"\n"):
                return
            file.truncate(data.rfind(b"\n") + 1)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)
            file.flush()

    def rows(self) -> list[dict[str, str]]:
        """The complete rows: a torn last row (no newline) is not one."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as file:
            text = file.read()
        complete = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(complete, newline="")))


@dataclass
class RunDescription:
    """What the rows of a results folder were made with, kept in its ``run.json``.

    A run that resumes into the folder must match it, so that rows made with another
    config or other data are never counted as done (nor summarised under this run's
    settings). ``data_dir`` is the resolved data folder; ``config`` the settings rows
    depend on, flat (``"training.epochs": 5``); ``config_text`` how they were given (for
    people, not compared); ``data`` each data set's digest (``Dataset.digest``, "" when
    unreadable); ``unchecked_rows`` the rows results.csv had before the folder had this
    file (written by an older version: their settings are unknown).
    """

    protocol: str
    data_dir: str
    config: dict[str, Any]
    config_text: str = "defaults"
    data: dict[str, str] = field(default_factory=dict)
    unchecked_rows: int = 0

    def conflict(self, earlier: RunDescription, datasets_with_rows: set[str]) -> str | None:
        """How this run differs from ``earlier`` in what its rows are made with, as the
        end of "rows made with ...", or None when it may resume. Only the data sets that
        have rows must have kept their digest."""
        if self.protocol != earlier.protocol:
            return f"protocol {earlier.protocol}, not {self.protocol}"
        if self.data_dir != earlier.data_dir:
            return f"the data in {earlier.data_dir}, not in {self.data_dir}"
        changed = [
            name
            for name in sorted(datasets_with_rows)
            if earlier.data.get(name)
            and self.data.get(name)  # "": unknown, not compared
            and earlier.data[name] != self.data[name]
        ]
        if changed:
            return f"other contents of {', '.join(changed)} (the data have changed since)"
        # A key only one side has is a setting a newer version added (or removed): its
        # default is meant to keep the old behaviour, so it does not block a resume.
        differing = [
            key
            for key in self.config
            if key in earlier.config and earlier.config[key] != self.config[key]
        ]
        if differing:
            then, now = earlier.config, self.config
            shown = "; ".join(
                f"{key}: {json.dumps(then[key])} there, {json.dumps(now[key])} now"
                for key in differing[:MAX_SHOWN]
            )
            more = len(differing) - MAX_SHOWN
            return f"another anomaly-vae config ({shown}{f'; {more} more' if more > 0 else ''})"
        return None


def read_description(path: Path) -> RunDescription | None:
    """The description in ``path``; None when there is none (a new folder, or one made
    by an older version). DataError when it cannot be read."""
    if not path.exists():
        return None
    names = {f.name for f in dataclasses.fields(RunDescription)}
    try:
        data = json.loads(path.read_text())
        if data.get("format", 0) > RUN_FILE_FORMAT:
            raise ValueError(f"format {data['format']}, newer than this version reads")
        description = RunDescription(**{k: v for k, v in data.items() if k in names})
        if not isinstance(description.config, dict) or not isinstance(description.data, dict):
            raise ValueError("its config and data must be mappings")
        return description
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); use a new --out folder, "
            f"or delete {path.name} to resume its rows without checking how they were made"
        ) from exc


def write_description(path: Path, description: RunDescription) -> None:
    """Write ``path`` whole or not at all (a killed run must not leave half a file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    text = json.dumps({"format": RUN_FILE_FORMAT, **dataclasses.asdict(description)}, indent=2)
    temporary.write_text(text + "\n")
    os.replace(temporary, path)


class RunFiles:
    """results.csv, unrounded.csv, warnings.csv and run.json (kept across runs: resume),
    failures.csv and failures.log (this run)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.results = CsvLog(self.out / "results.csv", RESULT_COLUMNS)
        self.unrounded = CsvLog(self.out / "unrounded.csv", UNROUNDED_COLUMNS)
        self.failures = CsvLog(self.out / "failures.csv", FAILURE_COLUMNS)
        self.warnings = CsvLog(self.out / "warnings.csv", WARNING_COLUMNS)
        self.traceback_log = self.out / "failures.log"
        self.description_path = self.out / RUN_FILE
        self.adopted_rows = 0  # rows of an older version's folder, now under run.json

    def start(self, description: RunDescription) -> set[Key]:
        """Check that the rows already in the folder were made as ``description`` says,
        record it in run.json, create the files; return the keys of the rows done.

        ConfigError naming the difference when they were not, before any file changes.
        Failures start afresh (they are retried); warnings are kept for the rows done.
        """
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only disk
            raise DataError(f"{self.out}: cannot make the results folder ({exc})") from exc
        self.results.start(fresh=False)  # a torn last row is cut once the check passes
        rows = self.results.rows()
        earlier = read_description(self.description_path)
        if earlier is None:
            self.adopted_rows = description.unchecked_rows = len(rows)
        elif rows:
            with_rows = {r["dataset"] for r in rows if r["protocol"] == description.protocol}
            conflict = description.conflict(earlier, with_rows)
            if conflict:
                raise ConfigError(
                    f"{self.out} holds {len(rows)} rows made with {conflict}; use a new "
                    f"--out folder (or delete {self.out} to start over)"
                )
            known = {name: digest for name, digest in description.data.items() if digest}
            description.data = earlier.data | known
            description.unchecked_rows = earlier.unchecked_rows
        write_description(self.description_path, description)
        self.unrounded.start(fresh=not rows)
        for log in (self.results, self.unrounded):
            log.drop_torn_row()
        # KEY_COLUMNS names Key's five fields, so each tuple is a Key.
        done = {cast(Key, tuple(row[c] for c in KEY_COLUMNS)) for row in rows}
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
        """One finished row; AUROC/AUCPR as fractions, written in percent: unrounded
        first, so that a row in results.csv nearly always has its unrounded values."""
        self.unrounded.append(
            dict(zip(KEY_COLUMNS, key, strict=True))
            | {"aucroc": repr(100 * float(aucroc)), "aucpr": repr(100 * float(aucpr))}
        )
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
