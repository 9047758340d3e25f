"""Reading tables (CSV or Parquet) into pandas, with one-line errors for bad files."""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import functools
import io
import itertools
import logging
import re
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from anomaly_vae.errors import DataError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
OTHER_SEPARATORS = (";", "\t", "|")  # the most frequent in a header without commas wins
HEADER_BYTES = 1 << 20  # how much of a file is read to find its header line
SEPARATOR_ROWS = 100  # rows that tell the separator of a header holding a comma and another
# With decimal commas: "1,5", "-0,25", "3", and with dots between groups of thousands
# "1.234,5", "1.234.567" (a first group never starts with 0: "0.125" is not one)
DECIMAL_COMMA_NUMBER = r"[+-]?(?:[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?|\d*,?\d+)(?:[eE][+-]?\d+)?"
# With commas between groups of thousands: "1,234.5", "1,234,567", "3", "0.5"
THOUSANDS_COMMA_NUMBER = r"[+-]?(?:[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|\d*\.?\d+)(?:[eE][+-]?\d+)?"
DECIMAL_COMMA = "decimal comma"
THOUSANDS_COMMA = "thousands comma"
NUMBER_FORMS = {  # format -> (a number so written, what shows the format in one)
    DECIMAL_COMMA: (DECIMAL_COMMA_NUMBER, r",|\..*\."),
    THOUSANDS_COMMA: (THOUSANDS_COMMA_NUMBER, r","),
}
WHOLE_NUMBER = r"[+-]?\d+"
PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"  # as pandas reads it
DOT_OR_THOUSANDS = r"[+-]?[1-9]\d{0,2}\.\d{3}"  # "1.234": a decimal point, or thousands?
SIMILAR_NAME = 0.8  # difflib ratio from which an unknown column is named as a likely typo
# of a missing one ("temprature" for "temperature": 0.95; "temp" for "pressure": 0.33)
SHORT_ROWS_SHOWN = 5  # rows with too few fields named in the warning; the rest are counted
SCAN_BLOCK_BYTES = 1 << 20  # block of the field-count scan: faster than larger ones here; a longer
# row makes pyarrow give up, and the scan with it
HANDLER_RELEASE_SECONDS = 5.0  # at most this long for pyarrow to let go of the scan's row
# handler (milliseconds in practice; see field_counts)
SAMPLE_ROWS = 10_000  # rows of a ';'-separated file read to judge how it writes numbers
OTHER_FORMATS = {  # first bytes (a regular expression) -> (what the file is, what to do)
    rb"\x1f\x8b": ("gzip-compressed", "decompress it first (gunzip)"),
    rb"PK\x03\x04": (
        "a ZIP archive (or an Excel workbook)",
        "extract it, or save the sheet as CSV",
    ),
    rb"BZh[1-9]1AY&SY": ("bzip2-compressed", "decompress it first (bunzip2)"),
    rb"\xfd7zXZ\x00": ("xz-compressed", "decompress it first (unxz)"),
    rb"\x28\xb5\x2f\xfd": ("zstd-compressed", "decompress it first (unzstd)"),
    rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": ("an Excel 97-2003 workbook", "save the sheet as CSV"),
}
PARQUET_MAGIC = b"PAR1"  # at both ends of a Parquet file
# A JSON object, or an array of arrays or objects (or none), perhaps after a byte-order
# mark; not a CSV header such as "[a],b" or '["a"],b'
JSON_START = rb"(?:\xef\xbb\xbf)?\s*(?:\{|\[\s*[\[{\]])"
NAMES_SHOWN = 4  # column names listed in a one-line message; the rest are counted
LATIN_1 = "latin-1"  # every byte decodes, to the code point of its value: what the
# field-count scan reads any file as (it needs only the ASCII separator, quotes and breaks)
# The encoding of a CSV file that is not UTF-8: Windows-1252, as Excel and other programs
# on Windows save text in Western locales ("€" is byte 0x80, an en dash 0x96, curly quotes
# 0x91-0x94), but with every byte decoding, so no file fails half-way: the five bytes it
# leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) decode as Latin-1 does, to the control
# characters of their values. A codec of this package's own (see windows_1252).
WINDOWS_1252 = "anomaly_vae_windows_1252"

# How a command names the anomaly value of a label column of text, for its errors to advise.
ANOMALY_LABEL_VIA_SET = "--set data.anomaly_label=VALUE"  # fit: saved with the model
ANOMALY_LABEL_VIA_OPTION = "--anomaly-label VALUE"  # calibrate and view


def _windows_1252_table() -> str:
    """The 256 characters the bytes of :data:`WINDOWS_1252` decode to, by byte value."""
    characters = []
    for byte in range(256):
        try:
            characters.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:  # undefined in Windows-1252: the Latin-1 character
            characters.append(chr(byte))
    return "".join(characters)


WINDOWS_1252_TABLE = _windows_1252_table()
# What Latin-1 reads bytes 0x80-0x9F as (C1 control characters) -> what WINDOWS_1252 does
LATIN_1_TO_WINDOWS_1252 = {code: WINDOWS_1252_TABLE[code] for code in range(0x80, 0xA0)}
_WINDOWS_1252_MAP = codecs.charmap_build(WINDOWS_1252_TABLE)


def _encode_windows_1252(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, _WINDOWS_1252_MAP)


