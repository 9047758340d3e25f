"""The fit workflow's handling of labels and evaluation files (tracking off: fast)."""

import numpy as np
import pandas as pd
import pytest

from anomaly_vae import scoring
from anomaly_vae.errors import DataError
from anomaly_vae.fitting import fit_table, latest_model_dir
from anomaly_vae.scoring import load_detector, score_table
from tests.conftest import mixed_table, tiny_config


@pytest.fixture
def labelled_config():
    return tiny_config(
        "data.id_column=reading_id", "data.label_column=is_fault", "tracking.enabled=false"
    )


def test_labelled_anomalies_never_reach_training(tmp_path, labelled_config):
    mixed_table(500, seed=0, anomalies=40).to_csv(tmp_path / "train.csv", index=False)
    mixed_table(100, seed=3, anomalies=10).to_parquet(tmp_path / "extra.parquet")
    result = fit_table(
        tmp_path / "train.csv",
        labelled_config,
        eval_source=tmp_path / "extra.parquet",
        project_dir=tmp_path,
    )
    normal = 460
    held_out = round(labelled_config.evaluation.fraction * normal)
    fitted_rows = sum(result.detector.n_training_rows_.values())
    assert fitted_rows == normal - held_out
    assert result.rows["labelled_anomalies_excluded"] == 40
    assert result.evaluation["n_anomalous"] == 40 + 10
    assert result.evaluation["n_normal"] == held_out + 90
    assert result.evaluation["auroc"] > 0.9
    low, high = result.evaluation["auroc_interval"]  # 95%, bootstrapped
    assert low <= result.evaluation["auroc"] <= high and result.evaluation["interval_level"] == 0.95
    assert result.run is None  # tracking disabled
    assert latest_model_dir(tmp_path) == result.model_dir.resolve()


def test_eval_file_needs_a_label_column(tmp_path):
    mixed_table(100, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("tracking.enabled=false", "data.id_column=reading_id")
    with pytest.raises(DataError, match="--eval needs --label-col"):
        fit_table(
            tmp_path / "train.csv", config, eval_source=tmp_path / "train.csv", project_dir=tmp_path
        )


def test_model_settings_the_chosen_variant_does_not_read_are_warned_about(tmp_path, caplog):
    # model.codebook_size set without model.name=vq-vae trained a vae that never read it,
    # without a word (and its MLflow run does not log the setting either).
    from anomaly_vae.fitting import unread_model_settings

    config = tiny_config("tracking.enabled=false", "model.codebook_size=16", "model.beta=2")
    assert unread_model_settings(config) == ["model.codebook_size=16"]  # vae reads beta
    assert unread_model_settings(tiny_config("model.name=vq-vae", "model.codebook_size=16")) == []
    # Settings left at their defaults (a file from `anomaly-vae config`) are no news.
    assert unread_model_settings(tiny_config()) == []
    with caplog.at_level("WARNING"), pytest.raises(DataError):  # warned before reading data
        fit_table(tmp_path / "missing.csv", config, project_dir=tmp_path)
    assert "model 'vae' ignores these settings" in caplog.text
    assert "(model.name): model.codebook_size=16" in caplog.text


@pytest.mark.parametrize(
    ("labels", "anomaly_label", "marks"),
    [({0: 1, 1: 1}, None, "1"), ({0: "bad", 1: "bad"}, "bad", "the anomaly label 'bad'")],
)
def test_a_table_labelled_all_anomalous_says_no_row_is_normal(
    tmp_path, labelled_config, labels, anomaly_label, marks
):
    table = mixed_table(100, seed=0, anomalies=10)
    table.assign(is_fault=table["is_fault"].map(labels)).to_csv(tmp_path / "t.csv", index=False)
    labelled_config.data.anomaly_label = anomaly_label
    message = (
        f"no row of {tmp_path / 't.csv'} is labelled normal: label column 'is_fault' holds "
        f"{marks} in every row, and fit trains on normal rows"
    )
    with pytest.raises(DataError) as refused:
        fit_table(tmp_path / "t.csv", labelled_config, project_dir=tmp_path)
    assert str(refused.value) == message


def test_too_few_normal_rows_are_counted_as_what_they_are(tmp_path, labelled_config):
    """'need at least 20 training rows, got 16' counted the normal rows left after the
    evaluation's hold-out, which fit splits again into training (the summary's and the
    run's "training rows"), validation and calibration rows; of a file with 20 normal
    rows. The error now says what it counts, and what the hold-out took."""
    table = mixed_table(30, seed=0, anomalies=10)
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError) as refused:
        fit_table(tmp_path / "t.csv", labelled_config, project_dir=tmp_path)
    assert str(refused.value) == (
        "need at least 20 normal rows to fit on, got 16: 4 of the 20 normal rows are held "
        "out for evaluation (evaluation.fraction=0.2); give more normal rows, or lower "
        "evaluation.fraction"
    )
    labelled_config.data.label_column = None
    table.head(12).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError) as refused:
        fit_table(tmp_path / "t.csv", labelled_config, project_dir=tmp_path)
    assert str(refused.value) == (
        "need at least 20 normal rows to fit on (split into training, validation and "
        "calibration rows), got 12"
    )


