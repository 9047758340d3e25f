"""The fit workflow's handling of labels and evaluation files (tracking off: fast)."""

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
    assert result.run is None  # tracking disabled
    assert latest_model_dir(tmp_path) == result.model_dir.resolve()


def test_eval_file_needs_a_label_column(tmp_path):
    mixed_table(100, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("tracking.enabled=false", "data.id_column=reading_id")
    with pytest.raises(DataError, match="--eval needs --label-col"):
        fit_table(
            tmp_path / "train.csv", config, eval_source=tmp_path / "train.csv", project_dir=tmp_path
        )


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


def test_unknown_id_column_is_an_error(tmp_path):
    mixed_table(100, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("tracking.enabled=false", "data.id_column=serial")
    with pytest.raises(DataError, match="id column 'serial' is not in the data"):
        fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)


def test_parquet_in_and_out_without_id_gives_row_numbers(tmp_path, monkeypatch):
    table = mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"])
    table.to_parquet(tmp_path / "train.parquet")
    config = tiny_config("tracking.enabled=false")
    fit_table(tmp_path / "train.parquet", config, project_dir=tmp_path)
    detector = load_detector(None, project_dir=tmp_path)
    score_table(tmp_path / "train.parquet", detector, tmp_path / "out.parquet")
    scores = pd.read_parquet(tmp_path / "out.parquet")
    assert scores["row"].tolist() == list(range(300))
    assert scores["is_anomaly"].dtype == bool
    # Scored in steps of the progress bar, the rows come out the same as in one pass.
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 70)
    score_table(tmp_path / "train.parquet", detector, tmp_path / "steps.parquet", progress=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "steps.parquet"), scores)


def test_parquet_output_holds_an_id_column_empty_in_a_later_part(tmp_path, monkeypatch):
    """Scored in parts, an id column empty in every row of a later part reads as floats
    there; the Parquet output keeps the first part's type. The other way round (empty
    first) cannot be written, and says so."""
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
    with pytest.raises(DataError, match=r"column 'reading_id' holds other types from row 61"):
        score_table(tmp_path / "empty_first.csv", detector, tmp_path / "empty_first.parquet")
    assert not (tmp_path / "empty_first.parquet").exists()