def _decode_windows_1252(data: ReadableBuffer, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(data, errors, WINDOWS_1252_TABLE)


class _Windows1252Encoder(codecs.IncrementalEncoder):
    def encode(self, input: str, final: bool = False) -> bytes:
        return _encode_windows_1252(input, self.errors)[0]


class _Windows1252Decoder(codecs.IncrementalDecoder):
    def decode(self, input: ReadableBuffer, final: bool = False) -> str:
        return _decode_windows_1252(input, self.errors)[0]


class _Windows1252Writer(codecs.StreamWriter):
    def encode(self, input: str, errors: str = "strict") -> tuple[bytes, int]:
        return _encode_windows_1252(input, errors)


class _Windows1252Reader(codecs.StreamReader):
    def decode(self, input: ReadableBuffer, errors: str = "strict") -> tuple[str, int]:
        return _decode_windows_1252(input, errors)


@functools.cache
def windows_1252() -> str:
    """The name of the :data:`WINDOWS_1252` codec, registered with Python's codecs on the
    first call (not on import): ``pd.read_csv``, ``open`` and pyarrow then find it by name.

    >>> b"5 \\x80 \\x961\\x81".decode(windows_1252())
    '5 € –1\\x81'
    """
    info = codecs.CodecInfo(
        _encode_windows_1252,
        _decode_windows_1252,
        streamreader=_Windows1252Reader,
        streamwriter=_Windows1252Writer,
        incrementalencoder=_Windows1252Encoder,
        incrementaldecoder=_Windows1252Decoder,
        name=WINDOWS_1252,
    )
    codecs.register(lambda name: info if name == WINDOWS_1252 else None)
    return WINDOWS_1252


def as_windows_1252(text: str) -> str:
    """``text`` read as Latin-1, as :data:`WINDOWS_1252` reads the same bytes: its C1
    control characters (bytes 0x80-0x9F) become Windows-1252's characters. For what
    models saved before :data:`WINDOWS_1252` learned from files that are not UTF-8.

    >>> as_windows_1252("\\x80 1\\x965 caf\\xe9 \\x81")
    '€ 1–5 café \\x81'
    """
    return text.translate(LATIN_1_TO_WINDOWS_1252)


def csv_format(path: str | Path) -> tuple[str, str]:
    """``(separator, encoding)`` of a CSV file, judged on its first ``HEADER_BYTES``.

    Encoding: UTF-8 when they decode as such, else :data:`WINDOWS_1252` (in which every
    byte decodes) with a warning (a file that stops being UTF-8 later fails to read; one
    with NUL bytes, binary or UTF-16, is refused). Separator: a comma, unless the header
    line has none and holds semicolons, tabs or bars (spreadsheets in many locales save
    ';'-separated files, with ',' as the decimal mark); a header with a comma and one of
    those is told by the rows (see :func:`_separator_of_rows`).
    """
    with open(path, "rb") as handle:
        start = handle.read(HEADER_BYTES)
    _refuse_other_formats(path, start)
    try:  # incremental: a character cut at the end of the sample is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(start, final=False)
        encoding = "utf-8"
    except UnicodeDecodeError:
        if b"\x00" in start:
            raise DataError(
                f"{path} is not a readable CSV file: it holds NUL bytes (binary, or "
                "UTF-16 text); save it as UTF-8"
            ) from None
        logger.warning("%s is not UTF-8; reading it as Windows-1252", Path(path).name)
        encoding = windows_1252()
        text = start.decode(encoding)
    header = text.splitlines()[0] if text else ""
    if "," in header:
        others = [separator for separator in OTHER_SEPARATORS if separator in header]
        return (_separator_of_rows(path, text, [",", *others]) if others else ","), encoding
    counts = {separator: header.count(separator) for separator in OTHER_SEPARATORS}
    most = max(counts, key=counts.__getitem__)
    return (most if counts[most] else ","), encoding


def _separator_of_rows(path: str | Path, text: str, candidates: list[str]) -> str:
    """The one of ``candidates`` that splits the header and each of the first
    ``SEPARATOR_ROWS`` rows of ``text`` (the start of a CSV file) into the same number of
    fields, at least two (quotes respected): a header holds a comma and another separator
    ("temp, °C;load"). A comma when none does (the rows are then checked as such); a
    DataError when several do."""
    lines = text[: text.rfind("\n") + 1] or text  # whole lines only
    fits = []
    for separator in candidates:
        reader = csv.reader(io.StringIO(lines), delimiter=separator)
        try:
            rows = [row for row in itertools.islice(reader, SEPARATOR_ROWS + 1) if row]
        except csv.Error:  # a field beyond csv's size limit: not told by this separator
            continue
        if len(rows) == 1:  # a header alone tells nothing; such a file is refused later
            return ","
        if len(rows[0]) > 1 and all(len(row) == len(rows[0]) for row in rows):
            fits.append(separator)
    if len(fits) > 1:
        header = lines.splitlines()[0]
        raise DataError(
            f"{path}: cannot tell how its columns are separated: "
            f"{' and '.join(map(repr, fits))} each split its header {header!r:.80} and its "
            "first rows into as many fields; rename the columns whose names hold one of "
            'them, or quote those names ("temp, °C")'
        )
    return fits[0] if fits else ","


def _refuse_other_formats(path: str | Path, start: bytes) -> None:
    """DataError naming what a file read as CSV really is, by its first bytes ``start``,
    for formats often handed over in place of a CSV file (whose bytes would otherwise be
    reported as text that is not UTF-8, or as a header of missing columns)."""
    for magic, (kind, advice) in OTHER_FORMATS.items():
        if re.match(magic, start):
            raise DataError(f"{path} is {kind}, not a CSV or Parquet file: {advice}")
    if start.startswith(PARQUET_MAGIC):  # a header "PAR1,PAR2" starts so too: check the end
        with open(path, "rb") as handle:
            handle.seek(max(0, Path(path).stat().st_size - len(PARQUET_MAGIC)))
            if handle.read() == PARQUET_MAGIC:
                raise DataError(
                    f"{path} is a Parquet file named as CSV: give it the suffix .parquet"
                )
    if re.match(JSON_START, start):
        raise DataError(
            f"{path} looks like JSON, not a CSV or Parquet file: convert it (e.g. "
            "pandas.read_json(...).to_csv(...))"
        )


def checked_csv_format(path: str | Path, unformatted: Sequence[str]) -> CsvFormat:
    """``(separator, encoding, number formats)`` of a CSV file, once its header and the
    field count of every row are checked: what both readers below need first. The
    columns ``unformatted`` are never read in a number format (:func:`_number_formats`)."""
    separator, encoding = csv_format(path)
    _refuse_repeated_header(path, separator, encoding)
    _check_field_counts(path, separator)
    return separator, encoding, _number_formats(path, separator, encoding, unformatted)


def read_csv(
    path: str | Path, text_columns: Sequence[str] = (), categorical_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """``pd.read_csv`` with the separator and encoding of :func:`csv_format` (see
    :func:`_numbers_of`); ``text_columns`` are read as written (an id "007" stays "007",
    and an id beyond 2**53 is not rounded as a float would be); ``categorical_columns``
    (declared so) as pandas reads them, never in a number format: codes such as "3,4"
    stay as written."""
    unformatted = [*text_columns, *categorical_columns]
    separator, encoding, formats = checked_csv_format(path, unformatted)
    with _reading(path, encoding):
        frame = pd.read_csv(
            path, sep=separator, encoding=encoding, dtype=_as_read(formats, text_columns)
        )
    return _numbers_of(frame, formats, unformatted)


def read_csv_chunks(
    path: str | Path,
    chunk_rows: int,
    text_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """:func:`read_csv`, ``chunk_rows`` rows at a time."""
    for chunk, _ in read_csv_parts(path, chunk_rows, text_columns, categorical_columns):
        yield chunk


def read_csv_parts(
    path: str | Path,
    chunk_rows: int,
    text_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    checked: CsvFormat | None = None,
) -> Iterator[tuple[pd.DataFrame, int]]:
    """:func:`read_csv_chunks`, each chunk with the bytes of the file read so far: up to
    the file's size, which the last chunk reaches; a chunk's count runs ahead of its rows
    by what pandas has read but not yet parsed (a block of 256 KiB at most).

    ``columns``: only these (names of the header) are read, each chunk holding the same
    rows and values as in a chunk of every column; ``checked``: the file's
    :func:`checked_csv_format`, for a file read more than once, so that its checks run
    (and warn) once."""
    unformatted = [*text_columns, *categorical_columns]
    separator, encoding, formats = checked or checked_csv_format(path, unformatted)
    if columns is not None:  # the formats of columns not read would name missing columns
        kept = {name: form for name, form in formats.columns.items() if name in columns}
        formats = NumberFormats(kept, formats.file)
    # pandas is given the open file, not its path, so that its position says how far
    # the reading has got; it reads and decodes the bytes as it would from the path.
    with open(path, "rb") as handle:
        with _reading(path, encoding):
            reader = pd.read_csv(
                handle,
                sep=separator,
                encoding=encoding,
                dtype=_as_read(formats, text_columns),
                usecols=columns,
                chunksize=chunk_rows,
            )
        with reader:
            while True:
                # Only around pandas' own work: a filter held across a yield would reach
                # the caller's code too.
                with _reading(path, encoding):
                    chunk = next(reader, None)
                if chunk is None:
                    return
                yield _numbers_of(chunk, formats, unformatted), handle.tell()


@contextlib.contextmanager
def _reading(path: str | Path, encoding: str) -> Iterator[None]:
    """Around ``pd.read_csv``: its DtypeWarning silenced, and a byte that is not
    ``encoding`` turned into a DataError naming its offset and line.

    pandas parses a large file in parts and warns, in several lines with its own source
    line, when a column is typed differently in two of them (a stray "oops" among
    numbers); the column is then text, which the schema checks, naming the row.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            yield
    except UnicodeDecodeError as exc:
        # The codec's position counts from the part pandas was decoding, not the file.
        where = _first_undecodable(path, encoding)
        if where is None:
            raise DataError(f"{path} is not a readable CSV file: {_first_line(exc)}") from exc
        offset, line, byte = where
        raise DataError(
            f"{path} is not a readable CSV file: byte 0x{byte:02x} at offset {offset:,} "
            f"(line {line:,}) is not {encoding.upper()}, unlike the start of the file; "
            "save it as UTF-8"
        ) from exc


def _first_undecodable(path: str | Path, encoding: str) -> tuple[int, int, int] | None:
    """``(byte offset, 1-based line, byte value)`` of the first byte of ``path`` that
    ``encoding`` cannot decode, or None when every byte decodes (read in blocks)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1  # of the block's first byte
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HEADER_BYTES), b""):
            pending = decoder.getstate()[0]  # the start of a character cut by the last block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                data = pending + block  # what exc.start counts in; pending holds no newline
                newlines = block[: max(exc.start - len(pending), 0)].count(b"\n")
                return offset - len(pending) + exc.start, line + newlines, data[exc.start]
            offset, line = offset + len(block), line + block.count(b"\n")
    return None


def _refuse_repeated_header(path: str | Path, separator: str, encoding: str) -> None:
    """DataError when the header line names a column twice: pandas would rename the second
    ('a' -> 'a.1') and it would train, or be ignored at scoring, as a column of its own."""
    header = pd.read_csv(path, sep=separator, encoding=encoding, header=None, nrows=1, dtype=str)
    if not header.empty:  # empty header cells are not names (pandas calls them "Unnamed: i")
        refuse_repeated_names(header.iloc[0].dropna(), where=str(path))


@dataclass
class FieldCounts:
    """What the field-count scan of a CSV file found (see :func:`field_counts`)."""

    header: int = 0  # fields of the header; 0 when pyarrow could not read the file
    short: int = 0  # data rows with fewer fields than the header
    short_rows: list[int] = dataclass_field(default_factory=list)  # the first
    # SHORT_ROWS_SHOWN of them, as 1-based data rows
    long_row: tuple[int, int] | None = None  # (1-based data row, fields) of the first row
    # with more fields than the header


def field_counts(path: str | Path, separator: str) -> FieldCounts:
    """The rows of a CSV file whose field count differs from its header's.

    pandas fills the missing fields of a short row with missing values, as if they were
    empty, so a line cut off (a file copied while it was written) or a cell lost in an
    edit cannot be told from a row with empty cells once read; and it names a row with
    more fields by a line number that counts the header and blank lines. pyarrow's
    parser reports both, in one pass converting only the first column (the least a pass
    can convert and still split every line into its fields). A file
    pyarrow cannot read gives nothing here; pandas names the problem.

    pyarrow drops its reference to the Python row handler on one of its I/O threads,
    which takes the GIL to do so, a little after the reader is closed. Were the process
    to exit first (an error right after the read), that thread would meet a finalising
    interpreter and abort the process (exit code 134, "terminate called without an
    active exception") instead of the error's exit code 1; so this returns only once the
    handler is released.
    """
    counts = FieldCounts()
    blank = 0
    # pandas' blank line: spaces and tabs alone, unless they are the separator (a line of
    # tabs in a tab-separated file is a row of empty fields).
    blank_characters = " \t\r".replace(separator, "")

    def note(row: Any) -> str:  # pyarrow.csv.InvalidRow; the row is left out of the scan
        nonlocal blank
        counts.header = row.expected_columns
        if row.number is None:
            return "skip"
        # number counts the header and the lines of spaces, not empty lines
        data_row = row.number - 1 - blank
        if row.actual_columns > row.expected_columns:
            if counts.long_row is None:
                counts.long_row = (data_row, row.actual_columns)
        elif not row.text.strip(blank_characters):
            blank += 1  # pandas skips a line of spaces, as it does an empty one
        else:
            counts.short += 1
            if len(counts.short_rows) < SHORT_ROWS_SHOWN:
                counts.short_rows.append(data_row)
        return "skip"

    handler = weakref.ref(note)
    scanned = _scan_fields(path, separator, note)
    del note  # pyarrow's reference is now the last one
    deadline = time.monotonic() + HANDLER_RELEASE_SECONDS
    while handler() is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    return counts if scanned else FieldCounts()


def _scan_fields(path: str | Path, separator: str, note: Any) -> bool:
    """Run every row of a CSV file past ``note`` (see :func:`field_counts`); False when
    pyarrow cannot read the file."""
    try:
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                use_threads=False,  # only then does pyarrow know each row's number
                block_size=SCAN_BLOCK_BYTES,
                # Fields are told apart by the ASCII separator, quotes and line breaks
                # alone, which UTF-8 and Windows-1252 write alike; read as Latin-1, no
                # byte fails to decode (pyarrow decodes each row it hands the handler,
                # and a failure there printed a traceback that no caller could catch).
                encoding=LATIN_1,
                autogenerate_column_names=True,  # the header is row 1, counted like the rest
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=separator, newlines_in_values=True, invalid_row_handler=note
            ),
            convert_options=pa_csv.ConvertOptions(
                include_columns=["f0"], column_types={"f0": pa.string()}
            ),
        )
        with reader:
            for _ in reader:
                pass
    except (pa.ArrowException, OSError, UnicodeError) as exc:
        # The text, not the exception: a kept log record would keep its traceback, and
        # with it the row handler, alive.
        logger.debug("field-count scan of %s skipped: %s", path, str(exc))
        return False
    return True


