import datetime
import logging
import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from anomaly_vae.config import DataConfig
from anomaly_vae.data import TablePreprocessor
from anomaly_vae.data.preprocessing import GatheredWarnings, check_cells, warnings_per_file
from anomaly_vae.errors import DataError


@pytest.fixture
def fitted() -> TablePreprocessor:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "x": [1.0, 2.0, np.nan, 5.0],
            "colour": ["red", "blue", "red", None],
            "y": [0, 0, 1, 0],
        }
    )
    return TablePreprocessor(DataConfig(id_column="id", label_column="y")).fit(frame)


def test_schema_skips_id_and_label_and_lays_out_features(fitted):
    assert fitted.input_columns == ["x", "colour"]
    assert fitted.feature_names == [
        "x",
        "x__missing",
        "colour=<missing>",
        "colour=blue",
        "colour=red",
    ]
    np.testing.assert_array_equal(fitted.binary_features, [False, True, True, True, True])


def test_missing_values_become_median_plus_indicator_not_zero(fitted):
    features = fitted.transform(pd.DataFrame({"x": [np.nan, 1.0], "colour": ["red", "red"]}))
    x = np.array([1.0, 2.0, 5.0])
    median_scaled = (np.median(x) - x.mean()) / x.std()
    assert features[0, 0] == pytest.approx(median_scaled)
    assert features[0, 1] == 1.0 and features[1, 1] == 0.0  # the indicator marks it


def test_a_column_empty_in_every_scored_row_is_warned_about(fitted, caplog):
    with caplog.at_level(logging.WARNING):
        fitted.transform(pd.DataFrame({"x": [np.nan, 1.0], "colour": ["red", "red"]}))
    assert "empty in all" not in caplog.text  # one missing reading is ordinary
    with caplog.at_level(logging.WARNING):
        fitted.transform(pd.DataFrame({"x": [np.nan, np.nan], "colour": ["red", "red"]}))
    assert "column 'x' is empty in all 2 rows scored" in caplog.text


def test_a_file_scored_in_parts_warns_once_judged_over_all_its_rows(fitted, caplog):
    parts = [
        pd.DataFrame({"x": [np.nan, np.nan], "colour": ["red", "red"], "note": ["a", "b"]}),
        pd.DataFrame({"x": [np.nan, 2.0], "colour": ["red", "red"], "note": ["c", "d"]}),
    ]
    with caplog.at_level(logging.WARNING):
        with warnings_per_file() as gathered:
            for part in parts:
                fitted.transform(part)
        assert caplog.text == ""  # gathered, not logged per part
        gathered.log(rows=4)
    assert caplog.text.count("ignoring column not seen in training: note") == 1
    assert "empty in all" not in caplog.text  # x has a value in the second part
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with warnings_per_file() as gathered:
            for part in parts:
                fitted.transform(part.assign(x=np.nan))
        gathered.log(rows=4)
    assert caplog.text.count("column 'x' is empty in all 4 rows scored") == 1


def test_unseen_conditions_gathered_over_parts_count_each_row_once(caplog):
    gathered = GatheredWarnings()
    first, second = object(), object()  # two models of an ensemble see the same rows
    for model in (first, second):
        gathered.add_unseen_condition("machine", ["Z"], 3, ["A", "B"], model)
        gathered.add_unseen_condition("machine", ["Y", "Z"], 2, ["A", "B"], model)
    with caplog.at_level(logging.WARNING):
        gathered.log(rows=10)
    assert caplog.text.count("5 row(s) have a machine not seen in training ('Z', 'Y')") == 1


def test_unseen_categories_of_a_file_in_parts_are_warned_about_once(fitted, caplog):
    parts = [pd.DataFrame({"x": [1.0], "colour": [c]}) for c in ("green", "green", "pink")]
    with caplog.at_level(logging.WARNING):
        with warnings_per_file() as gathered:
            for part in parts:
                fitted.transform(part)
        assert caplog.text == ""
        gathered.log(rows=3)
    assert (
        caplog.text.count("column 'colour' holds 'green', 'pink' not seen in training (3 rows)")
        == 1
    )


def test_true_false_in_a_numeric_column_is_read_as_1_and_0_with_a_warning(fitted, caplog):
    flags = pd.DataFrame({"x": [True, False], "colour": ["red", "red"]})
    numbers = pd.DataFrame({"x": [1.0, 0.0], "colour": ["red", "red"]})
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(fitted.transform(flags), fitted.transform(numbers))
    assert caplog.text.count("column 'x' holds True/False, and the model was trained on") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings_per_file() as gathered:
        for _ in range(3):
            fitted.transform(flags)
        gathered.log(rows=6)
    assert caplog.text.count("column 'x' holds True/False") == 1  # once per file
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fitted.transform(numbers)
    assert "True/False" not in caplog.text


