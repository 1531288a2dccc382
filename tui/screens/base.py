"""What every wizard step shares: the step bar, a scrolling body, an error line, Back/Next, the footer."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Label
from textual.worker import Worker

from tui.state import WizardState
from tui.widgets.step_bar import StepBar


class WizardScreen(Screen):
    """A screen of this app. Its workers' failures all go through the one handler below.

    Worker.StateChanged does not bubble, so the handler lives on the screens that own the
    workers; the App decides what a failure means (tui.app.LoraWizardApp.worker_failure).
    """

    @on(Worker.StateChanged)
    def worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.app.worker_failure(event)

    def worker_failed(self, worker: Worker, message: str) -> None:
        """A worker of this screen raised a UserError (or a bug, described): show `message`."""
        self.notify(message, severity="error", timeout=10)


class WizardStep(WizardScreen):
    """A step of the wizard. Subclasses set STEP and write compose_body(); next_step() says when it may go on."""

    STEP: ClassVar[str] = ""
    NEXT_LABEL: ClassVar[str] = "Next"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back", tooltip="Go back to the previous step"),
        Binding("ctrl+n", "next", "Next", id="next", tooltip="Go on to the next step"),
    ]

    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        if self.state.in_demo:
            yield Label("Demo: a built-in 3M-parameter model learns to answer like a pirate. Every choice is filled "
                        "in; look around, change anything, Ctrl+N goes on.", id="demo-banner")
        with VerticalScroll(id="body"):
            yield from self.compose_body()
        yield Label("", id="error", classes="error")
        with Horizontal(id="actions"):
            yield Button("Back", id="back-button", compact=True, tooltip="Back to the previous step (Esc)")
            yield from self.compose_actions()
            yield Button(self.NEXT_LABEL, id="next-button", variant="primary", compact=True, tooltip="Next step (Ctrl+N)")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose_actions(self) -> ComposeResult:
        """Extra buttons between Back and Next."""
        yield from ()

    # -- errors ------------------------------------------------------------------------------

    def show_error(self, message: str) -> None:
        self.query_one("#error", Label).update(message)
        self.query_one("#error", Label).display = bool(message)

    def clear_error(self) -> None:
        self.show_error("")

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.show_error(message)

    # -- navigation --------------------------------------------------------------------------

    def ready_to_continue(self) -> str | None:
        """None when the step is complete, else the sentence saying what is missing."""
        return None

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        problem = self.ready_to_continue()
        if problem:
            self.show_error(problem)
            return
        self.clear_error()
        self.app.next_step(self.STEP)

    @on(Button.Pressed, "#back-button")
    def back_pressed(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#next-button")
    def next_pressed(self) -> None:
        self.action_next()

    def on_mount(self) -> None:
        self.query_one("#error", Label).display = False