def test_unknown_id_column_is_an_error(tmp_path):
    mixed_table(100, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("tracking.enabled=false", "data.id_column=serial")
    with pytest.raises(DataError, match="id column 'serial' is not in the data; columns: "):
        fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    config = tiny_config("tracking.enabled=false", "data.id_column=Reading_ID")
    with pytest.raises(DataError, match=r"\(the data has 'reading_id': names are case"):
        fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)


def test_parquet_in_and_out_without_id_gives_row_numbers(tmp_path, monkeypatch):
    table = mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"])
    table.to_parquet(tmp_path / "train.parquet")
    config = tiny_config("tracking.enabled=false")
    fit_table(tmp_path / "train.parquet", config, project_dir=tmp_path)
    detector = load_detector(None, project_dir=tmp_path)
    score_table(tmp_path / "train.parquet", detector, tmp_path / "out.parquet")
    scores = pd.read_parquet(tmp_path / "out.parquet")
    assert scores["row"].tolist() == list(range(1, 301))  # as messages count
    assert scores["is_anomaly"].dtype == bool
    # Scored in steps of the progress bar, the rows come out the same as in one pass.
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 70)
    score_table(tmp_path / "train.parquet", detector, tmp_path / "steps.parquet", progress=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "steps.parquet"), scores)


def test_parquet_output_holds_an_id_column_empty_in_a_later_part(tmp_path, monkeypatch):
    """Scored in parts, an id column empty in every row of a part is still text (ids are
    read as written), before or after the parts that hold ids."""
    config = tiny_config("tracking.enabled=false", "data.id_column=reading_id")
    mixed_table(300, seed=0).drop(columns="is_fault").to_csv(tmp_path / "train.csv", index=False)
    fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    detector = load_detector(None, project_dir=tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 60)
    new = mixed_table(120, seed=1).drop(columns="is_fault")
    new.loc[60:, "reading_id"] = None
    new.to_csv(tmp_path / "new.csv", index=False)
    assert score_table(tmp_path / "new.csv", detector, tmp_path / "new.parquet")[0] == 120
    ids = pd.read_parquet(tmp_path / "new.parquet")["reading_id"]
    assert ids.iloc[0] == new["reading_id"].iloc[0] and ids.iloc[60:].isna().all()
    pd.concat([new.iloc[60:], new.iloc[:60]]).to_csv(tmp_path / "empty_first.csv", index=False)
    assert score_table(tmp_path / "empty_first.csv", detector, tmp_path / "empty_first.parquet")
    ids = pd.read_parquet(tmp_path / "empty_first.parquet")["reading_id"]
    assert ids.iloc[:60].isna().all() and ids.iloc[60:].tolist() == new["reading_id"][:60].tolist()


