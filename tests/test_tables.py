import gc
import gzip
import logging
import os
import sys
import threading
import time
import types
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly_vae.data import label_vector, read_table, tables
from anomaly_vae.data.tables import _first_undecodable, read_csv_chunks, read_csv_parts
from anomaly_vae.errors import DataError


def test_reads_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "t.csv"), read_table(tmp_path / "t.parquet"), check_dtype=False
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # A spreadsheet saved in a decimal-comma locale: ';' between columns.
        (
            "temp;state;load\n1,5;ok;3\n-0,25;ok;1e3\n;bad;4\n",
            {"temp": [1.5, -0.25, np.nan], "state": ["ok", "ok", "bad"], "load": [3, 1e3, 4]},
        ),
        # Dots between groups of thousands, beside decimal commas.
        (
            "amount;count\n3.366,33;1.234.567\n684,38;12\n-1.000;3\n",
            {"amount": [3366.33, 684.38, -1000.0], "count": [1234567, 12, 3]},
        ),
        # Dots between groups of thousands, beside decimal commas, read alike in every
        # chunk (the last chunk's "-1.000" alone would read as -1.0); a column without
        # commas keeps its dots as decimal points ("0.125" is no group of thousands).
        (
            "amount;count;weight\n3.366,33;1.234.567;1.250\n684,38;12;2\n-1.000;3;0.125\n",
            {
                "amount": [3366.33, 684.38, -1000.0],
                "count": [1234567, 12, 3],
                "weight": [1.25, 2, 0.125],
            },
        ),
        # Without decimal commas anywhere, a dot is a decimal point.
        ("weight;code\n1.250;a\n2;b\n3.000;c\n", {"weight": [1.25, 2, 3], "code": ["a", "b", "c"]}),
        # ';' with decimal points; a column with a text value stays text.
        (
            "temp;code\n1.5;1,5\n2.5;x\n3.5;y\n",
            {"temp": [1.5, 2.5, 3.5], "code": ["1,5", "x", "y"]},
        ),
        (
            "temp\tstate\n1.5\tok\n2.5\tbad\n3.5\tok\n",
            {"temp": [1.5, 2.5, 3.5], "state": ["ok", "bad", "ok"]},
        ),
        # A comma anywhere in the header: a plain CSV, whatever the values hold.
        (
            'temp,note\n1.5,"a;b"\n2.5,c\n3.5,d\n',
            {"temp": [1.5, 2.5, 3.5], "note": ["a;b", "c", "d"]},
        ),
        ('"a;b",c\n1,2\n3,4\n', {"a;b": [1, 3], "c": [2, 4]}),
        # A comma in a name of a ';'-separated header: the rows tell (read as the
        # columns "temp" and " °C;load", with "5;3" and a short row, before).
        (
            "temp, °C;load\n1,5;3\n-0,25;4\n2;5\n",
            {"temp, °C": [1.5, -0.25, 2], "load": [3, 4, 5]},
        ),
        # Decimal commas between other separators: tabs, or quoted in a comma-separated
        # file (both were read as text, and "1,5" taken for a category).
        ("temp\tload\n1,5\t3\n-0,25\t4\n2\t5\n", {"temp": [1.5, -0.25, 2], "load": [3, 4, 5]}),
        ('temp,load\n"1,5",3\n"-0,25",4\n2,5\n', {"temp": [1.5, -0.25, 2], "load": [3, 4, 5]}),
        # Commas between thousands, quoted; dots between thousands in a file whose decimal
        # commas show (whatever the separator): the column's other values tell "2,000"
        # and "1.234" apart from decimals.
        (
            'amount,load\n"1,234.5",3\n12.5,4\n"2,000",5\n',
            {"amount": [1234.5, 12.5, 2000], "load": [3, 4, 5]},
        ),
        (
            "count\tload\n1.234.567\t3,5\n12\t4\n1.234\t5\n",
            {"count": [1234567, 12, 1234], "load": [3.5, 4, 5]},
        ),
        # "1,234" alone could be either: the file's other column writes decimal commas.
        ("a\tb\n1,5\t1,234\n2\t3\n", {"a": [1.5, 2], "b": [1.234, 3]}),
    ],
)
def test_csv_separator_and_decimal_commas_are_recognised(tmp_path, content, expected):
    path = tmp_path / "t.csv"
    path.write_text(content)
    expected = pd.DataFrame(expected)
    pd.testing.assert_frame_equal(read_table(path), expected, check_dtype=False)
    chunks = pd.concat(read_csv_chunks(path, chunk_rows=2), ignore_index=True)
    pd.testing.assert_frame_equal(chunks, expected, check_dtype=False)