def _check_field_counts(path: str | Path, separator: str) -> None:
    """Refuse a CSV file with a row of more fields than its header, naming the row as
    every message counts rows; warn, naming them, of rows with fewer fields, whose
    missing fields are read as missing values (see :func:`field_counts`)."""
    counts = field_counts(path, separator)
    if counts.long_row is not None:
        row, fields = counts.long_row
        raise DataError(
            f"{path} is not a readable CSV file: row {row:,} has {fields} fields, more than "
            f"the header's {counts.header} (a value holding the separator {separator!r} "
            "without quotes?)"
        )
    if not counts.short:
        return
    count, shown = counts.short, counts.short_rows
    more = f" and {count - len(shown):,} more" if count > len(shown) else ""
    logger.warning(
        "%s: %s fewer fields than its header's %d (a line cut off, or a cell lost?), "
        "read with the missing fields empty: %s %s%s",
        Path(path).name,
        f"{count:,} rows have" if count > 1 else "1 row has",
        counts.header,
        "rows" if count > 1 else "row",
        ", ".join(str(row) for row in shown),
        more,
    )


@dataclass
class NumberFormats:
    """How the columns of a CSV file write numbers that pandas cannot read as they are
    (see :func:`_number_formats`): such columns are read as text and turned into numbers
    by :func:`_numbers_of`."""

    columns: dict[str, str] = dataclass_field(default_factory=dict)  # name -> DECIMAL_COMMA
    # or THOUSANDS_COMMA
    file: str | None = None  # the file's: what a later part's column of such numbers is read as


