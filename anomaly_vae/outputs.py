"""Output files of scoring: whole or absent, never in place of their input, readable
as any file the user makes.

Every output is written to a temporary file beside its destination and renamed into
place, so a reader (or a killed run) never sees half a file; a folder of outputs (the
anomaly maps of ``score --maps``) likewise, to a temporary folder moved into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
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


def _creation_mode(folder: bool = False) -> int:
    """The permission bits a plain ``open(path, "w")`` would give a new file (0o666 less
    the umask), or ``mkdir`` a new folder (0o777 less it); ``mkstemp`` and ``mkdtemp``
    give 0o600 and 0o700 whatever the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


@contextlib.contextmanager
def atomic_output(path: Path, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` if the block ends without an
    exception, deleted otherwise (Ctrl-C, and SIGTERM turned into SystemExit by the CLI,
    included). The folder is created if needed.

    With ``folder``, the temporary path is a folder for the block to fill, and ``path`` a
    folder: a new one is the temporary folder renamed; into an existing one each file is
    moved, replacing a file of its name and leaving its other files be (as writing into
    it did). Either way nothing reaches ``path`` before the block has written it all. The
    temporary folder of an existing ``path`` is made inside it, hidden: on the same file
    system whatever ``path`` is (``.``, a mount point), needing no right to write its parent.

    An OSError, here or in the block, becomes a DataError naming ``path``: the block
    writes the temporary file, and the callers read their input through
    :func:`~anomaly_vae.data.tables.table_errors`, which names the input itself.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "scores.csv") as temporary:
    ...     _ = temporary.write_text("score\\n1.5\\n")
    >>> with atomic_output(folder / "maps", folder=True) as temporary:
    ...     _ = (temporary / "001.png").write_bytes(b"")
    >>> sorted(p.name for p in folder.iterdir()), [p.name for p in (folder / "maps").iterdir()]
    (['maps', 'scores.csv'], ['001.png'])
    """
    with writing(path):
        if folder and path.exists() and not path.is_dir():
            raise DataError(f"cannot write {path}: it is a file, not a folder")
        make_folder(path.parent, path)
        prefix = f".{path.name or path.resolve().name}."  # "." has no name of its own
        existing = folder and path.is_dir()
        if folder:
            where = path if existing else path.parent
            temporary = Path(tempfile.mkdtemp(suffix=".tmp", prefix=prefix, dir=where))
        else:
            handle, name = tempfile.mkstemp(suffix=".tmp", prefix=prefix, dir=path.parent)
            os.close(handle)
            temporary = Path(name)
        try:
            yield temporary
            if folder:
                _move_folder_into_place(temporary, path, existing)
            else:
                temporary.chmod(_creation_mode())
                os.replace(temporary, path)
        except BaseException:
            if folder:
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                temporary.unlink(missing_ok=True)
            raise


def _move_folder_into_place(temporary: Path, path: Path, existing: bool) -> None:
    """The files of the folder ``temporary`` as those of ``path``: the folder renamed when
    ``path`` did not exist (not ``existing``), else each file moved into it (a rename
    each, so the folder holds a part of them only for as long as the renames take)."""
    if not existing:
        temporary.chmod(_creation_mode(folder=True))
        os.replace(temporary, path)
        return
    for file in sorted(temporary.iterdir()):
        os.replace(file, path / file.name)
    temporary.rmdir()


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