def test_a_column_declared_categorical_is_read_in_no_number_format(tmp_path):
    # Codes such as "3,4" (sizes, pairs) read as decimal commas, 3.4, even when the
    # column was declared categorical: its categories became "3.4", and a served model,
    # sent "3,4" as written, took each for unseen.
    path = tmp_path / "t.csv"
    path.write_text('x,size\n1,"3,4"\n2,"10,250"\n3,5\n')
    assert read_table(path)["size"].tolist() == [3.4, 10.25, 5.0]
    kept = read_table(path, categorical_columns=["size"])
    assert kept["size"].astype(str).tolist() == ["3,4", "10,250", "5"]  # 5 as pandas reads it
    assert kept["x"].tolist() == [1, 2, 3]
    chunks = read_csv_chunks(path, chunk_rows=1, categorical_columns=["size"])
    assert pd.concat(chunks)["size"].astype(str).tolist() == ["3,4", "10,250", "5"]


@pytest.mark.parametrize("separator", [",", "\t"])
def test_dotted_groups_without_a_decimal_comma_are_read_as_written(tmp_path, separator):
    # IP addresses and versions whose groups have three digits: read as 10100200250 and
    # 1100200, and a column of weights beside them refused as "1.25 or 1250?" (the file
    # held no decimal comma); with quoted commas between thousands the file was refused
    # as mixing two number formats.
    frame = pd.DataFrame(
        {
            "host": ["10.100.200.250", "10.100.200.251", "10.100.201.252"],
            "version": ["1.100.200", "2.000.001", "2.000.002"],
            "weight": [1.25, 2.5, 3.0],
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False, sep=separator, float_format="%.3f")
    pd.testing.assert_frame_equal(read_table(path), frame)
    chunks = pd.concat(read_csv_chunks(path, chunk_rows=2), ignore_index=True)
    pd.testing.assert_frame_equal(chunks, frame)
    path.write_text('host,amount\n10.100.200.250,"1,234.5"\n10.100.200.251,"2,000"\n')
    assert read_table(path).to_dict("list") == {
        "host": ["10.100.200.250", "10.100.200.251"],
        "amount": [1234.5, 2000.0],
    }


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])
def test_a_csv_saved_outside_utf8_reads_the_same(tmp_path, encoding, caplog):
    # Windows-1252 (Excel on Windows) writes "€", dashes and curly quotes as bytes
    # 0x80-0x9F, which Latin-1 read as control characters ("\x80", "\x96", "\x93").
    sites = ["café", "Zürich", "señal", "5 €", "1–5 kg", "“bulk”"]
    frame = pd.DataFrame({"site": sites, "x": np.arange(6.0), "Preis €": np.arange(6.0)})
    frame.to_csv(tmp_path / "t.csv", index=False, encoding=encoding)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), frame)
    chunks = pd.concat(read_csv_chunks(tmp_path / "t.csv", chunk_rows=4), ignore_index=True)
    pd.testing.assert_frame_equal(chunks, frame)
    assert ("not UTF-8; reading it as Windows-1252" in caplog.text) == (encoding == "cp1252")


def test_every_byte_of_a_csv_that_is_not_utf8_decodes(tmp_path):
    # The five bytes Windows-1252 leaves undefined read as Latin-1 reads them: a file
    # holding one is read, not refused half-way.
    path = tmp_path / "t.csv"
    path.write_bytes(b"code,x\n" + b"".join(bytes([b]) + b",1\n" for b in range(0x80, 0x100)))
    codes = read_table(path)["code"].tolist()
    assert codes == [bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(0x80, 0x100)]
    assert [codes[b - 0x80] for b in (0x80, 0x81, 0x8D, 0x8F, 0x90, 0x96, 0x9D)] == [
        "€", "\x81", "\x8d", "\x8f", "\x90", "–", "\x9d"
    ]  # fmt: skip
    assert _first_undecodable(path, tables.csv_format(path)[1]) is None


