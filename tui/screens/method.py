"""Method: LoRA, 8-bit LoRA and QLoRA side by side, with each one's memory estimate against this machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Label, Static
from textual.worker import Worker

from core.config import METHOD_HELP, METHODS
from tui.screens.base import WizardStep

VERDICT_TEXT = {"fits": ("fits", "green"), "tight": ("tight", "yellow"), "no": ("does not fit", "red")}


def gib(value: float) -> str:
    return f"{value:.1f} GiB" if value >= 10 else f"{value:.2f} GiB"


class MethodScreen(WizardStep):
    STEP = "method"

    @dataclass
    class Estimated(Message):
        estimates: dict[str, Any] | None  # method -> tui.engine.MethodEstimate; None without an estimator
        hardware: tuple[list[Any], float | None] | None  # detected now, when the state did not know yet

    def __init__(self, state) -> None:
        super().__init__(state)
        self.recommended: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Label("", id="machine-line")
        table = DataTable(id="methods", cursor_type="row", zebra_stripes=False)
        table.add_columns("Method", "Weights", "Peak memory", "On this machine")
        for method in METHODS:
            table.add_row(Text(method, style="bold"), "…", "estimating…", "", key=method)
        yield table
        yield Static("", id="method-help")
        yield Label("", id="recommendation", classes="success")

    def on_mount(self) -> None:
        self.show_machine()
        table = self.query_one("#methods", DataTable)
        table.move_cursor(row=METHODS.index(self.state.config.method))
        table.focus()
        self.estimate()

    def show_machine(self) -> None:
        state = self.state
        settings = state.config
        where = state.memory_summary()
        if state.hardware_known and not state.gpus:
            where = f"{where}; the CPU suits small models only"
        self.query_one("#machine-line", Label).update(
            f"Peak memory for {settings.model or 'the model'} at {settings.data.max_length} tokens, rank {settings.lora.r}. "
            f"This machine: {where}."
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="estimate", description="estimating memory per method")
    def estimate(self) -> None:
        from tui.engine import detect_hardware, estimate_methods

        hardware = None
        if not self.state.hardware_known:
            hardware = detect_hardware()
            self.state.gpus, self.state.memory_gib = hardware
        self.post_message(self.Estimated(estimate_methods(self.state), hardware))

    @on(Estimated)
    def estimated(self, message: Estimated) -> None:
        from tui.engine import recommend

        self.show_machine()
        table = self.query_one("#methods", DataTable)
        columns = list(table.columns)
        for method in METHODS:
            if message.estimates is None:
                cells = ("n/a", "n/a")
                verdict = Text("unknown: no estimator in this install", style="dim")
            else:
                estimate = message.estimates[method]
                cells = (gib(estimate.weights_gib), gib(estimate.peak_gib))
                label, style = VERDICT_TEXT[estimate.verdict]
                verdict = Text(label, style=style)
            table.update_cell(method, columns[1], cells[0], update_width=True)
            table.update_cell(method, columns[2], cells[1], update_width=True)
            table.update_cell(method, columns[3], verdict, update_width=True)
        method, reason = recommend(message.estimates, self.state.has_gpu)
        self.recommended = method
        self.query_one("#recommendation", Label).update(f"Recommended: {reason}")
        if not self.state.method_chosen:
            table.move_cursor(row=METHODS.index(method))
        self.show_help()

    def worker_failed(self, worker: Worker, message: str) -> None:
        table = self.query_one("#methods", DataTable)
        columns = list(table.columns)
        for method in METHODS:
            table.update_cell(method, columns[2], "unknown")
        self.show_error(f"No memory estimate: {message}")

    @on(DataTable.RowHighlighted, "#methods")
    def show_help(self) -> None:
        method = self.highlighted_method()
        marker = " (recommended)" if method == self.recommended else ""
        self.query_one("#method-help", Static).update(
            Text.assemble((f"{method}{marker}: ", "bold"), METHOD_HELP[method])
        )

    def highlighted_method(self) -> str:
        row = self.query_one("#methods", DataTable).cursor_row
        return METHODS[max(0, min(row, len(METHODS) - 1))]

    @on(DataTable.RowSelected, "#methods")
    def chosen(self) -> None:
        self.action_next()

    def action_next(self) -> None:
        self.state.config.method = self.highlighted_method()
        self.state.method_chosen = True
        super().action_next()
