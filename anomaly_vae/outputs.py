"""Output files of scoring: whole or absent, never in place of their input, readable
as any file the user makes.

Every output is written to a temporary file beside its destination and renamed into
place, so a reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from anomaly_vae.data.tables import PARQUET_SUFFIXES
from anomaly_vae.errors import DataError

OUTPUT_SUFFIXES = (".csv", *PARQUET_SUFFIXES)  # what score outputs can be written as


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

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "scores.csv") as temporary:
    ...     _ = temporary.write_text("score\\n1.5\\n")
    >>> sorted(p.name for p in folder.iterdir())
    ['scores.csv']
    """
    path.parent.mkdir(parents=True, exist_ok=True)
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
