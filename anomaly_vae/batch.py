"""Scheduled batch scoring: every input file is scored exactly once per model version.

The inputs of a table model are CSV/Parquet files; those of an image model are folders
of images (each read as `anomaly-vae score` reads a folder), scored into one CSV each.

- Each output is written to a temporary name in the output folder and renamed into
  place, so a file is there whole or not at all.
- A ledger (SQLite, ``.anomaly-vae-ledger.sqlite`` in the output folder) records which
  input (path, size, SHA-256 of its bytes) was scored by which model, when, with how
  many rows (and, with ``explain``, how many columns each row's explanation names:
  :func:`ledger_model`). It is written after the rename: a run killed in between scores that
  input again on the next run and replaces the output with identical content, so no
  row is lost or duplicated. A changed input (new hash) is scored again.
- A lock file (``.anomaly-vae.lock``, ``flock``) lets one run at a time work on an
  output folder; a second run started meanwhile exits with a clear message.
- A bad input (unreadable, wrong schema) is recorded as failed with its reason and left
  untouched; the other inputs are still scored, and the run reports the failure. The
  ledger numbers the failed attempts at the same bytes with the same model; after
  ``max_attempts`` of them (:class:`~anomaly_vae.config.BatchConfig`) the input is
  quarantined: later runs pass it over, and name it, until it changes or a run is told
  to retry it (``retry_quarantined``).
- Large files are read in chunks of ``chunk_rows`` rows, so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anomaly_vae.config import BatchConfig
from anomaly_vae.data.images import hidden_below, is_image_file, read_with_images
from anomaly_vae.data.preprocessing import MissingValuesError, warnings_per_file
from anomaly_vae.data.tables import (
    PARQUET_SUFFIXES,
    CsvFormat,
    checked_csv_format,
    quoted_names,
    read_csv_parts,
    refuse_repeated_names,
    table_errors,
)
from anomaly_vae.errors import AnomalyVAEError, DataError, ModelNotFoundError
from anomaly_vae.outputs import (
    OUTPUT_SUFFIXES,
    atomic_output,
    identify_rows,
    make_folder,
    writing,
)
from anomaly_vae.wording import counted

logger = logging.getLogger(__name__)

LEDGER_FILE = ".anomaly-vae-ledger.sqlite"
LOCK_FILE = ".anomaly-vae.lock"
INPUT_SUFFIXES = OUTPUT_SUFFIXES  # each input is scored into a file of its own kind
DRIFT_SAMPLE_PER_CHUNK = 2_000  # scores kept per chunk for the drift statistic (a random
# subsample): the statistic needs a sample, and keeping every score would grow with the file
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing an input
STAGING_SUFFIX = ".tmp"  # a folder of images still being filled: not an input until renamed
STALE_SUFFIX = ".stale"  # appended to an output whose input or model changed and then failed
# to score: its scores no longer stand for what the input holds or the model says


class BatchLockedError(AnomalyVAEError):
    """Another batch run is working on the same output folder."""

    # EX_TEMPFAIL (sysexits.h): try again later; lets a scheduler tell an overlap, which
    # is expected, from a failure.
    exit_code = 75


class Failures(NamedTuple):
    """The failed attempts in a row at scoring an input's bytes with a model: how many,
    and the latest one's reason."""

    attempts: int
    reason: str


@dataclass
class BatchReport:
    """What a run did with each input, in one of four ways: scored, skipped, failed
    (tried in this run) or quarantined (not tried)."""

    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already scored by this model
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    # failed path -> its attempt number at these bytes with this model; none for a
    # conflict between inputs (two of one name), which is no failure of the input's bytes
    attempts: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, Failures] = field(default_factory=dict)  # path -> its failures
    rows: int = 0
    flagged: int = 0
    scores: list[np.ndarray] = field(default_factory=list)  # per file, a sample for drift

    @property
    def anomaly_rate(self) -> float:
        return self.flagged / self.rows if self.rows else 0.0


def holds_only_tables(path: Path) -> bool:
    """True for a folder holding CSV/Parquet files and no image files (in it or below):
    the inputs of a table model's `batch`, which `fit`, `score` and the like would read
    as an image folder with no images."""
    if not path.is_dir():
        return False
    tables = False
    for file in path.rglob("*"):  # an image folder stops at its first image
        if is_image_file(file) and file.is_file():
            return False
        tables = tables or (file.suffix.lower() in INPUT_SUFFIXES and file.is_file())
    return tables


def input_files(source: str | Path, report_others: bool = True) -> list[Path]:
    """A folder's CSV/Parquet files, or the files a glob pattern matches, sorted; the
    other files are named in an INFO line when ``report_others``.

    A folder that does not exist, or a pattern whose fixed part names none, is a
    DataError: on a schedule a typo or an unmounted share must not pass as "nothing new".
    """
    path = Path(source)
    if path.is_dir():
        found = list(path.iterdir())
    elif glob.has_magic(str(source)):
        found = _glob_matches(source)
    elif path.is_file():
        if path.suffix.lower() not in INPUT_SUFFIXES:
            raise DataError(f"{source}: batch scores {', '.join(INPUT_SUFFIXES)} files")
        found = [path]
    else:
        raise DataError(f"{source}: no such folder or file")
    files = sorted(p for p in found if p.is_file() and not p.name.startswith("."))
    others = [p.name for p in files if p.suffix.lower() not in INPUT_SUFFIXES]
    if others and report_others:  # --verbose: a README beside the data is no warning
        logger.info("not inputs (not %s): %s", ", ".join(INPUT_SUFFIXES), quoted_names(others))
    return [p for p in files if p.suffix.lower() in INPUT_SUFFIXES]


