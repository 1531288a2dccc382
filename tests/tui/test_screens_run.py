"""Training, chat and export screens: a replayed run (events written as the trainer writes them) and a
real tiny run trained on the CPU."""

import json
import time
from pathlib import Path

import pytest

from core.train import run_training
from tests.helpers import toy_config
from tui.app import LoraWizardApp


@pytest.fixture
def anyio_backend():
    return "asyncio"  # Textual runs on asyncio


def write_events(run_dir: Path, events: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("model: m\nmethod: qlora\n")
    with open(run_dir / "events.jsonl", "w") as stream:
        for event in events:
            stream.write(json.dumps({"time": 1.0, **event}) + "\n")
    (run_dir / "trainer.log").write_text("loading the model\ntraining\n")
    (run_dir / "status.json").write_text(json.dumps({"pid": 999999, "state": events[-1]["type"], "host": "x"}))


STARTED = {"type": "started", "model": "tiny-llama", "method": "qlora", "device": "cuda", "dtype": "bfloat16",
           "train_examples": 950, "eval_examples": 50, "batch_size": 8, "grad_accum": 2,
           "gradient_checkpointing": False, "notes": ["Detected the alpaca format from the columns instruction, output."]}


def steps(count: int, max_steps: int = 20) -> list[dict]:
    return [{"type": "step", "step": s, "max_steps": max_steps, "epoch": s / max_steps, "loss": 3.0 / s, "lr": 2e-4,
             "grad_norm": 1.0, "tokens_per_second": 12345.0, "elapsed_s": s * 2.0, "eta_s": (max_steps - s) * 2.0,
             "gpu_memory": [{"index": 0, "used_gib": 30.0, "total_gib": 80.0, "max_reserved_gib": 21.5}]}
            for s in range(1, count + 1)]


async def _settle(pilot, app, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if condition():
            return True
    return False


@pytest.mark.anyio
async def test_training_screen_replays_the_whole_history(tmp_path):
    run_dir = tmp_path / "run"
    write_events(run_dir, [STARTED, *steps(12), {"type": "eval", "step": 10, "eval_loss": 0.5},
                           {"type": "failed", "reason": "out of GPU memory; halve the micro-batch to 4",
                            "advice": "halve the micro-batch to 4",
                            "suggested_overrides": {"train.batch_size": 4, "train.grad_accum": 4}}])
    app = LoraWizardApp(attach=run_dir)
    async with app.run_test(size=(110, 34)) as pilot:
        screen = app.screen
        assert await _settle(pilot, app, lambda: "step 12/20" in str(screen.query_one("#stats").render()))
        stats = str(screen.query_one("#stats").render())
        assert "loss 0.2500" in stats and "12,345 tokens/s" in stats and "ETA 0m16s" in stats
        assert len(screen.query_one("LossPlot").train_points) == 12
        assert screen.query_one("LossPlot").eval_points == [(10, 0.5)]
        assert "21.5/80 GiB" in str(screen.query_one("GpuMemory").render())
        assert "out of GPU memory" in str(screen.query_one("#failure").render())
        assert screen.query_one("#apply-advice-button").display
        assert "State: failed" in str(screen.query_one("#run-state").render())
        assert "training" in "\n".join(screen.query_one("#log-tail").lines)
        assert screen.query_one("#chat-button").disabled  # no adapter yet


def test_training_screen_snapshot(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative run directory: the same text on every machine
    run_dir = Path("run")
    write_events(run_dir, [STARTED, *steps(15)])
    import os

    # A live trainer: this test's own process stands in for it.
    (run_dir / "status.json").write_text(json.dumps({"pid": os.getpid(), "state": "running", "host": os.uname().nodename}))

    async def settle(pilot):
        await _settle(pilot, pilot.app, lambda: "step 15/20" in str(pilot.app.screen.query_one("#stats").render()))
        await pilot.pause(0.3)

    assert snap_compare(LoraWizardApp(attach=run_dir), run_before=settle, terminal_size=(110, 34))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model, toy_alpaca):
    run_dir = tmp_path_factory.mktemp("tui-run") / "run"
    final = run_training(toy_config(tiny_model("llama"), toy_alpaca, run_dir, max_steps=8), run_dir)
    assert final["type"] == "done"
    return run_dir


@pytest.mark.anyio
async def test_from_a_finished_run_to_a_chat_answer_and_a_checked_merge(trained_run, tmp_path):
    app = LoraWizardApp(attach=trained_run)
    async with app.run_test(size=(110, 34)) as pilot:
        screen = app.screen
        assert await _settle(pilot, app, lambda: not screen.query_one("#chat-button").disabled)
        assert "State: done" in str(screen.query_one("#run-state").render())
        await pilot.press("ctrl+t")
        chat = app.screen
        assert type(chat).__name__ == "ChatScreen"
        assert await _settle(pilot, app, lambda: not chat.query_one("#prompt").disabled, timeout=60)
        chat.query_one("#prompt").value = "Reverse the word cat."
        await pilot.press("enter")
        assert await _settle(pilot, app, lambda: len(chat.query_one("#pane-tuned").history) == 2, timeout=60)
        base, tuned = chat.query_one("#pane-base").history, chat.query_one("#pane-tuned").history
        assert base[0] == tuned[0] == {"role": "user", "content": "Reverse the word cat."}
        assert base[1]["role"] == tuned[1]["role"] == "assistant"

        chat.query_one("#temperature").value = "hot"
        chat.query_one("#prompt").value = "again"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert len(chat.query_one("#pane-tuned").history) == 2  # refused with a message, nothing sent

        await pilot.press("ctrl+o")
        export = app.screen
        assert type(export).__name__ == "ExportScreen"
        export.query_one("#merge-dir").value = str(tmp_path / "merged")
        await pilot.press("f5")
        assert await _settle(pilot, app, lambda: "Merged model" in str(export.query_one("#merge-result").render())
                             or "✗" in str(export.query_one("#merge-result").render()), timeout=120)
        assert "3/3 prompts" in str(export.query_one("#merge-result").render())
        assert (tmp_path / "merged" / "config.json").exists()

        export.query_one("#repo-id").value = "not a repo"
        await pilot.press("f6")
        await pilot.pause(0.1)
        assert "your-name/model-name" in str(export.query_one("#error").render())
    assert not app.unexpected_errors


def test_chat_screen_snapshot(snap_compare, trained_run, monkeypatch):
    from tui.screens.chat import ChatScreen

    monkeypatch.chdir(trained_run.parent)

    async def loaded(pilot):
        await pilot.app.push_screen(ChatScreen(Path("run")))
        await _settle(pilot, pilot.app, lambda: not pilot.app.screen.query_one("#prompt").disabled, timeout=60)
        await pilot.pause(0.2)

    assert snap_compare(LoraWizardApp(attach=Path("run")), run_before=loaded, terminal_size=(110, 34))


def test_export_screen_snapshot(snap_compare, trained_run, monkeypatch):
    from tui.screens.export import ExportScreen

    monkeypatch.chdir(trained_run.parent)

    async def opened(pilot):
        await pilot.app.push_screen(ExportScreen(Path("run")))
        await pilot.pause(0.2)

    assert snap_compare(LoraWizardApp(attach=Path("run")), run_before=opened, terminal_size=(110, 34))
