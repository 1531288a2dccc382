"""Training: the live view of a run, followed from events.jsonl by a worker; the run is its own process.

Leaving this screen or the app leaves training running; reopening the run (Welcome, or
`lora-wizard attach RUN_DIR`) replays its whole history from events.jsonl.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static
from textual.worker import Worker, get_current_worker

from tui.screens.base import WizardScreen
from tui.widgets.gpu_memory import GpuMemory
from tui.widgets.log_tail import LogTail, read_new_lines
from tui.widgets.loss_plot import LossPlot
from core.events import duration
from tui.widgets.progress_panel import ProgressPanel

POLL_S = 0.25
# Between events the run's state is re-read this often: a trainer killed without a word shows as crashed.
STATE_CHECK_S = 2.0
FINAL_STATES = ("done", "failed", "cancelled", "crashed")
STATE_TEXT = {"pending": "starting", "running": "training", "done": "done ✓", "failed": "failed ✗",
              "cancelled": "cancelled", "crashed": "crashed ✗"}


def next_run_dir(run_dir: Path) -> Path:
    """runs/x -> runs/x-2 (or -3, ...): a retry never overwrites the run it learns from."""
    number = 2
    while Path(f"{run_dir}-{number}").exists():
        number += 1
    return Path(f"{run_dir}-{number}")


def override_text(key: str, value: Any) -> str:
    """key=value as `--set` reads it back (YAML: true, not True)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"{key}={value}"


