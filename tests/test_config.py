import subprocess
import sys

import pytest
import yaml

from anomaly_vae.config import Config, DetectorConfig, flatten, load_config
from anomaly_vae.errors import ConfigError


def test_layers_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  latent_dim: 3\n  beta: 0.5\ntraining:\n  epochs: 7\n")
    config = load_config(path, ["training.epochs=9", "model.hidden_dims=[16, 8]"])
    assert config.model.latent_dim == 3
    assert config.model.beta == 0.5
    assert config.training.epochs == 9  # override beats the file
    assert config.model.hidden_dims == [16, 8]
    assert config.training.batch_size == Config().training.batch_size  # untouched default


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown config key model\.latnet_dim; valid keys: .*model\.latent_dim"
    ):
        load_config(overrides=["model.latnet_dim=3"])
    with pytest.raises(ConfigError, match="unknown config key nosuchsection"):
        load_config(overrides=["nosuchsection.x=1"])


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("model.latnet_dim=3", "did you mean model.latent_dim?"),  # a typo
        ("model.epochs=3", "did you mean training.epochs?"),  # a key of another section
        ("scoring.target_fpr=0.05", "did you mean calibration.target_fpr?"),
        ("traning.epochs=3", "did you mean training?"),  # a section's typo
        # a model name set in the wrong section
        ("training.name=conv-vae", "did you mean model.name?"),
        # a name two sections share: both are named
        ("model.batch_size=64", "did you mean training.batch_size or scoring.batch_size?"),
    ],
)
def test_unknown_key_suggests_the_key_meant(override, suggestion):
    # The list of valid keys runs to 20 names; the one meant should not have to be
    # found in it.
    with pytest.raises(ConfigError) as raised:
        load_config(overrides=[override])
    assert str(raised.value).endswith(f"; {suggestion}")


@pytest.mark.parametrize(
    "override",
    [
        "model.zzzzzz=3",
        # "name" is a word every section could use: model.name takes no "x" (no variant
        # is called so), and no key of tracking is spelled like it
        "tracking.name=x",
    ],
)
def test_unknown_key_without_a_likely_meaning_gets_no_suggestion(override):
    with pytest.raises(ConfigError) as raised:
        load_config(overrides=[override])
    assert "did you mean" not in str(raised.value)