def image_folders(source: str | Path, output_dir: Path) -> list[Path]:
    """The input folders of an image model, sorted: the folders a glob pattern matches, or
    a folder itself when it holds image files, else its subfolders (one per batch, e.g.
    one a day). Folders being filled (a name starting with "." or ending in ".tmp") and
    folders without images (such as ``output_dir`` beside them) are not inputs (yet).
    DataError as :func:`input_files`, and when ``output_dir`` is or lies inside an input
    folder, but not in a hidden folder there, nor hidden itself (``day1/.scores``), which
    no listing of images reads (:func:`read_with_images`, as ``score`` places its scores
    and maps): its files would be written among that input's images."""
    path = Path(source)
    if glob.has_magic(str(source)):
        found = _glob_matches(source)
    elif path.is_dir():
        found = [path] if any(_is_image(p) for p in path.iterdir()) else list(path.iterdir())
    elif path.is_file():
        raise DataError(f"{source} is a file; an image model scores folders of images")
    else:
        raise DataError(f"{source}: no such folder (an image model scores folders of images)")
    folders = sorted(
        p
        for p in found
        if p.is_dir()
        and not p.name.startswith(".")
        and not p.name.endswith(STAGING_SUFFIX)
        and any(_image_files(p))
    )
    for folder in folders:
        if read_with_images(output_dir, folder):
            where = "is" if output_dir.resolve() == folder.resolve() else "is inside"
            raise DataError(
                f"the output folder {output_dir} {where} the input folder {folder}: choose "
                "an --output-dir outside it (e.g. beside the folders scored), or a hidden "
                f"folder in it ({folder / '.scores'}), which is never read as images"
            )
    return folders


def _is_image(path: Path) -> bool:
    return is_image_file(path) and path.is_file()


def _image_files(folder: Path) -> Iterator[Path]:
    """The image files in ``folder`` and its subfolders (class folders), as the image
    reader takes them (none hidden, nor in a hidden folder)."""
    return (p for p in folder.rglob("*") if _is_image(p) and not hidden_below(p, folder))


def check_source(source: str | Path, output_dir: Path) -> None:
    """The checks that need neither the lock nor the model, so that they write nothing:
    DataError when ``source`` is neither a folder nor a file, nor a glob pattern whose
    fixed part is a folder, and, while no run has used ``output_dir`` (it holds no
    ledger), when it holds CSV/Parquet inputs (:func:`batch_inputs`). Once a run has,
    an image model's own outputs lie there, and :func:`model_inputs` checks a table
    model's inputs instead."""
    if glob.has_magic(str(source)):
        _glob_matches(source)
    elif not Path(source).exists():
        raise DataError(f"{source}: no such folder or file")
    if not (output_dir / LEDGER_FILE).exists():
        batch_inputs(source, output_dir, report_others=False)  # named once, when scored


def _glob_matches(pattern: str | Path) -> list[Path]:
    """The paths a glob pattern matches; DataError when its fixed part is no folder."""
    fixed = Path(*_parts_before_magic(Path(pattern)))
    if not fixed.is_dir():
        raise DataError(f"{pattern}: there is no folder {fixed}")
    return [Path(p) for p in glob.glob(str(pattern))]


def _parts_before_magic(path: Path) -> list[str]:
    """The leading parts of a glob pattern without wildcards (at least the root or ".")."""
    parts = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return parts or ["."]


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprint(path: Path) -> tuple[int, str]:
    """``(size in bytes, SHA-256)`` of an input file, or of a folder's image files (their
    names relative to it and their digests, in name order): an image added, removed,
    renamed or changed makes a folder a new input; other files (``.DS_Store``) do not."""
    if not path.is_dir():
        return path.stat().st_size, file_digest(path)
    files = sorted(_image_files(path))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return sum(file.stat().st_size for file in files), digest.hexdigest()


def output_path(output_dir: Path, source: Path) -> Path:
    """The output of an input: the same name for a file, ``<name>.csv`` for a folder."""
    return output_dir / (f"{source.name}.csv" if source.is_dir() else source.name)


LEDGER_COLUMNS = (
    "input",  # the input's absolute path
    "size",  # its bytes (a folder's: its images')
    "sha256",  # :func:`input_fingerprint`; NULL where the input could not be read
    "model",  # :func:`ledger_model`
    "status",  # "done" or "failed"
    "rows",  # rows (images) scored
    "output",  # the output's absolute path
    "reason",  # why it failed
    "at",  # when, UTC
    "attempt",  # a failure's number among the failed attempts in a row at these bytes with
    # this model (:meth:`Ledger.failed_attempts`); NULL when done, for a conflict between
    # inputs, and in the rows of a ledger written before attempts were counted
)
LEDGER_INDEXES = {  # name: columns, of the ledger's lookups (see Ledger.__init__)
    "scored_by_output": "output, status",  # Ledger.last_written
    "scored_by_input": "input, status",  # Ledger.failed_attempts
}