def test_rows_with_fewer_fields_than_the_header_are_named_once(tmp_path, caplog):
    # Blank lines and lines of spaces (both skipped) and a quoted line break must not
    # shift the row numbers.
    lines = ["id,a,b,c", "r1,1,2,3", "r2,1,2", "", "  ", 'r3,"x\ny",2,3', "r4,1", "r5,1,2,"]
    path = tmp_path / "cut.csv"
    path.write_text("\n".join(lines) + "\n")
    chunks = pd.concat(read_csv_chunks(path, chunk_rows=2), ignore_index=True)
    assert chunks["c"].isna().tolist() == [False, True, False, True, True]  # as pandas reads
    warned = [r.getMessage() for r in caplog.records if "fewer fields" in r.getMessage()]
    assert warned == [
        "cut.csv: 2 rows have fewer fields than its header's 4 (a line cut off, or a cell "
        "lost?), read with the missing fields empty: rows 2, 4"
    ]
    caplog.clear()
    path.write_text("a;b\n1,5;2\n" + "3\n" * 7)  # ';' separated, decimal commas
    read_table(path)
    assert "7 rows have fewer fields than its header's 2" in caplog.text
    assert "rows 2, 3, 4, 5, 6 and 2 more" in caplog.text
    caplog.clear()
    # Tab-separated: a line of tabs is a row of empty fields, a line of spaces is blank.
    path.write_text("a\tb\tc\n1\t2\t3\n\t\n  \n4\t5\n")
    assert tables.field_counts(path, "\t") == tables.FieldCounts(3, 2, [2, 3])
    path.write_text("id,a\nr1,1\nr2,\n")  # an empty cell is not a missing field
    read_table(path)
    assert "fewer fields" not in caplog.text


