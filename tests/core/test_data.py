import json

import pytest

from core.config import DataSettings
from core.data import (convert_row, detect_format, labels_for, load_dataset_for, render_preview, split_train_eval,
                       token_lengths)
from core.errors import DataError

from tests.helpers import write_jsonl


@pytest.mark.parametrize("columns, expected", [
    (["instruction", "input", "output"], "alpaca"),
    (["instruction", "output"], "alpaca"),
    (["prompt", "completion"], "alpaca"),
    (["question", "answer"], "alpaca"),
    (["messages"], "messages"),
    (["conversations", "id"], "messages"),
    (["text"], "text"),
    (["Text", "meta"], "text"),
])
def test_format_detection_from_columns(columns, expected):
    assert detect_format(columns) == expected


def test_undetectable_columns_say_what_is_expected():
    with pytest.raises(DataError, match="expected instruction/input/output"):
        detect_format(["foo", "bar"])


def test_alpaca_row_becomes_a_conversation_with_the_input_appended():
    row = convert_row({"instruction": "Translate", "input": "chat", "output": "cat"}, "alpaca")
    assert row == {"prompt": [{"role": "user", "content": "Translate\n\nchat"}],
                   "completion": [{"role": "assistant", "content": "cat"}]}


def test_sharegpt_messages_are_converted_and_the_last_assistant_turn_is_trained():
    row = convert_row({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"},
                                         {"from": "gpt", "value": "hello"}, {"from": "human", "value": "bye"},
                                         {"from": "gpt", "value": "ciao"}]}, "messages")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["completion"] == [{"role": "assistant", "content": "ciao"}]


@pytest.mark.parametrize("row, format, reason", [
    ({"instruction": "", "output": "x"}, "alpaca", "instruction is missing or empty"),
    ({"instruction": "x", "output": None}, "alpaca", "output is missing or empty"),
    ({"messages": []}, "messages", "not a non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant message"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", "no known role"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "no user message before it"),
    ({"messages": ["hi"]}, "messages", "not an object"),
    ({"text": "  "}, "text", "text is missing or empty"),
])
def test_rows_that_do_not_fit_their_format_give_the_reason(row, format, reason):
    with pytest.raises(ValueError, match=reason):
        convert_row(row, format)


def test_bad_rows_are_reported_by_row_number_and_left_out(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}, {"instruction": "d", "output": "e"}]
    data = load_dataset_for(DataSettings(path=str(write_jsonl(tmp_path / "d.jsonl", rows))))
    assert data.format == "alpaca" and "alpaca" in data.detected
    assert data.rows_total == 3 and data.rows_used == 2
    assert data.problems == ["row 2 skipped: its output is missing or empty"]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', "line 2 is not valid JSON"),
    (b'{"instruction": "a", "output": "b"}\n\xff\xfe bad bytes\n', "not UTF-8"),
    (b'{"instruction": "a", "output": ""}\n', "no usable rows"),
    (b'{"foo": 1}\n', "cannot tell the dataset's format"),
    (b'[1, 2]\n', "line 1 is a JSON list"),
])
def test_unusable_files_fail_before_any_model_loads(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_dataset_for(DataSettings(path=str(path)))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset_for(DataSettings(path=str(tmp_path / "nope.jsonl")))
    other = tmp_path / "data.xlsx"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset_for(DataSettings(path=str(other)))


@pytest.mark.parametrize("suffix", ["json", "csv", "parquet"])
def test_other_file_types_load(tmp_path, suffix):
    import datasets

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]
    path = tmp_path / f"data.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps({"data": rows}))
    else:
        getattr(datasets.Dataset.from_list(rows), f"to_{suffix}")(str(path))
    data = load_dataset_for(DataSettings(path=str(path)))
    assert data.format == "alpaca" and data.rows_used == 5


def test_prompt_tokens_are_masked_in_the_labels(tiny_tokenizer):
    example = convert_row({"instruction": "Reverse the word cat.", "output": "tac"}, "alpaca")
    ids, labels = labels_for(tiny_tokenizer, example)
    prompt_ids = tiny_tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True,
                                                    return_dict=True)["input_ids"]
    assert ids[: len(prompt_ids)] == list(prompt_ids)
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    trained = tiny_tokenizer.decode([t for t in labels if t != -100])
    assert trained == "tac<|im_end|>\n"
    spans = render_preview(tiny_tokenizer, example)
    assert [trained for _, trained in spans] == [False, True]
    assert spans[1][0] == "tac<|im_end|>\n"
    assert "Reverse the word cat." in spans[0][0]


def _trainer(model, tokenizer, examples, output_dir, packing):
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(model=model, processing_class=tokenizer, train_dataset=examples,
                      args=SFTConfig(output_dir=str(output_dir), max_length=64, packing=packing,
                                     completion_only_loss=True, report_to="none", use_cpu=True))


def test_trainer_labels_match_our_masking_on_real_rows(tiny_model, toy_alpaca, tmp_path):
    """The labels TRL's collator gives the model: -100 exactly on the prompt tokens we say are masked."""
    from core.model import load_for_training
    from tests.helpers import toy_config

    config = toy_config(tiny_model("llama"), toy_alpaca, tmp_path / "run")
    examples = load_dataset_for(config.data).examples.select(range(6))
    model, tokenizer = load_for_training(config)
    expected = [labels_for(tokenizer, row)[1] for row in examples]

    trainer = _trainer(model, tokenizer, examples, tmp_path / "plain", packing=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(examples))])
    for row_labels, want in zip(batch["labels"].tolist(), expected):
        assert row_labels[: len(want)] == want
        assert set(row_labels[len(want):]) <= {-100}  # padding is never trained

    # Packed (padding-free): the same tokens are trained, in one row with per-example positions.
    packed = _trainer(model, tokenizer, examples, tmp_path / "packed", packing=True)
    batch = packed.data_collator([packed.train_dataset[i] for i in range(len(packed.train_dataset))])
    trained = [t for t in batch["labels"].flatten().tolist() if t != -100]
    assert sorted(trained) == sorted(t for want in expected for t in want if t != -100)
    assert batch["position_ids"].flatten().tolist().count(0) == len(examples)
    assert tokenizer.pad_token_id not in batch["input_ids"].flatten().tolist()


def test_token_lengths_and_split(tiny_tokenizer, toy_alpaca):
    data = load_dataset_for(DataSettings(path=str(toy_alpaca), eval_fraction=0.1))
    lengths = token_lengths(tiny_tokenizer, data.examples)
    assert len(lengths) == data.rows_used and min(lengths) > 5
    train, held_out = split_train_eval(data.examples, DataSettings(path="x", eval_fraction=0.1), seed=1)
    assert len(held_out) == 16 and len(train) + len(held_out) == data.rows_used
