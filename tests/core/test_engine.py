"""The engine end to end on tiny real models: train, save, reload, chat, merge, for every method."""

import json
import os
import signal
import subprocess
import sys

import pytest

from core.events import read_events
from core.train import latest_complete_checkpoint, run_training
from tests.helpers import cli as _cli, toy_config, wait_for as _wait_for


def step_losses(run_dir):
    return [e["loss"] for e in read_events(run_dir) if e["type"] == "step"]


@pytest.mark.parametrize("method, architecture, data", [
    ("lora", "llama", "toy_alpaca"),
    ("lora-8bit", "qwen2", "toy_messages"),
    ("qlora", "llama", "toy_messages"),
    ("qlora", "qwen2", "toy_alpaca"),
])
def test_method_trains_saves_chats_and_merges(method, architecture, data, tiny_model, request, tmp_path):
    from core.export import merge
    from core.infer import ChatSession

    run_dir = tmp_path / "run"
    config = toy_config(tiny_model(architecture), request.getfixturevalue(data), run_dir, method=method)
    final = run_training(config, run_dir)
    assert final["type"] == "done", final

    losses = step_losses(run_dir)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses  # it learns

    started = next(e for e in read_events(run_dir) if e["type"] == "started")
    assert started["method"] == method and started["rows_used"] == 160
    adapter = run_dir / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in adapter.iterdir()}
    assert (adapter / "chat_template.jinja").exists() or "chat_template" in (adapter / "tokenizer_config.json").read_text()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"

    session = ChatSession(run_dir)
    if method != "lora":
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit if method == "qlora" else bnb.nn.Linear8bitLt
        assert any(isinstance(m, layer) for m in session.model.modules()), "the base is reloaded in the run's precision"
    tuned = session.greedy_ids("Reverse the word lemon.", adapter=True, max_new_tokens=8)
    base = session.greedy_ids("Reverse the word lemon.", adapter=False, max_new_tokens=8)
    assert tuned and tuned != base  # one model, adapter toggled: two different answers
    del session

    report = merge(run_dir, tmp_path / "merged")
    assert report.ok, (report.prompts, report.first_difference)
    assert len(report.matches) == 3
    # Teacher-forced: merged logits are adapter-on-base's (fp32 on the CPU), the adapter's own effect is not small.
    assert report.logit_error < 0.01 and report.adapter_effect > 0.05 and report.same_next_token > 0.99
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_dora_rslora_and_gradient_checkpointing_options_train(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, method="qlora", max_steps=3,
                        gradient_checkpointing=True)
    config.lora.use_dora = True
    config.lora.use_rslora = True
    assert run_training(config, run_dir)["type"] == "done"
    adapter_config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["use_dora"] is True and adapter_config["use_rslora"] is True
    started = next(e for e in read_events(run_dir) if e["type"] == "started")
    assert started["gradient_checkpointing"] is True


def test_a_bad_model_fails_with_one_line_after_checking_the_data(toy_alpaca, tmp_path):
    config = toy_config(tmp_path / "no-such-model", toy_alpaca, tmp_path / "run")
    final = run_training(config, tmp_path / "run")
    assert final["type"] == "failed"
    assert "does not exist" in final["reason"] and "\n" not in final["reason"]


def test_cli_train_sigterm_checkpoints_and_resume_reaches_max_steps(tiny_model, toy_alpaca, tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=40, save_steps=100, batch_size=2)
    config_path = tmp_path / "config.yaml"
    config.save(config_path)
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "train", str(config_path)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: any(e["type"] == "step" and e["step"] >= 3 for e in read_events(run_dir)))
    pid = json.loads((run_dir / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGTERM)  # what a UI cancel or `kill` does
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 130, output
    events = read_events(run_dir)
    cancelled = events[-1]
    assert cancelled["type"] == "cancelled" and cancelled["step"] < 40
    checkpoint = latest_complete_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{cancelled['step']}"
    assert "cancelled at step" in output and "--resume" in output

    from core.runs import run_state

    assert run_state(run_dir) == "cancelled"
    resumed = _cli("train", str(config_path), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {checkpoint}" in resumed.stdout
    steps = [e["step"] for e in read_events(run_dir) if e["type"] == "step"]
    assert steps[-1] == 40 and min(steps[steps.index(cancelled["step"]) + 1:]) == cancelled["step"] + 1
    assert read_events(run_dir)[-1]["type"] == "done" and run_state(run_dir) == "done"

    # Same seed, never interrupted: the resumed run follows the same loss curve.
    reference_dir = tmp_path / "reference"
    reference = toy_config(tiny_model("llama"), toy_alpaca, reference_dir, max_steps=40, save_steps=100, batch_size=2)
    assert run_training(reference, reference_dir)["type"] == "done"
    expected = {e["step"]: e["loss"] for e in read_events(reference_dir) if e["type"] == "step"}
    resumed_losses = {e["step"]: e["loss"] for e in read_events(run_dir) if e["type"] == "step"
                      and e["step"] > cancelled["step"]}
    assert resumed_losses and all(abs(loss - expected[step]) < 0.02 * expected[step] + 1e-3
                                  for step, loss in resumed_losses.items()), (resumed_losses, expected)

    chat = _cli("chat", str(run_dir), "--prompt", "Reverse the word dog.", "--compare", "--max-new-tokens", "6", cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("base: ") and "\ntuned: " in chat.stdout

    again = _cli("train", str(config_path), cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run; add --resume" in again.stderr


def test_cli_errors_are_one_line(tmp_path):
    result = _cli("train", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    result = _cli("chat", str(tmp_path), "--prompt", "hi", cwd=tmp_path)
    assert result.returncode == 2 and "is not a run directory" in result.stderr


@pytest.mark.parametrize("matches, error, effect, ok", [
    ([True, True, True], 0.001, 0.5, True),      # every greedy answer the same
    ([True, False, True], 0.02, 0.6, True),      # a near-tie flipped by bf16 rounding: logits within 2%
    ([False, False, False], 0.6, 0.6, False),    # the adapter lost in the merge: off by its whole effect
    ([True, False, True], 0.04, 0.2, False),     # within 5%, but not small next to what the adapter does
    ([True, False, True], 0.08, 2.0, False),     # beyond what rounding does
    ([True, False, True], None, None, False),    # no logits compared
    ([], None, None, False),                     # nothing checked
])
def test_merge_verdict_tells_rounding_from_a_broken_merge(matches, error, effect, ok, tmp_path):
    from core.export import MergeReport

    report = MergeReport(tmp_path, "bfloat16", prompts=["p"] * len(matches), matches=matches, logit_error=error,
                         adapter_effect=effect, same_next_token=0.9 if error is not None else None)
    assert report.ok is ok
    if error is not None and not all(matches):
        assert ("the merge is sound" in report.summary()) is ok