@pytest.mark.parametrize("progress", [True, False])
def test_a_score_off_a_terminal_says_how_far_it_is_in_lines(
    progress, tmp_path, monkeypatch, capsys
):
    """No bar is drawn off a terminal (pytest's stderr is not one): with progress on,
    ``score`` says how many rows are scored in a line every PROGRESS_LINE_SECONDS (here,
    every part), as fit does its epochs; a scheduled batch run keeps to its own lines."""
    from anomaly_vae import training
    from anomaly_vae.batch import run_batch

    table = mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"])
    table.to_csv(tmp_path / "train.csv", index=False)
    fit_table(tmp_path / "train.csv", tiny_config("tracking.enabled=false"), project_dir=tmp_path)
    detector = load_detector(None, project_dir=tmp_path)
    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)
    capsys.readouterr()
    score_table(tmp_path / "train.csv", detector, tmp_path / "out.csv", progress=progress)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scoring")]
    expected = [f"scoring train.csv: {rows} rows" for rows in (100, 200, 300)] if progress else []
    assert [line.split(" (")[0] for line in lines] == expected  # then "(0 s)", the time so far
    run_batch(tmp_path / "train.csv", tmp_path / "batch", detector, "m", 100, progress=progress)
    assert "scoring" not in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_score_on_a_terminal_shows_how_much_is_left(suffix, tmp_path, monkeypatch):
    """The bar of `score` had no total, so no share done and no time left: it counts the
    bytes of a CSV file read (its rows are not known before) and a Parquet file's rows,
    which its metadata counts, with the rows scored beside."""
    import io
    import sys

    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    table = mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"])
    table.to_csv(tmp_path / "train.csv", index=False)
    table.to_parquet(tmp_path / "train.parquet")
    fit_table(tmp_path / "train.csv", tiny_config("tracking.enabled=false"), project_dir=tmp_path)
    detector = load_detector(None, project_dir=tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    score_table(tmp_path / f"train{suffix}", detector, tmp_path / "out.csv", progress=True)
    monkeypatch.undo()
    first = terminal.getvalue().split("\r")[1]  # the bar as drawn when scoring starts
    if suffix == ".csv":
        size = tqdm.format_sizeof((tmp_path / "train.csv").stat().st_size)
        assert first.startswith("train.csv:   0%") and f"0.00/{size} [" in first, first
        assert first.endswith("B/s, 0 rows]"), first
    else:
        assert first.startswith("train.parquet:   0%") and " 0/300 [" in first, first


def test_a_fit_on_an_image_folder_counts_the_images_it_reads(tmp_path, monkeypatch, capsys):
    """A fit decodes an image folder whole before training, with no sign of progress:
    2,000 JPEGs of 256 x 256 (resized to 64) took 8 s in silence before the training
    bar, and the time grows with the folder. The read is counted as `score` counts the
    images it scores: a bar with the share read and the time left on a terminal, a line
    every PROGRESS_LINE_SECONDS off one; none with --quiet."""
    import io
    import sys

    from PIL import Image

    from anomaly_vae import training
    from anomaly_vae.fitting import load_training_data
    from tests.test_images import bars

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    folder = tmp_path / "shoes"
    folder.mkdir()
    for i, image in enumerate(bars(30, seed=0)):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    data = load_training_data(folder, tiny_config("training.progress=true"))
    assert data.train.shape == (30, 1, 16, 16)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reading")]
    assert [line.split(" (")[0] for line in lines] == [
        f"reading shoes: {n} image{'s' if n > 1 else ''}" for n in range(1, 31)
    ]
    load_training_data(folder, tiny_config("training.progress=false"))
    assert capsys.readouterr().err == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load_training_data(folder, tiny_config("training.progress=true"))
    monkeypatch.undo()
    first = terminal.getvalue().split("\r")[1]  # the bar as drawn when the read starts
    assert first.startswith("reading shoes:   0%") and " 0/30 [" in first, first


def test_progress_counts_one_image_or_row_in_the_singular(monkeypatch, capsys):
    """Progress lines said "reading shoes: 1 images" and "scoring new: 1 images", and a
    table's bar "1 rows" beside the bytes read."""
    import io
    import sys
    import time

    from anomaly_vae import training
    from anomaly_vae.batch import scoring_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    with scoring_progress("new", "images", True, True, 3) as count:
        count(1)
        count(2)
    lines = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["scoring new: 1 image", "scoring new: 3 images"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with scoring_progress("a.csv", "rows", True, False, 100, bytes_total=True) as count:
        time.sleep(0.15)  # past tqdm's 0.1 s between redraws
        count(1, 50)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert "1 row]" in terminal.getvalue() and "1 rows" not in terminal.getvalue()


def _refused_before_training(tmp_path, config, monkeypatch, **sources):
    """The DataError of fitting ``train.csv``; training must not have started."""
    from anomaly_vae import detector

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the data was checked")

    monkeypatch.setattr(detector, "train", no_training)
    with pytest.raises(DataError) as refused:
        fit_table(tmp_path / "train.csv", config, project_dir=tmp_path, **sources)
    return str(refused.value)


def test_a_bad_cell_outside_the_training_rows_is_named_before_training(
    tmp_path, labelled_config, monkeypatch
):
    # A '?' in an anomalous row: the training rows alone are all numbers, written as
    # text, which would have made 'temperature' a column of 400 categories.
    table = mixed_table(500, seed=0, anomalies=40).astype({"temperature": object})
    row = int(table.index[table["is_fault"] == 1][0])
    table.loc[row, "temperature"] = "?"
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _refused_before_training(tmp_path, labelled_config, monkeypatch)
    assert (
        f"column 'temperature' holds numbers but for 1 text cell(s) such as '?' (row {row + 1})"
        in message
    )
    # An infinite value in a held-out row, likewise by its file row.
    table = mixed_table(500, seed=0, anomalies=40)
    table.loc[7, "load"] = float("inf")
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _refused_before_training(tmp_path, labelled_config, monkeypatch)
    assert "column 'load' holds infinite values (row 8)" in message


def test_a_bad_cell_of_the_training_file_is_named_with_the_file(tmp_path, monkeypatch):
    # The message named the column and row but not the file, where the same cell in an
    # --eval file was named with its file: with two files read, which one's row 8?
    config = tiny_config("tracking.enabled=false")
    table = mixed_table(100, seed=0)
    table.loc[7, "load"] = float("inf")
    for name in ("train.csv", "train.parquet"):
        path = tmp_path / name
        table.to_csv(path, index=False) if name.endswith(".csv") else table.to_parquet(path)
        with pytest.raises(DataError) as refused:
            fit_table(path, config, project_dir=tmp_path)
        assert str(refused.value) == f"{path}: column 'load' holds infinite values (row 8)"
    # The same wording as for a cell of the --eval file.
    table.loc[7, "load"] = 1.0
    table.to_csv(tmp_path / "train.csv", index=False)
    bad_eval = mixed_table(60, seed=3, anomalies=6)
    bad_eval.loc[2, "load"] = float("-inf")
    bad_eval.to_csv(tmp_path / "eval.csv", index=False)
    labelled = tiny_config("data.label_column=is_fault", "tracking.enabled=false")
    message = _refused_before_training(
        tmp_path, labelled, monkeypatch, eval_source=tmp_path / "eval.csv"
    )
    assert message == f"{tmp_path / 'eval.csv'}: column 'load' holds infinite values (row 3)"


def test_a_bad_label_is_named_with_its_file_by_fit_and_calibrate(tmp_path):
    # Only an --eval file's label errors named the file; fit's training file and
    # calibrate's file said "label column 'is_fault' must hold ..." alone.
    from anomaly_vae.recalibration import calibrate_model

    config = tiny_config(
        "data.label_column=is_fault", "data.id_column=reading_id", "tracking.enabled=false"
    )
    good = mixed_table(200, seed=0, anomalies=10)
    good.to_csv(tmp_path / "train.csv", index=False)
    model = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path).model_dir
    bad = tmp_path / "reviewed.csv"
    good.assign(is_fault=good["is_fault"].replace(1, 7)).to_csv(bad, index=False)
    with pytest.raises(DataError, match=rf"^{bad}: label column 'is_fault' must hold 0"):
        fit_table(bad, config, project_dir=tmp_path)
    for column in ("is_fault", "no_such_column"):
        with pytest.raises(DataError, match=rf"^{bad}: label column '{column}' "):
            calibrate_model(
                bad, str(model), "f1", label_column=column, project_dir=tmp_path, track=False
            )


def test_an_eval_file_is_checked_against_the_training_file_before_training(
    tmp_path, labelled_config, monkeypatch, caplog
):
    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    extra = mixed_table(60, seed=3, anomalies=6)
    extra[["reading_id", "is_fault"]].to_csv(tmp_path / "labels.csv", index=False)
    message = _refused_before_training(
        tmp_path, labelled_config, monkeypatch, eval_source=tmp_path / "labels.csv"
    )
    assert "labels.csv: missing columns 'machine', 'temperature', 'load', 'vibration'" in message
    bad = extra.astype({"load": object})
    bad.loc[4, "load"] = "1217.0x"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    message = _refused_before_training(
        tmp_path, labelled_config, monkeypatch, eval_source=tmp_path / "bad.csv"
    )
    assert "bad.csv: column 'load' should be numeric but holds '1217.0x' (row 5)" in message


def test_an_eval_files_missing_column_is_worded_as_score_words_it(
    tmp_path, labelled_config, monkeypatch
):
    # fit --eval said "missing column 'load' of the training data", where score,
    # calibrate and batch say "... that the training data has", with a hint at a
    # column spelled otherwise.
    from anomaly_vae.data.preprocessing import TablePreprocessor

    table = mixed_table(300, seed=0, anomalies=20)
    table.to_csv(tmp_path / "train.csv", index=False)
    extra = mixed_table(60, seed=3, anomalies=6).rename(columns={"load": "Load"})
    extra.to_csv(tmp_path / "eval.csv", index=False)
    message = _refused_before_training(
        tmp_path, labelled_config, monkeypatch, eval_source=tmp_path / "eval.csv"
    )
    expected = (
        "missing column 'load' that the training data has (the data has 'Load': names "
        "are case- and space-sensitive)"
    )
    assert message == f"{tmp_path / 'eval.csv'}: {expected}"
    scoring_check = TablePreprocessor(labelled_config.data).fit(table)
    with pytest.raises(DataError) as refused:
        scoring_check.check_columns(extra)
    assert str(refused.value) == expected


def test_an_eval_files_column_not_seen_in_training_is_warned_of_with_its_file(
    tmp_path, labelled_config, monkeypatch, caplog
):
    # The warning named no file, and came after training, when the evaluation rows (the
    # training file's held-out rows and the --eval file's together) were scored.
    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    extra = mixed_table(60, seed=3, anomalies=6).assign(comment="x")
    extra.to_csv(tmp_path / "eval.csv", index=False)
    with caplog.at_level("WARNING"):
        result = fit_table(
            tmp_path / "train.csv",
            labelled_config,
            eval_source=tmp_path / "eval.csv",
            project_dir=tmp_path,
        )
    said = "ignoring column not seen in training: comment"
    assert caplog.text.count(said) == 1
    assert f"{tmp_path / 'eval.csv'}: {said}" in caplog.text
    assert result.evaluation["n_anomalous"] == 20 + 6


def test_missing_values_outside_the_training_rows_are_refused_before_training(
    tmp_path, monkeypatch
):
    # Without missing indicators, the evaluation rows' missing values (an --eval file's,
    # or those of the training file's anomalous rows) were refused by the model only
    # after it had trained; and without the file's name.
    config = tiny_config(
        "data.label_column=is_fault", "tracking.enabled=false", "data.missing_indicators=false"
    )
    table = mixed_table(300, seed=0, anomalies=20).drop(columns="reading_id")
    table["vibration"] = table["vibration"].fillna(1.0)
    table.to_csv(tmp_path / "train.csv", index=False)
    extra = mixed_table(60, seed=3, anomalies=6).drop(columns="reading_id")
    extra["vibration"] = extra["vibration"].fillna(1.0)
    extra.loc[[4, 9, 30], "vibration"] = float("nan")
    extra.to_csv(tmp_path / "eval.csv", index=False)
    message = _refused_before_training(
        tmp_path, config, monkeypatch, eval_source=tmp_path / "eval.csv"
    )
    assert message == (
        f"{tmp_path / 'eval.csv'}: column 'vibration' has 3 missing values (the first in "
        "row 5); set data.missing_indicators=true"
    )
    anomalous = table.index[table["is_fault"] == 1][:2]
    table.loc[anomalous, "vibration"] = float("nan")
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _refused_before_training(tmp_path, config, monkeypatch)
    assert message == (
        f"{tmp_path / 'train.csv'}: column 'vibration' has 2 missing values (the first in "
        f"row {anomalous[0] + 1}); set data.missing_indicators=true"
    )


def test_eval_rows_with_the_ids_of_training_rows_are_warned_about(
    tmp_path, labelled_config, caplog
):
    table = mixed_table(300, seed=0, anomalies=20)
    table.to_csv(tmp_path / "train.csv", index=False)
    table.iloc[250:].to_csv(tmp_path / "again.csv", index=False)
    fit_table(
        tmp_path / "train.csv",
        labelled_config,
        eval_source=tmp_path / "again.csv",
        project_dir=tmp_path,
    )
    assert "50 rows of" in caplog.text and "have ids of rows in the training file" in caplog.text


def test_eval_ids_of_calibration_rows_withhold_a_labelled_threshold_s_interval(
    tmp_path, labelled_config
):
    """An F1 threshold chosen on --eval rows with the ids of the fit's calibration rows
    has no interval of its false-positive rate; ids of other training rows leave it."""
    labelled_config.calibration.method = "f1"
    labelled_config.training.epochs = 5  # the threshold's record is the point, not the model
    table = mixed_table(300, seed=0, anomalies=20)
    table.to_csv(tmp_path / "train.csv", index=False)
    table.iloc[250:].to_csv(tmp_path / "again.csv", index=False)

    def fit(eval_file: str):
        return fit_table(
            tmp_path / "train.csv",
            labelled_config,
            eval_source=tmp_path / eval_file,
            project_dir=tmp_path,
        )

    shared = fit("again.csv")
    train = shared.data.train
    calibration_ids = set(train["reading_id"].iloc[shared.detector.split_rows_["calibration"]])
    evaluated = calibration_ids & set(table["reading_id"].iloc[250:])
    assert evaluated  # else the file would test nothing
    assert "expected_fpr_high" not in shared.detector.calibration_
    assert shared.detector.calibration_["expected_fpr_withheld"] == (
        f"{len(evaluated)} of the fit's {len(calibration_ids)} held-out normal rows have the "
        "ids of rows of again.csv, so they may be among the labelled rows that chose the "
        "threshold"
    )
    trained_on = train.iloc[shared.detector.split_rows_["train"]]
    pd.concat([trained_on.iloc[:40], table[table["is_fault"] == 1]]).to_csv(
        tmp_path / "trained.csv", index=False
    )
    other = fit("trained.csv")
    assert np.array_equal(  # the same split: the rows' ids are still training rows' only
        other.detector.split_rows_["calibration"], shared.detector.split_rows_["calibration"]
    )
    assert "expected_fpr_withheld" not in other.detector.calibration_
    assert "expected_fpr_high" in other.detector.calibration_


def test_a_label_column_is_for_tables_and_is_not_the_id(tmp_path):
    from anomaly_vae.fitting import load_training_data

    images = tmp_path / "images" / "good"
    images.mkdir(parents=True)
    config = tiny_config("data.label_column=is_fault")
    with pytest.raises(DataError, match="--label-col is for tables"):
        load_training_data(tmp_path / "images", config)  # before any image is read
    mixed_table(100, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("data.label_column=is_fault", "data.id_column=is_fault")
    with pytest.raises(DataError, match="'is_fault' is named as both the label and the id"):
        load_training_data(tmp_path / "train.csv", config)


def test_file_level_checks_name_file_rows_and_respect_categories(
    tmp_path, labelled_config, monkeypatch
):
    # A value too large to scale by, in a held-out row: by its file row, before training.
    table = mixed_table(300, seed=0, anomalies=20)
    table.loc[99, "vibration"] = 1e300
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _refused_before_training(tmp_path, labelled_config, monkeypatch)
    assert "column 'vibration' holds 1e+300 (row 100), too large to scale" in message
    # An --eval file without the label column is named.
    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    extra = mixed_table(60, seed=3, anomalies=6)
    extra.drop(columns="is_fault").to_csv(tmp_path / "unlabelled.csv", index=False)
    message = _refused_before_training(
        tmp_path, labelled_config, monkeypatch, eval_source=tmp_path / "unlabelled.csv"
    )
    assert message.startswith(f"{tmp_path / 'unlabelled.csv'}: label column 'is_fault'")
    # A numeric column the user calls categories may hold any value in the --eval file.
    monkeypatch.undo()  # training again
    config = tiny_config(
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "tracking.enabled=false",
        "data.categorical_columns=[load]",
        "data.max_categories=1000",
    )
    extra.astype({"load": object}).assign(load="unknown").to_csv(tmp_path / "e.csv", index=False)
    result = fit_table(
        tmp_path / "train.csv", config, eval_source=tmp_path / "e.csv", project_dir=tmp_path
    )
    assert result.evaluation["n_normal"] > 0


@pytest.mark.parametrize(("method", "warned"), [("quantile", True), ("f1", False)])
def test_few_calibration_rows_are_warned_about_only_for_a_quantile_threshold(
    tmp_path, labelled_config, caplog, method, warned
):
    # 280 normal rows, 224 fitted: 34 calibration rows cannot resolve a 1% false-positive
    # rate. With f1 the threshold is chosen on the labelled rows instead, yet the warning
    # said "a quantile threshold on them is their highest score".
    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    labelled_config.calibration.method = method
    with caplog.at_level("WARNING"):
        result = fit_table(tmp_path / "train.csv", labelled_config, project_dir=tmp_path)
    assert result.detector.calibration_["method"] == method
    assert ("34 calibration rows cannot resolve" in caplog.text) is warned


@pytest.mark.parametrize("progress", [True, False])
def test_a_large_fit_says_which_step_it_is_in(progress, tmp_path, monkeypatch, capsys):
    """Before the training bar and after it, a fit of 1,000,000 rows spent seconds in
    steps that said nothing; from PHASE_LINE_ROWS rows (or a file of
    PHASE_LINE_BYTES) a line on stderr names each as it starts: here both are 0, so
    that a small fit is large. --quiet (progress off) keeps them off."""
    from anomaly_vae import training

    monkeypatch.setattr(training, "PHASE_LINE_ROWS", 0, raising=False)
    monkeypatch.setattr(training, "PHASE_LINE_BYTES", 0, raising=False)
    mixed_table(500, seed=0, anomalies=40).to_csv(tmp_path / "train.csv", index=False)
    mixed_table(100, seed=3, anomalies=10).to_csv(tmp_path / "extra.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id", "data.label_column=is_fault", "tracking.enabled=false"
    )
    config.training.progress = progress
    result = fit_table(
        tmp_path / "train.csv", config, eval_source=tmp_path / "extra.csv", project_dir=tmp_path
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.endswith(" ...")]
    rows = result.detector.n_training_rows_
    expected = [
        "reading train.csv (0 MB) ...",
        "reading extra.csv (0 MB) ...",
        f"preparing the features of {sum(rows.values())} rows ...",
        f"calibrating the decoder variance on {rows['train']} training rows ...",
        f"calibrating the threshold on {rows['calibration']} held-out rows ...",
        f"evaluating on {result.rows['evaluation']} labelled rows ...",
    ]
    assert lines == (expected if progress else [])


def test_a_small_fit_names_no_steps(tmp_path, capsys):
    """Below PHASE_LINE_ROWS rows, as in the tests and `make demo`, the output is as before."""
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("data.id_column=reading_id", "tracking.enabled=false")
    config.training.progress = True
    fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    assert " ..." not in capsys.readouterr().err


def test_the_evaluation_rows_are_scored_in_parts_with_the_scores_of_one_pass(tmp_path, monkeypatch):
    """A large --eval file was scored in one pass: the model's float input of every row
    and its intermediates held at once (500,000 rows of 30 columns: 150 MB more at the
    peak). It is scored PROGRESS_CHUNK_ROWS rows at a time, in whole scoring
    batches, and its scores, threshold and evaluation are those of one pass."""
    import copy

    from anomaly_vae.data.preprocessing import TablePreprocessor
    from anomaly_vae.detector import VAEDetector
    from anomaly_vae.fitting import (
        calibrate_and_evaluate,
        load_training_data,
        threshold_and_evaluation,
    )

    config = tiny_config(
        "data.label_column=is_fault",
        "data.id_column=reading_id",
        "tracking.enabled=false",
        "training.epochs=5",
        "calibration.method=f1",  # the threshold chosen on the evaluation's scores
        "scoring.batch_size=32",
    )
    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    mixed_table(600, seed=3, anomalies=40).to_csv(tmp_path / "eval.csv", index=False)
    data = load_training_data(tmp_path / "train.csv", config, tmp_path / "eval.csv")
    assert data.evaluation is not None and data.evaluation_labels is not None
    detector = VAEDetector(config.detector_config()).fit(data.train)
    one_pass = copy.deepcopy(detector)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)  # parts of 128 rows: 4 batches
    transformed: list[int] = []
    transform = TablePreprocessor.transform

    def recording(self: TablePreprocessor, frame: pd.DataFrame) -> object:
        transformed.append(len(frame))
        return transform(self, frame)

    monkeypatch.setattr(TablePreprocessor, "transform", recording)
    evaluation, scores = calibrate_and_evaluate(detector, data, config.evaluation)
    monkeypatch.undo()
    rows = len(data.evaluation)
    assert rows > 600 and sum(transformed) == rows
    assert max(transformed) == 128  # never every row at once
    whole = one_pass.anomaly_score(data.evaluation)
    assert scores is not None and scores.tobytes() == whole.tobytes()  # bit for bit
    labels = data.evaluation_labels
    assert evaluation == threshold_and_evaluation(one_pass, labels, whole, config.evaluation)
    assert detector.threshold_ == one_pass.threshold_
    assert detector.calibration_ == one_pass.calibration_


def test_an_error_scoring_the_evaluation_in_parts_counts_all_its_rows(tmp_path, monkeypatch):
    """Scored in parts, the evaluation's error is still that of all its rows: missing
    values in a model trained without missing indicators are counted over every row,
    not over the first part that holds some."""
    import numpy as np

    config = tiny_config(
        "data.label_column=is_fault",
        "tracking.enabled=false",
        "training.epochs=2",
        "data.missing_indicators=false",
        "scoring.batch_size=32",
    )
    mixed_table(300, seed=0).drop(columns="reading_id").dropna().to_csv(
        tmp_path / "train.csv", index=False
    )
    new = mixed_table(600, seed=3, anomalies=40).drop(columns="reading_id")
    new["vibration"] = new["vibration"].fillna(0.0)
    new.loc[::50, "vibration"] = np.nan  # 12 rows, in each of the 5 parts of 128 rows
    new.to_csv(tmp_path / "eval.csv", index=False)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)
    with pytest.raises(DataError, match="'vibration' has 12 missing values"):
        fit_table(
            tmp_path / "train.csv", config, eval_source=tmp_path / "eval.csv", project_dir=tmp_path
        )


def test_scores_in_parts_raises_the_error_of_all_its_rows(monkeypatch):
    """fit now refuses an --eval file's missing values before training (the test above
    passes through that check), so scores_in_parts' own count over all the rows of a
    frame is tested here, on the frame itself."""
    import numpy as np

    from anomaly_vae.detector import VAEDetector

    config = tiny_config(
        "training.epochs=2", "data.missing_indicators=false", "scoring.batch_size=32"
    )
    training = mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"]).dropna()
    detector = VAEDetector(config.detector_config()).fit(training)
    new = mixed_table(600, seed=3).drop(columns=["reading_id", "is_fault"])
    new["vibration"] = new["vibration"].fillna(0.0)
    new.loc[::50, "vibration"] = np.nan  # 12 rows, in each of the 5 parts of 128 rows
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)
    with pytest.raises(DataError) as refused:
        scoring.scores_in_parts(detector, new, None, "new")
    assert str(refused.value) == (
        "column 'vibration' has 12 missing values and the model was trained without missing "
        "indicators"
    )
