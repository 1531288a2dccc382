"""SVG snapshots of the run screens (pytest-textual-snapshot): look at the SVGs before --snapshot-update.

What is shown is fixed by the test: training screens replay hand-written events.jsonl files (the
trainer's contract) with fixed numbers; chat and export show the session's tiny trained run; every
path is relative to the test's working directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.tui.run_files import OOM, STARTED, RunFolder, step_events
from tui.app import LoraWizardApp
from tui.state import WizardState


def app_for(run_dir: Path) -> LoraWizardApp:
    return LoraWizardApp(WizardState(gpus=[], memory_gib=16.0, token_checked=True, runs_root=Path("runs")),
                         attach=run_dir)


async def until(pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        await pilot.pause(0.1)
    await pilot.pause(0.3)


def shows(pilot, selector: str, text: str) -> bool:
    return text in str(pilot.app.screen.query_one(selector).render())


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_training_on_two_gpus(snap_compare, here):
    run = RunFolder(Path("run")).events(STARTED, *step_events(1, 15, gpus=2), {"type": "eval", "step": 10, "eval_loss": 0.5})
    run.log("loading the model", "{'loss': '0.2', 'grad_norm': '1.0', 'learning_rate': '0.0002', 'epoch': '0.75'}").live()

    async def settle(pilot):
        await until(pilot, lambda: shows(pilot, "#step-count", "step 15/20"))

    assert snap_compare(app_for(run.path), run_before=settle, terminal_size=(110, 34))


def test_training_at_80x24(snap_compare, here):
    run = RunFolder(Path("run")).events(STARTED, *step_events(1, 15)).log("loading the model", "training").live()

    async def settle(pilot):
        await until(pilot, lambda: shows(pilot, "#step-count", "step 15/20"))

    assert snap_compare(app_for(run.path), run_before=settle, terminal_size=(80, 24))


def test_training_failed_out_of_memory_at_80x24(snap_compare, here):
    run = RunFolder(Path("run")).events(STARTED, *step_events(1, 12), OOM)
    run.log("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB").status("failed")

    async def settle(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#failure").display)

    assert snap_compare(app_for(run.path), run_before=settle, terminal_size=(80, 24))


def test_cancel_confirmation(snap_compare, here):
    run = RunFolder(Path("run")).events(STARTED, *step_events(1, 4)).live()

    async def ask(pilot):
        await until(pilot, lambda: shows(pilot, "#step-count", "step 4/20"))
        await pilot.press("c")
        await pilot.pause(0.3)

    assert snap_compare(app_for(run.path), run_before=ask, terminal_size=(80, 24))


def test_chat_loaded(snap_compare, trained_run, monkeypatch):
    from tui.screens.chat import ChatScreen

    monkeypatch.chdir(trained_run.parent)

    async def loaded(pilot):
        await pilot.app.push_screen(ChatScreen(Path("run")))
        await until(pilot, lambda: not pilot.app.screen.query_one("#chat-loading").display)

    assert snap_compare(app_for(Path("run")), run_before=loaded, terminal_size=(80, 24))


def test_export(snap_compare, trained_run, monkeypatch):
    from tui.screens.export import ExportScreen

    monkeypatch.chdir(trained_run.parent)

    async def opened(pilot):
        await pilot.app.push_screen(ExportScreen(Path("run")))
        await pilot.pause(0.3)

    assert snap_compare(app_for(Path("run")), run_before=opened, terminal_size=(80, 24))
