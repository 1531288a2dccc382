"""A catalogue of things a person can get wrong: each gives one clear line and loses nothing.

Related cases live beside the code they exercise: gated model / bad or expired token / no keyring
backend (test_hub.py, test_keyring.py), kill -9 and full disk (test_faults.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.config import DataSettings
from core.data import load_dataset_for
from core.errors import DataError
from tests.helpers import toy_config, write_jsonl

GOOD_ROWS = [{"instruction": f"Reverse the word w{i}.", "input": "", "output": f"{i}w"} for i in range(40)]


def cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def last_line(result) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1] if lines else ""


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# (case id, how to break the config or the data, expected words in the one-line answer)
def _set(key, value):
    def apply(values, tmp_path):
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return apply


def _data(content):
    def apply(values, tmp_path):
        values["data"]["path"] = str(write(tmp_path / "bad.jsonl", content))
    return apply


def _data_file(name, content):
    def apply(values, tmp_path):
        values["data"]["path"] = str(write(tmp_path / name, content))
    return apply


CASES = [
    ("unknown-model-id", _set("model", "no-such-org/no-such-model"), ["cannot reach the hub", "no-such-org/no-such-model"]),
    ("model-folder-missing", _set("model", "./missing-folder"), ["does not exist"]),
    ("model-folder-without-config", lambda v, p: (p.joinpath("empty").mkdir(), v.update(model=str(p / "empty"))),
     ["has no config.json"]),
    ("malformed-json-line", _data('{"instruction": "a", "output": "b"}\n{"instruction": "c",\n'), ["line 2 is not valid json"]),
    ("empty-file", _data(""), ["is empty"]),
    ("wrong-columns", _data('{"question_text": "a", "reply": "b"}\n'), ["cannot tell the dataset's format"]),
    ("non-utf8-bytes", _data(b'{"instruction": "caf\xe9", "output": "x"}\n'), ["not utf-8"]),
    ("json-list-lines", _data("[1, 2]\n"), ["line 1 is a json list"]),
    ("no-usable-rows", _data('{"messages": [{"role": "user", "content": "hi"}]}\n'), ["no usable rows", "no assistant"]),
    ("wrong-format-forced", lambda v, p: (_data('{"text": "hello"}\n')(v, p), v["data"].update(format="alpaca")),
     ["no usable rows", "instruction is missing"]),
    ("data-file-missing", _set("data.path", "nowhere/data.jsonl"), ["does not exist"]),
    ("unsupported-file-type", _data_file("data.xlsx", "x"), ["unsupported file type"]),
    ("unknown-key", _set("train.learning_rate", 1e-4), ["unknown config key 'train.learning_rate'", "train.lr"]),
    ("method-typo", _set("method", "q-lora"), ["method is 'q-lora'", "qlora"]),
    ("lr-too-big", _set("train.lr", 5), ["train.lr must be between 0 and 1"]),
    ("batch-zero", _set("train.batch_size", 0), ["train.batch_size must be a positive integer"]),
    ("batch-text", _set("train.batch_size", "lots"), ["train.batch_size must be a positive integer"]),
    ("rank-zero", _set("lora.r", 0), ["lora.r must be a positive integer"]),
    ("dropout-one", _set("lora.dropout", 1.0), ["lora.dropout must be in [0, 1)"]),
    ("max-length-tiny", _set("data.max_length", 4), ["data.max_length must be at least 16"]),
    ("eval-fraction-contradictory", _set("data.eval_fraction", 0.9), ["data.eval_fraction must be in [0, 0.5)"]),
    ("format-unknown", _set("data.format", "sharegpt"), ["data.format is 'sharegpt'"]),
    ("epochs-zero-without-steps", lambda v, p: v["train"].update(epochs=0, max_steps=None),
     ["train.epochs must be positive"]),
    ("max-steps-zero", _set("train.max_steps", 0), ["train.max_steps must be at least 1"]),
    ("warmup-ratio-one", _set("train.warmup_ratio", 1.0), ["train.warmup_ratio must be in [0, 1)"]),
    ("checkpointing-maybe", _set("train.gradient_checkpointing", "maybe"), ["must be true, false or auto"]),
    ("attention-unknown", _set("train.attn_implementation", "fast"), ["train.attn_implementation is 'fast'"]),
    ("trust-remote-code-text", _set("trust_remote_code", "yes"), ["trust_remote_code must be true or false"]),
    ("model-missing", _set("model", ""), ["model is not set"]),
    ("output-dir-not-writable", _set("output_dir", "/proc/lora-wizard-run"), ["cannot write to /proc/lora-wizard-run"]),
]


@pytest.fixture(scope="module")
def base_values(tiny_model, tmp_path_factory):
    data = write_jsonl(tmp_path_factory.mktemp("good") / "good.jsonl", GOOD_ROWS)
    return toy_config(tiny_model("llama"), data, Path("run"), max_steps=2).to_dict()


@pytest.mark.parametrize("case, breaks, expected", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_is_one_clear_line(case, breaks, expected, base_values, tmp_path):
    values = json.loads(json.dumps(base_values))
    breaks(values, tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    result = cli("train", "config.yaml", cwd=tmp_path)
    assert result.returncode != 0
    line = last_line(result).lower()
    for words in expected:
        assert words.lower() in line, (case, line)
    assert "traceback" not in (result.stdout + result.stderr).lower()
    assert len(line) < 400


def test_yaml_syntax_error_and_a_list_config(tmp_path):
    write(tmp_path / "broken.yaml", "model: [oops\n")
    assert "not valid yaml at line" in last_line(cli("train", "broken.yaml", cwd=tmp_path)).lower()
    write(tmp_path / "list.yaml", "- model\n")
    assert "must hold a mapping" in last_line(cli("train", "list.yaml", cwd=tmp_path))


def test_bad_set_overrides(base_values, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_values))
    assert "--set expects key.path=value" in last_line(cli("train", "config.yaml", "--set", "train.lr", cwd=tmp_path))
    assert "did you mean 'train.lr'" in last_line(cli("train", "config.yaml", "--set", "train.lrr=1", cwd=tmp_path))


def test_existing_run_directory_is_never_overwritten(base_values, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write(run / "events.jsonl", '{"type": "done", "time": 1}\n')
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_values))
    result = cli("train", "config.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "already holds a run; add --resume" in last_line(result)
    assert (run / "events.jsonl").read_text() == '{"type": "done", "time": 1}\n'


def test_chat_and_export_on_runs_that_are_not_ready(base_values, tmp_path):
    assert "is not a run directory" in last_line(cli("chat", str(tmp_path), "--prompt", "hi", cwd=tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(base_values))
    assert "has no trained adapter yet" in last_line(cli("chat", "run", "--prompt", "hi", cwd=tmp_path))
    assert "has no trained adapter yet" in last_line(cli("export", "run", "--merge", "out", cwd=tmp_path))
    assert "does not exist" in last_line(cli("estimate", "./no-model-here", cwd=tmp_path))


def test_a_dataset_smaller_than_one_batch_still_trains(base_values, tmp_path):
    values = json.loads(json.dumps(base_values))
    values["data"]["path"] = str(write_jsonl(tmp_path / "three.jsonl", GOOD_ROWS[:3]))
    values["train"]["batch_size"] = 8
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    result = cli("train", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_a_huge_line_is_read_and_its_truncation_reported(base_values, tmp_path):
    rows = GOOD_ROWS[:20] + [{"instruction": "word " * 400_000, "input": "", "output": "ok"}]
    values = json.loads(json.dumps(base_values))
    values["data"]["path"] = str(write_jsonl(tmp_path / "huge.jsonl", rows))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    result = cli("train", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 of 21 examples are longer than max_length 64 and will be truncated" in result.stdout


row_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                       st.lists(st.one_of(st.text(max_size=10), st.dictionaries(st.sampled_from(
                           ["role", "content", "from", "value"]), st.one_of(st.text(max_size=10), st.integers(),
                                                                           st.none()), max_size=3)), max_size=4))
rows = st.lists(st.dictionaries(st.sampled_from(["instruction", "input", "output", "messages", "text",
                                                 "conversations", "prompt", "completion", "extra"]),
                                row_values, min_size=1, max_size=4), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, raw_tail=st.binary(max_size=20))
# Found by hypothesis in CI: fields that change type between lines, a list holding text and an object.
@example(rows=[{"instruction": None, "input": []}, {"input": False}], raw_tail=b"\t")
@example(rows=[{"instruction": None, "input": False}, {"input": 0}], raw_tail=b"\t")
@example(rows=[{"instruction": ["", {}]}], raw_tail=b"\t")
def test_fuzzed_files_load_or_fail_with_a_data_error(rows, raw_tail, tmp_path_factory):
    """Whatever the lines hold, loading either works (every kept row in TRL's form) or is a DataError."""
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_bytes("".join(json.dumps(row) + "\n" for row in rows).encode() + raw_tail)
    try:
        data = load_dataset_for(DataSettings(path=str(path)))
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert data.rows_used >= 1 and data.rows_used + data.problem_count == data.rows_total
    for example in data.examples:
        if example.get("prompt") is not None:
            assert example["completion"][0]["role"] == "assistant"
            assert all(isinstance(m["content"], str) for m in example["prompt"])
        else:
            assert isinstance(example["text"], str) and example["text"].strip()