CsvFormat: TypeAlias = tuple[str, str, NumberFormats]  # separator, encoding, number formats


def _as_read(formats: NumberFormats, text_columns: Sequence[str]) -> dict[str, type]:
    """The ``dtype`` mapping of ``pd.read_csv``: these columns are read as text (a name
    the file lacks is ignored)."""
    return dict.fromkeys([*formats.columns, *text_columns], str)


def _number_formats(
    path: str | Path, separator: str, encoding: str, unformatted: Sequence[str] = ()
) -> NumberFormats:
    """The columns of a CSV file whose numbers pandas cannot read as written: with decimal
    commas ("1,5", "1.234,5", "1.234.567") or with commas between thousands ("1,234.5",
    "1,234,567"); none of ``unformatted`` (ids, and columns declared categorical).

    Judged once per file, on its first ``SAMPLE_ROWS`` rows, so that every chunk of a
    large file is read alike. A column qualifies when every value there is a number of one
    format and a value shows it (a comma; for decimal commas, or several dots, but outside
    a ';'-separated file only in a file where a comma shows decimal commas: alone,
    "10.100.200.250" or "1.234.567" may be an IP address or a version). A value
    such as "1,234" fits both: its column is read in the format of the file's other such
    columns, or, in a ';'-separated file (as spreadsheets save them where ',' is the
    decimal mark), with decimal commas. DataError, naming the column, value and row, when
    that cannot be told, when the file mixes the formats, and, in a file of decimal
    commas, for a column whose every dotted value could hold a dot between thousands
    ("1.250": 1.25, or 1250?). A column of numbers with one dot each and no comma, one of
    which can hold no such dot ("0.125", "48.1"), is left to pandas, which reads the dot
    as a decimal point. In a file with such columns, a column of whole numbers qualifies
    too: its later rows may show the format.

    A file not ';'-separated whose first ``HEADER_BYTES`` show no comma in a value (no
    quote, in a comma-separated file) has none of these columns: a comma-separated file
    of plain numbers is not read a second time.
    """
    if separator != ";":
        with open(path, "rb") as handle:
            start = handle.read(HEADER_BYTES)
        if (b'"' if separator == "," else b",") not in start:
            return NumberFormats()
    with _reading(path, encoding):
        sample = pd.read_csv(path, sep=separator, encoding=encoding, dtype=str, nrows=SAMPLE_ROWS)
    shown: dict[str, dict[str, str]] = {DECIMAL_COMMA: {}, THOUSANDS_COMMA: {}}  # format ->
    # column -> the first value that shows it, and its row
    either, whole, dotted = [], [], []
    for name in sample.columns.difference(unformatted, sort=False):
        text = sample[name].dropna()
        if text.empty:
            continue
        forms = [
            form
            for form, (pattern, marks) in NUMBER_FORMS.items()
            if text.str.fullmatch(pattern).all() and text.str.contains(marks).any()
        ]
        if len(forms) == 2:
            either.append(name)
        elif forms:
            showing = text[text.str.contains(NUMBER_FORMS[forms[0]][1])]
            shown[forms[0]][name] = f"{showing.iloc[0]!r} (row {int(showing.index[0]) + 1})"
        elif text.str.fullmatch(WHOLE_NUMBER).all():
            whole.append(name)
        elif text.str.fullmatch(PLAIN_NUMBER).all():
            dotted.append(name)
    decimal, thousands = shown[DECIMAL_COMMA], shown[THOUSANDS_COMMA]
    if separator != ";" and not any(
        sample[name].str.contains(",", regex=False).any() for name in decimal
    ):
        decimal = {}  # several dots alone ("10.100.200.250", "1.234.567") are as likely an
        # IP address or a version as a number: read as written, unless a comma shows
    if decimal and thousands:
        (comma, one), (group, other) = next(iter(decimal.items())), next(iter(thousands.items()))
        raise DataError(
            f"{path} writes numbers both with decimal commas (column {comma!r}: {one}) and "
            f"with commas between thousands (column {group!r}: {other}): export it with one "
            "number format, best without thousands separators"
        )
    file = THOUSANDS_COMMA if thousands else DECIMAL_COMMA if decimal or separator == ";" else None
    if file is None:
        if either:
            _refuse_either_reading(path, sample, either[0])
        return NumberFormats()
    if not (decimal or thousands or either):
        return NumberFormats(file=file)
    if file == DECIMAL_COMMA:
        for name in dotted:
            _refuse_dots_that_may_be_thousands(path, sample[name], name, [*decimal, *either][0])
    return NumberFormats(dict.fromkeys([*thousands, *decimal, *either, *whole], file), file)


