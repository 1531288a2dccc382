"""The app shell: a cheap start (no torch and friends), the CLI entry points, bindings, worker failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from textual.binding import Binding

from core.cli import main as cli_main
from core.errors import UserError
from tui.app import LoraWizardApp
from tui.state import WizardState

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "peft", "trl", "bitsandbytes", "accelerate")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
                                            "HF_HUB_OFFLINE": "1"})


def test_importing_the_app_and_its_screens_imports_nothing_heavy(tmp_path):
    result = python("import tui.app, tui.screens, tui.screens.welcome", tmp_path, "-X", "importtime")
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "no -X importtime output"
    assert "textual" in imported
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY)
    assert heavy == []


STARTED_APP = textwrap.dedent("""
    import asyncio, json, sys, time
    from tui.app import LoraWizardApp
    from tui.state import WizardState

    async def main():
        started = time.monotonic()
        state = WizardState(gpus=[], memory_gib=8.0, token_checked=True)
        app = LoraWizardApp(state, runs_root="runs")
        async with app.run_test(size=(100, 32)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            painted = time.monotonic() - started
            screen = type(app.screen).__name__
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
        print(json.dumps({{"screen": screen, "heavy": heavy, "seconds": painted}}))

    asyncio.run(main())
""").format(heavy=set(HEAVY))


def test_a_started_app_has_loaded_nothing_heavy_and_painted_quickly(tmp_path):
    result = python(STARTED_APP, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["screen"] == "WelcomeScreen"
    assert report["heavy"] == []
    # Generous for a loaded 2-core CI box; torch alone takes several seconds to import.
    assert report["seconds"] < 3, report


def test_attach_to_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    code = cli_main(["attach", str(tmp_path / "nowhere")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("lora-wizard: ") and "not a run directory" in error and "\n" not in error


def test_attach_command_refuses_before_starting_the_app(tmp_path):
    from tui.app import attach_command

    args = type("Args", (), {"run_dir": str(tmp_path)})()
    with pytest.raises(UserError):
        attach_command(args)


async def test_attach_opens_the_live_screen_of_the_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: org/model\n")
    app = LoraWizardApp(WizardState(gpus=[], token_checked=True), attach=run_dir)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        assert type(app.screen).__name__ in ("TrainingScreen", "RunNoteScreen")


def my_screens():
    from tui.screens import STEP_SCREENS
    from tui.screens.welcome import WelcomeScreen

    return [WelcomeScreen, *STEP_SCREENS.values()]


@pytest.mark.parametrize("screen", my_screens(), ids=lambda screen: screen.__name__)
def test_every_binding_has_an_id_and_a_tooltip(screen):
    bindings = []
    # Ours, not Textual's own (tab to move focus and the like).
    for cls in [*screen.__mro__, LoraWizardApp]:
        if cls.__module__.startswith("tui."):
            bindings += list(cls.__dict__.get("BINDINGS", []))
    assert bindings
    for binding in bindings:
        assert isinstance(binding, Binding) and binding.id and binding.tooltip, binding


async def test_a_bug_in_a_worker_is_reported_not_a_crash(tmp_path, monkeypatch):
    """An exception that is not a UserError shows as an unexpected error and the app keeps running."""
    import tui.engine

    def broken(state):
        raise RuntimeError("estimator exploded")

    monkeypatch.setattr(tui.engine, "estimate_methods", broken)
    from core.config import config_from_dict

    state = WizardState(gpus=[], memory_gib=8.0, token_checked=True, config=config_from_dict({"model": "org/m"}))
    app = LoraWizardApp(state, runs_root=tmp_path, step="method")
    async with app.run_test(size=(100, 32)) as pilot:
        for worker in list(app.workers):
            try:
                await worker.wait()
            except Exception:
                pass
        await pilot.pause()
        assert [str(error) for error in app.unexpected_errors] == ["estimator exploded"]
        error = app.screen.query_one("#error")
        assert error.display and "RuntimeError: estimator exploded" in str(error.render())
        assert app.is_running


async def test_a_user_error_in_a_worker_is_shown_on_its_screen(tmp_path):
    app = LoraWizardApp(WizardState(gpus=[], token_checked=True), runs_root=tmp_path, step="model")
    async with app.run_test(size=(100, 32)) as pilot:
        app.screen.query_one("#model-id").value = str(tmp_path / "nope")
        await pilot.press("enter")
        for worker in list(app.workers):
            try:
                await worker.wait()
            except Exception:
                pass
        await pilot.pause()
        assert "There is no model folder" in str(app.screen.query_one("#error").render())
        assert app.unexpected_errors == []


async def test_escape_goes_back_a_step_and_ctrl_n_forward(tmp_path):
    app = LoraWizardApp(WizardState(gpus=[], token_checked=True, keyring=(True, "ok")), runs_root=tmp_path)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        assert type(app.screen).__name__ == "LoginScreen"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "ModelScreen"
        await pilot.press("escape")
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "WelcomeScreen"