def test_unseen_category_is_every_category_at_once_and_warned_about(fitted, caplog):
    with caplog.at_level(logging.WARNING):
        features = fitted.transform(pd.DataFrame({"x": [1.0, 2.0], "colour": ["green", "red"]}))
    np.testing.assert_array_equal(features[:, 2:], [[1, 1, 1], [0, 0, 1]])
    assert "column 'colour' holds 'green' not seen in training (1 row)" in caplog.text


def test_reordered_and_extra_columns(fitted, caplog):
    frame = pd.DataFrame({"colour": ["blue"], "extra": [1], "x": [2.0]})
    with caplog.at_level(logging.WARNING):
        reordered = fitted.transform(frame)
    expected = fitted.transform(pd.DataFrame({"x": [2.0], "colour": ["blue"]}))
    np.testing.assert_array_equal(reordered, expected)
    assert "ignoring column not seen in training: extra" in caplog.text


def test_missing_and_mistyped_columns_are_errors(fitted):
    with pytest.raises(DataError, match="missing column 'colour'"):
        fitted.transform(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(DataError, match=r"column 'x' should be numeric but holds 'hot' \(row 2\)"):
        fitted.transform(pd.DataFrame({"x": ["1.5", "hot"], "colour": ["red", "red"]}))


def test_values_the_model_cannot_hold_are_errors_naming_the_row(fitted):
    # Beyond float32 after scaling they would become infinite, and their scores NaN.
    for value, shown in ((1e39, r"1e\+39"), (-1e300, r"-1e\+300")):  # plainly, not np.float64()
        with pytest.raises(DataError, match=rf"^column 'x' holds {shown} \(row 2\), too far"):
            fitted.transform(pd.DataFrame({"x": [1.0, value], "colour": ["red", "red"]}))
    with pytest.raises(DataError, match=r"column 'x' holds infinite values \(row 2\)"):
        fitted.transform(pd.DataFrame({"x": [1.0, np.inf], "colour": ["red", "red"]}))
    large = fitted.transform(pd.DataFrame({"x": [1e30], "colour": ["red"]}))
    assert np.isfinite(large).all()  # far out, yet within range: scored (as unusual)


@pytest.mark.parametrize(
    ("scaling", "values", "shown"),
    [
        ("standard", [1.0, 2.0, 1e300, 3.0], r"1e\+300 \(row 3\)"),  # the square overflows
        ("minmax", [1.0, -1.7e308, 1.7e308], r"-1\.7e\+308 \(row 2\)"),  # max - min does
        (
            "standard",
            [1.0, 1.3e154, -1.3e154, 3.0],
            r"1\.3e\+154 \(row 2\)",
        ),  # the sum of squares does
    ],
)
def test_a_value_too_large_to_scale_by_is_refused_at_fit_naming_the_row(scaling, values, shown):
    # The spread became inf: training ran, and saving the schema then failed.
    frame = pd.DataFrame({"x": values, "y": np.arange(len(values), dtype=float)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning before the message
        with pytest.raises(DataError, match=rf"^column 'x' holds {shown}, too large to scale"):
            TablePreprocessor(DataConfig(scaling=scaling)).fit(frame)


@pytest.mark.parametrize(
    ("columns", "hint"),
    [
        (["x", "Colour"], r"\(the data has 'Colour': names are case- and space-sensitive\)$"),
        ([" x", " colour"], r"\(the data has ' x', ' colour': names are case- and space-"),
        (["x", "color"], r"\(similar names in the data: 'color'\)$"),
        (["x", "weight"], r"that the training data has$"),
    ],
)
def test_a_missing_column_names_a_near_identical_one_the_data_has(fitted, columns, hint):
    frame = pd.DataFrame([[1.0, "red"]], columns=columns)
    with pytest.raises(
        DataError, match=r"^missing columns? .*'colour' that the training data has"
    ) as info:
        fitted.transform(frame)
    assert re.search(hint, str(info.value)), str(info.value)


def test_a_column_name_given_twice_is_an_error_naming_it(fitted):
    twice = pd.DataFrame([[1.0, "red", 2.0]], columns=["x", "colour", "x"])
    with pytest.raises(DataError, match=r"more than one column named 'x'; give each"):
        TablePreprocessor(DataConfig()).fit(twice)
    with pytest.raises(DataError, match=r"more than one column named 'x'; give each"):
        fitted.transform(twice)


def test_round_trip_through_dict(fitted):
    frame = pd.DataFrame({"x": [3.0, np.nan], "colour": ["blue", "pink"]})
    rebuilt = TablePreprocessor.from_dict(fitted.to_dict(), fitted.config)
    np.testing.assert_array_equal(rebuilt.transform(frame), fitted.transform(frame))


def test_a_typical_row_is_made_of_medians_and_most_common_values_not_of_rows(caplog):
    """The synthetic input example of tracking.input_example=synthetic: no training row."""
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "x": [1.0, 2.0, np.nan, 5.0, 10.0],
            "count": [3, 1, 4, 1, 5],  # integers: the median, as a float
            "colour": ["red", "blue", None, None, "blue"],  # missing is no value to show
            "on": [True, False, True, True, False],
            "empty": [None] * 5,  # only missing values: the missing one
        }
    )
    fitted = TablePreprocessor(DataConfig(id_column="id")).fit(frame)
    row = fitted.typical_row()
    assert row.columns.tolist() == ["x", "count", "colour", "on", "empty"]  # no id
    assert row.iloc[0].tolist() == [pytest.approx(3.5), pytest.approx(3.0), "blue", "True", None]
    # A model saved before the most common value was kept shows its first category.
    saved = fitted.to_dict()
    for column in saved["columns"]:
        column.pop("most_common")
    old = TablePreprocessor.from_dict(saved, fitted.config).typical_row()
    assert old.loc[0, "colour"] is None and old.loc[0, "on"] == "False"  # "<missing>", "False"
    # Every value it holds is one the model takes without a warning (an unseen category).
    with caplog.at_level(logging.WARNING):
        fitted.transform(row)
    assert not caplog.records


def test_free_text_column_is_refused_with_advice():
    names = [f"n{i // 2}" for i in range(300)]  # 150 values, each twice
    frame = pd.DataFrame({"name": names, "x": np.arange(300.0)})
    with pytest.raises(DataError, match=r"150 distinct text values .* id column"):
        TablePreprocessor(DataConfig()).fit(frame)


def test_an_id_like_column_is_refused_even_under_the_category_limit():
    # 90 rows, each its own value: under max_categories, but every new id would be unseen.
    frame = pd.DataFrame({"ref": [f"r{i}" for i in range(90)], "x": np.arange(90.0)})
    with pytest.raises(DataError, match=r"different text value in each of its 90 rows, like an id"):
        TablePreprocessor(DataConfig()).fit(frame)
    kept = TablePreprocessor(DataConfig(categorical_columns=["ref"])).fit(frame)
    assert "ref" in kept.input_columns  # named a category, it stays one
    few = frame.head(12)  # a dozen labels, each once, may well be categories
    assert "ref" in TablePreprocessor(DataConfig()).fit(few).input_columns


def test_a_numeric_row_id_or_counter_is_warned_about(caplog):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"reading": np.arange(1, 61), "temp": rng.normal(60, 2, 60)})
    with caplog.at_level(logging.WARNING):
        TablePreprocessor(DataConfig()).fit(frame)
    assert "column 'reading' holds a different whole number in each of its 60 rows" in (caplog.text)
    assert "'temp'" not in caplog.text
    caplog.clear()
    # Row ids in no order (0 to 59 shuffled, a fifth held out) are ids all the same: new
    # rows' ids beyond them look anomalous. They were not warned about.
    shuffled = frame.assign(reading=rng.permutation(60)).sample(frac=0.8, random_state=0)
    with caplog.at_level(logging.WARNING):
        TablePreprocessor(DataConfig()).fit(shuffled)
    assert "column 'reading' holds a different whole number in each of its 48 rows" in (caplog.text)
    assert "from 0 to 59 with few gaps, like row ids in no order" in caplog.text
    caplog.clear()
    # Codes, each seen once, spread over a range many times the rows (part numbers), and
    # whole-number measurements, which repeat: no warning.
    codes = frame.assign(reading=rng.choice(100_000, 60, replace=False))
    counts = frame.assign(reading=rng.poisson(30, 60))
    for table in (codes, counts):
        with caplog.at_level(logging.WARNING):
            TablePreprocessor(DataConfig()).fit(table)
    assert caplog.text == ""