def _refuse_either_reading(path: str | Path, sample: pd.DataFrame, name: str) -> None:
    """DataError for column ``name`` of numbers such as "1,234", where nothing tells a
    decimal comma from a comma between thousands."""
    values = sample[name]
    position = int(np.flatnonzero(values.str.contains(",", regex=False).fillna(False))[0])
    value = values.iloc[position]
    raise DataError(
        f"{path}: column {name!r} holds {value!r} (row {position + 1}): "
        f"{_as_number(value, DECIMAL_COMMA):g} with a decimal comma, or "
        f"{_as_number(value, THOUSANDS_COMMA):g} with a comma between thousands? Nothing in "
        "the file tells: export it without thousands separators, with decimal points "
        "(comma-separated) or decimal commas (';'-separated)"
    )


def _refuse_dots_that_may_be_thousands(
    path: str | Path, values: pd.Series, name: str, comma_column: str
) -> None:
    """DataError when every dotted value of column ``name`` (numbers with one dot at most,
    in a file with decimal commas in ``comma_column``) could be a group of thousands."""
    dotted = values[values.str.contains(".", regex=False).fillna(False)]
    if dotted.empty or not dotted.str.fullmatch(DOT_OR_THOUSANDS).all():
        return
    position = int(np.flatnonzero(values.index == dotted.index[0])[0])
    value = dotted.iloc[0]
    raise DataError(
        f"{path}: column {name!r} holds {value!r} (row {position + 1}): {float(value):g} "
        f"with a decimal point, or {_as_number(value, DECIMAL_COMMA):g} with a dot between "
        f"thousands, in a file that writes decimal commas (column {comma_column!r})? Export "
        "it without thousands separators, with every decimal mark a comma"
    )


