"""Review: the run config as it will be written, where, and the command that repeats it headless; Start."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Label, LoadingIndicator, Static
from textual.worker import Worker

from core.errors import UserError
from tui.screens.base import WizardStep


class ReviewScreen(WizardStep):
    STEP = "review"
    NEXT_LABEL = "Start training"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "next", "Start", id="start", tooltip="Write the config and start training"),
    ]

    @dataclass
    class Started(Message):
        run_dir: Path

    def compose_body(self) -> ComposeResult:
        config = self.state.config
        config_path = Path(config.output_dir or "OUTPUT_DIR") / "config.yaml"
        yield Label(f"The config is written to {config_path} when training starts.", id="config-path")
        yield Label(f"Repeat this run headless: lora-wizard train {shlex.quote(str(config_path))}", id="train-command")
        gpus = self.state.gpus or []
        if len(gpus) > 1 and config.distributed.mode != "single":
            mode = {"ddp": "DDP (a copy per GPU)", "fsdp": "FSDP (weights sharded)"}.get(config.distributed.mode,
                                                                                     "DDP or FSDP as the estimate says")
            yield Label(f"Launch: {mode} over {len(gpus)} GPUs through accelerate; the run directory gets "
                        "accelerate.yaml and launch.sh to repeat it by hand.", id="launch-plan")
        self.shown_yaml = config.to_yaml()
        yield Static(Syntax(self.shown_yaml, "yaml", word_wrap=True, theme="ansi_dark", background_color="default"), id="config-yaml")
        yield LoadingIndicator(id="start-loading")

    def on_mount(self) -> None:
        self.query_one("#start-loading").display = False
        self.query_one("#next-button").focus()

    def ready_to_continue(self) -> str | None:
        try:
            self.state.config.check_complete()
        except UserError as error:
            return str(error)
        return None

    def action_next(self) -> None:
        problem = self.ready_to_continue()
        if problem:
            self.show_error(problem)
            return
        self.clear_error()
        self.query_one("#start-loading").display = True
        self.query_one("#next-button").disabled = True
        self.start()

    @work(thread=True, exclusive=True, exit_on_error=False, group="start", description="starting training")
    def start(self) -> None:
        from core.runs import start_training

        self.post_message(self.Started(start_training(self.state.config)))

    @on(Started)
    def started(self, message: Started) -> None:
        self.query_one("#start-loading").display = False
        self.query_one("#next-button").disabled = False
        self.app.open_run(message.run_dir)

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#start-loading").display = False
        self.query_one("#next-button").disabled = False
        self.show_error(message)