def test_the_field_count_scan_returns_once_pyarrow_lets_go_of_its_row_handler(
    tmp_path, monkeypatch
):
    # pyarrow releases the Python row handler on an I/O thread that takes the GIL, a
    # little after the reader is closed; a release still pending when the process exits
    # (an error right after a read) met a finalising interpreter and aborted it (exit
    # code 134, "terminate called without an active exception", instead of 1). Here a
    # stand-in reader lets go of the handler 0.2 s after it is closed, on a thread.
    held = []

    class Reader:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            threading.Timer(0.2, held.clear).start()

        def __iter__(self):
            return iter(())

    def open_csv(path, read_options, parse_options, convert_options):
        held.append(parse_options.invalid_row_handler)
        return Reader()

    monkeypatch.setattr(tables.pa_csv, "open_csv", open_csv)
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    assert tables.field_counts(path, ",") == tables.FieldCounts()
    assert not held
    alive = [
        o
        for o in gc.get_objects()
        if type(o) is types.FunctionType and o.__qualname__ == "field_counts.<locals>.note"
    ]
    assert not alive


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("header.csv", b"a,b\n", "has a header but no data rows"),
        # Nothing to tell its separator by ("cannot tell how its columns are separated")
        ("header2.csv", "temp, °C;load\n".encode(), "has a header but no data rows"),
        ("binary.csv", b"\xff\xfe\x00\x81\x00garbage\x00\xff", "not a readable CSV"),
        ("ragged.csv", b"a,b\n1,2\n1,2,3,4\n", "not a readable CSV"),
        ("broken.parquet", b"PAR1 this is not parquet", "not a readable Parquet"),
        # Formats handed over in place of a CSV file, named by their first bytes.
        ("day.csv.gz", gzip.compress(b"a,b\n1,2\n"), "is gzip-compressed.*gunzip"),
        ("book.xlsx", b"PK\x03\x04\x14\x00rest", "ZIP archive \\(or an Excel workbook\\)"),
        ("rows.json", b' [{"a": 1, "b": 2}]', "looks like JSON"),
        ("bom.json", b'\xef\xbb\xbf{"a": [1], "b": [2]}', "looks like JSON"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest", "Excel 97-2003 workbook"),
        ("data.pq.csv", b"PAR1\x15\x04restPAR1", "is a Parquet file named as CSV.*suffix"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize("header", ["[a],[b]", '["a"],b', "PAR1,PAR2", "BZh1,BZh2"])
def test_a_header_like_another_formats_start_is_still_csv(tmp_path, header):
    (tmp_path / "t.csv").write_text(f"{header}\n1,2\n")
    assert read_table(tmp_path / "t.csv").columns.tolist() == header.split(",")


def test_decimal_commas_are_judged_on_the_first_rows_and_held_to_after(tmp_path, monkeypatch):
    from anomaly_vae.data import tables

    monkeypatch.setattr(tables, "SAMPLE_ROWS", 2)
    path = tmp_path / "t.csv"
    # 'count' is whole numbers in the rows judged, decimal commas later; 'load' shows
    # them at once. Read whole or in parts of 2 rows, both are numbers.
    path.write_text("load;count\n1,5;3\n2,5;4\n3,5;4,5\n1.000,5;5\n")
    expected = pd.DataFrame({"load": [1.5, 2.5, 3.5, 1000.5], "count": [3, 4, 4.5, 5]})
    pd.testing.assert_frame_equal(read_table(path), expected)
    chunks = pd.concat(read_csv_chunks(path, chunk_rows=2), ignore_index=True)
    pd.testing.assert_frame_equal(chunks, expected)
    # Without a comma in the rows judged, a column that shows them later is still read.
    path.write_text("count;x\n3;1\n4;2\n4,5;3\n")
    assert read_table(path)["count"].tolist() == [3, 4, 4.5]
    # A later cell that is not such a number is named, not left to make text of 'load'.
    path.write_text("load;count\n1,5;3\n2,5;4\n3,5;5\n?;6\n")
    for read in (read_table, lambda p: list(read_csv_chunks(p, chunk_rows=2))):
        with pytest.raises(
            DataError,
            match=r"'load' holds numbers written with decimal commas but for '\?' \(row 4\)",
        ):
            read(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # "1,234" is 1.234 or 1234, and nothing else in the file tells which.
        (
            'id,amount\nr1,12\nr2,"1,234"\n',
            r"t\.csv: column 'amount' holds '1,234' \(row 2\): 1\.234 with a decimal comma, "
            r"or 1234 with a comma between thousands\? Nothing in the file tells: export it "
            "without thousands separators",
        ),
        ("amount\tx\n1,234\t1\n", r"column 'amount' holds '1,234' \(row 1\)"),
        # Both formats in one file.
        (
            'a,b\n2,3\n"1,5","1,234.5"\n',
            r"writes numbers both with decimal commas \(column 'a': '1,5' \(row 2\)\) and "
            r"with commas between thousands \(column 'b': '1,234\.5' \(row 2\)\): export",
        ),
        # A header and rows that ',' and ';' both split alike (read as "temp" and
        # " °C;load" before).
        (
            "temp, °C;load\n1,5;3\n2,5;4\n",
            r"cannot tell how its columns are separated: ',' and ';' each split its header "
            r"'temp, °C;load' and its first rows into as many fields; rename the columns",
        ),
        # Dots that may be thousands beside decimal commas: pandas read 1.25 and 3.0.
        (
            "a;w\n1,5;1.250\n2;3.000\n",
            r"column 'w' holds '1\.250' \(row 1\): 1\.25 with a decimal point, or 1250 with a "
            r"dot between thousands, in a file that writes decimal commas \(column 'a'\)\? "
            "Export it without thousands separators",
        ),
    ],
)
def test_a_format_that_cannot_be_told_is_refused_naming_the_value(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    refused_by_both_readers(path, message)
    with pytest.raises(DataError) as info:
        read_table(path)
    assert "\n" not in str(info.value)


def test_a_header_naming_a_column_twice_is_refused_not_renamed(tmp_path):
    """pandas would read 'a,b,a' as a, b, a.1, and a.1 would train as a column of its own."""
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1,2,3\n4,5,6\n")
    refused_by_both_readers(
        path, r"dup\.csv has more than one column named 'a'; give each column its own name"
    )
    path.write_text("a,,\n1,2,3\n")  # unnamed columns are not a name given twice
    assert read_table(path).shape == (1, 3)
    # Parquet files can repeat a name too (pyarrow writes them).
    table = pa.table([pa.array([1.0]), pa.array([2.0]), pa.array([3.0])], names=["a", "b", "a"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"dup\.parquet has more than one column named 'a'"):
        read_table(tmp_path / "dup.parquet")


def test_a_stray_text_cell_late_in_a_large_csv_brings_no_pandas_warning(tmp_path):
    """pandas types a large file in parts (here 1,024 rows of 512 columns each) and warns,
    in several lines, when a column is numbers in one part and text in another."""
    width, rows = 512, 1_100
    numbers = ",".join(["1.5"] * width)
    header = ",".join(f"c{i}" for i in range(width))
    stray = ",".join(["oops"] + ["1.5"] * (width - 1))
    path = tmp_path / "late.csv"
    path.write_text("\n".join([header, *[numbers] * (rows - 1), stray]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the DtypeWarning would fail the test
        frame = read_table(path)
        chunks = list(read_csv_chunks(path, chunk_rows=rows))
    assert frame["c0"].iloc[-1] == "oops" and frame.shape == (rows, width)
    pd.testing.assert_frame_equal(pd.concat(chunks), frame)


def test_a_late_byte_that_is_not_utf8_is_named_by_offset_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr("anomaly_vae.data.tables.HEADER_BYTES", 64)  # the part judged UTF-8
    path = tmp_path / "late.csv"
    lines = [b"site,x", *[b"z\xc3\xbcrich,1" for _ in range(30)], b"caf\xe9,2"]  # UTF-8, Latin-1
    path.write_bytes(b"\n".join(lines) + b"\n")
    offset = path.read_bytes().index(b"\xe9")
    message = rf"byte 0xe9 at offset {offset:,} \(line 32\) is not UTF-8, unlike the start"
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        list(read_csv_chunks(path, chunk_rows=5))
    for block in (7, 8, 9):  # the offset whatever block boundary cuts a character
        monkeypatch.setattr("anomaly_vae.data.tables.HEADER_BYTES", block)
        assert _first_undecodable(path, "utf-8") == (offset, 32, 0xE9)


def test_a_short_row_with_a_byte_that_is_not_utf8_gives_the_error_alone(tmp_path, monkeypatch):
    printed = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    monkeypatch.setattr("anomaly_vae.data.tables.HEADER_BYTES", 16)
    path = tmp_path / "late.csv"
    path.write_bytes(b"site,x,y\n" + b"zurich,1,2\n" * 10 + b"caf\xe9,2\n")
    with pytest.raises(DataError, match="byte 0xe9 at offset"):
        read_table(path)
    # pyarrow fails to decode the row for the field-count scan's handler: Python printed
    # that as "Exception ignored in ..." with a traceback before the error.
    assert not printed


def test_the_field_count_scan_does_not_wait_on_a_kept_debug_record(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="anomaly_vae.data.tables")
    monkeypatch.setattr(tables, "SCAN_BLOCK_BYTES", 16)  # a longer row stops the scan
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1,2\n" + "x" * 100 + ",1\n")
    started = time.monotonic()
    assert tables.field_counts(path, ",") == tables.FieldCounts()
    assert "field-count scan" in caplog.text  # the record is kept by caplog ...
    assert time.monotonic() - started < 1  # ... and holds no reference to the handler


def test_a_row_with_more_fields_is_named_as_every_message_counts_rows(tmp_path):
    # pandas says "line 5": it counts the header and the blank line, not the quoted break.
    path = tmp_path / "long.csv"
    path.write_text('a,b\n1,2\n\n"x\ny",2\n3,4,5\n')
    refused_by_both_readers(
        path, r"row 3 has 3 fields, more than the header's 2 \(a value holding the separator"
    )


def refused_by_both_readers(path, message):
    """``read_table`` and ``read_csv_chunks`` both refuse ``path`` with ``message``."""
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        list(read_csv_chunks(path, chunk_rows=1))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_table(tmp_path)


def test_label_vector_accepts_01_and_bool_and_rejects_others():
    frame = pd.DataFrame({"y": [0, 1, 1], "b": [True, False, True], "s": ["ok", "bad", "ok"]})
    np.testing.assert_array_equal(label_vector(frame, "y"), [False, True, True])
    np.testing.assert_array_equal(label_vector(frame, "b"), [True, False, True])
    with pytest.raises(DataError, match=r"must hold 0 .* found 'ok'"):
        label_vector(frame, "s")
    with pytest.raises(DataError, match="label column 'zz' is not in the data; columns: y, b"):
        label_vector(frame, "zz")
    # A misspelling is named first, however many columns the data has.
    wide = frame.assign(**{f"c{i}": 0 for i in range(30)}, is_fault=0)
    with pytest.raises(DataError, match=r"'is_falt' is not in the data \(similar names in"):
        label_vector(wide, "is_falt")


def test_labels_read_in_parts_are_those_of_the_whole_column_errors_included():
    from anomaly_vae.data.tables import LabelColumn

    def in_parts(frame: pd.DataFrame, column: str, anomaly: str | None = None) -> np.ndarray:
        labels = LabelColumn(column, anomaly)
        for start in range(0, len(frame), 3):
            labels.add(frame.iloc[start : start + 3])
        return labels.labels()

    numbers = pd.DataFrame({"y": [0, 1, 1, 0, 0, 1, 0], "s": list("ababcab")})
    np.testing.assert_array_equal(in_parts(numbers, "y"), label_vector(numbers, "y"))
    np.testing.assert_array_equal(in_parts(numbers, "s", "b"), label_vector(numbers, "s", "b"))
    # The values held, when none is the anomaly label, are the first of the whole column.
    text = pd.DataFrame({"s": list("kjihgfedcba")})
    with pytest.raises(DataError) as whole:
        label_vector(text, "s", "z")
    with pytest.raises(DataError) as parted:
        in_parts(text, "s", "z")
    assert str(parted.value) == str(whole.value)
    assert "it holds 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j':" in str(whole.value)
    # Empty values counted in every part, and named before a bad value in an earlier one.
    spoilt = pd.DataFrame({"y": [0, 1, "x", 0, None, 1, None]})
    with pytest.raises(DataError, match=r"label column 'y' has 2 empty values$"):
        in_parts(spoilt, "y")
    with pytest.raises(DataError, match=r"found 'x'\."):
        in_parts(spoilt.fillna(0), "y")


def test_text_labels_need_the_value_that_marks_an_anomaly():
    frame = pd.DataFrame({"s": ["ok", "bad ", "ok", "yes"], "n": [2, 7, 2, 2]})
    with pytest.raises(DataError, match=r"--set data\.anomaly_label=VALUE"):
        label_vector(frame, "s")
    np.testing.assert_array_equal(label_vector(frame, "s", "bad"), [False, True, False, False])
    np.testing.assert_array_equal(label_vector(frame, "n", "7"), [False, True, False, False])
    with pytest.raises(DataError, match=r"never holds the anomaly label 'fault'.*'bad', 'ok'"):
        label_vector(frame, "s", "fault")
    # Each command advises its own way of naming the value (calibrate and view have no --set).
    with pytest.raises(DataError, match=r"marks an anomaly: --anomaly-label VALUE$"):
        label_vector(frame, "s", anomaly_option="--anomaly-label VALUE")
    with pytest.raises(DataError, match=r"'ok', 'yes': name .* with --anomaly-label VALUE$"):
        label_vector(frame, "s", "fault", "--anomaly-label VALUE")


def test_a_pipe_or_standard_input_is_refused_rather_than_read_as_empty(tmp_path):
    # The file is read more than once (format, field counts, rows): a pipe's first read
    # emptied it, and it was reported as "empty".
    pipe = tmp_path / "rows.csv"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=r"rows.csv is not a regular file \(a pipe\?\)"):
        read_table(pipe)
    with pytest.raises(DataError, match="standard input is not supported"):
        read_table("-")


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_a_csv_file_read_in_parts_says_how_many_of_its_bytes_are_read(tmp_path, encoding):
    """`score` draws its bar over a CSV file's bytes: each part comes with the bytes read
    so far, rising to the file's size with the last part; the rows are those of the
    file read whole, whatever the encoding."""
    path = tmp_path / "t.csv"
    # 1.2 MB: pandas reads a file in blocks of 256 KiB, and a part's bytes run ahead of
    # its rows by at most one
    frame = pd.DataFrame({"x": np.arange(60_000) / 7, "unit": ["°C", "kg", "m"] * 20_000})
    frame.to_csv(path, index=False, encoding=encoding)
    parts = list(read_csv_parts(path, chunk_rows=10_000))
    read = [position for _, position in parts]
    assert len(parts) == 6 and read == sorted(read) and read[-1] == path.stat().st_size
    assert read[0] < path.stat().st_size / 2
    pd.testing.assert_frame_equal(pd.concat([p for p, _ in parts]), read_table(path))
