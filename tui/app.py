"""The lora-wizard Textual app: owns the wizard state, moves between steps, handles worker failures.

Nothing heavy is imported here or by the screens at import time (torch, transformers, datasets,
peft): the first screen must paint in well under a second, and those imports take seconds.
Screens import engine code inside thread workers, when they need it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from core.errors import UserError
from tui.state import STEPS, WizardState


class LoraWizardApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "lora-wizard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="quit", tooltip="Leave the wizard (a started run keeps training)"),
    ]

    def __init__(self, state: WizardState | None = None, *, demo: bool = False, attach: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike | None = None, step: str | None = None) -> None:
        super().__init__()
        self.state = state or WizardState()
        if demo:
            self.state.demo = True
        if runs_root is not None:
            self.state.runs_root = Path(runs_root)
        self.attach_run = Path(attach) if attach is not None else None
        # Open on this step, above Welcome (tests and scripted tours start mid-way with a prepared state).
        self.start_step = step
        # Exceptions other than UserError raised in workers: bugs. Shown, logged, and kept for tests.
        self.unexpected_errors: list[BaseException] = []

    def on_mount(self) -> None:
        if self.attach_run is not None:
            self.open_run(self.attach_run)
        else:
            from tui.screens.welcome import WelcomeScreen

            self.push_screen(WelcomeScreen(self.state))
            if self.start_step is not None:
                self.push_screen(self.step_screen(self.start_step))

    # -- navigation ----------------------------------------------------------------------------

    def step_screen(self, step: str) -> Screen:
        from tui.screens import STEP_SCREENS

        return STEP_SCREENS[step](self.state)

    def next_step(self, current: str) -> None:
        """Pushes the step after `current` (the Welcome screen counts as before the first step)."""
        index = STEPS.index(current) + 1 if current in STEPS else 0
        if index < len(STEPS):
            self.push_screen(self.step_screen(STEPS[index]))

    def open_run(self, run_dir: Path) -> None:
        """The live screen of a run (built by the training screen's owner; a plain note until it exists)."""
        try:
            from tui.screens.training import TrainingScreen
        except ImportError:
            self.push_screen(RunNoteScreen(run_dir))
            return
        self.push_screen(TrainingScreen(run_dir))

    # -- worker failures: the one place they are handled ----------------------------------------

    @on(Worker.StateChanged)
    def worker_failure(self, event: Worker.StateChanged) -> None:
        """Every worker's state changes come here (from the screens that own them, see WizardScreen).

        A UserError is a sentence for the user, shown on the owner's screen; anything else is a
        bug: shown as such, logged, and kept in `unexpected_errors` so tests fail on it.
        """
        if event.state != WorkerState.ERROR:
            return
        worker = event.worker
        error = worker.error
        owner = worker.node
        if isinstance(error, UserError):
            message = str(error)
            if hasattr(owner, "worker_failed"):
                owner.worker_failed(worker, message)
            else:
                self.notify(message, severity="error", timeout=10)
            return
        self.unexpected_errors.append(error)
        self.log.error(f"worker {worker.name!r} ({worker.description}) failed", error)
        text = f"{type(error).__name__}: {error}"
        if hasattr(owner, "worker_failed"):
            owner.worker_failed(worker, f"Unexpected error while {worker.description}: {text}")
        self.notify(f"{text}\nThis is a bug in lora-wizard; the details are in the Textual log.",
                    title="Unexpected error", severity="error", timeout=15)


class RunNoteScreen(Screen):
    """Stands in for the live training screen in a build without it: where the run is and how to follow it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="back", tooltip="Back to the wizard"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="body"):
            yield Static(
                f"The run in {self.run_dir} is training in its own process.\n\n"
                f"Follow it with `lora-wizard runs` or `tail -f {self.run_dir}/trainer.log`.",
                id="run-note",
            )
        yield Footer()


def wizard_command(args: Any) -> int:
    """`lora-wizard` / `lora-wizard wizard [--demo]`."""
    LoraWizardApp(demo=bool(getattr(args, "demo", False))).run()
    return 0


def attach_command(args: Any) -> int:
    """`lora-wizard attach RUN_DIR`: the live screen of a running or finished run."""
    run_dir = Path(os.path.expanduser(args.run_dir))
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); list runs with `lora-wizard runs`.")
    LoraWizardApp(attach=run_dir).run()
    return 0
