"""Training: the live view of a run, followed from events.jsonl by a worker; the run is its own process.

Leaving this screen or the app leaves training running; reopening the run (Welcome, or
`lora-wizard attach RUN_DIR`) replays its whole history from events.jsonl.
"""

from __future__ import annotations

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
from textual.widgets import Button, Footer, Label, Log, ProgressBar, Static
from textual.worker import Worker, get_current_worker

from tui.screens.base import WizardScreen
from tui.widgets.gpu_memory import GpuMemory
from tui.widgets.loss_plot import LossPlot

POLL_S = 0.25
LOG_LINES = 200


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
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
        Binding("ctrl+c,c", "cancel_run", "Cancel run", id="cancel-run",
                tooltip="Save a checkpoint and stop training (resume later with --resume)"),
        Binding("ctrl+t", "chat", "Chat", id="chat", tooltip="Chat with the fine-tuned model (when training is done)"),
        Binding("ctrl+a", "apply_advice", "Apply advice", id="apply-advice", show=False,
                tooltip="Restart the run with the suggested settings"),
        Binding("escape", "leave", "Back", id="leave", tooltip="Back to the wizard; training keeps running"),
    ]

    @dataclass
    class Update(Message):
        events: list[dict[str, Any]]
        log_lines: list[str]
        state: str

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.max_steps = 0
        self.state_name = "pending"
        self.failed_event: dict[str, Any] | None = None
        self.started_at: float | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Run {self.run_dir}", id="run-title")
        yield Label("", id="run-state")
        yield Static("", id="run-notes")
        yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Label("waiting for the trainer...", id="stats")
        with Horizontal(id="run-panels"):
            yield LossPlot(id="loss-plot")
            with Vertical(id="run-side"):
                yield GpuMemory(id="gpu-memory")
                yield Log(id="log-tail", max_lines=LOG_LINES, auto_scroll=True)
        yield Label("", id="failure", classes="error")
        with Horizontal(id="actions"):
            yield Button("Apply advice and restart", id="apply-advice-button", variant="warning", compact=True)
            yield Button("Cancel run", id="cancel-button", variant="error", compact=True)
            yield Button("Chat", id="chat-button", variant="primary", compact=True, disabled=True)
        yield Footer()

    DEFAULT_CSS = """
    TrainingScreen #run-title { text-style: bold; padding: 0 1; }
    TrainingScreen #run-state, TrainingScreen #stats, TrainingScreen #run-notes { padding: 0 1; }
    TrainingScreen #progress { padding: 0 1; }
    TrainingScreen #run-panels { height: 1fr; }
    TrainingScreen #run-side { width: 46%; }
    TrainingScreen #log-tail { height: 1fr; border: round $panel; }
    TrainingScreen #actions { height: auto; align-horizontal: right; padding: 0 1; }
    TrainingScreen #actions Button { margin-left: 1; }
    """

    def on_mount(self) -> None:
        self.query_one("#apply-advice-button").display = False
        self.query_one("#failure").display = False
        self.follow()

    # -- following the run ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow", description="following the run")
    def follow(self) -> None:
        from core.events import follow_events
        from core.runs import run_state

        worker = get_current_worker()
        offset = 0
        log_offset = 0
        log_path = self.run_dir / "trainer.log"
        last_state = None
        while not worker.is_cancelled:
            events, offset = follow_events(self.run_dir, offset)
            lines: list[str] = []
            try:
                with open(log_path, "rb") as stream:
                    stream.seek(log_offset)
                    chunk = stream.read()
                    cut = chunk.rfind(b"\n") + 1
                    log_offset += cut
                    lines = chunk[:cut].decode("utf-8", "replace").splitlines()[-LOG_LINES:]
            except OSError:
                pass
            state = run_state(self.run_dir)
            if events or lines or state != last_state:
                self.post_message(self.Update(events, lines, state))
                last_state = state
            time.sleep(POLL_S)

    @on(Update)
    def update_view(self, message: Update) -> None:
        plot = self.query_one(LossPlot)
        redraw = False
        for event in message.events:
            redraw |= self.apply_event(event, plot)
        if redraw:
            plot.redraw()
        if message.log_lines:
            self.query_one("#log-tail", Log).write_lines(message.log_lines)
        self.set_state(message.state)

    def apply_event(self, event: dict[str, Any], plot: LossPlot) -> bool:
        kind = event["type"]
        if kind == "started":
            self.failed_event = None
            self.query_one("#failure").display = False
            self.query_one("#apply-advice-button").display = False
            notes = list(event.get("notes", []))
            notes.insert(0, f"{event.get('model')} · {event.get('method')} on {event.get('device')} ({event.get('dtype')}) · "
                            f"{event.get('train_examples')} train / {event.get('eval_examples')} eval examples · micro-batch "
                            f"{event.get('batch_size')} x {event.get('grad_accum')} · gradient checkpointing "
                            f"{'on' if event.get('gradient_checkpointing') else 'off'}")
            self.query_one("#run-notes", Static).update("\n".join(notes))
            return False
        if kind == "step":
            self.max_steps = event.get("max_steps") or self.max_steps
            progress = self.query_one(ProgressBar)
            progress.update(total=self.max_steps or None, progress=event["step"])
            parts = [f"step {event['step']}/{self.max_steps}", f"epoch {event.get('epoch', 0):.2f}"]
            if event.get("loss") is not None:
                parts.append(f"loss {event['loss']:.4f}")
            if event.get("lr") is not None:
                parts.append(f"lr {event['lr']:.2e}")
            if event.get("tokens_per_second"):
                parts.append(f"{event['tokens_per_second']:,.0f} tokens/s")
            parts.append(f"elapsed {_duration(event.get('elapsed_s'))}")
            parts.append(f"ETA {_duration(event.get('eta_s'))}")
            self.query_one("#stats", Label).update(" · ".join(parts))
            self.query_one(GpuMemory).gpus = event.get("gpu_memory") or []
            if event.get("loss") is not None:
                plot.add_train(event["step"], event["loss"])
                return True
            return False
        if kind == "eval" and event.get("eval_loss") is not None:
            plot.add_eval(event["step"], event["eval_loss"])
            return True
        if kind == "done":
            self.query_one(ProgressBar).update(total=event.get("max_steps") or self.max_steps or 1,
                                               progress=event.get("step") or self.max_steps or 1)
            self.query_one("#stats", Label).update(
                f"done: {event.get('step')} steps in {_duration(event.get('runtime_s'))}, adapter in {event.get('adapter_dir')}"
            )
        elif kind == "cancelled":
            self.query_one("#stats", Label).update(
                f"cancelled at step {event.get('step')}; resume with: {event.get('resume_command')}")
        elif kind == "failed":
            self.failed_event = event
            failure = self.query_one("#failure", Label)
            failure.update(f"Training failed: {event.get('reason')}")
            failure.display = True
            self.query_one("#apply-advice-button").display = bool(event.get("suggested_overrides"))
        return False

    def set_state(self, state: str) -> None:
        self.state_name = state
        labels = {"running": "training", "done": "done ✓", "failed": "failed", "cancelled": "cancelled",
                  "crashed": "crashed: the trainer stopped without saying why (see the log); resume with --resume",
                  "pending": "starting"}
        self.query_one("#run-state", Label).update(f"State: {labels.get(state, state)}")
        self.query_one("#cancel-button").disabled = state != "running"
        self.query_one("#chat-button").disabled = not (self.run_dir / "adapter" / "adapter_config.json").exists()

    # -- actions -------------------------------------------------------------------------------

    def action_cancel_run(self) -> None:
        if self.state_name != "running":
            self.notify("The run is not training.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                from core.runs import cancel_run

                if cancel_run(self.run_dir):
                    self.notify("Saving a checkpoint, then stopping...")
                else:
                    self.notify("The run had already stopped.", severity="warning")

        self.app.push_screen(ConfirmScreen("Stop training? A checkpoint is saved first; resume later with --resume."),
                             answered)

    @on(Button.Pressed, "#cancel-button")
    def cancel_pressed(self) -> None:
        self.action_cancel_run()

    def action_chat(self) -> None:
        if not (self.run_dir / "adapter" / "adapter_config.json").exists():
            self.notify("The adapter is saved when training finishes; chat then.", severity="warning")
            return
        from tui.screens.chat import ChatScreen

        self.app.push_screen(ChatScreen(self.run_dir))

    @on(Button.Pressed, "#chat-button")
    def chat_pressed(self) -> None:
        self.action_chat()

    def action_leave(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    def action_apply_advice(self) -> None:
        if not self.failed_event or not self.failed_event.get("suggested_overrides"):
            self.notify("There is no advice to apply.", severity="warning")
            return
        self.restart_with_advice(self.failed_event["suggested_overrides"])

    @on(Button.Pressed, "#apply-advice-button")
    def apply_pressed(self) -> None:
        self.action_apply_advice()

    @work(thread=True, exclusive=True, exit_on_error=False, group="restart", description="restarting with the advice")
    def restart_with_advice(self, overrides: dict[str, Any]) -> None:
        from core.config import load_config
        from core.runs import start_training

        pairs = [f"{key}={value}" for key, value in overrides.items()]
        config = load_config(self.run_dir / "config.yaml", pairs)
        base, number = str(self.run_dir), 2
        while Path(f"{base}-{number}").exists():
            number += 1
        config.output_dir = f"{base}-{number}"
        new_run = start_training(config)
        self.app.call_from_thread(self.app.switch_screen, TrainingScreen(new_run))

    def worker_failed(self, worker: Worker, message: str) -> None:
        failure = self.query_one("#failure", Label)
        failure.update(message)
        failure.display = True
