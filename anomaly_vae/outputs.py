"""Output files of scoring: whole or absent, never in place of their input, readable
as any file the user makes.

Every output is written to a temporary file beside its destination and renamed into
place, so a reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae.data.tables import PARQUET_SUFFIXES
from anomaly_vae.errors import DataError

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", *PARQUET_SUFFIXES)  # what score outputs can be written as
ROW_COLUMN = "row"  # the data row's number in its file, 1 for the first, as every message
# counts rows; written when the rows have no id column
SCORE_COLUMN = "score"  # the score in use, after every score of the model
FLAG_COLUMN = "is_anomaly"


def refuse_overwriting_input(output: Path, source: Path) -> None:
    """DataError when ``output`` is the file ``source``: scores would replace the data."""
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise DataError(f"the output {output} is the input file; choose another output")


def _creation_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file (0o666 less
    the umask); ``mkstemp`` gives 0o600 whatever the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` if the block ends without an
    exception, deleted otherwise. The folder is created if needed.

    An OSError, here or in the block, becomes a DataError naming ``path``: the block
    writes the temporary file, and the callers read their input through
    :func:`~anomaly_vae.data.tables.table_errors`, which names the input itself.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "scores.csv") as temporary:
    ...     _ = temporary.write_text("score\\n1.5\\n")
    >>> sorted(p.name for p in folder.iterdir())
    ['scores.csv']
    """
    with writing(path):
        make_folder(path.parent, path)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        try:
            yield temporary
            temporary.chmod(_creation_mode())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around writing the file or folder ``path``: an OSError becomes a DataError naming
    it (not the input being read, which an unwritable output was once blamed on)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot write {path}: {reason}") from exc


def make_folder(folder: Path, target: Path | None = None) -> None:
    """``folder`` and its parents, created if missing to write ``target`` (default: the
    folder) into; DataError naming ``target`` when a part of the path is a file (mkdir
    would say only "File exists" or "Not a directory")."""
    target = target or folder
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise DataError(f"cannot write {target}: {part} is a file, not a folder")
            break
    with writing(target):
        folder.mkdir(parents=True, exist_ok=True)


def refuse_id_named_like_outputs(id_column: str | None, outputs: Iterable[str]) -> None:
    """DataError when ``id_column`` is one of the column names ``outputs`` the scores add:
    the scores could not carry both."""
    if id_column is not None and id_column in set(outputs):
        raise DataError(
            f"the id column {id_column!r} has the name of a column the scores add; rename "
            "it in the data and give the new name as the id column (--id-col, data.id_column)"
        )


def insert_id_column(scores: pd.DataFrame, id_column: str, ids: pd.Series) -> None:
    """Put ``ids`` in front of ``scores`` as column ``id_column``; a DataError, not pandas'
    ValueError, when a score column has that name (a model fitted before fit refused it)."""
    if id_column in scores.columns:
        raise DataError(
            f"this model's id column {id_column!r} has the name of a column the scores add; "
            "refit it with the id column renamed in the data"
        )
    scores.insert(0, id_column, ids)


def identify_rows(scores: pd.DataFrame, id_column: str | None, first_row: int = 0) -> None:
    """Give ``scores`` a ``row`` column in front when they carry no id column: the data
    rows' numbers, 1-based, for a part of a file that follows its first ``first_row``
    rows. Warn, once per file (``first_row`` 0), when the model has an id column that
    the data lacks."""
    if id_column is not None and id_column in scores.columns:
        return
    if id_column is not None and first_row == 0:
        logger.warning(
            "the id column %r is not in the data: rows are identified by their number "
            "(column %r) instead",
            id_column,
            ROW_COLUMN,
        )
    scores.insert(0, ROW_COLUMN, np.arange(first_row + 1, first_row + 1 + len(scores)))