def _as_number(value: str, form: str) -> float:
    """A text ``value`` of the number format ``form`` as a number."""
    return float(_as_plain(pd.Series([value]), form).iloc[0])


def _as_plain(values: pd.Series, form: str) -> pd.Series:
    """Text numbers of the format ``form`` written as pandas reads them: "1.234,5" and
    "1,234.5" become "1234.5"."""
    if form == THOUSANDS_COMMA:
        return values.str.replace(",", "", regex=False)
    return values.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)


def _numbers_of(
    frame: pd.DataFrame, formats: NumberFormats, unformatted: Sequence[str]
) -> pd.DataFrame:
    """``frame`` (a CSV file, or a part of it) with the numbers written with decimal
    commas or commas between thousands turned into numbers: "1.234,5" or "1,234.5"
    becomes 1234.5.

    The columns of ``formats`` (read as text) must hold such numbers in every row:
    DataError naming the first that does not. Another text column (not one of
    ``unformatted``) whose every value is a number of the file's format, one showing it,
    is turned too (a column of whole numbers in the rows the file was judged on, with
    decimal commas later, in a file where no other column showed them).
    """
    others: list[str] = []
    if formats.file is not None:
        skipped = {*formats.columns, *unformatted}
        others = [
            str(name)
            for name in frame.columns
            if name not in skipped and pd.api.types.is_string_dtype(frame[name])
        ]
    for name in [*formats.columns, *others]:
        form = formats.columns.get(name, formats.file)
        assert form is not None  # the file's format, for the others
        pattern, marks = NUMBER_FORMS[form]
        values = frame[name]
        distinct = pd.Series(values.dropna().unique()).astype(str)  # once per value, not cell
        numbers = distinct.str.fullmatch(pattern)
        if name in others and not (numbers.all() and distinct.str.contains(marks).any()):
            continue
        if not numbers.all():
            position = int(np.flatnonzero(values.isin(distinct[~numbers]).to_numpy())[0])
            raise DataError(
                f"column {name!r} holds numbers written with {form}s but for "
                f"{shown_value(values.iloc[position])} ({row_named(values, position)})"
            )
        frame[name] = pd.to_numeric(_as_plain(values, form))
    return frame


def row_named(values: pd.Series, position: int) -> str:
    """``values.iloc[position]``'s row as messages name it: ``row N``, its 1-based data row
    in its file (a chunk of a file read in parts keeps the file's running row index, other
    frames count from 1), and for a frame indexed by labels (ids, or the rows a filter
    kept), ``row N, index LABEL``, the label ``frame.loc`` finds it by.

    >>> values = pd.Series([1.0, 2.0], index=pd.Index(["P07", "P12"], name="patient"))
    >>> row_named(values, 1), row_named(pd.Series([1.0, 2.0]), 1)
    ("row 2, index 'P12'", 'row 2')
    """
    index = values.index
    if isinstance(index, pd.RangeIndex) and index.step == 1:
        return f"row {int(index[position]) + 1}"
    label = index[position]
    shown = repr(label) if isinstance(label, str) else str(label)
    return f"row {position + 1}, index {shown}"