class Ledger:
    """What was scored, by which model, in one SQLite file: a row per input tried, each
    written in a transaction of its own (one INSERT, committed), so a run killed at any
    point leaves every row whole or absent."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path)
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS scored (input TEXT, size INTEGER, sha256 TEXT, "
            "model TEXT, status TEXT, rows INTEGER, output TEXT, reason TEXT, at TEXT, "
            "attempt INTEGER)"
        )
        known = {row[1] for row in self.connection.execute("PRAGMA table_info(scored)")}
        if "attempt" not in known:
            # A ledger written before failed attempts were counted: one statement, which
            # SQLite applies whole or not at all. Its failed rows stay uncounted (NULL),
            # since a conflict between inputs, never counted, cannot be told from them.
            # An older version still reads and writes the table: it names its columns.
            self.connection.execute("ALTER TABLE scored ADD COLUMN attempt INTEGER")
        # Each input looks itself up by output (last_written) and by input
        # (failed_attempts) in a table that grows by a row per input per run: without
        # these, each lookup reads every row. Created on open, so an older ledger gets
        # them too; a version from before ignores them and SQLite keeps them up to date
        # as it inserts. The trailing rowid of each entry serves ORDER BY rowid / MAX.
        for name, columns in LEDGER_INDEXES.items():
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {name} ON scored ({columns})")
        self.connection.commit()

    def last_written(self, output: str) -> tuple[str, str, str] | None:
        """``(input, sha256, model)`` of the latest run that wrote ``output``, if any."""
        return self.connection.execute(
            "SELECT input, sha256, model FROM scored WHERE output = ? AND status = 'done' "
            "ORDER BY rowid DESC LIMIT 1",
            (output,),
        ).fetchone()

    def failed_attempts(self, input_path: str, sha256: str | None, model: str) -> Failures:
        """The failed attempts at scoring ``input_path`` with these bytes (``sha256``; None: it
        could not be read) and ``model`` since the input was last scored (by any model, of
        any bytes): how many, and the latest one's reason ("" for none). Conflicts between
        inputs and failures recorded before attempts were counted are none of them."""
        attempts = (
            "FROM scored WHERE input = ? AND sha256 IS ? AND model = ? AND status = 'failed' "
            "AND attempt IS NOT NULL AND rowid > (SELECT COALESCE(MAX(rowid), 0) FROM scored "
            "WHERE input = ? AND status = 'done')"
        )
        where = (input_path, sha256, model, input_path)
        count, reason = self.connection.execute(
            f"SELECT COUNT(*), (SELECT reason {attempts} ORDER BY rowid DESC LIMIT 1) {attempts}",
            where + where,
        ).fetchone()
        return Failures(count, reason or "")

    def record(self, **values: Any) -> None:
        values["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        columns = LEDGER_COLUMNS
        self.connection.execute(
            f"INSERT INTO scored ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            tuple(values.get(c) for c in columns),
        )
        self.connection.commit()

    def entries(self) -> pd.DataFrame:
        """Every row, oldest first; ``attempt`` as integers, missing where there is none."""
        entries = pd.read_sql_query("SELECT * FROM scored ORDER BY at, rowid", self.connection)
        return entries.astype({"attempt": "Int64"})

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold the output folder's lock for the duration; BatchLockedError if taken.

    A folder it created is removed again when the run fails before writing anything
    into it (a mistyped --model leaves no empty output folder behind).
    """
    created = not folder.exists()
    make_folder(folder)
    lock = folder / LOCK_FILE
    with writing(lock):
        handle = lock.open("a")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BatchLockedError(
                f"another batch run is scoring into {folder}; this one exits without scoring"
            ) from exc
        try:
            yield
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                lock.unlink()
                folder.rmdir()
            raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_chunks(
    path: Path,
    chunk_rows: int,
    text_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    checked: CsvFormat | None = None,
) -> Iterator[tuple[pd.DataFrame, int]]:
    """The rows of a CSV or Parquet file, ``chunk_rows`` at a time, each chunk with how
    far the file is read (:func:`reading_total` says in what); a CSV file's
    ``text_columns`` are read as written, its ``categorical_columns`` in no number
    format (see :func:`read_csv_chunks`). ``columns``: only these (names the file has,
    see :func:`table_columns`) are read; ``checked``: a CSV file's format as
    :func:`checked_table` gives it, for a file read more than once.

    DataError naming the file when it cannot be read (:func:`table_errors`); only the
    reading is covered, so that a failure to write the scores is not blamed on it.
    """
    with table_errors(path):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            refuse_repeated_names(parquet.schema_arrow.names, where=str(path))
            start = 0
            for part in _parquet_parts(parquet, chunk_rows, columns):
                chunk = part.to_pandas()
                # The file's running row index, as pandas gives CSV chunks: errors name
                # file rows.
                chunk.index = pd.RangeIndex(start, start + len(chunk))
                start += len(chunk)
                yield chunk, start
        else:
            yield from read_csv_parts(
                path, chunk_rows, text_columns, categorical_columns, columns, checked
            )


def checked_table(
    path: Path, text_columns: Sequence[str] = (), categorical_columns: Sequence[str] = ()
) -> CsvFormat | None:
    """What :func:`read_chunks` checks of the table file ``path`` before its first rows,
    for a file read more than once (give it as ``checked``), so that the checks run and
    warn once: a CSV file's format (:func:`~anomaly_vae.data.tables.checked_csv_format`,
    which scans every row's fields); None for a Parquet file, whose checks are cheap.
    DataError as :func:`read_chunks`."""
    with table_errors(path):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return None
        return checked_csv_format(path, [*text_columns, *categorical_columns])


def table_columns(path: Path, checked: CsvFormat | None = None) -> list[str]:
    """The column names of the parts :func:`read_chunks` gives of ``path`` (``checked``:
    a CSV file's :func:`checked_table`), read from its header or Parquet schema alone."""
    with table_errors(path):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            # Through pandas, as the parts are: an index saved with the file is no column.
            return list(pq.ParquetFile(path).schema_arrow.empty_table().to_pandas().columns)
        checked = checked or checked_table(path)
        assert checked is not None  # a CSV file's
        separator, encoding, _ = checked
        return list(pd.read_csv(path, sep=separator, encoding=encoding, nrows=0).columns)


