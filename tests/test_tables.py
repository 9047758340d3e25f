import numpy as np
import pandas as pd
import pytest

from anomaly_vae.data import label_vector, read_table
from anomaly_vae.errors import DataError


def test_reads_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "t.csv"), read_table(tmp_path / "t.parquet"), check_dtype=False
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("header.csv", b"a,b\n", "has a header but no data rows"),
        ("binary.csv", b"\xff\xfe\x00\x81\x00garbage\x00\xff", "not a readable CSV"),
        ("ragged.csv", b"a,b\n1,2\n1,2,3,4\n", "not a readable CSV"),
        ("broken.parquet", b"PAR1 this is not parquet", "not a readable Parquet"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


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
    with pytest.raises(DataError, match="label column 'zz' is not in the data"):
        label_vector(frame, "zz")