def retry_command(run_dir: Path, overrides: dict[str, Any]) -> str:
    sets = [override_text(key, value) for key, value in overrides.items()]
    sets.append(override_text("output_dir", next_run_dir(run_dir)))
    return shlex.join(["lora-wizard", "train", str(run_dir / "config.yaml"),
                       *[part for text in sets for part in ("--set", text)]])


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with the answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes", tooltip="Yes, go ahead"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no", tooltip="No, leave things as they are"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; max-width: 100%; height: auto; border: thick $warning;
                               background: $surface; padding: 1 2; }
    ConfirmScreen Label { width: 1fr; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 1; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="warning", compact=True)
                yield Button("No (n)", id="no", compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TrainingScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+t", "chat", "Chat", id="chat", tooltip="Chat with the fine-tuned model (once training is done)"),
        Binding("c", "cancel_run", "Cancel run", id="cancel-run",
                tooltip="Save a checkpoint and stop training (resume later with --resume)"),
        Binding("a", "apply_advice", "Apply advice", id="apply-advice",
                tooltip="Start a new run with the suggested settings"),
        Binding("escape", "leave", "Runs", id="leave",
                tooltip="Back to the start screen and the list of runs; training keeps running"),
    ]
    # Screen CSS (not DEFAULT_CSS) so these rules outrank the app stylesheet's general ones.
    CSS = """
    TrainingScreen #run-title { text-style: bold; padding: 0 1; width: 1fr; }
    TrainingScreen #run-notes { padding: 0 1; color: $text-muted; width: 1fr; }
    TrainingScreen #run-outcome { padding: 0 1; width: 1fr; }
    TrainingScreen #run-panels { height: 1fr; min-height: 8; }
    TrainingScreen LossPlot { width: 1fr; }
    TrainingScreen #run-side { width: 45%; }
    TrainingScreen #failure { height: auto; }
    TrainingScreen #actions { padding: 0 1; }
    """

    @dataclass
    class Update(Message):
        """What the follower found since its last look (events in order, new log lines, the run's state)."""

        events: list[dict[str, Any]]
        log_lines: list[str]
        state: str

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.state_name = "pending"
        self.final_event: dict[str, Any] | None = None
        self.failed_event: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Run {self.run_dir}", id="run-title")
        yield Static("", id="run-notes")
        yield ProgressPanel(id="progress")
        with Horizontal(id="run-panels"):
            yield LossPlot(id="loss-plot")
            with Vertical(id="run-side"):
                yield GpuMemory(id="gpu-memory")
                yield LogTail(id="log-tail")
        yield Label("", id="run-outcome")
        yield Label("", id="failure", classes="error")
        with Horizontal(id="actions"):
            yield Button("Apply advice (a)", id="apply-advice-button", variant="warning", compact=True)
            yield Button("Cancel run (c)", id="cancel-button", variant="error", compact=True)
            yield Button("Chat (Ctrl+T)", id="chat-button", variant="primary", compact=True, disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#failure").display = False
        self.query_one("#apply-advice-button").display = False
        self.query_one("#cancel-button").display = False
        self.show_state("pending")
        self.follow()

    # -- following the run ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow", description="following the run")
    def follow(self) -> None:
        from core.events import follow_events
        from core.runs import run_state

        worker = get_current_worker()
        offset = 0  # from the start: a reattached screen shows the whole history
        log_offset = None
        state = None
        state_checked = 0.0
        while not worker.is_cancelled:
            events, offset = follow_events(self.run_dir, offset)
            lines, log_offset = read_new_lines(self.run_dir / "trainer.log", log_offset)
            previous = state
            if events or state is None or time.monotonic() - state_checked > STATE_CHECK_S:
                state, state_checked = run_state(self.run_dir), time.monotonic()
            if events or lines or state != previous:
                self.post_message(self.Update(events, lines, state))
            time.sleep(POLL_S)

    @on(Update)
    def update_view(self, message: Update) -> None:
        plot = self.query_one(LossPlot)
        last_step = None
        for event in message.events:
            kind = event.get("type")
            if kind == "started":
                self.show_started(event)
            elif kind == "step":
                last_step = event
                if event.get("loss") is not None:
                    plot.add_train(event["step"], event["loss"])
            elif kind == "eval" and event.get("eval_loss") is not None:
                plot.add_eval(event["step"], event["eval_loss"])
            elif kind in ("done", "failed", "cancelled"):
                self.final_event = event
                self.failed_event = event if kind == "failed" else None
        if any(event.get("type") in ("step", "eval", "started") for event in message.events):
            plot.redraw()
        if last_step is not None:
            # A replayed history can hold thousands of steps: the numbers shown are the last one's.
            self.query_one(ProgressPanel).step = last_step
            self.query_one(GpuMemory).gpus = last_step.get("gpu_memory") or []
        if message.log_lines:
            self.query_one(LogTail).add_lines(message.log_lines)
        self.show_state(message.state)

    def show_started(self, event: dict[str, Any]) -> None:
        """A (re)start: the run's setup in one line, and the notes the trainer made about the data."""
        self.final_event = self.failed_event = None
        model = event.get("model") or ""
        short_model = Path(model).name if "/" in model and Path(model).is_absolute() else model
        setup = (f"{short_model} · {event.get('method')} on {event.get('device')} ({event.get('dtype')}) · "
                 f"{event.get('train_examples')} train / {event.get('eval_examples')} eval examples · "
                 f"micro-batch {event.get('batch_size')} x {event.get('grad_accum')} · gradient checkpointing "
                 f"{'on' if event.get('gradient_checkpointing') else 'off'}")
        if event.get("resumed_from"):
            setup += f" · resumed from {Path(event['resumed_from']).name}"
        self.query_one("#run-notes", Static).update("\n".join([setup, *event.get("notes", [])]))

    def show_state(self, state: str) -> None:
        self.state_name = state
        final = self.final_event or {}
        title = f"Run {self.run_dir} · {STATE_TEXT.get(state, state)}"
        self.query_one("#run-title", Label).update(title)
        outcome = ""
        self.query_one(ProgressPanel).state = state
        if state == "done":
            outcome = (f"Done: {final.get('step', '?')} steps in {duration(final.get('runtime_s'))}; the adapter is in "
                       f"{final.get('adapter_dir', self.run_dir / 'adapter')}. Chat with it: Ctrl+T.")
        elif state == "cancelled":
            outcome = f"Cancelled at step {final.get('step', '?')}. Resume: {final.get('resume_command') or self.resume_command()}"
        elif state == "crashed":
            outcome = ("The trainer stopped without a word (killed?); see trainer.log. "
                       f"Resume from the last checkpoint: {self.resume_command()}")
        elif state == "running":
            outcome = "Training in its own process: leaving (Esc) or quitting keeps it running."
        self.query_one("#run-outcome", Label).update(outcome)
        self.query_one("#run-outcome").display = bool(outcome)
        self.show_failure(self.failed_event if state == "failed" else None)
        self.query_one("#cancel-button").display = state == "running"
        self.query_one("#chat-button").disabled = not self.adapter_ready()
        self.refresh_bindings()

    def show_failure(self, event: dict[str, Any] | None) -> None:
        failure = self.query_one("#failure", Label)
        failure.display = event is not None
        overrides = (event or {}).get("suggested_overrides") or {}
        self.query_one("#apply-advice-button").display = bool(overrides)
        if event is None:
            return
        lines = [f"Training failed: {event.get('reason') or 'no reason given (see trainer.log)'}"]
        advice = event.get("advice")
        if advice and advice not in lines[0]:
            lines.append(f"Advice: {advice}")
        if overrides:
            lines.append(f"Apply it (a), or re-run: {retry_command(self.run_dir, overrides)}")
        failure.update("\n".join(lines))

    def resume_command(self) -> str:
        return shlex.join(["lora-wizard", "train", str(self.run_dir / "config.yaml"), "--resume"])

    def adapter_ready(self) -> bool:
        return (self.run_dir / "adapter" / "adapter_config.json").exists()

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_run":
            return self.state_name == "running"
        if action == "apply_advice":
            return bool(self.failed_event and self.failed_event.get("suggested_overrides"))
        if action == "chat":
            return True if self.adapter_ready() else None  # shown dimmed: it is where the run leads
        return True

    def action_cancel_run(self) -> None:
        if self.state_name != "running":
            self.notify("The run is not training.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            from core.runs import cancel_run

            if cancel_run(self.run_dir):
                self.notify("Saving a checkpoint, then stopping...")
            else:
                self.notify("The run had already stopped.", severity="warning")

        self.app.push_screen(ConfirmScreen("Stop training? A checkpoint is saved first; resume later with "
                                           f"{self.resume_command()}"), answered)

    @on(Button.Pressed, "#cancel-button")
    def cancel_pressed(self) -> None:
        self.action_cancel_run()

    def action_chat(self) -> None:
        if not self.adapter_ready():
            self.notify("The adapter is saved when training finishes; chat then.", severity="warning")
            return
        from tui.screens.chat import ChatScreen

        self.app.push_screen(ChatScreen(self.run_dir))

    @on(Button.Pressed, "#chat-button")
    def chat_pressed(self) -> None:
        self.action_chat()

    def action_leave(self) -> None:
        from tui.screens.welcome import WelcomeScreen

        stack = self.app.screen_stack
        if any(isinstance(screen, WelcomeScreen) for screen in stack):
            while not isinstance(self.app.screen_stack[-1], WelcomeScreen):
                self.app.pop_screen()
        else:  # attached straight to the run: the start screen takes this one's place
            self.app.switch_screen(WelcomeScreen(self.app.state))

    def action_apply_advice(self) -> None:
        overrides = (self.failed_event or {}).get("suggested_overrides")
        if not overrides:
            self.notify("There is no advice to apply.", severity="warning")
            return
        new_run = next_run_dir(self.run_dir)
        changes = ", ".join(override_text(key, value) for key, value in overrides.items())

        def answered(yes: bool | None) -> None:
            if yes:
                self.restart_with_advice(overrides, new_run)

        self.app.push_screen(ConfirmScreen(f"Start a new run in {new_run} with {changes}?"), answered)

    @on(Button.Pressed, "#apply-advice-button")
    def apply_pressed(self) -> None:
        self.action_apply_advice()

    @work(thread=True, exclusive=True, exit_on_error=False, group="restart", description="restarting with the advice")
    def restart_with_advice(self, overrides: dict[str, Any], new_run: Path) -> None:
        from core.config import load_config
        from core.runs import start_training

        pairs = [override_text(key, value) for key, value in overrides.items()]
        config = load_config(self.run_dir / "config.yaml", [*pairs, override_text("output_dir", new_run)])
        run_dir = start_training(config)
        self.app.call_from_thread(self.app.switch_screen, TrainingScreen(run_dir))

    def worker_failed(self, worker: Worker, message: str) -> None:
        failure = self.query_one("#failure", Label)
        failure.update(message)
        failure.display = True