def _parquet_parts(parquet: Any, rows: int, columns: Sequence[str] | None = None) -> Iterator[Any]:
    """The rows of ``parquet`` (a ``pyarrow.parquet.ParquetFile``) as pyarrow tables of
    ``rows`` rows each, the last one fewer (``columns``: only these). Its batches alone
    end where its row groups do: parts cut there would hold other rows than the file's
    ``rows`` at a time, and a scoring part other than whole scoring batches (see
    ``scoring.whole_batches``)."""
    import pyarrow as pa

    pending = None
    for batch in parquet.iter_batches(batch_size=rows, columns=columns):
        table = pa.Table.from_batches([batch])
        pending = table if pending is None else pa.concat_tables([pending, table])
        while pending.num_rows >= rows:
            yield pending.slice(0, rows)
            pending = pending.slice(rows)
    if pending is not None and pending.num_rows:
        yield pending


def reading_total(path: Path) -> tuple[int, bool] | None:
    """How much of ``path`` :func:`read_chunks` reads in all: ``(size, True)``, its bytes,
    for a CSV file, whose rows are not known before it is read; ``(rows, False)`` for a
    Parquet file, whose metadata counts them. None when it cannot be told (no such file,
    a Parquet file that does not open), for reading to report."""
    try:
        if path.suffix.lower() not in PARQUET_SUFFIXES:
            return path.stat().st_size, True
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows, False
    except Exception:  # read_chunks names what is wrong (pyarrow raises its own types)
        return None


def drift_sample(scores: np.ndarray) -> np.ndarray:
    """A random subsample of at most DRIFT_SAMPLE_PER_CHUNK of ``scores`` ``(n,)``, the
    same for the same ``n``. Random, not every k-th: data with a period (hourly rows, a
    fixed sensor order) would line up with a stride and bias the sample."""
    if len(scores) <= DRIFT_SAMPLE_PER_CHUNK:
        return scores
    rows = np.random.default_rng(len(scores)).choice(len(scores), DRIFT_SAMPLE_PER_CHUNK, False)
    return scores[np.sort(rows)]


def score_file(
    detector: Any,
    source: Path,
    output: Path,
    chunk_rows: int,
    progress: bool = False,
    progress_lines: bool = False,
    naming: bool = False,
    explain: int = 0,
) -> tuple[int, int, np.ndarray]:
    """Score ``source`` chunk by chunk into ``output`` (atomically); ``progress`` counts
    the rows on a terminal, and off one, with ``progress_lines`` too (``anomaly-vae
    score``), a line on stderr every ``PROGRESS_LINE_SECONDS`` says how many are scored.

    Returns ``(rows, rows flagged, a subsample of the scores for the drift statistic)``.
    DataError naming ``source`` when it cannot be read; with ``naming`` (``anomaly-vae
    score``), also when a chunk cannot be scored (a bad cell: ``FILE: column 'x' holds
    infinite values (row 58)``), as fit names it. A batch run gives each failure's reason
    after its input's path, in its report and ledger. ``explain`` > 0: each row's
    ``explain`` columns that added most to its score follow its scores
    (:meth:`~anomaly_vae.detector.VAEDetector.explain`).
    """
    from anomaly_vae.explanation import explain_scored, refuse_unexplained
    from anomaly_vae.fitting import naming_file  # fitting builds on this module

    if explain:
        refuse_unexplained(detector)  # before the output is begun
    data_config = detector.effective_config.data
    id_column = data_config.id_column
    rows, flagged, sample, writer = 0, 0, [], None
    total, in_bytes = reading_total(source) or (None, False)
    counter = scoring_progress(
        source.name, "rows", progress, progress_lines, total, bytes_total=in_bytes
    )
    # Warnings once per file, judged over all its rows, not once per chunk.
    with counter as count, atomic_output(output) as temporary, warnings_per_file() as gathered:
        # The ids as written: read as numbers, "007" would come out as 7.
        ids = [] if id_column is None else [id_column]
        parts = read_chunks(source, chunk_rows, ids, data_config.categorical_columns)
        for chunk, read in parts:
            # A bad cell or a missing column is named with the file, as fit names it;
            # only the scoring: a reading error names the file already.
            with naming_file(source) if naming else contextlib.nullcontext():
                try:
                    frame = detector.score_frame(chunk)
                    if explain:
                        frame = frame.join(explain_scored(detector, chunk, explain))
                except MissingValuesError as exc:
                    # The file's count, not this part's: the rest read on, a part at a time
                    exc.count_parts(part for part, _ in parts)
                    raise
            identify_rows(frame, id_column, first_row=rows)
            if output.suffix.lower() in PARQUET_SUFFIXES:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(temporary, table.schema)
                writer.write_table(_as_schema(table, writer.schema, source, rows))
            else:
                frame.to_csv(temporary, mode="a", header=rows == 0, index=False)
            rows += len(frame)
            count(len(frame), read)
            flagged += int(frame["is_anomaly"].sum())
            sample.append(drift_sample(frame["score"].to_numpy()))
        if writer is not None:
            writer.close()
        if rows == 0:
            raise DataError(f"{source} has a header but no data rows")
    # Named as its errors are (a batch run names each input's warnings itself)
    with warnings_named(str(source)) if naming else contextlib.nullcontext():
        gathered.log(rows)
    return rows, flagged, np.concatenate(sample)


class Count(Protocol):
    """``count(n, read=None)`` of :func:`scoring_progress`."""

    def __call__(self, n: int, read: int | None = None) -> None: ...


