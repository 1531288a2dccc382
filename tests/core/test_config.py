import pytest

from core.config import RunConfig, config_from_dict, describe_fields, load_config, parse_override
from core.errors import ConfigError


@pytest.mark.parametrize("values, message", [
    ({"modle": "x"}, "unknown config key 'modle'; did you mean 'model'?"),
    ({"train": {"bach_size": 2}}, "unknown config key 'train.bach_size'; did you mean 'train.batch_size'?"),
    ({"lora": {"rank": 8}}, "unknown config key 'lora.rank'"),
    ({"method": "qlor"}, "did you mean 'qlora'?"),
    ({"lora": {"r": 0}}, "lora.r must be a positive integer"),
    ({"lora": {"dropout": 1.5}}, "lora.dropout must be in [0, 1)"),
    ({"train": {"lr": 5}}, "train.lr must be between 0 and 1"),
    ({"train": {"batch_size": 0}}, "train.batch_size must be a positive integer or 'auto'"),
    ({"train": {"batch_size": "many"}}, "train.batch_size must be a positive integer or 'auto'"),
    ({"train": {"epochs": "one"}}, "train.epochs must be a number"),
    ({"data": {"format": "sharegpt"}}, "data.format is 'sharegpt'"),
    ({"data": {"max_length": 4}}, "data.max_length must be at least 16"),
    ({"train": "fast"}, "train must be a mapping of settings"),
    ({"trust_remote_code": "yes"}, "trust_remote_code must be true or false"),
    ({"train": {"gradient_checkpointing": "sometimes"}}, "train.gradient_checkpointing must be true, false or auto"),
])
def test_bad_configs_name_the_problem_in_one_line(values, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_defaults_are_the_documented_ones():
    config = RunConfig()
    assert config.method == "qlora"
    assert (config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert config.trust_remote_code is False
    assert all(help_text for _, _, help_text in describe_fields())


def test_overrides_parse_yaml_values_and_nested_paths():
    config = config_from_dict({"model": "m"}, ["train.lr=1e-4", "train.batch_size=auto", "lora.use_dora=true",
                                               "lora.target_modules=[q_proj, v_proj]", "train.max_steps=10"])
    assert config.train.lr == pytest.approx(1e-4)
    assert config.train.batch_size == "auto"
    assert config.lora.use_dora is True
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.train.max_steps == 10
    assert parse_override("model=org/name") == (["model"], "org/name")
    with pytest.raises(ConfigError, match="--set expects key.path=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        config_from_dict({}, ["train.learning_rate=1e-4"])


def test_yaml_round_trip_and_file_errors(tmp_path):
    config = config_from_dict({"model": "m", "method": "lora", "data": {"path": "d.jsonl"}, "output_dir": "runs/x"})
    path = tmp_path / "config.yaml"
    config.save(path)
    assert load_config(path) == config
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_incomplete_config_says_what_is_missing():
    with pytest.raises(ConfigError, match="model is not set"):
        RunConfig().check_complete()
    with pytest.raises(ConfigError, match="data.path is not set"):
        config_from_dict({"model": "m"}).check_complete()