def read_table(
    path: str | Path, text_columns: Sequence[str] = (), categorical_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV (any other suffix; comma-separated, or see :func:`csv_format`) or
    Parquet (``.parquet``/``.pq``) file; a CSV file's ``text_columns`` (an id) are read
    as written, not as numbers, and its ``categorical_columns`` in no number format
    (see :func:`read_csv`).

    Raises DataError, naming the file, when it is missing, unreadable, empty or
    has no data rows.
    """
    path = Path(path)
    with table_errors(path):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            # Parquet can hold two columns of one name, which pyarrow reads as a riddle.
            refuse_repeated_names(parquet_column_names(path), where=str(path))
            frame = pd.read_parquet(path)
        else:
            frame = read_csv(path, text_columns, categorical_columns)
    if frame.shape[0] == 0:
        raise DataError(f"{path} has a header but no data rows")
    return frame


@contextlib.contextmanager
def table_errors(path: Path) -> Iterator[None]:
    """Around reading the table file ``path``: DataError, naming it, when it is missing,
    a folder, empty, or not a readable CSV or Parquet file."""
    if str(path) == "-" and not path.exists():
        raise DataError(
            "reading the table from standard input is not supported: save it to a file "
            "and give that file's path"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a CSV or Parquet file")
    if not path.is_file():
        # A pipe (/dev/stdin, <(...)) is read several times (format, field counts, rows):
        # the first read would empty it, and the file be reported as empty.
        raise DataError(
            f"{path} is not a regular file (a pipe?): it is read more than once, so save "
            "the data to a file and give that file's path"
        )
    try:
        yield
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file: {_first_line(exc)}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from exc
    except Exception as exc:  # pyarrow raises its own types for corrupt Parquet
        if path.suffix.lower() in PARQUET_SUFFIXES and type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from exc
        raise


def parquet_column_names(path: str | Path) -> list[str]:
    """The column names in a Parquet file's schema, in order (read without its data)."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def as_frame(data: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """A DataFrame view of ``data``; arrays get the column names ``x0, x1, ...``.

    Column names are text, as the saved schema keeps them: ``pd.DataFrame(array)``
    names its columns 0, 1, ..., which become "0", "1", ...
    """
    if isinstance(data, pd.DataFrame):
        if isinstance(data.columns, pd.MultiIndex):  # a pivot table, groupby().agg()
            raise DataError(
                "columns with several levels (a MultiIndex) are not supported: flatten "
                "them first, e.g. frame.columns = ['_'.join(map(str, c)) for c in frame.columns]"
            )
        refuse_repeated_names(data.columns)
        if all(isinstance(name, str) for name in data.columns):
            return data
        renamed = data.rename(columns=str)
        if renamed.columns.duplicated().any():
            raise DataError("column names must stay distinct as text (e.g. 1 and '1' clash)")
        return renamed
    refuse_sparse(data)
    array = np.asarray(data)
    if array.ndim != 2:
        # A notebook's frame.iloc[i] (a Series) is one row as a 1-D array: say how to keep
        # it a table, as scikit-learn's "Reshape your data" does.
        hint = ""
        if isinstance(data, pd.Series):
            hint = ": a DataFrame's row is a table as frame.iloc[[i]] (not frame.iloc[i])"
        elif array.ndim == 1:
            hint = ": one row is X.reshape(1, -1), one column X.reshape(-1, 1)"
        raise DataError(
            f"expected a 2-D table of shape (n_rows, n_columns), got shape {array.shape}{hint}"
        )
    # copy=False: pandas 3 copies an array by default, and fit makes two frames of its
    # input (one kept through training), scoring one: each a full copy of a table given
    # as an array (0.6 GB for the training half of a 299,285 x 500 table, the shape of
    # ADBench's census). Callers only read the frame.
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])], copy=False)


def refuse_sparse(data: object) -> None:
    """DataError for a scipy sparse matrix or array, which the detectors do not take
    (numpy reads one as a single object, and its length is ambiguous)."""
    import scipy.sparse

    if scipy.sparse.issparse(data):
        raise DataError(
            "sparse input is not supported: pass a dense array (X.toarray()) or a DataFrame"
        )


def refuse_repeated_names(names: Iterable[object], where: str = "the data") -> None:
    """DataError naming the column names that occur more than once in ``names``: which of
    two columns of one name is meant cannot be told (pandas would hand back both)."""
    repeated = pd.Index(list(names))
    repeated = repeated[repeated.duplicated()].unique()
    if len(repeated):
        raise DataError(
            f"{where} has more than one column named {', '.join(map(repr, repeated))}; "
            "give each column its own name"
        )


def quoted_names(names: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    """``'a', 'b', 'c'``, the first ``limit`` only when there are more, then their count.

    >>> quoted_names([f"f{i}" for i in range(30)], limit=3)
    "'f0', 'f1', 'f2', ... (30 in all)"
    """
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(map(repr, names[:limit])) + more


def shown_value(value: Any) -> str:
    """A cell or a given value as a message shows it: numbers plain, text quoted, never
    numpy's repr (``np.float64(1e+300)``, ``np.str_('hot')``).

    >>> shown_value(np.float64(1e300)), shown_value(np.str_("hot")), shown_value(2.5)
    ('1e+300', "'hot'", '2.5')
    """
    if isinstance(value, (np.str_, np.bytes_)):
        value = value.item()
    if isinstance(value, np.generic):
        return str(value)  # the shortest text that reads back as the same value
    return repr(value)


def take_rows(data: pd.DataFrame | np.ndarray, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows of a table or an image array, by position or boolean mask."""
    rows = np.asarray(rows)
    if isinstance(data, pd.DataFrame):
        return data.iloc[np.flatnonzero(rows) if rows.dtype == bool else rows]
    return data[rows]


def label_vector(
    frame: pd.DataFrame,
    column: str,
    anomaly_value: str | None = None,
    anomaly_option: str = ANOMALY_LABEL_VIA_SET,
) -> np.ndarray:
    """The label column as ``(n,)`` bool, True = anomaly. Accepts 0/1 or booleans, or,
    with ``anomaly_value`` (``data.anomaly_label``), any values: the rows that hold it
    (compared as text) are anomalies, every other row is normal. ``anomaly_option``:
    how the calling command names the anomaly value, which the errors advise (commands
    differ: calibrate and view take ``--anomaly-label VALUE``)."""
    labels = LabelColumn(column, anomaly_value, anomaly_option)
    labels.add(frame)
    return labels.labels()


LABEL_VALUES_SHOWN = 10  # values of a label column named when none is the anomaly label


class LabelColumn:
    """:func:`label_vector` of a table read in parts: :meth:`add` each part in the file's
    order, then :meth:`labels` gives the ``(n,)`` labels of all of them, or raises the
    DataError :func:`label_vector` raises on the whole table (the empty values counted
    over every part, the first bad value in the file's order, the first values held when
    none is ``anomaly_value``). Only the labels are kept, one bool a row."""

    def __init__(
        self,
        column: str,
        anomaly_value: str | None = None,
        anomaly_option: str = ANOMALY_LABEL_VIA_SET,
    ) -> None:
        self.column = column
        self.anomaly_value = anomaly_value
        self.anomaly_option = anomaly_option
        self.empty = 0  # empty values in the parts added
        self.bad: Any = None  # the first value neither 0 nor 1 (without anomaly_value)
        self.held: list[str] = []  # the first values held, sorted as text (anomaly_value)
        self._parts: list[np.ndarray] = []

    @property
    def failed(self) -> bool:
        """Whether the parts added already make :meth:`labels` fail, whatever follows."""
        return self.empty > 0 or self.bad is not None

    def add(self, frame: pd.DataFrame) -> None:
        """Take the labels of ``frame``, the next part; DataError at once when it has no
        label column (the other parts, of the same file, have none either)."""
        if self.column not in frame.columns:
            raise unknown_column("label", self.column, frame)
        values = frame[self.column]
        self.empty += int(values.isna().sum())
        if self.failed:
            return  # only the count of empty values can change the error now
        if self.anomaly_value is not None:
            text = values.astype(str).str.strip()
            self.held = sorted({*self.held, *text.unique()})[:LABEL_VALUES_SHOWN]
            self._parts.append((text == str(self.anomaly_value)).to_numpy())
        elif pd.api.types.is_bool_dtype(values):
            self._parts.append(values.to_numpy(dtype=bool))
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            wrong = numeric.isna() | ~numeric.isin([0, 1])
            if wrong.any():
                self.bad = values[wrong].iloc[0]
                return
            self._parts.append(numeric.to_numpy() == 1)

    def labels(self) -> np.ndarray:
        """``(n,)`` bool, True = anomaly, over every part added; DataError as above."""
        column, option = self.column, self.anomaly_option
        if self.empty:
            raise DataError(f"label column {column!r} has {self.empty} empty values")
        if self.bad is not None:
            raise DataError(
                f"label column {column!r} must hold 0 (normal) and 1 (anomaly); found "
                f"{str(self.bad)!r}. If it holds text, name the value that marks an anomaly: "
                f"{option}"
            )
        labels = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=bool)
        if self.anomaly_value is not None and not labels.any():
            seen = ", ".join(map(repr, self.held))
            raise DataError(
                f"label column {column!r} never holds the anomaly label {self.anomaly_value!r}; "
                f"it holds {seen}: name the value that marks an anomaly with {option}"
            )
        return labels