@contextlib.contextmanager
def scoring_progress(
    name: str,
    unit: str,
    progress: bool,
    progress_lines: bool = False,
    total: int | None = None,
    bytes_total: bool = False,
    verb: str | None = None,
) -> Iterator[Count]:
    """Within it, ``count(n)`` after each part scored (``count(n, read)`` with
    ``bytes_total``): with ``progress``, a bar counts the ``unit`` (rows, images) of
    ``name`` on a terminal, and off one, with ``progress_lines`` too (``anomaly-vae
    score``), a line on stderr every ``PROGRESS_LINE_SECONDS`` says how many are scored.
    ``verb`` names other work than scoring (``"reading"``), in the bar and the lines.

    ``total``: the ``unit`` to be scored, or with ``bytes_total`` the bytes of the file
    (a CSV file's rows are not known before it is read), of which ``read`` are read
    after a part: the bar then shows a share done and the time left, and the count of
    ``unit`` beside them."""
    from anomaly_vae.training import PROGRESS_LINE_SECONDS  # as fit does; torch is loaded

    # disable=None: tqdm draws only on a terminal, so scheduled runs' logs stay clean.
    disable = None if progress else True
    desc = name if verb is None else f"{verb} {name}"
    if bytes_total:
        bar = tqdm(
            desc=desc,
            total=total,
            unit="B",
            unit_scale=True,  # 285M of a 285 MB file, as fit's phase line says its size
            leave=False,
            disable=disable,
            postfix=f"0 {unit}",
        )
    else:
        bar = tqdm(desc=desc, total=total, unit=f" {unit}", leave=False, disable=disable)
    # Off a terminal (a log, a container) a file of millions of rows would say nothing for
    # minutes; a batch run's log keeps to its lines per input (--verbose).
    lines_every = PROGRESS_LINE_SECONDS if progress and progress_lines and bar.disable else None
    start = last_line = time.perf_counter()
    done = 0

    def count(n: int, read: int | None = None) -> None:
        nonlocal done, last_line
        done += n
        if bytes_total and read is not None:
            # The count of rows moves with the bytes: both are drawn at update's interval.
            bar.set_postfix_str(counted(done, unit), refresh=False)
            bar.update(read - bar.n)
        else:
            bar.update(n)
        if lines_every is not None and time.perf_counter() - last_line >= lines_every:
            last_line = time.perf_counter()
            print(
                f"{verb or 'scoring'} {name}: {counted(done, unit)} ({last_line - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    with bar:
        yield count


def _as_schema(table: Any, schema: Any, source: Path, first_row: int) -> Any:
    """``table`` (a chunk's scores, pyarrow) in the Parquet output's ``schema``, set by
    the first chunk: a column typed otherwise in this chunk (an id column empty in all
    its rows reads as floats) is cast; DataError when it cannot be."""
    if table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's ArrowInvalid
        # is a ValueError
        changed = [f.name for f in table.schema if f.type != schema.field(f.name).type]
        columns = f"column{'s' if len(changed) > 1 else ''} {quoted_names(changed)}"
        raise DataError(
            f"{source}: from row {first_row + 1} on, {columns} "
            f"{'hold' if len(changed) > 1 else 'holds'} values of a different type from the "
            "rows before (were those all empty?); a Parquet column keeps one type: write CSV"
        ) from exc


def run_batch(
    source: str | Path,
    output_dir: Path,
    detector: Any,
    model_id: str,
    chunk_rows: int = BatchConfig.chunk_rows,
    scorer: Any = None,
    progress: bool = False,
    explain: int = 0,
    max_attempts: int = BatchConfig.max_attempts,
    retry_quarantined: bool = False,
) -> BatchReport:
    """Score every input of ``source`` not yet scored by ``model_id`` into ``output_dir``,
    holding the folder's lock (:func:`output_lock`) meanwhile.

    ``scorer.score_file(source, output, chunk_rows)`` does the scoring when given (the
    Spark engine); by default :func:`score_file` with ``detector`` (the local engine).
    ``progress``: a bar over the input files (and, locally, one over each file's rows)
    on a terminal. ``explain`` > 0: each row's ``explain`` columns that added most to its
    score follow its scores; ``max_attempts``, ``retry_quarantined``: which inputs that
    failed before are tried (see :func:`score_inputs`).
    """
    paths, image_scorer = model_inputs(source, output_dir, detector, progress)
    with output_lock(output_dir):
        return score_inputs(
            paths,
            output_dir,
            detector,
            model_id,
            chunk_rows,
            scorer or image_scorer,
            progress,
            explain,
            max_attempts,
            retry_quarantined,
        )


def model_inputs(
    source: str | Path, output_dir: Path, detector: Any, progress: bool = False
) -> tuple[list[Path], Any]:
    """The inputs of ``source`` for ``detector``'s kind of data, and the scorer an image
    model needs (None for tables; ``progress`` counts each folder's images on a
    terminal). DataError when ``source`` holds only the other kind's
    inputs: a model alias moved to a model of the other kind must not pass for "nothing
    new" on a schedule."""
    if detector.data_kind_ == "image":
        paths, scorer = image_batch(source, output_dir, detector, progress)
        others = [] if paths else _quietly(input_files, source)
        found = f"{len(others)} table file{'s' if len(others) > 1 else ''}"
        wanted = "folders of images"
    else:
        paths, scorer = batch_inputs(source, output_dir), None
        others = [] if paths else _quietly(image_folders, source, output_dir)
        found = f"{len(others)} folder{'s' if len(others) > 1 else ''} of images"
        wanted = "CSV or Parquet files"
    if others:
        raise DataError(
            f"{source} holds {found} and no inputs of this {detector.data_kind_} model, "
            f"which scores {wanted}: is --model the model meant for this folder?"
        )
    return paths, scorer


def _quietly(find: Any, *arguments: Any) -> list[Path]:
    """``find(*arguments)``, or no inputs where it raises DataError."""
    try:
        return list(find(*arguments))
    except DataError:
        return []


def image_batch(
    source: str | Path, output_dir: Path, detector: Any, progress: bool = False
) -> tuple[list[Path], Any]:
    """An image model's inputs (:func:`image_folders`) and its scorer, which scores each
    folder, a chunk of images at a time, into one CSV (``progress``: a bar over its
    images on a terminal)."""
    from anomaly_vae.scoring import ImageFolderScorer  # scoring builds on this module

    return image_folders(source, output_dir), ImageFolderScorer(detector, progress)


def batch_inputs(source: str | Path, output_dir: Path, report_others: bool = True) -> list[Path]:
    """The input files of ``source`` (:func:`input_files`); DataError if ``output_dir``
    holds them, since their scores would replace them."""
    paths = input_files(source, report_others)
    if any(path.parent.resolve() == output_dir.resolve() for path in paths):
        raise DataError(
            f"the output folder {output_dir} holds the inputs: their scores would replace "
            "them; choose another --output-dir"
        )
    return paths


def score_inputs(
    paths: list[Path],
    output_dir: Path,
    detector: Any,
    model_id: str,
    chunk_rows: int = BatchConfig.chunk_rows,
    scorer: Any = None,
    progress: bool = False,
    explain: int = 0,
    max_attempts: int = BatchConfig.max_attempts,
    retry_quarantined: bool = False,
) -> BatchReport:
    """:func:`run_batch` of the files ``paths`` (from :func:`batch_inputs`), for a caller
    that already holds the output folder's lock.

    ``explain`` > 0: each table row's ``explain`` columns that added most to its score
    follow its scores (``why_1``, ``why_1_nats``, ...), written by ``scorer`` (made with
    the same ``explain_top``; by default the local engine's); an input is skipped only
    when its output was written with the same ``explain`` (:func:`ledger_model`).
    DataError before anything is scored when ``detector`` cannot explain rows (an image
    model, a family ensemble).

    An input whose bytes failed ``max_attempts`` times in a row with this model (and
    ``explain``; :meth:`Ledger.failed_attempts`) is quarantined: not tried, and listed
    in the report's ``quarantined``; 0: none is. ``retry_quarantined``: they are tried
    once more (failing again, each stays quarantined)."""
    from anomaly_vae.explanation import refuse_unexplained

    if explain:
        refuse_unexplained(detector)
    if scorer is None:
        scorer = LocalScorer(detector, progress, explain)
    if getattr(scorer, "explain_top", 0) != explain:
        # The ledger would record columns that the outputs do not have, or the other way.
        raise ValueError(
            f"the scorer explains {getattr(scorer, 'explain_top', 0)} columns a row, not {explain}"
        )
    model_id = ledger_model(model_id, explain)
    report = BatchReport()
    # Under the lock no other run writes here: temporary files are from a killed run.
    for stale in output_dir.glob(".*.tmp"):
        stale.unlink()
    for stale in output_dir.glob(".*.spark"):
        shutil.rmtree(stale, ignore_errors=True)
    ledger = Ledger(output_dir / LEDGER_FILE)
    namesakes = Counter(path.name for path in paths)
    try:
        for path in tqdm(paths, desc="batch", unit="file", disable=None if progress else True):
            if namesakes[path.name] > 1:
                # One output per input name: scoring both would keep only the last.
                reason = (
                    f"{namesakes[path.name]} inputs are named {path.name}; their outputs "
                    "would overwrite each other (score them into separate folders)"
                )
                _record_failure(path, model_id, reason, ledger, report)
                continue
            with warnings_named(path.name):
                _score_one(
                    path,
                    output_dir,
                    scorer,
                    detector,
                    model_id,
                    chunk_rows,
                    ledger,
                    report,
                    0 if retry_quarantined else max_attempts,
                )
    finally:
        ledger.close()
    return report


@contextlib.contextmanager
def warnings_named(name: str) -> Iterator[None]:
    """Begin the package's warnings made meanwhile with ``name``, an input among many (a
    batch's; fit's training or --eval file; the file score or calibrate reads, named
    as their errors name it), so that a reader of a run's log knows which input each is
    about (those that name it already are left alone)."""
    previous = logging.getLogRecordFactory()

    def named(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith("anomaly_vae") and record.levelno >= logging.WARNING:
            message = record.getMessage()
            if not message.startswith(name):
                record.msg, record.args = f"{name}: {message}", ()
        return record

    logging.setLogRecordFactory(named)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


class LocalScorer:
    """The local engine: pandas chunks through the detector in this process;
    ``explain_top`` > 0: each row's columns that added most to its score, that many."""

    def __init__(self, detector: Any, progress: bool = False, explain_top: int = 0) -> None:
        self.detector = detector
        self.progress = progress
        self.explain_top = explain_top

    def score_file(
        self, source: Path, output: Path, chunk_rows: int
    ) -> tuple[int, int, np.ndarray]:
        return score_file(
            self.detector, source, output, chunk_rows, self.progress, explain=self.explain_top
        )


EXPLAIN_MARK = " --explain "  # between the model and K in the ledger's model column


def ledger_model(model_id: str, explain: int = 0) -> str:
    """What the ledger records as the model of an output scored by ``model_id`` with
    ``explain`` columns named per row: ``model_id`` alone for none, else
    ``"<model_id> --explain K"``.

    An output's columns differ with K, so K belongs with what a rerun compares: a run with
    another K scores the input again, one with the same K skips it. In the model column,
    not a column of its own, so that the ledger's table keeps its columns (no migration):
    a row written before ``--explain`` existed reads as K = 0, which is what was written,
    and a version that knows no ``--explain`` takes a row with K > 0 for another model
    and scores the input again, without explanations, rather than skip it.

    >>> ledger_model("anomaly-vae/3"), ledger_model("anomaly-vae/3", 2)
    ('anomaly-vae/3', 'anomaly-vae/3 --explain 2')
    """
    return f"{model_id}{EXPLAIN_MARK}{explain}" if explain else model_id


def _score_one(
    path: Path,
    output_dir: Path,
    scorer: Any,
    detector: Any,
    model_id: str,
    chunk_rows: int,
    ledger: Ledger,
    report: BatchReport,
    max_attempts: int,
) -> None:
    """Score ``path`` unless its output is up to date or it is quarantined (after
    ``max_attempts`` failed attempts; 0: never), and note in the ledger and the report
    what came of it."""
    key = str(path.resolve())
    output = output_path(output_dir, path)
    try:
        size, digest = input_fingerprint(path)
    except OSError as exc:  # removed or made unreadable since the folder was listed
        # Its bytes unknown, the attempts are counted at "unreadable" (sha256 NULL): a file
        # that cannot be read turns as many runs red as a bad one, and once readable it is
        # another input, tried at once.
        failures = ledger.failed_attempts(key, None, model_id)
        if not _quarantines(path, failures, max_attempts, report):
            reason = f"cannot read it: {exc.strerror}"
            _record_failure(path, model_id, reason, ledger, report, attempt=failures.attempts + 1)
        return
    last = ledger.last_written(str(output.resolve()))
    # Only the latest write counts: an input changed back, or a model rolled back, is
    # scored again, since the output holds the scores of whatever came in between.
    if last == (key, digest, model_id) and output.is_file():
        report.skipped.append(str(path))
        return
    if last is not None and last[0] != key and Path(last[0]).exists():
        reason = (
            f"{output} holds the scores of {last[0]}, another input of that name (score "
            "this one into a separate folder)"
        )
        _record_failure(path, model_id, reason, ledger, report, size, digest)
        return
    # Checked after the conflicts above: those fail every run until they are resolved, and
    # then the input's own attempts, if any, decide.
    failures = ledger.failed_attempts(key, digest, model_id)
    if _quarantines(path, failures, max_attempts, report):
        return
    # --verbose: a line per input as it starts and ends, for a scheduler's log, where no
    # progress bar is drawn and a large file takes minutes.
    logger.info("%s: scoring (%s bytes)", path, f"{size:,}")
    started = time.monotonic()
    try:
        rows, flagged, sample = scorer.score_file(path, output, chunk_rows)
    except (AnomalyVAEError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if last is not None and last[0] == key and output.is_file():
            reason += _set_aside(
                output, "the file as it was" if last[1] != digest else f"model {last[2]}"
            )
        attempt = failures.attempts + 1
        _record_failure(path, model_id, reason, ledger, report, size, digest, attempt)
        return
    output.with_name(output.name + STALE_SUFFIX).unlink(missing_ok=True)  # now superseded
    ledger.record(
        input=key,
        size=size,
        sha256=digest,
        model=model_id,
        status="done",
        rows=rows,
        output=str(output.resolve()),
    )
    logger.info(
        "%s: scored %s (%s flagged) in %.2f s into %s",
        path,
        counted(rows, f"{detector.score_item}s"),
        f"{flagged:,}",
        time.monotonic() - started,
        output,
    )
    report.scored.append(str(path))
    report.rows += rows
    report.flagged += flagged
    report.scores.append(sample)


def _set_aside(output: Path, scored_from: str) -> str:
    """Rename ``output`` (the scores of ``scored_from``: an earlier version of its input, or
    another model) to end in :data:`STALE_SUFFIX`, so that a reader of the folder does not
    take them for the input's scores now; the note for the failure's reason."""
    stale = output.with_name(output.name + STALE_SUFFIX)
    try:
        output.replace(stale)
    except OSError as exc:
        return f"; {output} still holds the scores of {scored_from} ({exc.strerror})"
    return f"; the scores of {scored_from} were moved to {stale.name}"


def _quarantines(path: Path, failures: Failures, max_attempts: int, report: BatchReport) -> bool:
    """True, noted in the report, when ``failures`` (of ``path``'s bytes with this run's
    model) reach ``max_attempts`` (0: never): the input is not tried in this run."""
    if not max_attempts or failures.attempts < max_attempts:
        return False
    report.quarantined[str(path)] = failures
    # INFO: the caller names the quarantined inputs in a line at the end of the run.
    logger.info(
        "%s: quarantined after %d failed attempts (the latest: %s); not tried",
        path,
        failures.attempts,
        failures.reason,
    )
    return True


def _record_failure(
    path: Path,
    model_id: str,
    reason: str,
    ledger: Ledger,
    report: BatchReport,
    size: int | None = None,
    digest: str | None = None,
    attempt: int | None = None,
) -> None:
    """Note in the ledger and the report that ``path`` was not scored, and why:
    ``attempt``, the failure's number among the attempts at these bytes with this model
    (:meth:`Ledger.failed_attempts`); None for a conflict between inputs, which is no
    attempt at the input's bytes and never quarantines it."""
    ledger.record(
        input=str(path.resolve()),
        size=size,
        sha256=digest,
        model=model_id,
        status="failed",
        reason=reason,
        attempt=attempt,
    )
    report.failed[str(path)] = reason
    if attempt is not None:
        report.attempts[str(path)] = attempt
    # INFO: the caller lists every failure at the end of the run; --verbose shows them live.
    logger.info("%s failed: %s", path, reason)


NAMES_CHARS = 500  # a line or MLflow tag naming inputs is cut here (each is in the ledger)


def input_names(paths: Sequence[str], limit: int = NAMES_CHARS) -> str:
    """The base names of ``paths`` in one line, cut after about ``limit`` characters at a
    name's end, then saying how many there are in all (the line a run's table shows).

    >>> input_names(["in/a.csv", "in/b.csv"])
    'a.csv, b.csv'
    >>> input_names(["in/a.csv", "in/b.csv", "in/c.csv"], limit=8)
    'a.csv, ... (3 in all)'
    """
    names = ", ".join(Path(path).name for path in paths)
    if len(names) <= limit:
        return names
    return f"{names[:limit].rsplit(', ', 1)[0]}, ... ({len(paths)} in all)"


DRIFT_WARNING = 0.1  # KS statistic above which the batch's scores are reported as drifted:
# a 10-point gap between the score CDFs of the batch and of the calibration rows
DRIFT_P_VALUE = 0.01  # ... when a gap that large is also this unlikely between two samples
# of one distribution: a small batch's statistic is large by chance alone (above 0.1 with
# probability about 0.59 for 100 scores against 150 calibration scores, 0.99 for 20, by
# Kolmogorov's limit distribution), so scheduled runs warned of drift that was not there.


@dataclass(frozen=True)
class Drift:
    """The two-sample Kolmogorov-Smirnov test of a batch's scores against the model's
    calibration scores: ``statistic`` (0 to 1, the largest gap between their CDFs) and
    its ``p_value`` (NaN, both, when either side has no scores)."""

    statistic: float
    p_value: float

    @property
    def warns(self) -> bool:
        """True when the gap is both large (DRIFT_WARNING) and unlikely by chance
        (DRIFT_P_VALUE) for the numbers of scores compared."""
        return self.statistic > DRIFT_WARNING and self.p_value < DRIFT_P_VALUE


def drift_statistic(batch_scores: np.ndarray, calibration_scores: np.ndarray) -> Drift:
    """Two-sample Kolmogorov-Smirnov test between batch ``(n,)`` and calibration ``(m,)``
    scores."""
    from scipy.stats import ks_2samp

    if len(batch_scores) == 0 or len(calibration_scores) == 0:
        return Drift(float("nan"), float("nan"))
    result = ks_2samp(batch_scores, calibration_scores)
    return Drift(float(result.statistic), float(result.pvalue))


def model_identity(reference: str | None, detector_dir: Path | None = None) -> str:
    """A stable name of the model version: ``name/version`` for registry URIs (aliases
    resolved, in the store the model is loaded from), else ``sha256:`` of the saved
    model's files (:func:`model_files`: description, weights and an ensemble's members).
    ModelNotFoundError when the registry has no such model, alias or version."""
    if reference is not None and reference.startswith("models:/"):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from anomaly_vae.scoring import model_not_found, use_model_store  # builds on this

        use_model_store(reference)  # the project's store, where the loader will look
        client = MlflowClient()
        name, _, version = reference.removeprefix("models:/").partition("/")
        try:
            if "@" in name:
                name, alias = name.split("@", 1)
                version = client.get_model_version_by_alias(name, alias).version
            elif version.lower() == "latest":  # moves with every registered fit: pin it
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise ModelNotFoundError(
                        f"cannot load model {reference}: no version of {name!r} is registered"
                    )
                version = str(max(int(v.version) for v in versions))
        except MlflowException as exc:
            raise model_not_found(reference, exc) from exc
        return f"{name}/{version}"
    if detector_dir is not None:
        # Weights too: a weights file replaced under the same description (a copy of
        # another fit's, or the same fit's members retrained) is another model, whose
        # scores the ledger must not take for the old one's. Each file is hashed in blocks,
        # as inputs are: a few reads of files of megabytes.
        digest = hashlib.sha256()
        for file in model_files(detector_dir):
            name = file.relative_to(detector_dir).as_posix()
            digest.update(f"{name}\0{file_digest(file)}\n".encode())
        return f"sha256:{digest.hexdigest()[:16]}"
    return str(reference)


def model_files(folder: Path) -> list[Path]:
    """The files a model saved in ``folder`` is made of, in name order: its descriptions
    (``*.json``) and torch files (weights, the latent reference) and, in an ensemble's
    folder, those of each member under ``members/<name>/``. Other files there (the
    MLflow run id, a user's notes) are no part of the model. None (an empty list) for a
    folder that is not there: the loader, which comes next, says what is wrong with it."""
    from anomaly_vae.detector import ENSEMBLE_FILE, MEMBERS_FOLDER

    if not folder.is_dir():
        return []
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix in (".json", ".pt")]
    members = folder / MEMBERS_FOLDER
    if (folder / ENSEMBLE_FILE).is_file() and members.is_dir():
        for member in members.iterdir():
            if member.is_dir():
                files += model_files(member)
    return sorted(files)


def named_for_good(reference: str) -> bool:
    """True when ``reference`` names one model for good: a registry version
    (``models:/``, aliases pinned by :func:`model_identity`) or a run's artifact
    (``runs:/``); not a folder or another URI (``file://``, ``s3://``), whose model can
    be replaced under the same name."""
    return reference.startswith(("models:/", "runs:/"))


def detector_identity(detector: Any) -> str:
    """:func:`model_identity` of the folder ``detector`` saves to (the same ``sha256:``
    as the folder it was loaded from): for a model found by a URI whose content can
    change while its name does not."""
    with tempfile.TemporaryDirectory(prefix="anomaly-vae-identity-") as scratch:
        return model_identity(None, detector.save(Path(scratch)))