def test_ignored_columns_are_neither_features_nor_needed_to_score(caplog):
    x = np.random.default_rng(0).normal(size=200)  # a measurement, not a row counter
    frame = pd.DataFrame({"note": [f"free text {i}" for i in range(200)], "x": x})
    pre = TablePreprocessor(DataConfig(ignore_columns=["note"])).fit(frame)
    assert pre.input_columns == ["x"]
    with caplog.at_level(logging.WARNING):
        with_note = pre.transform(frame.head(3))
    assert caplog.text == ""  # an ignored column is expected, not "not seen in training"
    np.testing.assert_array_equal(with_note, pre.transform(frame[["x"]].head(3)))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (DataConfig(ignore_columns=["nope"]), r"ignore_columns names columns not in the data"),
        (
            DataConfig(ignore_columns=["x"], categorical_columns=["x"]),
            r"ignore_columns also names feature columns: \['x'\]",
        ),
        (DataConfig(ignore_columns=["x"]), "no feature columns besides"),
    ],
)
def test_ignore_columns_mistakes_are_errors(config, message):
    with pytest.raises(DataError, match=message):
        TablePreprocessor(config).fit(pd.DataFrame({"x": [1.0, 2.0]}))


def test_an_empty_column_is_refused_with_advice():
    frame = pd.DataFrame({"unused": [np.nan] * 5, "x": np.arange(5.0)})
    with pytest.raises(DataError, match=r"'unused' is empty in every training row.*--ignore-col"):
        TablePreprocessor(DataConfig()).fit(frame)
    pre = TablePreprocessor(DataConfig(ignore_columns=["unused"])).fit(frame)
    assert pre.input_columns == ["x"]


