"""The built-in demo: generated data, the shipped base model, the task checker, and (slow) the whole demo run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import core.demo as demo
from core.config import RunConfig, load_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_WIZARD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "demo"


def test_importing_the_demo_does_not_import_torch():
    code = "import sys, core.demo; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[2])
    assert result.stdout.split() == ["False", "False"]


def test_dataset_is_deterministic_messages_jsonl(cache):
    path = demo.demo_dataset_path()
    assert path.parent == cache and path.suffix == ".jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == demo.DATASET_SIZE
    for row in rows:
        assert list(row) == ["messages"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in row["messages"])
        user, assistant = (m["content"] for m in row["messages"])
        assert demo.is_correct(user, assistant)
    first = path.read_bytes()
    path.unlink()
    assert demo.demo_dataset_path().read_bytes() == first
    assert demo.dataset_examples(5) == rows[:5]


def test_the_core_data_loader_detects_the_demo_dataset_as_messages(cache):
    from core.config import DataSettings
    from core.data import load_dataset_for

    loaded = load_dataset_for(DataSettings(path=str(demo.demo_dataset_path())))
    assert loaded.format == "messages"
    assert loaded.rows_used == demo.DATASET_SIZE and not loaded.problems


def test_held_out_prompts_are_not_in_the_training_set():
    training_prompts = {row["messages"][0]["content"] for row in demo.dataset_examples()}
    training_words = {tuple(reversed(row["messages"][1]["content"].split())) for row in demo.dataset_examples()}
    prompts = demo.held_out_prompts()
    assert prompts[0] == demo.DEMO_PROMPT
    assert len(prompts) == len(set(prompts)) == demo.HELD_OUT_SIZE
    for prompt in prompts:
        assert prompt not in training_prompts
        assert tuple(demo._prompt_words(prompt)) not in training_words
    # All phrasings the fine-tune saw are tested on.
    assert {p.split(":")[0] for p in prompts} == {t.split(":")[0] for t in demo.REVERSE_TEMPLATES}


@pytest.mark.parametrize(
    "prompt, answer, expected",
    [
        ("Reverse the words: apple river moon green", "green moon river apple", True),
        ("Reverse the words: apple river moon green", "Green moon river apple.", True),
        ("Reverse the words: apple river moon green", "green, moon, river, apple", True),
        ("Reverse the words: apple river moon green", "apple river moon green", False),
        ("Reverse the words: apple river moon green", "green moon river", False),
        ("Reverse the words: apple river moon green", "green moon river apple apple", False),
        ("Reverse the words: apple river moon green", "neerg noom revir elppa", False),
        ("Reverse the words: apple river moon green", "", False),
        ("Reverse the order of these words: cat dog sun", "sun dog cat", True),
        ("Say these words backwards: cat dog sun", "sun cat dog", False),
        ("Say these words backwards: cat dog sun", "The words backwards are sun dog cat", False),
    ],
)
def test_checker(prompt, answer, expected):
    assert demo.is_correct(prompt, answer) is expected


def test_checker_refuses_prompts_of_another_task():
    with pytest.raises(ValueError):
        demo.is_correct("What color is the sky?", "blue")


def test_shipped_model_loads_with_auto_classes_and_has_a_chat_template():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = demo.ensure_demo_model()
    assert folder == demo.ASSET_MODEL_DIR, "the demo model should ship with the package"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What color is the sky?"}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n"
    # Pretrained, not random: it answers a question of its training mix.
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What color is the sky?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "blue" in answer


def test_demo_config_is_complete_and_round_trips(cache, tmp_path):
    config = demo.demo_config(["train.max_steps=3", "output_dir=" + str(tmp_path / "run")])
    assert isinstance(config, RunConfig)
    config.check_complete()
    assert config.model == str(demo.ASSET_MODEL_DIR)
    assert config.data.path == str(demo.demo_dataset_path()) and config.data.format == "messages"
    assert config.train.max_steps == 3 and config.output_dir == str(tmp_path / "run")
    config.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_demo_config_names_a_fresh_run_dir_under_runs(cache):
    assert demo.demo_config().output_dir.startswith("runs/demo-")


@pytest.mark.slow
def test_demo_training_teaches_the_skill(cache, tmp_path):
    """The whole demo: `train --demo`'s config trained in-process, then held-out accuracy base vs tuned."""
    from core.train import run_training

    config = demo.demo_config(["output_dir=" + str(tmp_path / "run")])
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True)
    config.save(run_dir / "config.yaml")
    run_training(config, run_dir)
    result = demo.evaluate(run_dir, demo.held_out_prompts()[:40])
    assert result["base"] <= 0.1, result
    assert result["tuned"] >= result["base"] + 0.5, result
