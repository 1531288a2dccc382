"""Welcome: what lora-wizard does; start a new run, try the built-in demo, or open a run on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from tui.screens.base import WizardScreen
from tui.state import WizardState

INTRO = (
    "Fine-tune a language model with LoRA, 8-bit LoRA or QLoRA: pick a model, a dataset and a method, then watch it train.\n"
    "The wizard writes a run config you can repeat headless with `lora-wizard train CONFIG`."
)
DEMO_TEXT = "a tiny model learns a new skill in minutes: no GPU, Hub or token needed"
STATE_MARKS = {"running": "● running", "done": "✓ done", "failed": "✗ failed", "cancelled": "■ cancelled",
               "crashed": "✗ crashed", "pending": "… pending"}


class WelcomeScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_run", "New run", id="new-run", tooltip="Set up a new fine-tuning run step by step"),
        Binding("d", "demo", "Demo", id="demo", tooltip="Train the built-in demo: no GPU, Hub or token needed"),
        Binding("r", "refresh_runs", "Refresh runs", id="refresh-runs", tooltip="Look for runs on disk again"),
    ]

    @dataclass
    class FactsFound(Message):
        """Token and hardware facts, looked up in a worker."""

        token: str | None
        token_source: str | None
        gpus: list[Any] | None
        memory_gib: float | None

    @dataclass
    class RunsFound(Message):
        runs: list[Any]

    @dataclass
    class DemoReady(Message):
        pass

    @dataclass
    class DemoProgress(Message):
        done: int
        total: int
        message: str

    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.runs: list[Any] = []
        self._user_moved = False
        self._preselected: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="welcome"):
            yield Static("lora-wizard", id="welcome-title")
            yield Static(INTRO, id="intro")
            yield OptionList(id="choices")
            yield Label("", id="machine")
            yield Label("", id="demo-status")
            yield ProgressBar(id="demo-progress", show_eta=False)
            yield Label("", id="error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#demo-progress").display = False
        self.query_one("#error").display = False
        self.query_one("#demo-status").display = False
        self.show_choices()
        self.show_machine()
        if not (self.state.token_checked and self.state.hardware_known):
            self.find_facts()
        self.find_runs()
        self.query_one("#choices").focus()

    # -- what is shown ------------------------------------------------------------------------

    def show_choices(self) -> None:
        choices = self.query_one("#choices", OptionList)
        keep = choices.highlighted_option.id if choices.highlighted_option and self._user_moved else None
        choices.clear_options()
        choices.add_option(Option(Text.assemble(("Start a new run", "bold"), "  pick a model, method and dataset"),
                                  id="new"))
        suggested = "  (a good first run here)" if self.state.suggests_demo else ""
        choices.add_option(Option(Text.assemble(("Try the built-in demo", "bold"), f"  {DEMO_TEXT}", (suggested, "green")),
                                  id="demo"))
        if self.runs:
            choices.add_option(None)
            for run in self.runs:
                choices.add_option(Option(self._run_label(run), id=f"run:{run.run_dir}"))
        wanted = keep or ("demo" if self.state.suggests_demo else "new")
        self._preselected = wanted
        choices.highlighted = choices.get_option_index(wanted)

    def _run_label(self, run: Any) -> Text:
        progress = f"{run.step}/{run.max_steps}" if run.max_steps else "-"
        name = Path(run.run_dir).name
        style = "bold" if run.state == "running" else ""
        return Text.assemble((f"{STATE_MARKS.get(run.state, run.state):<12}", style), f" {name:<16} ",
                             (f"{run.method:<9} {progress:>9}  {Path(run.model).name[:24]}", "dim"))

    def show_machine(self) -> None:
        state = self.state
        if state.token_checked:
            token = f"token from {state.token_source}" if state.token else "no Hugging Face token (public and local models only)"
        else:
            token = "looking for a token…"
        self.query_one("#machine", Label).update(f"This machine: {state.memory_summary()}; {token}.")

    # -- workers ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="facts", description="looking for a token and GPUs")
    def find_facts(self) -> None:
        from core.hub import KeyringTimeout, get_token
        from tui.engine import detect_hardware

        state = self.state
        token, source = state.token, state.token_source
        if not state.token_checked:
            try:
                token, source = get_token()
            except KeyringTimeout:
                token, source = None, None
        gpus, memory = (state.gpus, state.memory_gib) if state.hardware_known else detect_hardware()
        self.post_message(self.FactsFound(token, source, gpus, memory))

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs", description="looking for runs on disk")
    def find_runs(self) -> None:
        try:
            from core.runs import list_runs
        except ImportError:
            return
        self.post_message(self.RunsFound(list_runs(self.state.runs_root)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="demo", description="preparing the demo")
    def prepare_demo(self) -> None:
        from tui.engine import demo_config

        def progress(done: int, total: int, message: str) -> None:
            self.post_message(self.DemoProgress(done, total, message))

        demo_config(self.state, progress=progress)
        self.post_message(self.DemoReady())

    # -- messages -----------------------------------------------------------------------------

    @on(FactsFound)
    def facts_found(self, message: FactsFound) -> None:
        state = self.state
        state.token, state.token_source, state.token_checked = message.token, message.token_source, True
        state.gpus, state.memory_gib = message.gpus, message.memory_gib
        self.show_machine()
        self.show_choices()

    @on(RunsFound)
    def runs_found(self, message: RunsFound) -> None:
        self.runs = message.runs
        self.show_choices()

    @on(DemoProgress)
    def demo_progress(self, message: DemoProgress) -> None:
        bar = self.query_one("#demo-progress", ProgressBar)
        bar.display = True
        bar.update(total=message.total, progress=message.done)
        self.query_one("#demo-status", Label).update(f"Building the demo model (once): {message.message}")

    @on(DemoReady)
    def demo_ready(self) -> None:
        # The demo walks every step like any run, its choices filled in and labelled: Ctrl+N goes on.
        self.query_one("#demo-progress").display = False
        self.query_one("#demo-status").display = False
        self.app.next_step("welcome")

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#demo-progress").display = False
        self.query_one("#demo-status").display = False
        error = self.query_one("#error", Label)
        error.update(message)
        error.display = True

    # -- actions ------------------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#choices")
    def moved(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id != self._preselected:
            self._user_moved = True

    @on(OptionList.OptionSelected, "#choices")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        choice = event.option.id or ""
        if choice == "new":
            self.action_new_run()
        elif choice == "demo":
            self.action_demo()
        elif choice.startswith("run:"):
            self.app.open_run(Path(choice.removeprefix("run:")))

    def action_new_run(self) -> None:
        from core.config import RunConfig

        if self.state.demo:
            self.state.demo = False
            self.state.config = RunConfig()
        self.app.next_step("welcome")

    def action_demo(self) -> None:
        status = self.query_one("#demo-status", Label)
        status.update("Preparing the demo…")
        status.display = True
        self.query_one("#error").display = False
        self.prepare_demo()

    def action_refresh_runs(self) -> None:
        self.find_runs()