def test_a_numeric_column_with_stray_text_is_refused_not_made_categories():
    values = [str(v) for v in np.arange(40.0)]
    values[3] = "abc"  # one typo in 40 readings
    frame = pd.DataFrame({"reading": values, "x": np.arange(40.0)})
    with pytest.raises(
        DataError, match=r"'reading' holds numbers but for 1 text cell.*'abc' \(row 4\)"
    ):
        TablePreprocessor(DataConfig()).fit(frame)
    forced = TablePreprocessor(DataConfig(categorical_columns=["reading"])).fit(frame)
    assert forced.columns[0].kind == "categorical"
    codes = pd.DataFrame({"grade": ["1", "2", "A", "B"] * 10, "x": np.arange(40.0)})
    assert TablePreprocessor(DataConfig()).fit(codes).columns[0].kind == "categorical"


def test_numbers_stored_as_text_are_categories_with_a_warning(caplog):
    # A str column of readings (a frame built with dtype=str, a Parquet string column)
    # became 28 categories in silence, where the same values as floats are one feature.
    readings = pd.DataFrame({"reading": [f"{v:.1f}" for v in np.arange(40) % 28 / 10]})
    readings["x"] = np.arange(40.0)
    with caplog.at_level(logging.WARNING, logger="anomaly_vae"):
        pre = TablePreprocessor(DataConfig()).fit(readings)
    assert pre.columns[0].kind == "categorical"
    assert re.search(
        r"'reading' holds numbers stored as text, read as 28 categories.*pd\.to_numeric"
        r".*data\.categorical_columns",
        caplog.text,
    )
    # Named as categories, or 0/1 flags as text, or codes with letters: no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anomaly_vae"):
        TablePreprocessor(DataConfig(categorical_columns=["reading"])).fit(readings)
        flags = pd.DataFrame({"flag": ["0", "1"] * 20, "x": np.arange(40.0)})
        TablePreprocessor(DataConfig()).fit(flags)
        codes = pd.DataFrame({"grade": ["1", "2", "A", "B"] * 10, "x": np.arange(40.0)})
        TablePreprocessor(DataConfig()).fit(codes)
    assert "stored as text" not in caplog.text


def test_a_datetime_column_is_refused_with_advice():
    frame = pd.DataFrame({"when": pd.date_range("2026-01-01", periods=5), "x": np.arange(5.0)})
    with pytest.raises(DataError, match=r"'when' holds dates or times.*--ignore-col"):
        TablePreprocessor(DataConfig()).fit(frame)
    pre = TablePreprocessor(DataConfig(ignore_columns=["when"])).fit(frame)
    assert pre.input_columns == ["x"]


