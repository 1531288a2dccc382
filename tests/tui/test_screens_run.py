"""The run screens at work: training (replayed, live, cancelled, crashed, failed with advice), chat and
export on a real tiny run, through Pilot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.binding import Binding

from core.config import load_config
from core.runs import read_status, run_state
from tests.helpers import toy_config
from tests.tui.run_files import OOM, STARTED, step_events
from tui.app import LoraWizardApp
from tui.state import WizardState

pytestmark = pytest.mark.anyio

SIZE = (110, 34)


def quiet_state(tmp_path: Path) -> WizardState:
    """Machine facts fixed up front, so a Welcome screen looks nothing up."""
    return WizardState(gpus=[], memory_gib=16.0, token_checked=True, runs_root=tmp_path / "runs")


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


async def until(pilot, condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if condition():
            return True
    return False


def active_actions(screen) -> dict[str, bool | None]:
    """action -> True (enabled), None (shown dimmed); hidden ones are left out."""
    shown = {}
    for binding in type(screen).BINDINGS:
        state = screen.check_action(binding.action, ())
        if state is not False:
            shown[binding.action] = state
    return shown


# -- training ------------------------------------------------------------------------------------

async def test_a_failed_run_replays_its_history_and_offers_the_advice(run_folder, tmp_path):
    run = run_folder().events(STARTED, *step_events(1, 12, gpus=2), {"type": "eval", "step": 10, "eval_loss": 0.5}, OOM)
    run.log("loading the model", "training", "torch.OutOfMemoryError: CUDA out of memory.").status("failed")
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await until(pilot, lambda: "step 12/20" in text(screen, "#step-count"))
        assert "failed" in text(screen, "#run-title")
        numbers = text(screen, "#step-numbers")
        assert "loss 0.2500" in numbers and "lr 2.00e-04" in numbers and "12,345 tokens/s" in numbers
        assert "ETA" not in text(screen, "#step-count")  # a failed run has no time left
        plot = screen.query_one("LossPlot")
        assert len(plot.train_points) == 12 and plot.eval_points == [(10, 0.5)]
        gpus = text(screen, "GpuMemory")
        assert "GPU 0" in gpus and "GPU 1" in gpus and "31.0/80 GiB, peak 21.5" in gpus
        failure = text(screen, "#failure")
        assert "Training failed: out of GPU memory; halve the micro-batch to 4" in failure
        assert (f"lora-wizard train {run.path}/config.yaml --set train.batch_size=4 --set train.grad_accum=4 "
                f"--set output_dir={run.path}-2") in failure.replace("\n", " ")
        assert screen.query_one("#apply-advice-button").display
        assert "CUDA out of memory" in "\n".join(str(line.text) for line in screen.query_one("LogTail").lines)
        # The footer offers what can be done now: chat dimmed (no adapter yet), no cancel (nothing runs).
        assert active_actions(screen) == {"chat": None, "apply_advice": True, "leave": True}
    assert not app.unexpected_errors


async def test_a_live_run_updates_as_events_arrive_and_ends_done(run_folder, tmp_path):
    run = run_folder().events(STARTED).log("loading the model").live()
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await until(pilot, lambda: "training" in text(screen, "#run-title"))
        assert "waiting for the first step" in text(screen, "#step-count")
        assert "waiting for the first step" in text(screen, "GpuMemory")
        assert screen.query_one("#cancel-button").display and "cancel_run" in active_actions(screen)

        run.events(*step_events(1, 5)).log("step 5")
        assert await until(pilot, lambda: "step 5/20 · ETA 0m30s · elapsed 0m10s" in text(screen, "#step-count"))
        assert screen.query_one("ProgressBar").progress == 5
        run.events(*step_events(6, 20), {"type": "eval", "step": 20, "eval_loss": 0.2})
        assert await until(pilot, lambda: len(screen.query_one("LossPlot").train_points) == 20)
        assert screen.query_one("LossPlot").eval_points == [(20, 0.2)]

        adapter = run.path / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("{}")
        run.events({"type": "done", "step": 20, "max_steps": 20, "adapter_dir": str(adapter), "runtime_s": 75.0})
        run.status("done")
        assert await until(pilot, lambda: "done ✓" in text(screen, "#run-title"))
        assert "Done: 20 steps in 1m15s" in text(screen, "#run-outcome")
        assert "ETA" not in text(screen, "#step-count")
        assert screen.query_one("ProgressBar").percentage == 1
        assert not screen.query_one("#cancel-button").display
        assert not screen.query_one("#chat-button").disabled
        assert active_actions(screen) == {"chat": True, "leave": True}
    assert not app.unexpected_errors


async def test_a_trainer_that_died_without_a_word_shows_crashed_with_the_resume_command(run_folder, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = run_folder().events(STARTED, *step_events(1, 3)).status("running", pid=dead.pid)
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await until(pilot, lambda: "crashed" in text(screen, "#run-title"))
        assert f"lora-wizard train {run.path}/config.yaml --resume" in text(screen, "#run-outcome").replace("\n", " ")
        await pilot.press("c")  # nothing to cancel: a message, no dialog
        await pilot.pause()
        assert type(app.screen).__name__ == "TrainingScreen"


async def test_cancel_asks_first_then_the_real_trainer_checkpoints_and_stops(tiny_model, toy_alpaca, tmp_path,
                                                                            monkeypatch):
    from core.runs import start_training

    monkeypatch.chdir(tmp_path)
    config = toy_config(tiny_model("llama"), toy_alpaca, tmp_path / "run", max_steps=5000, save_steps=1000,
                        batch_size=2)
    run_dir = start_training(config)
    pid = read_status(run_dir)["pid"]
    try:
        app = LoraWizardApp(quiet_state(tmp_path), attach=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert await until(pilot, lambda: screen.query_one("ProgressPanel").step is not None, timeout=180)
            assert "training" in text(screen, "#run-title")
            assert "Device: CPU" in text(screen, "GpuMemory")

            await pilot.press("c")
            assert type(app.screen).__name__ == "ConfirmScreen"
            await pilot.press("n")
            await pilot.pause(1.0)
            assert run_state(run_dir) == "running"  # said no: still training

            await pilot.press("c")
            await pilot.press("y")
            assert await until(pilot, lambda: "cancelled" in text(screen, "#run-title"), timeout=120)
            outcome = text(screen, "#run-outcome").replace("\n", " ")
            assert f"lora-wizard train {run_dir}/config.yaml --resume" in outcome
            assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        assert not app.unexpected_errors
    finally:
        if run_state(run_dir) == "running":
            os.kill(pid, signal.SIGKILL)


async def test_apply_advice_confirms_then_starts_a_new_run_with_the_suggested_settings(
        tiny_model, toy_alpaca, run_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_folder()
    config = toy_config(tiny_model("llama"), toy_alpaca, run.path, max_steps=2, batch_size=8, grad_accum=2)
    config.save(run.path / "config.yaml")
    run.events({**STARTED, "device": "cpu"}, OOM).status("failed")
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await until(pilot, lambda: screen.query_one("#apply-advice-button").display)
        await pilot.press("a")
        assert f"Start a new run in {run.path}-2 with train.batch_size=4, train.grad_accum=4?" in text(app.screen, "Label")
        await pilot.press("n")
        await pilot.pause(0.5)
        assert not Path(f"{run.path}-2").exists()

        await pilot.press("a", "y")
        new_run = Path(f"{run.path}-2")
        assert await until(pilot, lambda: getattr(app.screen, "run_dir", None) == new_run)
        retried = load_config(new_run / "config.yaml")
        assert (retried.train.batch_size, retried.train.grad_accum) == (4, 4)
        assert retried.output_dir == str(new_run) and retried.model == config.model
        assert await until(pilot, lambda: run_state(new_run) in ("done", "failed"), timeout=240)
        assert await until(pilot, lambda: "done ✓" in text(app.screen, "#run-title"))
    assert not app.unexpected_errors


async def test_esc_leaves_the_run_for_the_start_screen_and_it_keeps_going(run_folder, tmp_path):
    run = run_folder().events(STARTED, *step_events(1, 2)).live()
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "WelcomeScreen"

        app.open_run(run.path)  # as Welcome's "open a run" does: Esc goes back to it
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "TrainingScreen"
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "WelcomeScreen" and len(app.screen_stack) == 2
    assert run_state(run.path) == "running"


# -- chat and export on a real run ---------------------------------------------------------------

async def test_from_a_finished_run_to_chat_answers_side_by_side_and_one_at_a_time(trained_run, tmp_path):
    app = LoraWizardApp(quiet_state(tmp_path), attach=trained_run)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await until(pilot, lambda: not screen.query_one("#chat-button").disabled)
        assert "done ✓" in text(screen, "#run-title")
        await pilot.press("ctrl+t")
        chat = app.screen
        assert type(chat).__name__ == "ChatScreen"
        base, tuned = chat.query_one("#pane-base"), chat.query_one("#pane-tuned")

        # Typed while the model loads: sent once it is loaded.
        assert chat.query_one("#prompt").has_focus
        chat.query_one("#prompt").value = "Reverse the word cat."
        await pilot.press("enter")
        assert await until(pilot, lambda: len(tuned.history) == 2, timeout=120)
        assert "+ adapter (lora) on cpu" in text(chat, "#chat-status")
        assert base.history[0] == tuned.history[0] == {"role": "user", "content": "Reverse the word cat."}
        assert base.history[1]["role"] == tuned.history[1]["role"] == "assistant"

        # One pane, adapter off: only the base answers, and its conversation goes on from its own history.
        await pilot.press("ctrl+t")
        assert not chat.query_one("#compare").value and not chat.query_one("#adapter").value
        assert base.display and not tuned.display
        chat.query_one("#prompt").value = "and dog?"
        await pilot.press("enter")
        assert await until(pilot, lambda: len(base.history) == 4, timeout=60)
        assert len(tuned.history) == 2
        await pilot.press("ctrl+t")  # adapter back on: the fine-tuned pane alone
        assert tuned.display and not base.display

        # A mistake in the settings is a message; nothing is sent.
        chat.query_one("#temperature").value = "hot"
        chat.query_one("#prompt").value = "again"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert len(tuned.history) == 2
        assert chat.query_one("#prompt").value == "again"

        await pilot.press("ctrl+r")
        assert base.history == tuned.history == []
    assert not app.unexpected_errors


async def test_export_copies_the_adapter_merges_with_a_parity_check_and_refuses_a_bad_repo(trained_run, tmp_path):
    from tui.screens.export import ExportScreen

    app = LoraWizardApp(quiet_state(tmp_path), attach=trained_run)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(ExportScreen(trained_run))
        await pilot.pause()
        export = app.screen
        assert f"In {trained_run}/adapter (" in text(export, "#adapter-info")

        assert export.query_one("#copy-dir").has_focus
        export.query_one("#copy-dir").value = str(tmp_path / "copy")
        await pilot.press("enter")
        assert await until(pilot, lambda: "✓ Copied" in text(export, "#copy-result"))
        assert (tmp_path / "copy" / "adapter_config.json").exists()
        await pilot.press("ctrl+s")  # again, into what is now a full folder: refused in one line
        assert await until(pilot, lambda: export.query_one("#error").display)
        assert "already exists and is not an empty folder" in text(export, "#error")

        export.query_one("#merge-dir").value = str(tmp_path / "merged")
        await pilot.press("ctrl+g")
        assert await until(pilot, lambda: "✓ Merged" in text(export, "#merge-result")
                           or "✗" in text(export, "#merge-result"), timeout=180)
        assert "3/3 prompts give the same greedy answer" in text(export, "#merge-result")
        assert (tmp_path / "merged" / "config.json").exists()
        assert export.merged_folder == tmp_path / "merged"
        log = "\n".join(export.query_one("#export-log").lines)
        assert log.count("✓ same answer") == 3

        export.query_one("#repo-id").value = "not a repo"
        await pilot.press("ctrl+y")
        await pilot.pause(0.1)
        assert text(export, "#error") == "Give the Hub repository as your-name/model-name."
    assert not app.unexpected_errors


async def push_from_the_export_screen(app, pilot, run_dir: Path, repo_id: str):
    """Opens the Export screen of `run_dir`, fills the repository and presses Ctrl+Y; returns the screen."""
    from tui.screens.export import ExportScreen

    await app.push_screen(ExportScreen(run_dir))
    export = app.screen
    export.query_one("#repo-id").value = repo_id
    await pilot.press("ctrl+y")
    return export


async def test_push_publishes_the_adapter_privately_with_its_model_card(trained_run, fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", fake_hub.add_token("alice"))
    app = LoraWizardApp(quiet_state(tmp_path), attach=trained_run)
    async with app.run_test(size=SIZE) as pilot:
        export = await push_from_the_export_screen(app, pilot, trained_run, "alice/reverser")
        assert await until(pilot, lambda: "✓ Pushed" in text(export, "#push-result"), timeout=60)
        assert "alice/reverser" in text(export, "#push-result")
    files = fake_hub.repo_files("alice/reverser")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert fake_hub.repos["alice/reverser"].private
    assert os.environ["HF_TOKEN"].encode() not in files["README.md"]
    assert not app.unexpected_errors


async def test_push_with_a_read_only_token_is_one_readable_line(trained_run, fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", fake_hub.add_token("alice", role="read"))
    app = LoraWizardApp(quiet_state(tmp_path), attach=trained_run)
    async with app.run_test(size=SIZE) as pilot:
        export = await push_from_the_export_screen(app, pilot, trained_run, "alice/reverser")
        assert await until(pilot, lambda: export.query_one("#error").display, timeout=60)
        error = text(export, "#error")
        assert "write access" in error and "\n" not in error and "Traceback" not in error
        assert not export.query_one("#push-button").disabled  # ready for another try
    assert not app.unexpected_errors


async def test_chat_on_a_run_without_an_adapter_says_so(run_folder, tmp_path):
    from tui.screens.chat import ChatScreen

    run = run_folder(config=f"model: {tmp_path / 'nowhere'}\nmethod: lora\n").events(STARTED).status("failed")
    app = LoraWizardApp(quiet_state(tmp_path), attach=run.path)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(ChatScreen(run.path))
        chat = app.screen
        assert await until(pilot, lambda: not chat.query_one("#chat-loading").display, timeout=60)
        assert "has no trained adapter yet" in text(chat, "#chat-status")
        chat.query_one("#prompt").value = "hello"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert chat.query_one("#pane-tuned").history == []
    assert not app.unexpected_errors


# -- shape -----------------------------------------------------------------------------------------

def run_screens():
    from tui.screens.chat import ChatScreen
    from tui.screens.export import ExportScreen
    from tui.screens.training import ConfirmScreen, TrainingScreen

    return [TrainingScreen, ConfirmScreen, ChatScreen, ExportScreen]


@pytest.mark.parametrize("screen", run_screens(), ids=lambda screen: screen.__name__)
def test_every_action_has_a_key_with_an_id_and_a_tooltip(screen):
    bindings = [binding for cls in screen.__mro__ if cls.__module__.startswith("tui.")
                for binding in cls.__dict__.get("BINDINGS", [])]
    assert bindings
    for binding in bindings:
        assert isinstance(binding, Binding) and binding.id and binding.tooltip and binding.show, binding
    actions = {binding.action.split("(")[0] for binding in bindings}
    handlers = {name.removeprefix("action_") for name in vars(screen) if name.startswith("action_")}
    assert handlers <= actions, f"actions without a key: {handlers - actions}"


def test_the_run_screens_import_no_heavy_library():
    code = ("import sys, tui.screens.training, tui.screens.chat, tui.screens.export\n"
            "heavy = [name for name in ('torch', 'transformers', 'peft', 'datasets', 'trl') if name in sys.modules]\n"
            "print(heavy)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout
    assert json.loads(output.replace("'", '"')) == []