def similar_names_hint(missing: list[str], unknown: list[str]) -> str:
    """A parenthesis naming the ``unknown`` columns of the data that are likely the
    ``missing`` ones under another spelling, or "" when none is.

    >>> similar_names_hint(["temp"], ["Temp ", "x"])
    " (the data has 'Temp ': names are case- and space-sensitive)"
    >>> similar_names_hint(["temperature"], ["temprature"])
    " (similar names in the data: 'temprature')"
    """

    def key(name: str) -> str:
        return "".join(name.split()).casefold()

    spelled = {key(name): name for name in reversed(unknown)}  # the first of equal keys
    variants = [spelled[key(name)] for name in missing if key(name) in spelled]
    if variants:
        return f" (the data has {quoted_names(variants)}: names are case- and space-sensitive)"
    similar = [
        close
        for name in missing
        for close in difflib.get_close_matches(name, unknown, n=1, cutoff=SIMILAR_NAME)
    ]
    if similar:
        return f" (similar names in the data: {quoted_names(similar)})"
    return ""


def unknown_column(role: str, name: str, frame: pd.DataFrame) -> DataError:
    """The error for a ``role`` column ("label", "id") that ``frame`` lacks: a likely
    misspelling named first, then the columns."""
    hint = similar_names_hint([name], [str(c) for c in frame.columns])
    return DataError(f"{role} column {name!r} is not in the data{hint}; columns: {_names(frame)}")


def _names(frame: pd.DataFrame, limit: int = 12) -> str:
    names = [str(c) for c in frame.columns]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