@pytest.mark.parametrize(
    "dates",
    [
        ["2026-01-01", "2026-01-02", None],  # as a CSV file writes them
        ["2026-01-01T08:00:00Z", "2026-01-01 09:30"],
        ["1/31/2026", "2/1/2026"],
        ["31.01.2026", "01.02.2026 08:00"],
    ],
)
def test_a_text_column_of_dates_is_refused_as_a_timestamp_is(dates):
    # As categories, every later date would be one never seen in training.
    frame = pd.DataFrame({"day": dates, "x": np.arange(float(len(dates)))})
    with pytest.raises(DataError, match=r"'day' holds dates or times.*--ignore-col.*categorical_c"):
        TablePreprocessor(DataConfig()).fit(frame)
    forced = TablePreprocessor(DataConfig(categorical_columns=["day"])).fit(frame)
    assert forced.columns[0].kind == "categorical"  # a category, if the user says so
    codes = {
        "shift": ["08:00", "16:00"],
        "version": ["1.5.2", "1.6.0"],
        "grade": ["20/20/20", "10/10/10"],  # fertiliser grades, shaped as dates
        "cas": ["7732-18-5", "7647-14-5"],  # CAS registry numbers, likewise
    }
    kinds = [c.kind for c in TablePreprocessor(DataConfig()).fit(pd.DataFrame(codes)).columns]
    assert kinds == ["categorical"] * 4


def test_integer_codes_match_whether_read_as_integers_or_floats():
    """A missing value turns a column of integer codes into floats: 2.0 is still code 2."""
    config = DataConfig(categorical_columns=["machine"])
    with_gap = pd.DataFrame({"machine": [1, 2, np.nan, 2], "x": [0.0, 1.0, 2.0, 3.0]})
    pre = TablePreprocessor(config).fit(with_gap)
    assert pre.columns[0].categories == ["1", "2", "<missing>"]
    as_integers = pd.DataFrame({"machine": [2, 1], "x": [1.0, 1.0]})
    as_floats = pd.DataFrame({"machine": [2.0, 1.0], "x": [1.0, 1.0]})
    np.testing.assert_array_equal(pre.transform(as_integers), pre.transform(as_floats))
    assert pre.transform(as_integers)[:, :3].sum() == 2  # both rows hit a known category
    saved = pre.to_dict()  # as a model saved before whole numbers were canonical
    saved["columns"][0]["categories"] = ["1.0", "2.0", "<missing>"]
    old = TablePreprocessor.from_dict(saved, config)
    np.testing.assert_array_equal(old.transform(as_integers), pre.transform(as_integers))


def test_a_schema_fitted_when_files_were_read_as_latin_1_reads_their_names_as_now():
    """CSV files that are not UTF-8 were read as Latin-1, and are now read as Windows-1252:
    an old model's "\\x80" is what the same file now reads as "€"."""
    config = DataConfig()
    now = pd.DataFrame({"Preis €": [1.0, 2.0, 3.0], "unit": ["€", "1–5", "kg"]})
    pre = TablePreprocessor(config).fit(now)
    saved = pre.to_dict()
    assert saved.pop("non_utf8_csv") == "windows-1252"
    saved["columns"][0]["name"] = "Preis \x80"  # as saved when files were read as Latin-1
    saved["columns"][1]["categories"] = ["1\x965", "kg", "\x80"]
    old = TablePreprocessor.from_dict(saved, config)
    assert old.input_columns == ["Preis €", "unit"]
    assert old.columns[1].categories == ["1–5", "kg", "€"]
    np.testing.assert_array_equal(old.transform(now), pre.transform(now))
    # A model saved since holds such characters only as its data did (a Parquet file).
    raw = pd.DataFrame({"unit": ["\x80", "\x85", "kg"]})
    fitted = TablePreprocessor(config).fit(raw)
    rebuilt = TablePreprocessor.from_dict(fitted.to_dict(), config)
    assert rebuilt.columns[0].categories == ["kg", "\x80", "\x85"]


def test_minmax_scaling_maps_training_range_to_unit_interval():
    frame = pd.DataFrame({"x": [2.0, 4.0, 6.0]})
    pre = TablePreprocessor(DataConfig(scaling="minmax", missing_indicators=False)).fit(frame)
    np.testing.assert_allclose(pre.transform(frame)[:, 0], [0.0, 0.5, 1.0])


