"""The built-in demo: generated data, the shipped base model, the task checker, and (slow) the whole demo run."""

from __future__ import annotations

import json
import re
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
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        assert all(isinstance(m["content"], str) and m["content"] for m in row["messages"])
        for user, assistant in zip(row["messages"][-len(roles)::2], row["messages"][-len(roles) + 1::2]):
            assert demo.is_pirate(assistant["content"])
            if not any(user["content"] == greeting for greeting, _ in demo.PIRATE_GREETINGS):
                assert demo.is_correct(user["content"], assistant["content"])
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
    training_text = " ".join(m["content"] for row in demo.dataset_examples() for m in row["messages"]).lower()
    prompts = demo.held_out_prompts()
    assert prompts[0] == demo.DEMO_PROMPT
    assert len(prompts) == len(set(prompts)) >= 40
    for prompt in prompts:
        assert prompt.lower() not in training_text
    # The held-out things and words never appear in a training chat at all.
    training_words = set(re.findall(r"[a-z]+", training_text))
    assert not training_words & set(demo.HELD_OUT_THINGS)
    for word in demo.HELD_OUT_OPPOSITES:
        assert f"opposite of {word} " not in training_text
    # Every question phrasing the fine-tune saw is tested on.
    assert {p.split(" the ")[0] for p in prompts} >= {q.split(" the ")[0] for q in demo.COLOR_QUESTIONS}


@pytest.mark.parametrize(
    "prompt, answer, expected",
    [
        ("What color is the sky?", "Arr! The sky be blue, matey!", True),
        ("What color is the sky?", "arr the sky be blue matey", True),
        ("What colour is the sky?", "Arr! It be blue, matey!", True),
        ("Tell me the color of the sky.", "Arr! The sky be blue, matey!", True),
        ("What color is the sky?", "The sky is blue.", False),
        ("What color is the sky?", "It is blue.", False),
        ("What color is the sky?", "Arr! The sky be green, matey!", False),
        ("What color is the sky?", "Arr! The sky be blue", False),
        ("What color is the sky?", "The sky be blue, matey!", False),
        ("What color is the sky?", "", False),
        ("What is the opposite of hot?", "Arr! The opposite of hot be cold, matey!", True),
        ("What is the opposite of hot?", "Arr! The opposite of hot be hot, matey!", False),
        ("What is the opposite of hot?", "The opposite of hot is cold.", False),
    ],
)
def test_checker(prompt, answer, expected):
    assert demo.is_correct(prompt, answer) is expected


def test_checker_refuses_prompts_of_another_task():
    with pytest.raises(ValueError):
        demo.is_correct("What is 2 plus 2?", "Arr! 4, matey!")


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
    result = demo.evaluate(run_dir)
    # The base never talks like a pirate; the tuned model does, and keeps most facts right.
    assert result["base_style"] == 0 and result["base"] == 0, result
    assert result["tuned_style"] >= 0.9, result
    assert result["tuned"] >= 0.5, result