def test_a_config_file_key_is_suggested_as_an_override_is(tmp_path):
    # The value a file gives decides as a --set value does.
    (tmp_path / "a.yaml").write_text("tracking:\n  name: my-runs\n")
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "a.yaml")
    assert "did you mean" not in str(raised.value)
    (tmp_path / "a.yaml").write_text("model:\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"; did you mean training\.epochs\?$"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("override", [".epochs=3", "training.=3", " . =3"])
def test_an_override_without_a_section_or_key_name_says_the_form(override):
    # ".epochs=3" read as the key "" of section "": "unknown config key ; valid keys: ...".
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs=many", "training.epochs must be of type int"),
        ("tracking.enabled=maybe", "tracking.enabled must be true or false"),
        ("scoring.score=vibes", "scoring.score must be one of"),
        ("calibration.target_fpr=1.5", r"calibration.target_fpr must be in \(0, 1\)"),
        ("calibration.method=youden", "calibration.method must be one of quantile, f1, recall"),
        ("calibration.target_recall=0", r"calibration.target_recall must be in \(0, 1\]"),
        ("calibration.expected_fpr_level=1", r"calibration.expected_fpr_level must be in \(0, 1\)"),
        ("model.trim_fraction=0.5", r"model.trim_fraction must be in \[0, 0.5\)"),
        ("data.image_pool=0", "data.image_pool must be >= 1"),
        ("scoring.latent_neighbours=0", "scoring.latent_neighbours must be >= 1"),
        ("scoring.latent_reference_rows=2", "scoring.latent_reference_rows must be >= "),
        ("training.max_epoch_batches=-1", "training.max_epoch_batches must be >= 0"),
        ("model.beta=.inf", "model.beta must be a finite number, not inf"),
        ("training.learning_rate=.nan", "training.learning_rate must be a finite number"),
        ("model.conv_channels=[]", "model.conv_channels must be one or more"),
        ("training.weight_decay=-1", "training.weight_decay must be >= 0"),
        ("training.seed=-1", "training.seed must be >= 0"),
        ("training.seed=18446744073709551616", r"training.seed must be below 2\*\*64"),
        ("training.num_threads=-3", "training.num_threads must be >= 0"),
        ("model.commitment_cost=-1", "model.commitment_cost must be >= 0"),
        ("evaluation.fraction=1.5", r"evaluation.fraction must be in \(0, 1\)"),
        ("evaluation.fraction=0", r"evaluation.fraction must be in \(0, 1\)"),
        ("tracking.view_rows=0", "tracking.view_rows must be >= 1"),
        ("tracking.input_example=none", "tracking.input_example must be rows or synthetic"),
        # 50 fitted, and every row then scored the same within 0.2 nats
        ("model.min_log_variance=50", r"model.min_log_variance must be <= 0 \(or auto\)"),
        # 1e38 made the loss infinite: "training diverged", lower the learning rate
        ("model.min_log_variance=1e38", r"model.min_log_variance must be <= 0 \(or auto\)"),
        ("family.variants=[vae, vae]", "family.variants names a variant twice"),
        ("epochs=3", "must look like section.key=value"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_min_log_variance_takes_zero_and_below():
    # 0: the fixed unit-variance decoder docs/tuning.md compares against
    for value in ("0", "-20", "auto"):
        load_config(overrides=[f"model.min_log_variance={value}"])


def test_yes_and_no_stay_words_where_text_is_expected():
    assert load_config(overrides=["data.anomaly_label=yes"]).data.anomaly_label == "yes"
    assert load_config(overrides=["data.id_column=No"]).data.id_column == "No"
    assert load_config(overrides=["tracking.enabled=false"]).tracking.enabled is False
    with pytest.raises(ConfigError, match=r"tracking\.enabled must be true or false"):
        load_config(overrides=["tracking.enabled=yes"])
    with pytest.raises(ConfigError, match="must be text, got the boolean True: quote it"):
        load_config(overrides=["data.anomaly_label=true"])


def test_text_that_is_not_yaml_is_taken_as_written():
    # It raised yaml's ScannerError, a traceback from every command.
    for label in ("[x", "*x", "...", "{a", "50% [partial"):
        assert load_config(overrides=[f"data.anomaly_label={label}"]).data.anomaly_label == label
    with pytest.raises(
        ConfigError, match=r"model\.hidden_dims must be a list such as \[1, 2\], got '\[32, 16'"
    ):
        load_config(overrides=["model.hidden_dims=[32, 16"])


def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_line(tmp_path):
    # It was PyYAML's five-line report, pointing into "<unicode string>".
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  latent_dim: [4\ntraining:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert message.startswith(f"config file {path} is not valid YAML: line ")
    assert "expected ',' or ']'" in message


def test_a_config_file_in_utf16_loads_and_one_of_bytes_is_an_error(tmp_path):
    # Read as UTF-8 text, a UTF-16 file (what Windows PowerShell's `anomaly-vae config >
    # my.yaml` writes) or stray bytes were a UnicodeDecodeError traceback.
    path = tmp_path / "c.yaml"
    path.write_bytes("model:\n  latent_dim: 4\n".encode("utf-16"))
    assert load_config(path).model.latent_dim == 4
    path.write_bytes(b"model:\n  latent_dim: 4 # caf\xe9\n")  # Latin-1
    with pytest.raises(ConfigError, match=r"c\.yaml is not valid YAML: byte 28 is not utf-8 text"):
        load_config(path)
    path.write_text("model:\n  name: v\x07ae\n")
    with pytest.raises(ConfigError, match=r"character 16: special characters are not allowed"):
        load_config(path)


def test_a_key_given_twice_in_a_yaml_file_is_an_error_not_the_last_one_kept(tmp_path):
    # PyYAML keeps the last of two equal keys: a second `model:` section silently
    # dropped every setting of the first.
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  latent_dim: 4\ntraining:\n  epochs: 3\nmodel:\n  beta: 2\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml is not valid YAML: line 5, .*'model'"):
        load_config(path)
    path.write_text("model:\n  latent_dim: 4\n  beta: 2\n  latent_dim: 5\n")
    with pytest.raises(ConfigError, match=r"line 4, .*'latent_dim' is given twice"):
        load_config(path)
    # A YAML merge (<<: *anchor) may still override the keys it brings.
    from anomaly_vae.config import _UniqueKeyLoader

    merged = yaml.load("a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", Loader=_UniqueKeyLoader)
    assert merged["c"] == {"x": 3, "y": 2}


def test_set_adds_to_a_section_left_empty_in_the_file(tmp_path):
    # "model:" with every key commented out loads alone, but with --set model.x=... it
    # was "config section 'model' must be a mapping".
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  # latent_dim: 3\ntraining:\n  epochs: 7\n")
    assert load_config(path).model == Config().model
    config = load_config(path, ["model.latent_dim=4"])
    assert config.model.latent_dim == 4 and config.training.epochs == 7


def test_shipped_yaml_configs_load():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert files, "configs/ should ship at least one example"
    for path in files:
        assert isinstance(load_config(path), Config)


def test_flatten_and_detector_part():
    config = load_config(overrides=["data.id_column=id"])
    flat = flatten(config)
    assert flat["data.id_column"] == "id"
    assert "tracking.experiment" in flat
    detector_config = config.detector_config()
    assert type(detector_config) is DetectorConfig
    assert detector_config.data.id_column == "id"


def test_config_listing_loads_back_to_the_same_config(tmp_path):
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    overrides = [
        "data.anomaly_label=yes",  # a word YAML would read as a boolean unless quoted
        "data.ignore_columns=[timestamp, note]",
        "model.hidden_dims=[16, 8]",
        "training.learning_rate=0.0005",
        "model.trim_fraction=0.1",
        "family.select_by=criterion",
    ]
    arguments = [part for item in overrides for part in ("--set", item)]
    listing = CliRunner().invoke(main, ["config", *arguments])
    assert listing.exit_code == 0, listing.output
    path = tmp_path / "listed.yaml"
    path.write_text(listing.output)
    assert load_config(path) == load_config(overrides=overrides)
    assert load_config(path) != Config()


def test_config_listing_explains_each_key_with_its_source_comment():
    from anomaly_vae.config import ModelConfig
    from anomaly_vae.config_listing import config_yaml, field_comments

    comments = field_comments(ModelConfig)
    assert "KL bottleneck" in comments["latent_dim"]
    # a comment continued on the lines below its field is one paragraph
    assert comments["trim_fraction"].startswith("share of each batch's rows")
    assert comments["trim_fraction"].endswith("near-zero variance)")
    listing = config_yaml(Config()).splitlines()
    latent_line = listing.index("  latent_dim: 8")
    assert "KL bottleneck" in listing[latent_line - 1]
    assert "  detector_config" not in "\n".join(listing)  # methods are not settings
    sections = [line.split(":")[0] for line in listing if line and not line.startswith(" ")]
    assert sections == [
        "model", "training", "scoring", "calibration", "data", "evaluation", "family", "tracking"
    ]  # fmt: skip


def test_every_setting_has_a_comment_for_the_listing():
    # `anomaly-vae config` is the reference of every setting: a key printed bare (as
    # training.batch_size, tracking.experiment and four others were) explains nothing.
    import dataclasses

    from anomaly_vae.config_listing import field_comments

    config = Config()
    bare = [
        f"{section.name}.{key.name}"
        for section in dataclasses.fields(config)
        for key in dataclasses.fields(type(getattr(config, section.name)))
        if not field_comments(type(getattr(config, section.name))).get(key.name)
    ]
    assert bare == []


def test_a_field_without_a_comment_gets_none_invented():
    import dataclasses

    from anomaly_vae.config_listing import field_comments

    @dataclasses.dataclass
    class Section:
        documented: int = 1  # what it does
        bare: int = 2

    assert field_comments(Section) == {"documented": "what it does"}


def test_config_command_reports_a_bad_key_without_training():
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    result = CliRunner().invoke(main, ["config", "--set", "model.latnet_dim=3"])
    assert result.exit_code == 1
    assert "unknown config key model.latnet_dim" in result.output


def test_config_command_checks_model_names_without_importing_torch():
    # torch takes seconds to import; a config check needs only the registry's names.
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from anomaly_vae.cli import main\n"
        "for name in ('vq-vae', 'nope'):\n"
        "    result = CliRunner().invoke(main, ['config', '--set', f'model.name={name}',"
        " '--set', 'family.variants=[hvae]'])\n"
        "    print(result.exit_code, 'unknown model' in result.output, 'torch' in sys.modules)\n"
    )
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == ["0 False False", "1 True False"]


def test_a_second_config_file_is_refused_not_silently_preferred(tmp_path):
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    (tmp_path / "a.yaml").write_text("model:\n  latent_dim: 3\n")
    (tmp_path / "b.yaml").write_text("training:\n  epochs: 7\n")
    one = CliRunner().invoke(main, ["config", "--config", str(tmp_path / "a.yaml")])
    assert one.exit_code == 0 and "latent_dim: 3" in one.output
    both = ["config", "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml")]
    refused = CliRunner().invoke(main, both)
    assert refused.exit_code == 2 and "give one config file" in refused.output


def test_settings_chosen_at_fit_are_written_auto_and_read_back():
    from anomaly_vae.config_listing import config_yaml

    config = load_config(overrides=["model.trim_fraction=auto", "training.patience=AUTO"])
    assert config.model.trim_fraction is None and config.training.patience is None
    listing = config_yaml(config.detector_config())
    assert "  trim_fraction: auto\n" in listing and "  image_pool: auto\n" in listing
    assert "  id_column: null\n" in listing  # None there means no id column, not auto
    # A column may well be named "auto": only settings chosen at fit take the word.
    assert load_config(overrides=["data.id_column=auto"]).data.id_column == "auto"
    with pytest.raises(ConfigError, match=r"model\.latent_dim must be of type int"):
        load_config(overrides=["model.latent_dim=auto"])


def test_python_none_reads_as_null_except_for_text_settings():
    config = load_config(
        overrides=["data.image_pool=None", "training.patience=none", "scoring.score=None"]
    )
    assert config.data.image_pool is None and config.training.patience is None
    assert config.scoring.score is None  # a text setting chosen at fit: None is auto
    assert load_config(overrides=["data.id_column=None"]).data.id_column == "None"
    with pytest.raises(ConfigError, match=r"model\.latent_dim must be of type int"):
        load_config(overrides=["model.latent_dim=None"])


def test_a_config_prints_only_what_differs_from_the_defaults():
    # In full, repr(VAEDetector(config)) printed every setting of every section: a
    # notebook cell's worth for a one-setting change.
    from anomaly_vae import VAEDetector
    from anomaly_vae.config import ModelConfig, TrainingConfig  # noqa: F401 (eval below)

    config = load_config(overrides=["model.latent_dim=4", "training.epochs=3"])
    detector_config = config.detector_config()
    assert repr(detector_config) == (
        "DetectorConfig(model=ModelConfig(latent_dim=4), training=TrainingConfig(epochs=3))"
    )
    assert eval(repr(detector_config)) == detector_config  # Python that rebuilds it
    assert repr(VAEDetector(detector_config)) == f"VAEDetector(config={detector_config!r})"
    assert repr(load_config()) == "Config()"