def test_quantisation_step_is_the_smallest_gap_in_scaled_units():
    frame = pd.DataFrame(
        {
            "count": [0.0, 2.0, 3.0, 3.0, 7.0],  # integer-coded: gap 1
            "level": [0.5, 0.5, 0.5, 0.5, 0.5],  # constant, not whole: no step known
            "never_set": [0.0, 0.0, 0.0, 0.0, 0.0],  # constant whole number: the integer grid
            "colour": ["red", "blue", "red", "red", "blue"],
        }
    )
    pre = TablePreprocessor(DataConfig(missing_indicators=True)).fit(frame)
    std = frame["count"].std(ddof=0)
    np.testing.assert_allclose(pre.feature_steps, [1 / std, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    old_schema = pre.to_dict()
    for column in old_schema["columns"]:  # schemas saved before steps existed
        column.pop("step")
    assert not TablePreprocessor.from_dict(old_schema, pre.config).feature_steps.any()


def test_dates_read_from_parquet_as_python_dates_are_refused_as_timestamps_are():
    # A Parquet date32 column (Spark's DateType) reads as datetime.date objects; as
    # categories every later date would be unseen, and every new row flagged.
    days = [datetime.date(2026, 1, 1) + datetime.timedelta(days=i // 10) for i in range(40)]
    frame = pd.DataFrame({"day": days, "x": np.arange(40.0)})
    with pytest.raises(DataError, match=r"'day' holds dates or times.*--ignore-col"):
        TablePreprocessor(DataConfig()).fit(frame)
    shifts = pd.DataFrame({"shift": [datetime.time(8), datetime.time(16)] * 20, "x": days})
    with pytest.raises(DataError, match=r"'x' holds dates"):  # a time of day alone is fine
        TablePreprocessor(DataConfig()).fit(shifts)
    kinds = TablePreprocessor(DataConfig(ignore_columns=["x"])).fit(shifts).columns
    assert [c.kind for c in kinds] == ["categorical"]


def test_a_column_of_lists_or_records_is_a_one_line_error():
    # A Parquet list or struct column: pandas cannot hash its cells (a TypeError traceback).
    frame = pd.DataFrame({"x": np.arange(30.0)})
    frame["tags"] = [np.array([1, 2])] * 30
    with pytest.raises(DataError, match=r"'tags' holds lists or records, such as \[1, 2\] \(row 1"):
        TablePreprocessor(DataConfig()).fit(frame)
    frame["tags"] = [{"a": i} for i in range(30)]
    with pytest.raises(DataError, match=r"'tags' holds lists or records.*--ignore-col"):
        TablePreprocessor(DataConfig()).fit(frame)
    assert TablePreprocessor(DataConfig(ignore_columns=["tags"])).fit(frame).input_columns == ["x"]


def test_numbers_in_an_object_column_are_numeric_not_categories():
    # X.astype(object), an array built from mixed Python lists, or decimals from a database
    # (pd.read_sql of a NUMERIC column, a Parquet decimal column) hold numbers in object
    # columns: taken as text, 200 distinct floats were refused as an id, and three prices
    # became three categories, so a new price was an unseen category.
    import decimal

    rng = np.random.default_rng(0)
    floats = pd.Series(rng.normal(size=200), dtype=object)
    floats[3] = None
    prices = pd.Series([decimal.Decimal(p) for p in rng.choice(["9.99", "19.99", "4.5"], 200)])
    counts = pd.Series(rng.integers(0, 9, size=200).tolist(), dtype=object)
    frame = pd.DataFrame({"x": floats, "price": prices, "count": counts})
    pre = TablePreprocessor(DataConfig()).fit(frame)
    assert [c.kind for c in pre.columns] == ["numeric"] * 3
    as_floats = frame.astype({"x": "float64", "price": "float64", "count": "int64"})
    np.testing.assert_array_equal(pre.transform(frame), pre.transform(as_floats))
    assert pre.columns[1].center == pytest.approx(as_floats["price"].mean())
    # Declared a category, such a column stays one; numbers mixed with words stay text.
    forced = TablePreprocessor(DataConfig(categorical_columns=["count"])).fit(frame)
    assert forced.columns[2].kind == "categorical"
    words = pd.DataFrame({"grade": pd.Series([1, "A", 2.5, "B"] * 10, dtype=object)})
    assert TablePreprocessor(DataConfig()).fit(words).columns[0].kind == "categorical"


def test_an_object_column_of_numbers_with_pd_na_is_numeric_with_missing_values():
    # X.astype(object) of a nullable Int64 or Float64 column holds pd.NA for its missing
    # values, which float() refuses: fit was a TypeError traceback.
    counts = pd.array([None, *range(39)], dtype="Int64")
    frame = pd.DataFrame({"count": counts, "x": np.linspace(0, 1, 40)}).astype(object)
    pre = TablePreprocessor(DataConfig(missing_indicators=True)).fit(frame)
    assert [c.kind for c in pre.columns] == ["numeric", "numeric"]
    nullable = frame.astype({"count": "Int64", "x": "float64"})
    np.testing.assert_array_equal(pre.transform(frame), pre.transform(nullable))
    assert pre.transform(frame)[0, 1] == 1.0  # count__missing of the first row


def test_complex_numbers_are_refused_not_cut_to_their_real_part():
    # astype(float64) dropped the imaginary part with a ComplexWarning per column: rows
    # differing only there scored alike.
    values = np.arange(30.0) + 1j * np.arange(30.0)
    with pytest.raises(DataError, match=r"column 'x' holds complex numbers.*real and imaginary"):
        TablePreprocessor(DataConfig()).fit(pd.DataFrame({"x": values}))
    pre = TablePreprocessor(DataConfig()).fit(pd.DataFrame({"x": np.arange(30.0)}))
    with pytest.raises(DataError, match=r"column 'x' holds complex numbers"):
        pre.transform(pd.DataFrame({"x": values}))


def test_transform_holds_no_float64_copy_of_the_features():
    """Each column's block is written into the float32 result: the float64 blocks joined
    and then cast held three copies of the features at once."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20_000, 30)), columns=[f"x{i}" for i in range(30)])
    frame["colour"] = rng.choice(["red", "blue"], len(frame))
    pre = TablePreprocessor(DataConfig()).fit(frame)
    tracemalloc.start()
    try:
        features = pre.transform(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert features.dtype == np.float32 and features.shape == (20_000, 62)
    # The result and one column's float64 temporaries (1.2 times it here); before, 5 times.
    assert peak < 2 * features.nbytes


def test_a_bad_cell_is_named_by_its_index_label_in_a_frame_indexed_by_ids():
    # A DataFrame indexed by ids: messages counted its rows by position ("row 4") and the
    # fit's infinite value named no row at all; the id is what the user looks it up by.
    rng = np.random.default_rng(0)
    ids = pd.Index([f"P{1000 + i}" for i in range(40)], name="patient")
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)}, index=ids)
    bad = frame.copy()
    bad.iloc[30, 0] = np.inf
    with pytest.raises(DataError, match=re.escape("infinite values (row 31, index 'P1030')")):
        TablePreprocessor(DataConfig()).fit(bad)
    schema = TablePreprocessor(DataConfig()).fit(frame)
    text = frame.astype({"b": object})
    text.iloc[3, 1] = "?"
    with pytest.raises(DataError, match=re.escape("holds '?' (row 4, index 'P1003')")):
        schema.transform(text)
    # Rows a filter kept are named by the labels frame.loc finds them by.
    kept = frame.reset_index(drop=True).iloc[10:20:2].copy()
    kept.iloc[1, 0] = -np.inf
    with pytest.raises(DataError, match=re.escape("infinite values (row 2, index 12)")):
        schema.transform(kept)
    # A frame numbered 0, 1, ... (a file, or a part of one) keeps the file's row.
    plain = frame.reset_index(drop=True)
    plain.iloc[3, 0] = np.inf
    with pytest.raises(DataError, match=re.escape("infinite values (row 4)")):
        schema.transform(plain)


def test_a_duration_column_is_refused_as_a_duration_not_as_a_date():
    # A timedelta column was refused as "dates or times" with a date's advice (a fresh
    # timestamp would be unseen; add the hour or weekday): a duration is a number once
    # given a unit, and the message says how.
    durations = pd.to_timedelta(np.arange(30), unit="s")
    frame = pd.DataFrame({"wait": durations, "x": np.arange(30.0)})
    with pytest.raises(DataError, match=r"^column 'wait' holds durations .*total_seconds") as e:
        TablePreprocessor(DataConfig()).fit(frame)
    assert "hour" not in str(e.value) and "\n" not in str(e.value)
    numbers = frame.assign(wait=durations.total_seconds())
    pre = TablePreprocessor(DataConfig()).fit(numbers)
    assert pre.columns[0].kind == "numeric"
    with pytest.raises(DataError, match=r"'wait' should be numeric but holds durations"):
        pre.transform(frame)


def test_a_column_of_too_many_intervals_is_refused_as_intervals_not_as_text():
    # pd.cut / pd.qcut columns were refused as "a different text value in each row, like an
    # id" or "distinct text values", with an id's advice (--id-col): intervals are bins
    # of a number, which the message now says, and how to pass them as numbers.
    values = np.random.default_rng(0).normal(size=400)
    advice = r"pd\.IntervalIndex\(column\)\.mid, or its \.left and \.right"
    each_row = pd.DataFrame({"x": values, "band": pd.qcut(values, 400)})
    for band in (each_row["band"], each_row["band"].astype("interval")):
        with pytest.raises(DataError, match=rf"^column 'band' holds intervals .*{advice}") as e:
            TablePreprocessor(DataConfig()).fit(each_row.assign(band=band))
        assert "text" not in str(e.value) and "--id-col" not in str(e.value)
    many = pd.DataFrame({"x": values, "band": pd.qcut(values, 150)})
    with pytest.raises(DataError, match=rf"^column 'band' holds 150 distinct intervals .*{advice}"):
        TablePreprocessor(DataConfig()).fit(many)
    # A few bins are categories, as before; their middles are numbers.
    few = pd.DataFrame({"x": values, "band": pd.cut(values, [-np.inf, -1, 0, 1, np.inf])})
    assert TablePreprocessor(DataConfig()).fit(few).columns[1].kind == "categorical"
    middles = many.assign(band=pd.IntervalIndex(many["band"]).mid)
    assert TablePreprocessor(DataConfig()).fit(middles).columns[1].kind == "numeric"


def test_intervals_scored_in_a_numeric_column_get_the_advice_fit_gives():
    # "column 'x' should be numeric but holds Interval(-0.1, 0.5, closed='right') (row 1)",
    # with no advice, where fit says how to pass intervals as numbers.
    values = np.random.default_rng(0).normal(size=100)
    pre = TablePreprocessor(DataConfig()).fit(pd.DataFrame({"x": values}))
    binned = pd.cut(values, 4)
    advice = r"pd\.IntervalIndex\(column\)\.mid, or its \.left and \.right"
    message = rf"^column 'x' should be numeric but holds intervals .*\(row 1\): .*{advice}"
    one = pd.Series(values, dtype=object)
    one[2] = pd.Interval(0.0, 1.0)
    for column in (binned, pd.arrays.IntervalArray(binned), binned.astype(object)):
        with pytest.raises(DataError, match=message):
            pre.transform(pd.DataFrame({"x": column}))
    with pytest.raises(DataError, match=r"holds intervals .*Interval\(0\.0, 1\.0.*\(row 3\)"):
        pre.transform(pd.DataFrame({"x": one}))
    # Other text keeps its message.
    with pytest.raises(DataError, match=r"should be numeric but holds 'hot' \(row 1\)$"):
        pre.transform(pd.DataFrame({"x": ["hot", *values[1:]]}))


def test_numbers_mixed_with_booleans_are_refused_at_fit_and_warned_of_at_scoring(caplog):
    # An object column of 1.5, 2.0 and True was taken as categories, each number one of
    # its own (a new number unseen at scoring, or refused as "N distinct text values");
    # written to a CSV file, the same column was refused as stray text below 5% of its
    # cells and taken as categories above. Neither numbers only (numeric) nor booleans
    # only (categories), it is refused in every form, naming the column and a cell.
    values = np.random.default_rng(0).choice([1.5, 2.0, 3.0], size=200).astype(object)
    few, many = values.copy(), values.copy()
    few[[3, 10]] = True
    many[3::8] = True
    many[4::8] = False
    message = r"^column 'm' holds numbers and booleans, such as (True|'True') \(row 4\)"
    for column in (few, many):
        frame = pd.DataFrame({"x": np.arange(200.0), "m": column})
        for form in (frame, frame.astype({"m": str})):  # a CSV file reads them as text
            with pytest.raises(DataError, match=message + r".*data\.categorical_columns"):
                check_cells(form, DataConfig())
            with pytest.raises(DataError, match=message):
                TablePreprocessor(DataConfig()).fit(form)
    # Named a category, it stays one; booleans alone, or among words, are categories.
    forced = TablePreprocessor(DataConfig(categorical_columns=["m"])).fit(frame)
    assert forced.columns[1].categories == ["1.5", "2", "3", "False", "True"]
    words = pd.DataFrame({"m": pd.Series(["a", "b", True] * 10, dtype=object)})
    assert TablePreprocessor(DataConfig()).fit(words).columns[0].kind == "categorical"
    # At scoring, True among a numeric column's numbers is read as 1 with the warning a
    # column of True/False gets (it was read so without one).
    pre = TablePreprocessor(DataConfig()).fit(pd.DataFrame({"m": np.arange(30.0)}))
    mixed = pd.DataFrame({"m": pd.Series([0.0, True, 2.0], dtype=object)})
    with caplog.at_level(logging.WARNING):
        features = pre.transform(mixed)
    np.testing.assert_array_equal(features, pre.transform(pd.DataFrame({"m": [0.0, 1.0, 2.0]})))
    assert "column 'm' holds True/False, and the model was trained on numbers" in caplog.text
